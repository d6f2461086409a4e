//! Proposals to a partition's log, batched: whatever is waiting when the previous append
//! finishes goes into the next one, so many invocations share one durable write.
//!
//! Proposals are appended in the order they were made. After a failed append every later
//! proposal is refused (not appended) until [`Appender::reset`]: an invocation's effects must
//! never reach the log with a gap in the middle. A follower clears the failure at once
//! ([`Appender::clear_failure`]): its ingress is not held up by an append that failed while the
//! log's sequencer moved.
//!
//! The queue is bounded (in records and bytes): when the log cannot keep up, a proposal is
//! refused at once instead of piling up in memory, and every append has a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use restate_bifrost::{Bifrost, BifrostError};
use restate_types::metadata::Lsn;
use tokio::sync::{mpsc, oneshot, watch};

use crate::wal::Envelope;

/// Records appended at most at once, and their bytes (a single larger record still goes).
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Records and bytes waiting for an append at most; beyond them proposals are refused.
const MAX_QUEUED: usize = 16_384;
const MAX_QUEUED_BYTES: usize = 128 << 20;

/// Why a proposal did not become durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// It never reached the log: proposing it again cannot apply it twice.
    #[error("{0}")]
    Refused(String),
    /// The append failed in a way that leaves open whether it landed.
    #[error("{0}")]
    Unknown(String),
}

pub type Proposal = oneshot::Receiver<Result<Lsn, AppendError>>;

struct Queued {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Lsn, AppendError>>,
}

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Queued>,
    queued_bytes: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    /// Counts failed appends, so the leader re-establishes itself after one.
    failures: watch::Sender<u64>,
    /// Proposals of leaders older than this epoch are refused (a deposed leader's stragglers).
    min_epoch: Arc<AtomicU64>,
    /// Bumped by every reset and cleared failure: a batch taken before one that fails after
    /// it belongs to what was reset, and neither closes the appender nor counts as a failure
    /// of the leadership that follows (its records carry an older epoch, or stand alone).
    generation: Arc<AtomicU64>,
    /// Bumped with the generation: wakes proposers waiting for the appender to take proposals
    /// again ([`Appender::until_accepting`]).
    accepting: watch::Sender<u64>,
}

