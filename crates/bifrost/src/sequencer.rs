//! The sequencer of a replicated loglet: assigns offsets, stores every batch on `replication`
//! log-servers of the nodeset, and acknowledges batches in offset order once they are
//! durable on enough of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use restate_proto::log_server::{SequencerId, StoreRequest, StoreStatus};
use restate_types::PlainNodeId;
use restate_types::metadata::ReplicatedParams;
use tokio::sync::{oneshot, watch};

use crate::BifrostError;
use crate::peers::{Peers, refused};

/// How often a store that waits for copies checks whether the members it waits for went silent.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

pub(crate) struct Sequencer {
    params: ReplicatedParams,
    /// Addresses of the nodeset members.
    addresses: HashMap<PlainNodeId, String>,
    peers: Arc<Peers>,
    state: Mutex<SequencerState>,
    /// Offsets below this are committed (acknowledged in order).
    committed: watch::Sender<u32>,
    /// The latest stored records by offset, so readers on this node (the partition
    /// processor tailing its own log) get them without a round trip to the log-servers.
    recent: Mutex<BTreeMap<u32, Vec<u8>>>,
}

/// Records kept in [`Sequencer::recent`].
const RECENT_RECORDS: usize = 4096;

struct SequencerState {
    next_offset: u32,
    /// A batch failed or the loglet got sealed: no later batch can commit.
    broken: Option<String>,
}

/// What one store call proved about the batch on one log-server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreOutcome {
    Stored,
    /// The log-server answered and did not store the records (sealed, not writable,
    /// another sequencer), or the connection was refused: certainly not stored.
    Refused {
        sealed: bool,
        reason: String,
    },
    /// No answer, or the call broke mid-way: the records may have landed.
    Unknown(String),
}

