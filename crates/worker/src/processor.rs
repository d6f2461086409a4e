//! A partition processor: tails its partition's log, applies every record with the state
//! machine, and, while it leads, runs the leader's tasks (attempts, timers, outbox).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use restate_bifrost::{Bifrost, LogEntry};
use restate_config::Configuration;
use restate_invoker::{
    Attempt, AttemptDeployment, AttemptError, AttemptOutcome, ErrorBehavior, InvokerClient, JournalFrame,
};
use restate_metadata_store::{MetadataClient, ReadModifyWrite};
use restate_partition_store::{Key, PartitionStore, TableKind, read_u64};
use restate_service_protocol::{Encoder, Message, MessageType, ServiceProtocolVersion, proto};
use restate_types::InvocationId;
use restate_types::manifest::ProtocolMode;
use restate_types::metadata::{FIRST_LSN, Lsn};
use restate_types::schema::DeploymentHttpVersion;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::appender::Appender;
use crate::handle::{Answer, PartitionHandle};
use crate::invocation::{AttemptDriver, AttemptReport};
use crate::model::{InvocationStatus, Phase};
use crate::schema_cache::SchemaCache;
use crate::settings::WorkerSettings;
use crate::state_machine::{self, Action, StateMachine};
use crate::wal::{Command, Dedup, Effect, Envelope, OutboxMessage, now_ms};

#[path = "processor_tasks.rs"]
mod tasks;
use tasks::{cleaner, shuffle, tail_log};

/// Records read from the log in order, or why the log cannot be applied on.
type RecordBatch = Result<Vec<(Lsn, Vec<u8>)>, String>;

/// Records applied in one store transaction at most.
const MAX_APPLY_BATCH: usize = 512;

/// What every processor of the node shares.
pub(crate) struct ProcessorCtx {
    pub bifrost: Bifrost,
    pub metadata: MetadataClient,
    pub schema: SchemaCache,
    pub client: InvokerClient,
    pub settings: WorkerSettings,
    pub node_id: u32,
    pub concurrency: Arc<Semaphore>,
    /// Partition id and key range of every partition, to route outbox messages.
    pub partitions: Vec<(u16, RangeInclusive<u64>)>,
    pub metrics: crate::metrics::WorkerMetrics,
}

impl ProcessorCtx {
    pub(crate) fn partition_of(&self, key: u64) -> Option<u16> {
        self.partitions
            .iter()
            .find(|(_, range)| range.contains(&key))
            .map(|(id, _)| *id)
    }

    pub(crate) fn new(
        config: &Configuration,
        bifrost: Bifrost,
        metadata: MetadataClient,
        node_id: u32,
    ) -> Result<Self, String> {
        let client = InvokerClient::new(config.worker.invoker.connect_timeout).map_err(|e| e.to_string())?;
        Ok(Self {
            bifrost,
            schema: SchemaCache::new(metadata.clone()),
            metadata,
            client,
            settings: WorkerSettings::from_config(config),
            node_id,
            concurrency: Arc::new(Semaphore::new(
                config.worker.invoker.concurrent_invocations_limit.max(1),
            )),
            partitions: Vec::new(),
            metrics: crate::metrics::WorkerMetrics::default(),
        })
    }
}

/// Messages to the processor loop from its tasks.
pub(crate) enum Control {
    /// Leadership was obtained in metadata with this epoch and announced in the log.
    Epoch(u64),
    AttemptFinished {
        id: InvocationId,
        token: u64,
        report: AttemptReport,
    },
    /// Start the next attempt once the log is applied up to `min_lsn`.
    Retry { id: InvocationId, min_lsn: Lsn },
    /// The leadership task gave up; try again.
    LeadershipFailed,
}

struct Running {
    token: u64,
    notify: mpsc::UnboundedSender<Bytes>,
    /// Journal entries replayed at start; notifications below this index were sent already.
    replayed: u32,
    terminal: Arc<AtomicBool>,
    acks: Arc<Mutex<HashSet<u32>>>,
    version: ServiceProtocolVersion,
    cancel: CancellationToken,
}

/// Failed attempts since the invocation last stored a command.
#[derive(Default)]
struct RetryState {
    attempts: u32,
}

/// The epoch of partition `id` in metadata (`pp_epoch_<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMetadata {
    pub epoch: u64,
    pub node: u32,
}

