//! The processor's background tasks: tailing the log, and (as leader) handing out attempt
//! permits, delivering the outbox and purging completed invocations whose retention expired.
//! Each walks its table in bounded steps, so none holds a table in memory.

use std::collections::{BTreeSet, HashMap, VecDeque};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use restate_partition_store::read_u64;

use super::*;
use crate::model::Phase;
use crate::wal::{Dedup, OutboxMessage};

/// Rows read from a table at once by the leader's tasks.
const SCAN_CHUNK: usize = 512;

/// Outbox messages read ahead of their delivery at most, and their bytes.
const OUTBOX_WINDOW: usize = 2048;
const OUTBOX_WINDOW_BYTES: usize = 16 << 20;

/// Outbox messages in one append to a target log at most, and their bytes.
const OUTBOX_BATCH: usize = 256;
const OUTBOX_BATCH_BYTES: usize = 4 << 20;

/// How long reads of the log may fail before the partition reports that it cannot read it.
const READ_FAILURE_GRACE: Duration = Duration::from_secs(10);

/// The key right after `key` (the next place to continue a scan from).
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Reads `limit` rows of the table under `prefix` from `from` on, off the async threads.
async fn scan_chunk(
    store: &PartitionStore,
    prefix: &'static [u8],
    from: Vec<u8>,
    limit: usize,
) -> Result<Vec<restate_partition_store::Entry>, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.scan_from(prefix, &from, limit))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Reads the log from `from` on and hands the records to the processor, in order.
pub(super) async fn tail_log(
    bifrost: Bifrost,
    log_id: u32,
    mut from: Lsn,
    records: mpsc::Sender<RecordBatch>,
    handle: PartitionHandle,
    cancel: CancellationToken,
) {
    let mut failing_since: Option<Instant> = None;
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            read = bifrost.read_next(log_id, from, MAX_APPLY_BATCH, Duration::from_secs(1)) => read,
        };
        match read {
            Ok((entries, _)) => {
                if failing_since.take().is_some() {
                    tracing::info!(log_id, "the partition's log can be read again");
                    handle.state.update(|s| s.log_problem = None);
                }
                let mut batch = Vec::with_capacity(entries.len());
                for entry in entries {
                    from = entry.next_lsn();
                    match entry {
                        LogEntry::Record { lsn, payload } => batch.push((lsn, payload)),
                        LogEntry::TrimGap { from: gap_from, to } => {
                            // Applying on would silently skip state changes.
                            let gap = super::TrimmedPast {
                                applied: gap_from.saturating_sub(1),
                                trim_point: to,
                            };
                            let _ = records.send(Err(gap)).await;
                            return;
                        }
                    }
                }
                if !batch.is_empty() && records.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= READ_FAILURE_GRACE {
                    let problem = format!("cannot read log {log_id} since {}s: {error}", since.elapsed().as_secs());
                    if handle.state.snapshot().log_problem.is_none() {
                        tracing::warn!(log_id, "{problem}");
                    }
                    handle.state.update(|s| s.log_problem = Some(problem));
                } else {
                    tracing::debug!(log_id, %error, "reading the partition log failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Hands invocations to start to the processor, each with one of the node's concurrency
/// permits: those that ran when this leader took over (read from the index of running
/// invocations in bounded steps, as permits free up), and those the processor asks for.
/// An invocation waiting for a permit costs an id here, not an attempt with its journal.
pub(super) async fn starter(
    handover: Duration,
    store: PartitionStore,
    concurrency: Arc<Semaphore>,
    mut requests: mpsc::UnboundedReceiver<InvocationId>,
    control: mpsc::UnboundedSender<Control>,
    cancel: CancellationToken,
) {
    if !handover.is_zero() {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(handover) => {}
        }
    }
    let prefix = TableKind::Invoked.prefix();
    let mut resume_from = Some(prefix.to_vec());
    let mut queue = VecDeque::new();
    loop {
        while let Ok(id) = requests.try_recv() {
            queue.push_back(id);
        }
        if queue.is_empty()
            && let Some(from) = resume_from.take()
        {
            match scan_chunk(&store, prefix, from.clone(), SCAN_CHUNK).await {
                Ok(entries) => {
                    if entries.len() == SCAN_CHUNK
                        && let Some((last, _)) = entries.last()
                    {
                        resume_from = Some(after(last));
                    }
                    queue.extend(entries.iter().filter_map(|(key, _)| InvocationId::from_raw(&key[2..])));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the running invocations to resume; trying again");
                    resume_from = Some(from);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            continue;
        }
        let id = match queue.pop_front() {
            Some(id) => id,
            None => tokio::select! {
                _ = cancel.cancelled() => return,
                request = requests.recv() => match request {
                    Some(id) => id,
                    None => return,
                },
            },
        };
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            permit = concurrency.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        if control.send(Control::Start { id, permit }).is_err() {
            return;
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
    let prefix = TableKind::InvocationStatus.prefix();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = now_ms();
        let mut from = prefix.to_vec();
        loop {
            let entries = match scan_chunk(&store, prefix, from, SCAN_CHUNK).await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%error, "the cleaner cannot read the invocations; it tries again next round");
                    break;
                }
            };
            let mut last = None;
            for (key, value) in &entries {
                let (Some(id), Ok(status)) = (
                    InvocationId::from_raw(&key[2..]),
                    postcard::from_bytes::<InvocationStatus>(value),
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
                last = Some(appender.propose(&Envelope {
                    timestamp: now,
                    leader_epoch: Some(epoch),
                    dedup: None,
                    command,
                }));
            }
            // One chunk in the log's queue at a time: the cleaner never crowds out the calls.
            // What is refused now is purged next round.
            if let Some(last) = last {
                let _ = last.await;
            }
            match entries.last() {
                Some((last, _)) if entries.len() == SCAN_CHUNK && !cancel.is_cancelled() => from = after(last),
                _ => break,
            }
        }
    }
}

/// An append of outbox messages to one target log, retried until it lands.
async fn deliver(
    bifrost: Bifrost,
    partition_id: u16,
    target: u16,
    messages: Vec<(u64, Vec<u8>)>,
    cancel: CancellationToken,
) -> (u16, Vec<u64>) {
    let seqs: Vec<u64> = messages.iter().map(|(seq, _)| *seq).collect();
    let payloads: Vec<Vec<u8>> = messages.into_iter().map(|(_, payload)| payload).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        if cancel.is_cancelled() {
            return (target, Vec::new());
        }
        match bifrost.append(u32::from(target), payloads.clone()).await {
            Ok(_) => return (target, seqs),
            Err(error) => {
                tracing::warn!(partition_id, target, %error, "cannot deliver outbox messages; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Delivers outbox messages to their partitions' logs and truncates what was delivered.
///
/// Messages to one target keep their order and go in batches; targets are served
/// concurrently, so one that cannot take messages holds up only its own (until the read-ahead
/// window is full of them). Each message carries (this partition, its sequence number), so a
/// target applies it once however often it is delivered.
#[allow(clippy::too_many_arguments)]
pub(super) async fn shuffle(
    ctx: Arc<ProcessorCtx>,
    store: PartitionStore,
    appender: Appender,
    partition_id: u16,
    epoch: u64,
    mut wake: mpsc::UnboundedReceiver<()>,
    control: mpsc::UnboundedSender<Control>,
    cancel: CancellationToken,
) {
    let truncated = match store.get::<u64>(&fsm_key(state_machine::fsm::OUTBOX_TRUNCATED)) {
        Ok(truncated) => truncated.unwrap_or(0),
        Err(error) => {
            tracing::error!(partition_id, %error, "cannot read the outbox position; the outbox is not delivered");
            let _ = control.send(Control::OutboxProblem(Some(format!(
                "cannot read the outbox position: {error}"
            ))));
            return;
        }
    };
    let prefix = TableKind::Outbox.prefix();
    // The next sequence number to read; messages before it were read (or delivered).
    let mut next_read = truncated + 1;
    let mut proposed_truncation = truncated;
    let mut undelivered: BTreeSet<u64> = BTreeSet::new();
    let mut window_bytes: HashMap<u64, usize> = HashMap::new();
    let mut queues: HashMap<u16, VecDeque<(u64, Vec<u8>)>> = HashMap::new();
    let mut sending: HashMap<u16, bool> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    // A message that cannot be read stops the reading there (nothing after it is lost).
    let mut blocked = false;
    let mut more_to_read = true;
    loop {
        // Read ahead while the window has room.
        let in_window: usize = window_bytes.values().sum();
        if more_to_read && !blocked && undelivered.len() < OUTBOX_WINDOW && in_window < OUTBOX_WINDOW_BYTES {
            let room = OUTBOX_WINDOW - undelivered.len();
            let from = state_machine::outbox_key(next_read).into_bytes();
            match scan_chunk(&store, prefix, from, room.min(SCAN_CHUNK)).await {
                Ok(entries) => {
                    more_to_read = entries.len() == room.min(SCAN_CHUNK);
                    for (key, value) in entries {
                        let Some(seq) = read_u64(&key, 2) else { continue };
                        let routed = postcard::from_bytes::<OutboxMessage>(&value)
                            .map_err(|e| format!("outbox message {seq} does not decode: {e}"))
                            .and_then(|message| match ctx.partition_of(message.partition_key) {
                                Some(target) => Ok((target, message)),
                                None => Err(format!(
                                    "outbox message {seq} is for partition key {}, which no partition owns",
                                    message.partition_key
                                )),
                            });
                        let (target, message) = match routed {
                            Ok(routed) => routed,
                            Err(problem) => {
                                tracing::error!(partition_id, "{problem}; the outbox is not delivered past it");
                                let _ = control.send(Control::OutboxProblem(Some(problem)));
                                blocked = true;
                                break;
                            }
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
                        let payload = envelope.encode();
                        window_bytes.insert(seq, payload.len());
                        undelivered.insert(seq);
                        queues.entry(target).or_default().push_back((seq, payload));
                        next_read = seq + 1;
                    }
                }
                Err(error) => {
                    tracing::warn!(partition_id, %error, "cannot read the outbox; trying again");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            }
        }
        // One append in flight per target, with what queued for it meanwhile.
        for (target, queue) in queues.iter_mut() {
            if queue.is_empty() || sending.get(target).copied().unwrap_or(false) {
                continue;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some((seq, payload)) = queue.pop_front() {
                bytes += payload.len();
                batch.push((seq, payload));
                if batch.len() >= OUTBOX_BATCH || bytes >= OUTBOX_BATCH_BYTES {
                    break;
                }
            }
            sending.insert(*target, true);
            in_flight.push(deliver(
                ctx.bifrost.clone(),
                partition_id,
                *target,
                batch,
                cancel.clone(),
            ));
        }
        // Everything before the first undelivered message can go.
        let delivered_up_to = undelivered.first().map_or(next_read - 1, |first| first - 1);
        if delivered_up_to > proposed_truncation
            && appender.submit(&Envelope {
                timestamp: now_ms(),
                leader_epoch: Some(epoch),
                dedup: None,
                command: Command::TruncateOutbox { up_to: delivered_up_to },
            })
        {
            proposed_truncation = delivered_up_to;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            delivered = in_flight.next(), if !in_flight.is_empty() => {
                if let Some((target, seqs)) = delivered {
                    sending.insert(target, false);
                    for seq in seqs {
                        undelivered.remove(&seq);
                        window_bytes.remove(&seq);
                    }
                }
            }
            woken = wake.recv() => {
                if woken.is_none() {
                    return;
                }
                while wake.try_recv().is_ok() {}
                more_to_read = true;
            }
        }
    }
}