impl Sequencer {
    pub(crate) fn new(params: ReplicatedParams, addresses: HashMap<PlainNodeId, String>, peers: Arc<Peers>) -> Self {
        Self {
            params,
            addresses,
            peers,
            state: Mutex::new(SequencerState {
                next_offset: 0,
                broken: None,
            }),
            committed: watch::channel(0).0,
            recent: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records `[from, to)` if all of them are still in memory.
    pub(crate) fn recent_records(&self, from: u32, to: u32) -> Option<Vec<(u32, Vec<u8>)>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let records: Vec<(u32, Vec<u8>)> = recent.range(from..to).map(|(o, r)| (*o, r.clone())).collect();
        (records.len() == (to - from) as usize).then_some(records)
    }

    fn remember(&self, first: u32, payloads: Vec<Vec<u8>>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for (offset, payload) in (first..).zip(payloads) {
            recent.insert(offset, payload);
        }
        while recent.len() > RECENT_RECORDS {
            recent.pop_first();
        }
    }

    pub(crate) fn committed_tail(&self) -> u32 {
        *self.committed.borrow()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SequencerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_broken(&self, reason: &str) {
        let mut state = self.lock();
        if state.broken.is_none() {
            state.broken = Some(reason.to_owned());
        }
        drop(state);
        // Wakes followers waiting for new records: there will be none in this segment.
        self.committed.send_modify(|_| {});
    }

    /// Waits up to `max_wait` until offsets above `beyond` are committed (or the sequencer
    /// can commit nothing more); returns the committed tail.
    pub(crate) async fn wait_committed_beyond(&self, beyond: u32, max_wait: Duration) -> u32 {
        let mut committed = self.committed.subscribe();
        let _ = tokio::time::timeout(max_wait, async {
            loop {
                if *committed.borrow_and_update() > beyond || self.lock().broken.is_some() {
                    return;
                }
                if committed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.committed_tail()
    }

    /// Appends a batch; returns the offset of its first record once it is committed.
    ///
    /// The batch runs as a task of its own: a caller that goes away (a dropped request, a
    /// timed-out forward) cannot leave reserved offsets that later batches wait for forever.
    pub(crate) async fn append(self: &Arc<Self>, payloads: Vec<Vec<u8>>) -> Result<u32, BifrostError> {
        let count = payloads.len() as u32;
        let first = {
            let mut state = self.lock();
            if let Some(reason) = &state.broken {
                return Err(BifrostError::sequencer_gone(format!(
                    "loglet {} cannot take records: {reason}",
                    restate_types::metadata::display_loglet_id(self.params.loglet_id)
                )));
            }
            let first = state.next_offset;
            state.next_offset = first.checked_add(count).ok_or_else(BifrostError::sealed)?;
            first
        };
        let (done, outcome) = oneshot::channel();
        let batch = self.clone();
        tokio::spawn(async move {
            let _ = done.send(batch.run_batch(first, count, payloads).await);
        });
        outcome
            .await
            .unwrap_or_else(|_| Err(BifrostError::UnknownOutcome("the sequencer stopped".into())))
    }

    /// Stores one batch and acknowledges it after every earlier batch committed. Bounded:
    /// every earlier batch started before this one and gives up within the same deadline.
    async fn run_batch(&self, first: u32, count: u32, payloads: Vec<Vec<u8>>) -> Result<u32, BifrostError> {
        let started = Instant::now();
        let kept = payloads.clone();
        if let Err(error) = self.store_batch(first, payloads).await {
            self.mark_broken(&error.to_string());
            return Err(error);
        }
        // Durable on enough log-servers; readable once committed.
        self.remember(first, kept);
        let ack_deadline = started + self.peers.store_deadline + self.peers.rpc_timeout * 2;
        let mut committed = self.committed.subscribe();
        loop {
            let tail = *committed.borrow_and_update();
            if tail >= first {
                break;
            }
            if let Some(reason) = self.lock().broken.clone() {
                return Err(BifrostError::UnknownOutcome(format!(
                    "an earlier batch failed ({reason}); these records are stored but may not be part of the log"
                )));
            }
            if Instant::now() >= ack_deadline {
                let reason = "an earlier batch did not finish within the store deadline";
                self.mark_broken(reason);
                return Err(BifrostError::UnknownOutcome(format!(
                    "{reason}; these records are stored but may not be part of the log"
                )));
            }
            if tokio::time::timeout(Duration::from_millis(200), committed.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(BifrostError::UnknownOutcome("the sequencer stopped".into()));
            }
        }
        self.committed.send_modify(|tail| *tail = (*tail).max(first + count));
        Ok(first)
    }

    /// Stores the batch on `replication` nodeset members (in parallel, retrying the others).
    /// Fails with "not appended" only when no copy can have landed anywhere; otherwise the
    /// outcome is unknown (a seal may still keep the records), so a retry could duplicate.
    async fn store_batch(&self, first: u32, payloads: Vec<Vec<u8>>) -> Result<(), BifrostError> {
        let needed = usize::from(self.params.replication.num_copies());
        // Too few members answer for the copies: store nothing, so the caller learns that
        // nothing was written (instead of a copy or two of unknown fate).
        let answering = self.params.nodeset.iter().filter(|n| !self.peers.silent(**n)).count();
        if answering < needed {
            return Err(BifrostError::transient(format!(
                "only {answering} of the segment's {} log-servers answer, and every record needs {needed} copies",
                self.params.nodeset.len()
            )));
        }
        let deadline = Instant::now() + self.peers.store_deadline;
        let mut stored: Vec<PlainNodeId> = Vec::new();
        let mut maybe_stored = false;
        let mut sealed = false;
        let mut last_errors: HashMap<PlainNodeId, String> = HashMap::new();
        let mut pause = Duration::from_millis(20);
        loop {
            let pending: Vec<PlainNodeId> = self
                .params
                .nodeset
                .iter()
                .copied()
                .filter(|node| !stored.contains(node))
                .collect();
            let mut calls: FuturesUnordered<_> = pending
                .iter()
                .map(|node| self.store_on(*node, first, payloads.clone()))
                .collect();
            let mut outstanding: Vec<PlainNodeId> = pending.clone();
            let mut gave_up_waiting = false;
            let mut liveness_check = tokio::time::interval(LIVENESS_CHECK);
            liveness_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let (node, outcome) = tokio::select! {
                    next = calls.next() => match next {
                        Some(answer) => answer,
                        None => break,
                    },
                    _ = liveness_check.tick() => {
                        // Members that stopped answering heartbeats will not make up the copies
                        // in time: stop waiting for them (their stores may still land). The
                        // others may still store, in this round or the next.
                        // Members that stored already count once, in `stored`.
                        let may_help = pending
                            .iter()
                            .filter(|n| !stored.contains(n) && !self.peers.silent(**n))
                            .count();
                        if stored.len() + may_help < needed {
                            for node in outstanding.drain(..) {
                                maybe_stored = true;
                                let reason = match self.peers.silent(node) {
                                    true => "stopped answering heartbeats",
                                    false => "not waited for: too few members answer",
                                };
                                last_errors.insert(node, reason.into());
                            }
                            gave_up_waiting = true;
                            break;
                        }
                        continue;
                    }
                };
                outstanding.retain(|n| *n != node);
                match outcome {
                    StoreOutcome::Stored => stored.push(node),
                    StoreOutcome::Refused { sealed: s, reason } => {
                        sealed |= s;
                        last_errors.insert(node, reason);
                    }
                    StoreOutcome::Unknown(reason) => {
                        maybe_stored = true;
                        last_errors.insert(node, reason);
                    }
                }
                if stored.len() >= needed {
                    return Ok(());
                }
            }
            let certainly_nowhere = stored.is_empty() && !maybe_stored;
            if sealed {
                return Err(match certainly_nowhere {
                    true => BifrostError::sealed(),
                    false => BifrostError::UnknownOutcome(
                        "the segment was sealed while these records were being stored".into(),
                    ),
                });
            }
            // Members that are gone (refused connections or stopped answering heartbeats)
            // cannot make up the copies: give up now, so the log is reconfigured onto live
            // members at once instead of after the store deadline.
            let gone = pending.iter().filter(|n| self.peers.silent(**n)).count();
            let too_few_left = gave_up_waiting || stored.len() + (pending.len() - gone) < needed;
            if too_few_left || Instant::now() + pause > deadline {
                let reasons: Vec<String> = last_errors.iter().map(|(n, e)| format!("{n}: {e}")).collect();
                let reason = format!(
                    "only {} of the {needed} copies needed could be stored ({})",
                    stored.len(),
                    reasons.join("; ")
                );
                return Err(match certainly_nowhere {
                    true => BifrostError::transient(reason),
                    false => BifrostError::UnknownOutcome(reason),
                });
            }
            tracing::debug!(
                copies = stored.len(),
                needed,
                "waiting for log-servers to store a batch"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn store_on(&self, node: PlainNodeId, first: u32, payloads: Vec<Vec<u8>>) -> (PlainNodeId, StoreOutcome) {
        let Some(address) = self.addresses.get(&node) else {
            return (
                node,
                StoreOutcome::Refused {
                    sealed: false,
                    reason: "no known address".into(),
                },
            );
        };
        let request = StoreRequest {
            identity: self.peers.identity(node.0),
            loglet_id: self.params.loglet_id,
            sequencer: Some(SequencerId {
                node_id: self.params.sequencer.id.0,
                generation: self.params.sequencer.generation,
            }),
            first_offset: first,
            payloads,
            known_global_tail: self.committed_tail(),
            repair: false,
        };
        let rpc_timeout = self.peers.rpc_timeout;
        let outcome = tokio::time::timeout(rpc_timeout, self.peers.log_servers.store(node, address, request)).await;
        let result = match outcome {
            Ok(Ok(response)) => match StoreStatus::try_from(response.status) {
                Ok(StoreStatus::Stored) => StoreOutcome::Stored,
                Ok(status) => StoreOutcome::Refused {
                    sealed: status == StoreStatus::Sealed,
                    reason: match response.detail.is_empty() {
                        true => format!("{status:?}"),
                        false => response.detail,
                    },
                },
                Err(_) => StoreOutcome::Unknown(format!("unknown store status {}", response.status)),
            },
            Ok(Err(status)) if refused(&status) => {
                self.peers.note_refused(node);
                StoreOutcome::Refused {
                    sealed: false,
                    reason: status.message().to_owned(),
                }
            }
            Ok(Err(status)) => StoreOutcome::Unknown(status.message().to_owned()),
            Err(_) => StoreOutcome::Unknown(format!("no answer within {rpc_timeout:?}")),
        };
        (node, result)
    }

    /// Marks the sequencer sealed (its segment is being closed).
    pub(crate) fn seal(&self) {
        self.mark_broken("the segment is sealed");
    }
}

/// Keeps the sequencers this node runs.
#[derive(Default)]
pub(crate) struct Sequencers {
    running: Mutex<HashMap<u64, Arc<Sequencer>>>,
}

impl Sequencers {
    pub(crate) fn get_or_create(
        &self,
        params: &ReplicatedParams,
        addresses: impl FnOnce() -> HashMap<PlainNodeId, String>,
        peers: &Arc<Peers>,
    ) -> Arc<Sequencer> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .entry(params.loglet_id)
            .or_insert_with(|| Arc::new(Sequencer::new(params.clone(), addresses(), peers.clone())))
            .clone()
    }

    pub(crate) fn get(&self, loglet_id: u64) -> Option<Arc<Sequencer>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&loglet_id)
            .cloned()
    }
}