pub(crate) struct Processor {
    ctx: Arc<ProcessorCtx>,
    partition_id: u16,
    log_id: u32,
    store: PartitionStore,
    state_machine: StateMachine,
    appender: Appender,
    handle: PartitionHandle,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    applied: Lsn,
    /// The epoch this processor obtained; it leads once its announcement is applied.
    my_epoch: Option<u64>,
    leading: bool,
    /// Cancels the leader's tasks when leadership ends.
    leader_cancel: CancellationToken,
    running: HashMap<InvocationId, Running>,
    retries: HashMap<InvocationId, RetryState>,
    pending_retries: Vec<(InvocationId, Lsn)>,
    timers: BTreeSet<(u64, u64)>,
    shuffle: Option<mpsc::UnboundedSender<()>>,
    next_token: u64,
}

impl Processor {
    pub(crate) fn new(
        ctx: Arc<ProcessorCtx>,
        partition_id: u16,
        key_range: RangeInclusive<u64>,
        store: PartitionStore,
        handle: PartitionHandle,
    ) -> Result<Self, restate_partition_store::PartitionStoreError> {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        // Unreadable means the store is broken: re-applying the log over it would duplicate.
        let applied = store
            .get::<u64>(&fsm_key(state_machine::fsm::APPLIED_LSN))?
            .unwrap_or(0);
        Ok(Self {
            appender: handle.appender.clone(),
            ctx,
            partition_id,
            log_id: u32::from(partition_id),
            store,
            state_machine: StateMachine {
                partition_id,
                key_range,
            },
            handle,
            control_tx,
            control_rx,
            applied,
            my_epoch: None,
            leading: false,
            leader_cancel: CancellationToken::new(),
            running: HashMap::new(),
            retries: HashMap::new(),
            pending_retries: Vec::new(),
            timers: BTreeSet::new(),
            shuffle: None,
            next_token: 0,
        })
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        self.publish_state();
        let (records_tx, mut records) = mpsc::channel::<RecordBatch>(4);
        tokio::spawn(tail_log(
            self.ctx.bifrost.clone(),
            self.log_id,
            (self.applied + 1).max(FIRST_LSN),
            records_tx,
            cancel.clone(),
        ));
        self.spawn_leadership();
        loop {
            let next_timer = if self.leading {
                self.timers.first().copied()
            } else {
                None
            };
            let timer_sleep = async {
                match next_timer {
                    Some((wake_up, _)) => {
                        tokio::time::sleep(Duration::from_millis(wake_up.saturating_sub(now_ms()))).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                batch = records.recv() => match batch {
                    Some(batch) => {
                        if let Err(error) = batch.and_then(|batch| self.apply_batch(batch)) {
                            tracing::error!(partition = self.partition_id, %error, "cannot apply the partition's log; the processor stops");
                            self.handle.state.set_failed(error);
                            break;
                        }
                    }
                    None => break,
                },
                control = self.control_rx.recv() => {
                    if let Some(control) = control {
                        self.on_control(control);
                    }
                }
                _ = self.appender.failed(), if self.leading => {
                    tracing::warn!(partition = self.partition_id, "an append failed: re-establishing leadership");
                    self.step_down();
                    self.spawn_leadership();
                }
                _ = timer_sleep => {
                    if let Some(timer) = next_timer {
                        self.timers.remove(&timer);
                        self.fire_timer(timer);
                    }
                }
            }
        }
        self.step_down();
        // Callers waiting on this partition learn it stopped instead of hanging.
        self.handle.drop_waiters();
    }

    fn publish_state(&self) {
        self.handle.applied.send_replace(self.applied);
        self.handle.state.update(|state| {
            state.applied_lsn = self.applied;
            state.leader_epoch = self.my_epoch.filter(|_| self.leading);
            state.is_leader = self.leading;
        });
    }

    fn spawn_leadership(&self) {
        let (ctx, appender, control, partition) = (
            self.ctx.clone(),
            self.appender.clone(),
            self.control_tx.clone(),
            self.partition_id,
        );
        tokio::spawn(async move {
            let key = format!("pp_epoch_{partition}");
            let node = ctx.node_id;
            let epoch = ctx
                .metadata
                .read_modify_write::<EpochMetadata, _>(&key, |current| {
                    Ok(ReadModifyWrite::Write(EpochMetadata {
                        epoch: current.map_or(1, |c| c.epoch + 1),
                        node,
                    }))
                })
                .await;
            let epoch = match epoch {
                Ok((_, stored)) => stored.epoch,
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot obtain a leader epoch; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = control.send(Control::LeadershipFailed);
                    return;
                }
            };
            appender.reset(epoch);
            let announce = Envelope {
                timestamp: now_ms(),
                leader_epoch: None,
                dedup: None,
                command: Command::AnnounceLeader { epoch, node },
            };
            match appender.append(&announce).await {
                Ok(_) => {
                    let _ = control.send(Control::Epoch(epoch));
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot announce leadership; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = control.send(Control::LeadershipFailed);
                }
            }
        });
    }

    fn apply_batch(&mut self, batch: Vec<(Lsn, Vec<u8>)>) -> Result<(), String> {
        let mut actions = Vec::new();
        let mut txn = self.store.txn();
        let mut last = self.applied;
        for (lsn, payload) in batch {
            if lsn <= self.applied {
                continue;
            }
            let envelope =
                Envelope::decode(&payload).map_err(|e| format!("record {lsn} of log {}: {e}", self.log_id))?;
            self.state_machine
                .apply(&mut txn, lsn, envelope, &mut actions)
                .map_err(|e| e.to_string())?;
            last = lsn;
        }
        txn.commit().map_err(|e| e.to_string())?;
        self.applied = last;
        for action in actions {
            self.on_action(action);
        }
        if !self.pending_retries.is_empty() {
            let applied = self.applied;
            let (ready, waiting): (Vec<_>, Vec<_>) = self
                .pending_retries
                .drain(..)
                .partition(|(_, min_lsn)| *min_lsn <= applied);
            self.pending_retries = waiting;
            for (id, _) in ready {
                self.start_attempt(id);
            }
        }
        self.publish_state();
        Ok(())
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::LeaderAnnounced { epoch, .. } => {
                if Some(epoch) == self.my_epoch {
                    self.become_leader();
                } else if self.leading {
                    tracing::info!(partition = self.partition_id, epoch, "another leader took over");
                    self.step_down();
                }
            }
            Action::IngressResponse { request_id, id, result } => {
                self.handle.respond(request_id, Answer::Completed(id, result))
            }
            Action::IngressNotFound { request_id } => self.handle.respond(request_id, Answer::NotFound),
            Action::Submitted { request_id, new, .. } => self.handle.respond(request_id, Answer::Submitted(new)),
            _ if !self.leading => {}
            Action::Created => self.ctx.metrics.invocation("created"),
            Action::Completed { failed } => self.ctx.metrics.invocation(if failed { "failed" } else { "succeeded" }),
            Action::Invoke(id) => self.start_attempt(id),
            Action::Notify {
                id,
                index,
                message_type,
                payload,
            } => {
                if let Some(running) = self.running.get(&id)
                    && index >= running.replayed
                {
                    let frame = live_frame(running, message_type, payload);
                    if let Some(frame) = frame {
                        let _ = running.notify.send(frame);
                    }
                }
            }
            Action::Abort(id) => {
                if let Some(running) = self.running.remove(&id) {
                    running.cancel.cancel();
                }
                self.retries.remove(&id);
                self.handle.state.forget_attempt(&id);
            }
            Action::RegisterTimer { wake_up, seq } => {
                self.timers.insert((wake_up, seq));
            }
            Action::Outbox { .. } => {
                if let Some(shuffle) = &self.shuffle {
                    let _ = shuffle.send(());
                }
            }
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Epoch(epoch) => {
                self.my_epoch = Some(epoch);
                // The announcement may have been applied before this message arrived.
                let announced = self.store.get::<u64>(&fsm_key(state_machine::fsm::LEADER_EPOCH));
                if !self.leading && matches!(announced, Ok(Some(e)) if e == epoch) {
                    self.become_leader();
                }
            }
            Control::LeadershipFailed => self.spawn_leadership(),
            Control::AttemptFinished { id, token, report } => {
                // A report of an attempt that was replaced or aborted meanwhile says nothing
                // about the invocation now.
                if self.running.get(&id).is_none_or(|r| r.token != token) {
                    return;
                }
                self.running.remove(&id);
                match report.outcome {
                    AttemptOutcome::Ended | AttemptOutcome::Suspended => {
                        self.retries.remove(&id);
                        self.handle.state.forget_attempt(&id);
                    }
                    AttemptOutcome::Cancelled => self.handle.state.forget_attempt(&id),
                    AttemptOutcome::Failed(error) => {
                        self.attempt_failed(id, error, report.last_lsn, report.made_progress)
                    }
                }
            }
            Control::Retry { id, min_lsn } => {
                if min_lsn <= self.applied {
                    self.start_attempt(id);
                } else {
                    self.pending_retries.push((id, min_lsn));
                }
            }
        }
    }

