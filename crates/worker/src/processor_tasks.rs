//! The processor's background tasks: tailing the log, delivering the outbox, and (as leader)
//! purging completed invocations whose retention expired.

use super::*;

/// Reads the log from `from` on and hands the records to the processor, in order.
pub(super) async fn tail_log(
    bifrost: Bifrost,
    log_id: u32,
    mut from: Lsn,
    records: mpsc::Sender<RecordBatch>,
    cancel: CancellationToken,
) {
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            read = bifrost.read_next(log_id, from, MAX_APPLY_BATCH, Duration::from_secs(1)) => read,
        };
        match read {
            Ok((entries, _)) => {
                let mut batch = Vec::with_capacity(entries.len());
                for entry in entries {
                    from = entry.next_lsn();
                    match entry {
                        LogEntry::Record { lsn, payload } => batch.push((lsn, payload)),
                        LogEntry::TrimGap { from: gap_from, to } => {
                            // Applying on would silently skip state changes.
                            let _ = records
                                .send(Err(format!(
                                    "log {log_id} was trimmed to {to}, past what this processor applied ({}); \
                                     it needs a snapshot of the partition",
                                    gap_from.saturating_sub(1)
                                )))
                                .await;
                            return;
                        }
                    }
                }
                if !batch.is_empty() && records.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(log_id, %error, "reading the partition log failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every `interval`, proposes to purge completed invocations (or only their journals) whose
/// retention expired.
pub(super) async fn cleaner(
    store: PartitionStore,
    appender: Appender,
    epoch: u64,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Ok(statuses) = store.scan_raw(TableKind::InvocationStatus.prefix()) else {
            continue;
        };
        let now = now_ms();
        for (key, value) in statuses {
            let (Some(id), Ok(status)) = (
                InvocationId::from_raw(&key[2..]),
                postcard::from_bytes::<InvocationStatus>(&value),
            ) else {
                continue;
            };
            let Phase::Completed { at } = status.phase else {
                continue;
            };
            let command = if at.saturating_add(status.retention.completion) <= now {
                Command::Purge { id }
            } else if status.journal_length > 0 && at.saturating_add(status.retention.journal) <= now {
                Command::PurgeJournal { id }
            } else {
                continue;
            };
            appender.submit(&Envelope {
                timestamp: now,
                leader_epoch: Some(epoch),
                dedup: None,
                command,
            });
        }
    }
}

/// Delivers outbox messages to their partitions' logs, in order, then truncates the outbox.
pub(super) async fn shuffle(
    ctx: Arc<ProcessorCtx>,
    store: PartitionStore,
    appender: Appender,
    partition_id: u16,
    epoch: u64,
    mut wake: mpsc::UnboundedReceiver<()>,
    cancel: CancellationToken,
) {
    let mut delivered_up_to = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            woken = wake.recv() => if woken.is_none() { return },
        }
        while wake.try_recv().is_ok() {}
        let Ok(entries) = store.scan_raw(TableKind::Outbox.prefix()) else {
            continue;
        };
        for (key, value) in entries {
            let Some(seq) = read_u64(&key, 2) else { continue };
            if seq <= delivered_up_to {
                continue;
            }
            let Ok(message) = postcard::from_bytes::<OutboxMessage>(&value) else {
                tracing::error!(partition_id, seq, "an outbox message does not decode; skipping it");
                continue;
            };
            let Some(target) = ctx.partition_of(message.partition_key) else {
                continue;
            };
            let envelope = Envelope {
                timestamp: now_ms(),
                leader_epoch: None,
                dedup: Some(Dedup {
                    producer: partition_id,
                    seq,
                }),
                command: message.command,
            };
            loop {
                if cancel.is_cancelled() {
                    return;
                }
                match ctx.bifrost.append(u32::from(target), vec![envelope.encode()]).await {
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(partition_id, target, %error, "cannot deliver an outbox message; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            delivered_up_to = seq;
            appender.submit(&Envelope {
                timestamp: now_ms(),
                leader_epoch: Some(epoch),
                dedup: None,
                command: Command::TruncateOutbox { up_to: seq },
            });
        }
    }
}
