//! Following a log: reads that wait for new records instead of coming back empty, so a
//! reader (a partition processor, `BifrostSvc/Tail`) sees each record right after it is
//! committed without polling.
//!
//! The wait happens where the tail is known first: on the node that runs the tail segment's
//! sequencer (or owns its local loglet). Other nodes ask that node to answer once the tail
//! moves past an offset. A wait that ends without progress re-reads the chain, since the
//! segment may have been sealed and the log continued elsewhere.

use std::time::Duration;

use restate_types::PlainNodeId;
use restate_types::metadata::{FIRST_LSN, LogletParams, Lsn};

use crate::{Bifrost, BifrostError, LogEntry};

/// Pause after a failed wait (sequencer unreachable, log not created yet).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause before re-reading the chain of a log whose tail segment is served by a node that is
/// gone and that this node could not reconfigure (another node may be doing it).
const GONE_PAUSE: Duration = Duration::from_millis(150);

/// How a wait for the tail to move ended.
enum TailWait {
    /// The node serving the tail segment answered with its committed tail.
    Committed(u32),
    /// The wait could not be done (no answer, or this node does not serve the segment).
    Failed,
    /// A chain was extended: read the chain again now.
    Moved,
    /// The node serving the segment is gone: its records stay unknown until it is sealed.
    Gone,
}

impl TailWait {
    fn of(served: Option<u32>) -> Self {
        served.map_or(TailWait::Failed, TailWait::Committed)
    }
}

impl Bifrost {
    /// Entries from `from` on, at most `max`; when there are none yet, first waits up to
    /// `max_wait` for records to be committed there. Returns the entries (possibly none) and
    /// the tail. A log that does not exist yet reads as empty.
    pub async fn read_next(
        &self,
        log_id: u32,
        from: Lsn,
        max: usize,
        max_wait: Duration,
    ) -> Result<(Vec<LogEntry>, Lsn), BifrostError> {
        if self.chain(log_id, false).await.is_err() {
            // Created on first append; check again after a pause.
            tokio::time::sleep(RETRY_PAUSE.min(max_wait)).await;
            self.forget_logs();
            return match self.chain(log_id, false).await {
                Ok(_) => self.read(log_id, from, max).await,
                Err(_) => Ok((Vec::new(), FIRST_LSN)),
            };
        }
        let (entries, tail) = self.read(log_id, from, max).await?;
        if !entries.is_empty() || from < tail {
            return Ok((entries, tail));
        }
        self.wait_for_tail_beyond(log_id, from, max_wait).await;
        self.read(log_id, from, max).await
    }

    /// Returns once the log's tail is above `lsn` (a record exists there), after `max_wait`,
    /// or soon after the wait cannot be done (then the cached chain is dropped).
    async fn wait_for_tail_beyond(&self, log_id: u32, lsn: Lsn, max_wait: Duration) {
        let Ok(chain) = self.chain(log_id, false).await else {
            tokio::time::sleep(RETRY_PAUSE.min(max_wait)).await;
            return;
        };
        let Some(tail) = chain.tail() else { return };
        if lsn < tail.base_lsn {
            return;
        }
        let beyond = u32::try_from(lsn - tail.base_lsn).unwrap_or(u32::MAX);
        let me = self.inner.me;
        let outcome = match &tail.loglet {
            LogletParams::Local { loglet_id, node } if *node == me.id => {
                TailWait::of(self.served_tail(*loglet_id, Some((beyond, max_wait))).await)
            }
            LogletParams::Replicated(params) if params.sequencer == me => {
                TailWait::of(self.served_tail(params.loglet_id, Some((beyond, max_wait))).await)
            }
            LogletParams::Local { loglet_id, node } => self.wait_remote(*node, *loglet_id, beyond, max_wait).await,
            LogletParams::Replicated(params) => {
                self.wait_remote(params.sequencer.id, params.loglet_id, beyond, max_wait)
                    .await
            }
        };
        match outcome {
            TailWait::Committed(committed) if committed > beyond => {}
            TailWait::Committed(_) | TailWait::Moved => self.forget_logs(),
            TailWait::Failed => {
                tokio::time::sleep(RETRY_PAUSE.min(max_wait)).await;
                self.forget_logs();
            }
            TailWait::Gone => {
                // Records the gone sequencer committed are readable only once a seal fixes
                // the segment's end: a reader does it rather than wait for the next append
                // (there may be none: the leader itself may wait for those records) or for
                // the cluster controller's pass over orphaned logs.
                let moved = matches!(tail.loglet, LogletParams::Replicated(_))
                    && self.seal_and_extend(log_id, tail.index).await.is_ok();
                if !moved {
                    tokio::time::sleep(GONE_PAUSE.min(max_wait)).await;
                }
                self.forget_logs();
            }
        }
    }