    fn become_leader(&mut self) {
        tracing::info!(partition = self.partition_id, epoch = ?self.my_epoch, "leading the partition");
        self.leading = true;
        self.leader_cancel = CancellationToken::new();
        self.timers.clear();
        if let Ok(timers) = self.store.scan_raw(TableKind::Timer.prefix()) {
            for (key, _) in timers {
                if let (Some(wake_up), Some(seq)) = (read_u64(&key, 2), read_u64(&key, 10)) {
                    self.timers.insert((wake_up, seq));
                }
            }
        }
        let (shuffle_tx, shuffle_rx) = mpsc::unbounded_channel();
        let _ = shuffle_tx.send(());
        self.shuffle = Some(shuffle_tx);
        tokio::spawn(shuffle(
            self.ctx.clone(),
            self.store.clone(),
            self.appender.clone(),
            self.partition_id,
            self.my_epoch.unwrap_or_default(),
            shuffle_rx,
            self.leader_cancel.clone(),
        ));
        tokio::spawn(cleaner(
            self.store.clone(),
            self.appender.clone(),
            self.my_epoch.unwrap_or_default(),
            self.ctx.settings.cleanup_interval,
            self.leader_cancel.clone(),
        ));
        let mut invoked = Vec::new();
        match self.store.scan_raw(TableKind::InvocationStatus.prefix()) {
            Ok(statuses) => {
                for (key, value) in statuses {
                    match (
                        InvocationId::from_raw(&key[2..]),
                        postcard::from_bytes::<InvocationStatus>(&value),
                    ) {
                        (Some(id), Ok(status)) if status.phase == Phase::Invoked => invoked.push(id),
                        (Some(_), Ok(_)) => {}
                        (id, _) => tracing::error!(
                            partition = self.partition_id, invocation = ?id,
                            "an invocation status does not decode; that invocation cannot run"
                        ),
                    }
                }
            }
            Err(error) => tracing::error!(
                partition = self.partition_id, %error,
                "cannot scan the invocations to resume; they resume when this partition is led again"
            ),
        }
        for id in invoked {
            self.start_attempt(id);
        }
        self.publish_state();
    }

