//! What each replica has made durable. The partition store writes its write-ahead log without
//! an fsync (the partition's log is what makes a record durable, and a processor replays what
//! it lost), so what a replica has applied is not yet what survives a crash of the machine.
//! Every few seconds the store of each replica that applied something new is flushed, and
//! what it had applied before becomes its durable LSN: the point below which it never needs
//! the partition's log again, and so what log trimming waits for.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::handle::WorkerHandle;

/// How often the replicas' stores are flushed (only those that applied something since).
pub(crate) const PERSIST_INTERVAL: Duration = Duration::from_secs(5);

/// After a flush fails (e.g. the disk is full), flushes pause this long: RocksDB recovers from
/// its own failed write or flush once space returns, and a flush forced meanwhile only gets in
/// the way of that recovery.
const BACK_OFF_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Flushes the replicas' stores every [`PERSIST_INTERVAL`] until `cancel`.
pub(crate) async fn persist_periodically(replicas: WorkerHandle, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PERSIST_INTERVAL) => {}
        }
        if !persist_once(&replicas).await {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(BACK_OFF_AFTER_FAILURE) => {}
            }
        }
    }
}

/// Flushes the store of every replica whose durable LSN is behind what it applied, then raises
/// its durable LSN to what it had applied before the flush. Flushes nothing while a replica
/// cannot write its store (they share one database, which is recovering). Returns `false` if
/// a flush failed.
pub(crate) async fn persist_once(replicas: &WorkerHandle) -> bool {
    let stores = replicas.stores();
    if stores.iter().any(|(_, state)| state.snapshot().failure.is_some()) {
        return true;
    }
    for (store, state) in stores {
        let snapshot = state.snapshot();
        let applied = snapshot.applied_lsn;
        if snapshot.durable_lsn >= applied {
            continue;
        }
        let partition = store.partition_id();
        match tokio::task::spawn_blocking(move || store.persist()).await {
            Ok(Ok(())) => state.update(|snapshot| snapshot.durable_lsn = snapshot.durable_lsn.max(applied)),
            Ok(Err(error)) => {
                tracing::warn!(partition, %error, "cannot flush the partition store; durable LSNs stay where they are for a minute");
                return false;
            }
            Err(error) => {
                tracing::warn!(partition, %error, "the partition store flush stopped");
                return false;
            }
        }
    }
    true
}
