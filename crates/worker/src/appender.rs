//! Proposals to a partition's log, batched: whatever is waiting when the previous append
//! finishes goes into the next one, so many invocations share one durable write.
//!
//! Proposals are appended in the order they were made. After a failed append every later
//! proposal is refused (not appended) until [`Appender::reset`]: an invocation's effects must
//! never reach the log with a gap in the middle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use restate_bifrost::Bifrost;
use restate_types::metadata::Lsn;
use tokio::sync::{mpsc, oneshot};

use crate::wal::Envelope;

/// Records appended at most at once.
const MAX_BATCH: usize = 512;

pub type Proposal = oneshot::Receiver<Result<Lsn, String>>;
type Queued = (Vec<u8>, oneshot::Sender<Result<Lsn, String>>);

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::UnboundedSender<Queued>,
    failed: Arc<AtomicBool>,
    /// Signalled when an append fails, so the leader re-establishes itself.
    failure: Arc<tokio::sync::Notify>,
    /// Proposals of leaders older than this epoch are refused (a deposed leader's stragglers).
    min_epoch: Arc<AtomicU64>,
}

impl Appender {
    /// Starts the appending task of log `log_id`; it ends when every clone is dropped.
    pub fn spawn(bifrost: Bifrost, log_id: u32) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        let failed = Arc::new(AtomicBool::new(false));
        let failed_flag = failed.clone();
        let failure = Arc::new(tokio::sync::Notify::new());
        let failure_signal = failure.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                if failed_flag.load(Ordering::Acquire) {
                    for (_, reply) in batch.drain(..) {
                        let _ = reply.send(Err("an earlier append to this partition's log failed".into()));
                    }
                    continue;
                }
                let payloads = batch.iter().map(|(payload, _)| payload.clone()).collect();
                match bifrost.append(log_id, payloads).await {
                    Ok(first_lsn) => {
                        for (i, (_, reply)) in batch.drain(..).enumerate() {
                            let _ = reply.send(Ok(first_lsn + i as u64));
                        }
                    }
                    Err(error) => {
                        tracing::error!(log_id, %error, "append to the partition log failed");
                        failed_flag.store(true, Ordering::Release);
                        failure_signal.notify_one();
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                }
            }
        });
        Self {
            tx,
            failed,
            failure,
            min_epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues a record; the receiver yields its LSN once it is durable.
    pub fn propose(&self, envelope: &Envelope) -> Proposal {
        let (reply, receiver) = oneshot::channel();
        if envelope
            .leader_epoch
            .is_some_and(|epoch| epoch < self.min_epoch.load(Ordering::Acquire))
        {
            let _ = reply.send(Err("proposed by a leader that was replaced".into()));
            return receiver;
        }
        if self.tx.send((envelope.encode(), reply)).is_err() {
            // The task is gone; the dropped sender makes the receiver fail.
        }
        receiver
    }

    /// Queues a record without waiting for it (its failure shows through [`Self::has_failed`]).
    pub fn submit(&self, envelope: &Envelope) {
        drop(self.propose(envelope));
    }

    /// Queues a record and waits until it is durable.
    pub async fn append(&self, envelope: &Envelope) -> Result<Lsn, String> {
        self.propose(envelope)
            .await
            .unwrap_or_else(|_| Err("the partition's appender stopped".into()))
    }

    /// Resolves once an append failed (after this call).
    pub async fn failed(&self) {
        self.failure.notified().await;
    }

    /// Accepts proposals again, only from leaders of `epoch` or later (called when this
    /// node's leader obtained `epoch`, before it announces itself).
    pub fn reset(&self, epoch: u64) {
        self.min_epoch.fetch_max(epoch, Ordering::AcqRel);
        self.failed.store(false, Ordering::Release);
    }
}