    fn step_down(&mut self) {
        self.leading = false;
        self.leader_cancel.cancel();
        for (_, running) in self.running.drain() {
            running.cancel.cancel();
        }
        self.shuffle = None;
        self.pending_retries.clear();
        self.retries.clear();
        self.handle.state.clear_attempts();
        self.publish_state();
    }

    fn fire_timer(&self, (wake_up, seq): (u64, u64)) {
        let envelope = Envelope {
            timestamp: now_ms(),
            leader_epoch: self.my_epoch,
            dedup: None,
            command: Command::FireTimer { wake_up, seq },
        };
        self.appender.submit(&envelope);
    }

    fn propose_effect(&self, id: InvocationId, effect: Effect) {
        self.appender.submit(&Envelope {
            timestamp: now_ms(),
            leader_epoch: self.my_epoch,
            dedup: None,
            command: Command::InvokerEffect { id, effect },
        })
    }

    fn attempt_failed(&mut self, id: InvocationId, error: AttemptError, last_lsn: Lsn, made_progress: bool) {
        if !self.leading {
            return;
        }
        let Ok(Some(status)) = self.store.get::<InvocationStatus>(&state_machine::status_key(&id)) else {
            return;
        };
        let retry = self.retries.entry(id).or_default();
        retry.attempts = match made_progress {
            true => 1,
            false => retry.attempts + 1,
        };
        let attempts = retry.attempts;
        self.ctx.metrics.attempt("failed");
        let policy = self.ctx.settings.retry_policy(&self.ctx.schema.get(), &status.target);
        tracing::warn!(
            invocation = %id, target = %format!("{}/{}", status.target.service, status.target.handler),
            attempt = attempts, code = error.code, "invocation attempt failed: {}", error.message
        );
        self.propose_effect(
            id,
            Effect::AttemptFailed {
                attempt: attempts,
                code: error.code,
                message: error.message.clone(),
            },
        );
        let exhausted = policy.max_attempts.is_some_and(|max| attempts >= max);
        match error.behavior {
            ErrorBehavior::Fail => {
                self.propose_effect(
                    id,
                    Effect::Fail {
                        code: error.code,
                        message: error.message,
                    },
                );
            }
            ErrorBehavior::Pause => {
                self.propose_effect(id, Effect::Pause);
            }
            ErrorBehavior::Retry if exhausted => {
                let effect = match policy.kill_on_max_attempts {
                    true => Effect::Fail {
                        code: error.code,
                        message: format!("retries exhausted after {attempts} attempts: {}", error.message),
                    },
                    false => Effect::Pause,
                };
                self.propose_effect(id, effect);
            }
            ErrorBehavior::Retry => {
                let delay = error.retry_after.unwrap_or_else(|| policy.delay(attempts));
                let next_retry_at = now_ms() + delay.as_millis() as u64;
                self.handle.state.attempt(id, |info| {
                    info.in_flight = false;
                    info.retry_count = attempts;
                    info.next_retry_at = Some(next_retry_at);
                    info.last_failure = Some((error.code, error.message.clone()));
                });
                let control = self.control_tx.clone();
                let cancel = self.leader_cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {
                            let _ = control.send(Control::Retry { id, min_lsn: last_lsn });
                        }
                    }
                });
            }
        }
    }

    /// Starts an attempt from what the store holds now (the journal and state are read here,
    /// between applied batches, so the attempt sees a consistent journal).
    fn start_attempt(&mut self, id: InvocationId) {
        if !self.leading {
            return;
        }
        if let Some(running) = self.running.get(&id) {
            if !running.terminal.load(Ordering::Acquire) {
                return;
            }
            running.cancel.cancel();
        }
        let status = match self.store.get::<InvocationStatus>(&state_machine::status_key(&id)) {
            Ok(Some(status)) if status.phase == Phase::Invoked => status,
            _ => return,
        };
        let schema = self.ctx.schema.get();
        let prepared = match self.ctx.settings.prepare(&schema, &status) {
            Ok(prepared) => prepared,
            Err(error) => {
                // Nothing was proposed: retry without waiting for the log.
                let applied = self.applied;
                self.attempt_failed(id, error, applied, false);
                return;
            }
        };
        let journal = match self.read_journal(&id, status.journal_length) {
            Ok(journal) => journal,
            Err(error) => {
                let error = AttemptError {
                    code: 500,
                    message: format!("cannot read the journal from the partition store: {error}"),
                    retry_after: None,
                    behavior: ErrorBehavior::Retry,
                };
                let applied = self.applied;
                self.attempt_failed(id, error, applied, false);
                return;
            }
        };
        let state = match (
            &status.target.key,
            status.target.can_read_state() && !prepared.lazy_state,
        ) {
            (Some(key), true) => self.read_state(&status.target.service, key).ok(),
            _ => None,
        };
        let attempts = self.retries.get(&id).map_or(0, |r| r.attempts);
        self.next_token += 1;
        let token = self.next_token;
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let terminal = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(HashSet::new()));
        let cancel = self.leader_cancel.child_token();
        let attempt = Attempt {
            invocation_id: id,
            service: status.target.service.clone(),
            handler: status.target.handler.clone(),
            key: status.target.key.clone(),
            deployment: prepared.deployment,
            version: prepared.version,
            journal,
            state,
            retry_count_since_last_stored_entry: attempts,
            duration_since_last_stored_entry: Duration::from_millis(
                now_ms().saturating_sub(status.journal_modified_at),
            ),
            random_seed: random_seed(&id),
            inactivity_timeout: prepared.inactivity_timeout,
            abort_timeout: prepared.abort_timeout,
            message_size_limit: self.ctx.settings.message_size_limit,
        };
        self.running.insert(
            id,
            Running {
                token,
                notify: notify_tx,
                replayed: status.journal_length,
                terminal: terminal.clone(),
                acks: acks.clone(),
                version: prepared.version,
                cancel: cancel.clone(),
            },
        );
        let driver = AttemptDriver {
            ctx: self.ctx.clone(),
            appender: self.appender.clone(),
            control: self.control_tx.clone(),
            id,
            token,
            epoch: self.my_epoch.unwrap_or_default(),
            target: status.target.clone(),
            pin: prepared.pin,
            has_output: status.output.is_some(),
            terminal,
            acks,
            cancel,
        };
        self.ctx.metrics.attempt("started");
        let (deployment_id, server) = (prepared.deployment_id, prepared.server.clone());
        self.handle.state.attempt(id, |info| {
            info.in_flight = true;
            info.retry_count = attempts;
            info.last_start_at = Some(now_ms());
            info.next_retry_at = None;
            info.deployment_id = Some(deployment_id);
            info.server = server;
        });
        tokio::spawn(driver.run(attempt, notify_rx));
    }

    fn read_journal(&self, id: &InvocationId, length: u32) -> Result<Vec<JournalFrame>, String> {
        let entries = self
            .store
            .scan_raw(state_machine::journal_prefix(id).as_bytes())
            .map_err(|e| e.to_string())?;
        let frames: Vec<JournalFrame> = entries
            .iter()
            .filter_map(|(_, value)| state_machine::decode_entry(value))
            .map(|(message_type, payload)| JournalFrame { message_type, payload })
            .collect();
        if frames.len() != length as usize {
            return Err(format!(
                "the journal has {} entries, its status says {length}",
                frames.len()
            ));
        }
        Ok(frames)
    }

    fn read_state(&self, service: &str, key: &str) -> Result<Vec<(Bytes, Bytes)>, String> {
        let prefix = state_machine::state_prefix(service, key);
        let entries = self.store.scan_raw(prefix.as_bytes()).map_err(|e| e.to_string())?;
        Ok(entries
            .into_iter()
            .map(|(k, v)| (Bytes::copy_from_slice(&k[prefix.as_bytes().len()..]), Bytes::from(v)))
            .collect())
    }
}