impl Appender {
    /// Starts the appending task of log `log_id`; it ends when every clone is dropped. An
    /// append that takes longer than `deadline` is reported as of unknown outcome.
    pub fn spawn(bifrost: Bifrost, log_id: u32, deadline: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Queued>(MAX_QUEUED);
        let failed = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let failures = watch::channel(0u64).0;
        let generation = Arc::new(AtomicU64::new(0));
        // Why the last append failed, for the proposals refused after it.
        let last_failure = Arc::new(std::sync::Mutex::new(String::new()));
        let appender = Self {
            tx,
            queued_bytes: queued_bytes.clone(),
            failed: failed.clone(),
            failures: failures.clone(),
            min_epoch: Arc::new(AtomicU64::new(0)),
            generation: generation.clone(),
            accepting: watch::channel(0u64).0,
        };
        tokio::spawn(async move {
            let mut batch: Vec<Queued> = Vec::new();
            let mut next: Option<Queued> = None;
            loop {
                let first = match next.take() {
                    Some(first) => first,
                    None => match rx.recv().await {
                        Some(first) => first,
                        None => return,
                    },
                };
                let mut bytes = first.payload.len();
                batch.push(first);
                while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(queued) if bytes + queued.payload.len() > MAX_BATCH_BYTES => {
                            next = Some(queued);
                            break;
                        }
                        Ok(queued) => {
                            bytes += queued.payload.len();
                            batch.push(queued);
                        }
                        Err(_) => break,
                    }
                }
                queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                if failed.load(Ordering::Acquire) {
                    let why = last_failure.lock().map(|why| why.clone()).unwrap_or_default();
                    for queued in batch.drain(..) {
                        let refused =
                            AppendError::Refused(format!("an earlier append to this partition's log failed ({why})"));
                        let _ = queued.reply.send(Err(refused));
                    }
                    continue;
                }
                let taken_in = generation.load(Ordering::Acquire);
                let payloads = batch
                    .iter_mut()
                    .map(|queued| std::mem::take(&mut queued.payload))
                    .collect();
                let outcome = match tokio::time::timeout(deadline, bifrost.append(log_id, payloads)).await {
                    Ok(Ok(first_lsn)) => Ok(first_lsn),
                    // Bifrost returns these only when no try wrote anything.
                    Ok(Err(BifrostError::NotAppended(reason))) => Err(AppendError::Refused(reason.to_string())),
                    Ok(Err(BifrostError::Unavailable(reason) | BifrostError::Invalid(reason))) => {
                        Err(AppendError::Refused(reason))
                    }
                    Ok(Err(error @ BifrostError::UnknownOutcome(_))) => Err(AppendError::Unknown(error.to_string())),
                    Err(_) => Err(AppendError::Unknown(format!(
                        "the append did not finish within {deadline:?}"
                    ))),
                };
                match outcome {
                    Ok(first_lsn) => {
                        for (i, queued) in batch.drain(..).enumerate() {
                            let _ = queued.reply.send(Ok(first_lsn + i as u64));
                        }
                    }
                    Err(error) => {
                        tracing::error!(log_id, %error, "append to the partition log failed");
                        if generation.load(Ordering::Acquire) == taken_in {
                            if let Ok(mut why) = last_failure.lock() {
                                *why = error.to_string();
                            }
                            failed.store(true, Ordering::Release);
                            failures.send_modify(|count| *count += 1);
                        }
                        for queued in batch.drain(..) {
                            let _ = queued.reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        appender
    }

    /// Queues a record; the receiver yields its LSN once it is durable.
    pub fn propose(&self, envelope: &Envelope) -> Proposal {
        let (reply, receiver) = oneshot::channel();
        if envelope
            .leader_epoch
            .is_some_and(|epoch| epoch < self.min_epoch.load(Ordering::Acquire))
        {
            let _ = reply.send(Err(AppendError::Refused(
                "proposed by a leader that was replaced".into(),
            )));
            return receiver;
        }
        let payload = envelope.encode();
        let size = payload.len();
        // One record always fits in an empty queue, however large.
        let queued = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued > 0 && queued + size > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            let _ = reply.send(Err(overloaded()));
            return receiver;
        }
        if let Err(error) = self.tx.try_send(Queued { payload, reply }) {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            let (reason, queued) = match error {
                mpsc::error::TrySendError::Full(queued) => (overloaded(), queued),
                mpsc::error::TrySendError::Closed(queued) => {
                    (AppendError::Refused("the partition's appender stopped".into()), queued)
                }
            };
            let _ = queued.reply.send(Err(reason));
        }
        receiver
    }

    /// Queues a record without waiting for it; `false` when it was refused at once (its later
    /// failure shows through [`Self::failures`]).
    pub fn submit(&self, envelope: &Envelope) -> bool {
        !matches!(self.propose(envelope).try_recv(), Ok(Err(_)))
    }

    /// Queues a record and waits until it is durable.
    pub async fn append(&self, envelope: &Envelope) -> Result<Lsn, AppendError> {
        self.propose(envelope)
            .await
            .unwrap_or_else(|_| Err(AppendError::Unknown("the partition's appender stopped".into())))
    }

    /// The number of failed appends so far; changes with every failure.
    pub fn failures(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    /// Accepts proposals again after a failed append, without fencing any leader: a follower's
    /// appender carries only records from the ingress and admin API, which stand alone.
    pub fn clear_failure(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.failed.store(false, Ordering::Release);
        self.accepting.send_modify(|count| *count += 1);
    }

    /// Waits until proposals are taken again after a failed append (the partition's leader
    /// re-established itself, or a follower cleared the failure), or until `deadline`;
    /// returns whether they are.
    pub async fn until_accepting(&self, deadline: tokio::time::Instant) -> bool {
        let mut accepting = self.accepting.subscribe();
        let _ = tokio::time::timeout_at(deadline, async {
            while self.is_failed() {
                if accepting.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        !self.is_failed()
    }

    /// Whether proposals are refused after a failed append.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Refuses, from now on, proposals of leaders older than `epoch` (a leader that stepped
    /// down fences its own stragglers, so its appender can take the ingress's records again).
    pub fn fence(&self, epoch: u64) {
        self.min_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Accepts proposals again, only from leaders of `epoch` or later (called when this
    /// node's leader obtained `epoch`, before it announces itself).
    pub fn reset(&self, epoch: u64) {
        self.min_epoch.fetch_max(epoch, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.failed.store(false, Ordering::Release);
        self.accepting.send_modify(|count| *count += 1);
    }
}

fn overloaded() -> AppendError {
    AppendError::Refused("the partition's log is not keeping up with its proposals (its queue is full)".into())
}