    /// Waits at the node that serves the tail segment. Ends early when that node is gone (a
    /// paused node keeps the connection open and answers nothing, and its segment is about to
    /// be sealed and the log continued elsewhere) or when this node extends a chain.
    async fn wait_remote(&self, node: PlainNodeId, loglet_id: u64, beyond: u32, max_wait: Duration) -> TailWait {
        let mut extended = self.inner.chains_extended.subscribe();
        tokio::select! {
            tail = self.remote_tail(node, loglet_id, Some((beyond, max_wait))) => match tail {
                Ok(committed) => TailWait::Committed(committed),
                Err(_) if self.gone(node) => TailWait::Gone,
                Err(_) => TailWait::Failed,
            },
            () = self.until_gone(node) => TailWait::Gone,
            _ = extended.changed() => TailWait::Moved,
        }
    }

    /// The committed tail of a loglet this node serves: as its sequencer, or as the owner of a
    /// local loglet. With `wait`, first waits up to the duration for the tail to pass the
    /// offset. `None` if this node does not serve the loglet.
    pub(crate) async fn served_tail(&self, loglet_id: u64, wait: Option<(u32, Duration)>) -> Option<u32> {
        let sequencer = match self.inner.sequencers.get(loglet_id) {
            Some(sequencer) => Some(sequencer),
            None => match self.unstarted_sequencer(loglet_id).await {
                Unstarted::Start(sequencer) => Some(sequencer),
                Unstarted::NotServed => return None,
                Unstarted::NotReplicated => None,
            },
        };
        if let Some(sequencer) = sequencer {
            return Some(match wait {
                Some((beyond, max_wait)) => sequencer.wait_committed_beyond(beyond, max_wait).await,
                None => sequencer.committed_tail(),
            });
        }
        let local = &self.inner.local;
        let tail = || local.state(loglet_id).ok().map(|s| (s.local_tail, s.sealed));
        let (current, _) = tail()?;
        let Some((beyond, max_wait)) = wait else {
            return Some(current);
        };
        let mut appended = self.inner.local_appended.subscribe();
        let _ = tokio::time::timeout(max_wait, async {
            loop {
                appended.borrow_and_update();
                match tail() {
                    Some((committed, sealed)) if committed <= beyond && !sealed => {}
                    _ => return,
                }
                if appended.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        tail().map(|(committed, _)| committed)
    }
}

/// What serves the tail of a loglet for which this node runs no sequencer yet.
enum Unstarted {
    /// A replicated tail segment this node sequences: its sequencer starts now (it would on
    /// the first append), so a reader waits on it instead of timing out.
    Start(std::sync::Arc<crate::sequencer::Sequencer>),
    /// A replicated segment sequenced elsewhere, or sealed: this node knows nothing of its tail.
    NotServed,
    /// Not a replicated segment of the log (a local loglet, or unknown).
    NotReplicated,
}

impl Bifrost {
    /// A segment extended onto this node has no sequencer until its first append; a reader
    /// that waits for its tail before then would wait out its whole wait for nothing.
    async fn unstarted_sequencer(&self, loglet_id: u64) -> Unstarted {
        let log_id = (loglet_id >> 32) as u32;
        for refresh in [false, true] {
            if refresh {
                self.forget_logs();
            }
            let Ok(chain) = self.chain(log_id, false).await else {
                return Unstarted::NotReplicated;
            };
            let Some(segment) = chain.segments.iter().find(|s| s.loglet.loglet_id() == loglet_id) else {
                continue;
            };
            let LogletParams::Replicated(params) = &segment.loglet else {
                return Unstarted::NotReplicated;
            };
            let is_tail = chain.tail().is_some_and(|tail| tail.index == segment.index);
            if !is_tail || params.sequencer != self.inner.me {
                return Unstarted::NotServed;
            }
            let Ok(addresses) = self.addresses().await else {
                return Unstarted::NotServed;
            };
            return Unstarted::Start(
                self.inner
                    .sequencers
                    .get_or_create(params, || addresses, &self.inner.peers),
            );
        }
        Unstarted::NotReplicated
    }
}