fn fsm_key(id: u8) -> Key {
    Key::new(TableKind::Fsm).u8(id)
}

/// The frame to send live for a notification: the notification itself, or, for a run
/// completion the SDK asked to be acknowledged (V7), the acknowledgement in its place.
fn live_frame(running: &Running, message_type: u16, payload: Bytes) -> Option<Bytes> {
    if message_type == MessageType::RunCompletionNotification.code()
        && let Ok(notification) = <proto::RunCompletionNotificationMessage as prost::Message>::decode(payload.clone())
        && running
            .acks
            .lock()
            .is_ok_and(|acks| acks.contains(&notification.completion_id))
    {
        let ack = Message::ProposeRunCompletionAck(proto::ProposeRunCompletionAckMessage {
            completion_id: notification.completion_id,
        });
        return Encoder::new(running.version).encode(&ack).ok();
    }
    Some(JournalFrame { message_type, payload }.encode())
}

/// The seed SDKs derive randomness from: the same for every attempt of an invocation.
fn random_seed(id: &InvocationId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&id.to_raw())
}

/// What an attempt needs from the schema and settings.
pub(crate) struct PreparedAttempt {
    pub deployment_id: restate_types::DeploymentId,
    /// The SDK the deployment reported (shown as an attempt's server).
    pub server: Option<String>,
    pub deployment: AttemptDeployment,
    pub version: ServiceProtocolVersion,
    pub pin: Option<Effect>,
    pub lazy_state: bool,
    pub inactivity_timeout: Duration,
    pub abort_timeout: Duration,
}

pub(crate) fn deployment_of(deployment: &restate_types::schema::Deployment) -> AttemptDeployment {
    AttemptDeployment {
        uri: deployment.uri.clone(),
        additional_headers: deployment.additional_headers.clone(),
        use_http_11: deployment.use_http_11 || deployment.http_version == DeploymentHttpVersion::Http11,
        request_response: deployment.protocol_type == ProtocolMode::RequestResponse,
    }
}
