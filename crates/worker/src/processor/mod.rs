//! A partition processor: tails its partition's log, applies every record with the state
//! machine, and, while it leads, runs the leader's tasks (attempts, timers, outbox, cleaner).
//!
//! A record that cannot be applied never stops the processor silently: a store error is
//! retried, a record that cannot be decoded or applied (or panics the state machine) holds the
//! partition at that record, failed with the reason, until an operator skips it
//! (`restatectl partitions skip-record`). Meanwhile callers get an error at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use restate_bifrost::{Bifrost, LogEntry};
use restate_config::Configuration;
use restate_invoker::{AttemptDeployment, AttemptError, AttemptOutcome, ErrorBehavior, InvokerClient};
use restate_metadata_store::MetadataClient;
use restate_partition_store::{Key, PartitionStore, PartitionStoreError, TableKind};
use restate_service_protocol::ServiceProtocolVersion;
use restate_types::InvocationId;
use restate_types::manifest::ProtocolMode;
use restate_types::metadata::{FIRST_LSN, Lsn};
use restate_types::schema::DeploymentHttpVersion;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::appender::Appender;
use self::invocation::{AttemptDriver, AttemptReport, LiveNotification};
use self::timers::TimerQueue;
use crate::handle::{Answer, PartitionHandle};
use crate::leadership::election::Election;
use crate::model::InvocationStatus;
use crate::settings::WorkerSettings;
use crate::state_machine::{self, Action, StateMachine};
use crate::wal::{Command, Effect, Envelope, now_ms};
use restate_metadata_store::SchemaCache;

pub(crate) mod appender;
mod held;
pub(crate) mod invocation;
mod leading;
mod tasks;
mod timers;
use tasks::{cleaner, shuffle, starter, tail_log};

/// Records read from the log in order, or why the log cannot be applied on.
type RecordBatch = Result<Vec<(Lsn, Vec<u8>)>, TrimmedPast>;

/// The partition's log was trimmed past what this replica applied: applying on would skip
/// state changes, so the replica must start again from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrimmedPast {
    /// The last record this replica applied.
    pub applied: Lsn,
    /// The log's first record that can still be read.
    pub trim_point: Lsn,
}

impl TrimmedPast {
    /// The oldest snapshot that lets this replica go on: one that holds every trimmed record.
    pub(crate) fn snapshot_needed(&self) -> Lsn {
        self.trim_point.saturating_sub(1)
    }
}

impl std::fmt::Display for TrimmedPast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the log was trimmed below LSN {}, past what this replica applied ({}): it needs a snapshot of the \
             partition with LSN {} or later",
            self.trim_point,
            self.applied,
            self.snapshot_needed()
        )
    }
}

/// Why a processor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessorExit {
    /// Cancelled (the replica moved away, or the node stops), or its log reader ended.
    Stopped,
    /// It cannot apply on without a snapshot.
    TrimmedPast(TrimmedPast),
}

/// Records applied in one store transaction at most.
const MAX_APPLY_BATCH: usize = 512;

/// The longest wait between two tries of records that hit a store error.
const MAX_STORE_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How often a partition held at a record checks whether an operator skipped it.
const SKIP_POLL_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The failure detector's view: whether a partition's leader is still there.
    pub view: restate_types::ClusterView,
    /// Silence after which a leader's node counts as gone.
    pub failover_silence: Duration,
    /// The replica sets, as this node's worker last read them.
    pub placement: crate::replicas::SharedPlacement,
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
        view: restate_types::ClusterView,
        schema: SchemaCache,
    ) -> Result<Self, String> {
        let client = InvokerClient::new(config.worker.invoker.connect_timeout).map_err(|e| e.to_string())?;
        Ok(Self {
            bifrost,
            schema,
            metadata,
            client,
            settings: WorkerSettings::from_config(config),
            node_id,
            concurrency: Arc::new(Semaphore::new(
                config.worker.invoker.concurrent_invocations_limit.max(1),
            )),
            partitions: Vec::new(),
            metrics: crate::metrics::WorkerMetrics::default(),
            view,
            failover_silence: config.failover_silence(),
            placement: Default::default(),
        })
    }
}

/// How often a follower checks whether it should take over leadership.
const ELECTION_TICK: Duration = Duration::from_millis(50);

/// Messages to the processor loop from its tasks.
pub(crate) enum Control {
    /// Leadership was obtained in metadata with this epoch and announced in the log.
    Epoch(u64),
    /// Run an attempt of this invocation with this concurrency permit.
    Start {
        id: InvocationId,
        permit: OwnedSemaphorePermit,
    },
    AttemptFinished {
        id: InvocationId,
        token: u64,
        report: AttemptReport,
    },
    /// Start the next attempt once the log is applied up to `min_lsn`.
    Retry { id: InvocationId, min_lsn: Lsn },
    /// The leadership task gave up; try again.
    LeadershipFailed,
    /// The shuffle cannot deliver the outbox on (`None`: it can again).
    OutboxProblem(Option<String>),
}

struct Running {
    token: u64,
    notify: mpsc::UnboundedSender<LiveNotification>,
    terminal: Arc<AtomicBool>,
    cancel: CancellationToken,
}

/// Failed attempts since the invocation last stored a command.
#[derive(Default)]
struct RetryState {
    attempts: u32,
}

/// Records of partition `id`'s log its processors skip instead of applying
/// (`pp_skip_<id>` in metadata), set by an operator for a record that cannot be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecords {
    pub lsns: BTreeSet<Lsn>,
}

/// The metadata key of partition `id`'s skipped records.
pub fn skipped_records_key(partition_id: u16) -> String {
    format!("pp_skip_{partition_id}")
}

/// Why a batch could not be applied.
struct ApplyFailure {
    /// The record that failed (`None`: the commit of the whole batch).
    lsn: Option<Lsn>,
    reason: String,
    /// Retrying cannot help (a record that does not decode or apply); a store error may pass.
    permanent: bool,
    /// An operator may skip the record (not when the log itself is inconsistent).
    skippable: bool,
}

/// Records held back because they could not be applied yet.
struct Held {
    batch: Vec<(Lsn, Vec<u8>)>,
    failure: ApplyFailure,
    retries: u32,
    retry_at: Instant,
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
    /// The epoch of the leadership this processor holds now (its stragglers are fenced when
    /// it steps down).
    led_epoch: Option<u64>,
    leading: bool,
    /// Cancels the leader's tasks when leadership ends.
    leader_cancel: CancellationToken,
    running: HashMap<InvocationId, Running>,
    retries: HashMap<InvocationId, RetryState>,
    pending_retries: Vec<(InvocationId, Lsn)>,
    timers: TimerQueue,
    shuffle: Option<mpsc::UnboundedSender<()>>,
    /// Invocations waiting for a concurrency permit go through the leader's starter task.
    starter: Option<mpsc::UnboundedSender<InvocationId>>,
    /// Sent to the starter and not started yet (so each is queued once).
    queued: HashSet<InvocationId>,
    next_token: u64,
    held: Option<Held>,
    skipped: BTreeSet<Lsn>,
    /// Invocations waiting out a retry delay: no attempt starts for them before it.
    backing_off: HashSet<InvocationId>,
    /// Timers wait until then after the log refused a fired one (it is full).
    timers_paused_until: Option<Instant>,
    /// Appender failures counted when this processor last became leader.
    append_failures_seen: u64,
    election: Election,
    /// The leader the latest announcement replaced (to know whether a handover is from a
    /// node that may still be running invocations).
    replaced_leader: Option<u32>,
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
        let announced = store
            .get::<u64>(&fsm_key(state_machine::fsm::LEADER_EPOCH))?
            .zip(store.get::<u32>(&fsm_key(state_machine::fsm::LEADER_NODE))?);
        let election = Election::new(partition_id, ctx.node_id, announced, Instant::now());
        Ok(Self {
            appender: handle.appender.clone(),
            timers: TimerQueue::new(ctx.settings.timers_in_memory),
            ctx,
            partition_id,
            log_id: u32::from(partition_id),
            store,
            state_machine: StateMachine::new(partition_id, key_range),
            handle,
            control_tx,
            control_rx,
            applied,
            my_epoch: None,
            led_epoch: None,
            leading: false,
            leader_cancel: CancellationToken::new(),
            running: HashMap::new(),
            retries: HashMap::new(),
            pending_retries: Vec::new(),
            shuffle: None,
            starter: None,
            queued: HashSet::new(),
            next_token: 0,
            held: None,
            skipped: BTreeSet::new(),
            backing_off: HashSet::new(),
            timers_paused_until: None,
            append_failures_seen: 0,
            election,
            replaced_leader: None,
        })
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) -> ProcessorExit {
        let mut exit = ProcessorExit::Stopped;
        self.publish_state();
        self.refresh_skipped().await;
        let (records_tx, mut records) = mpsc::channel::<RecordBatch>(4);
        tokio::spawn(tail_log(
            self.ctx.bifrost.clone(),
            self.log_id,
            (self.applied + 1).max(FIRST_LSN),
            records_tx,
            self.handle.clone(),
            cancel.clone(),
        ));
        let mut append_failures = self.appender.failures();
        let mut election_tick = tokio::time::interval(ELECTION_TICK);
        election_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = if self.leading { self.timers.first() } else { None };
            // Timers the store still holds while none is in memory (a read failed): try again.
            let refill = self.leading && next_timer.is_none() && self.timers.needs_refill();
            let paused_until = self.timers_paused_until;
            let timer_sleep = async {
                if let Some(until) = paused_until {
                    tokio::time::sleep_until(until).await;
                }
                match next_timer {
                    Some((wake_up, _)) => {
                        tokio::time::sleep(Duration::from_millis(wake_up.saturating_sub(now_ms()))).await
                    }
                    None if refill => tokio::time::sleep(Duration::from_secs(1)).await,
                    None => std::future::pending().await,
                }
            };
            let retry_at = self.held.as_ref().map(|held| held.retry_at);
            let retry_held = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                batch = records.recv(), if self.held.is_none() => match batch {
                    Some(Ok(batch)) => self.apply_or_hold(batch),
                    Some(Err(gap)) => {
                        // Nothing this processor can do brings the trimmed records back: the
                        // replica starts again from a snapshot (see `Replicas`).
                        tracing::warn!(partition = self.partition_id, "{gap}; the processor stops");
                        self.fail(format!("partition {}: {gap}", self.partition_id));
                        exit = ProcessorExit::TrimmedPast(gap);
                        break;
                    }
                    None => break,
                },
                _ = retry_held => self.retry_held().await,
                _ = election_tick.tick(), if self.held.is_none() => self.elect(),
                control = self.control_rx.recv() => {
                    if let Some(control) = control {
                        self.on_control(control);
                    }
                }
                changed = append_failures.changed() => {
                    if changed.is_ok() {
                        let failures = *append_failures.borrow_and_update();
                        self.on_append_failure(failures);
                    }
                }
                _ = timer_sleep => {
                    self.timers_paused_until = None;
                    match next_timer {
                        Some(timer) => {
                            self.timers.remove(timer);
                            self.refill_timers();
                            self.fire_timer(timer);
                        }
                        None => self.refill_timers(),
                    }
                }
            }
        }
        self.step_down();
        // Callers waiting on this partition learn it stopped instead of hanging.
        self.handle.drop_waiters();
        exit
    }

    fn publish_state(&self) {
        self.handle.applied.send_replace(self.applied);
        self.handle.state.update(|state| {
            state.applied_lsn = self.applied;
            state.leader_epoch = self.my_epoch.filter(|_| self.leading);
            state.is_leader = self.leading;
        });
    }

    /// Marks the partition failed: callers get the reason at once instead of waiting, and
    /// this processor stops leading until it applies again.
    fn fail(&mut self, reason: String) {
        self.handle.state.set_failed(reason);
        self.ctx.metrics.partition_failed(self.partition_id, true);
        self.step_down();
        self.my_epoch = None;
        self.handle.drop_waiters();
    }

    fn recovered(&mut self) {
        tracing::info!(
            partition = self.partition_id,
            applied = self.applied,
            "the partition applies its log again"
        );
        self.handle.state.update(|state| state.failure = None);
        self.ctx.metrics.partition_failed(self.partition_id, false);
    }

    /// Applies a batch, or holds it back (failed, with the reason) when it cannot be applied.
    fn apply_or_hold(&mut self, batch: Vec<(Lsn, Vec<u8>)>) {
        let Err(failure) = self.apply_batch(&batch) else {
            return;
        };
        let mut batch = batch;
        if let Some(lsn) = failure.lsn.filter(|_| failure.permanent) {
            // Apply what precedes the bad record, so the partition stands exactly before it.
            let split = batch.iter().position(|(l, _)| *l == lsn).unwrap_or(0);
            if split > 0 {
                let rest = batch.split_off(split);
                if let Err(failure) = self.apply_batch(&batch) {
                    return self.hold(batch.into_iter().chain(rest).collect(), failure);
                }
                batch = rest;
            }
        }
        self.hold(batch, failure);
    }

    fn apply_batch(&mut self, batch: &[(Lsn, Vec<u8>)]) -> Result<(), ApplyFailure> {
        let mut actions = Vec::new();
        let mut txn = self.store.txn();
        let mut last = self.applied;
        for (lsn, payload) in batch {
            let lsn = *lsn;
            let permanent = |reason: String| ApplyFailure {
                lsn: Some(lsn),
                reason,
                permanent: true,
                skippable: true,
            };
            if lsn <= last {
                // The log handed out an LSN again: applying on (or skipping it) would make this
                // replica diverge from one that reads the log afresh.
                return Err(ApplyFailure {
                    lsn: Some(lsn),
                    reason: format!("the log went backwards: LSN {lsn} after {last} was applied"),
                    permanent: true,
                    skippable: false,
                });
            }
            last = lsn;
            if self.skipped.contains(&lsn) {
                tracing::warn!(
                    partition = self.partition_id,
                    lsn,
                    "skipping a record, as an operator asked"
                );
                self.state_machine.skip(&mut txn, lsn);
                continue;
            }
            let envelope = Envelope::decode(payload).map_err(permanent)?;
            let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.state_machine.apply(&mut txn, lsn, envelope, &mut actions)
            }));
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(error @ PartitionStoreError::Corrupt { .. })) => return Err(permanent(error.to_string())),
                Ok(Err(error)) => {
                    return Err(ApplyFailure {
                        lsn: Some(lsn),
                        reason: error.to_string(),
                        permanent: false,
                        skippable: false,
                    });
                }
                Err(panic) => {
                    let message = invocation::panic_message(panic.as_ref());
                    return Err(permanent(format!("applying it panicked: {message}")));
                }
            }
        }
        txn.commit().map_err(|error| ApplyFailure {
            lsn: None,
            reason: error.to_string(),
            permanent: false,
            skippable: false,
        })?;
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
                self.backing_off.remove(&id);
                self.start_attempt(id);
            }
        }
        self.publish_state();
        Ok(())
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::LeaderAnnounced { epoch, node } => {
                self.replaced_leader = self.election.leader().map(|(_, leader)| leader);
                self.election.announced(epoch, node, Instant::now());
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
            Action::IngressEvicted { request_id } => self.handle.respond(request_id, Answer::Evicted),
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
                if let Some(running) = self.running.get(&id) {
                    let _ = running.notify.send(LiveNotification {
                        index,
                        message_type,
                        payload,
                    });
                }
            }
            Action::Abort(id) => {
                if let Some(running) = self.running.remove(&id) {
                    running.cancel.cancel();
                }
                self.retries.remove(&id);
                self.backing_off.remove(&id);
                self.handle.state.forget_attempt(&id);
            }
            Action::RegisterTimer { wake_up, seq } => self.timers.insert((wake_up, seq)),
            Action::CancelTimer { wake_up, seq } => {
                self.timers.remove((wake_up, seq));
                self.refill_timers();
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
                if !self.election.claim_obtained(epoch) {
                    // A claim that ended after a later one of this processor: the later epoch
                    // fenced this one, and proposals made with it would be refused for good.
                    tracing::debug!(partition = self.partition_id, epoch, mine = ?self.my_epoch, "an outdated claim ended");
                    return;
                }
                if self.held.is_some() {
                    // Failed meanwhile: it seeks leadership again once it applies.
                    return;
                }
                self.my_epoch = Some(epoch);
                // The announcement may have been applied before this message arrived.
                let announced = self.store.get::<u64>(&fsm_key(state_machine::fsm::LEADER_EPOCH));
                if !self.leading && matches!(announced, Ok(Some(e)) if e == epoch) {
                    self.become_leader();
                }
            }
            Control::LeadershipFailed => self.election.claim_failed(),
            Control::Start { id, permit } => {
                self.queued.remove(&id);
                // One found again in the index of running invocations while it waits out a
                // retry delay starts when the delay is over, not now.
                if self.leading && !self.backing_off.contains(&id) {
                    self.spawn_attempt(id, permit);
                }
            }
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
                    self.backing_off.remove(&id);
                    self.start_attempt(id);
                } else {
                    self.pending_retries.push((id, min_lsn));
                }
            }
            Control::OutboxProblem(problem) => self.handle.state.update(|s| s.outbox_problem = problem),
        }
    }

    /// Loads the next timers from the store once the ones in memory ran out.
    fn refill_timers(&mut self) {
        if let Err(error) = self.timers.refill(&self.store) {
            tracing::error!(partition = self.partition_id, %error, "cannot read the next timers");
        }
    }

    fn fire_timer(&mut self, (wake_up, seq): (u64, u64)) {
        let envelope = Envelope {
            timestamp: now_ms(),
            leader_epoch: self.my_epoch,
            dedup: None,
            command: Command::FireTimer { wake_up, seq },
        };
        if !self.appender.submit(&envelope) {
            // The log is full: keep the timer and let the log catch up before firing again.
            self.timers.insert((wake_up, seq));
            self.timers_paused_until = Some(Instant::now() + Duration::from_millis(100));
        }
    }

    /// Proposes what an attempt's failure means; `false` when the log refused it at once.
    fn propose_effect(&self, id: InvocationId, epoch: u32, effect: Effect) -> bool {
        self.appender.submit(&Envelope {
            timestamp: now_ms(),
            leader_epoch: self.my_epoch,
            dedup: None,
            command: Command::InvokerEffect {
                id,
                epoch,
                effects: vec![effect],
            },
        })
    }

    /// Starts another attempt of `id` after `delay`, once the log is applied up to `min_lsn`.
    fn retry_later(&mut self, id: InvocationId, delay: Duration, min_lsn: Lsn) {
        self.backing_off.insert(id);
        let control = self.control_tx.clone();
        let cancel = self.leader_cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    let _ = control.send(Control::Retry { id, min_lsn });
                }
            }
        });
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
        let epoch = status.epoch;
        // Recorded for operators; a refusal of it only loses the record.
        self.propose_effect(
            id,
            epoch,
            Effect::AttemptFailed {
                attempt: attempts,
                code: error.code,
                message: cut(&error.message, MAX_FAILURE_MESSAGE),
            },
        );
        let exhausted = policy.max_attempts.is_some_and(|max| attempts >= max);
        let ending = match error.behavior {
            ErrorBehavior::Fail => Some(Effect::Fail {
                code: error.code,
                message: cut(&error.message, MAX_FAILURE_MESSAGE),
            }),
            ErrorBehavior::Pause => Some(Effect::Pause),
            ErrorBehavior::Retry if exhausted => Some(match policy.kill_on_max_attempts {
                true => Effect::Fail {
                    code: error.code,
                    message: format!(
                        "retries exhausted after {attempts} attempts: {}",
                        cut(&error.message, MAX_FAILURE_MESSAGE)
                    ),
                },
                false => Effect::Pause,
            }),
            ErrorBehavior::Retry => None,
        };
        if let Some(ending) = ending {
            if !self.propose_effect(id, epoch, ending) {
                // The log is full: the invocation is decided again after another attempt.
                let applied = self.applied;
                self.retry_later(id, Duration::from_secs(1), applied);
            }
            return;
        }
        let delay = policy.next_delay(attempts, error.retry_after);
        let next_retry_at = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.handle.state.attempt(id, |info| {
            info.in_flight = false;
            info.retry_count = attempts;
            info.next_retry_at = Some(next_retry_at);
            info.last_failure = Some((error.code, error.message.clone()));
        });
        self.retry_later(id, delay, last_lsn);
    }

    /// Asks for an attempt of `id`: it starts once the leader's starter hands it a permit.
    fn start_attempt(&mut self, id: InvocationId) {
        if !self.leading || self.backing_off.contains(&id) {
            return;
        }
        if self
            .running
            .get(&id)
            .is_some_and(|r| !r.terminal.load(Ordering::Acquire))
        {
            return;
        }
        if self.queued.contains(&id) {
            return;
        }
        // A free permit means nobody waits for one: start at once, without the starter's hop.
        if let Ok(permit) = self.ctx.concurrency.clone().try_acquire_owned() {
            return self.spawn_attempt(id, permit);
        }
        if let Some(starter) = &self.starter {
            self.queued.insert(id);
            let _ = starter.send(id);
        }
    }

    /// Runs an attempt holding `permit`; the driver reads what it replays from the store
    /// itself (the journal is in memory only while the attempt runs).
    fn spawn_attempt(&mut self, id: InvocationId, permit: OwnedSemaphorePermit) {
        if let Some(running) = self.running.get(&id) {
            if !running.terminal.load(Ordering::Acquire) {
                return;
            }
            // The attempt ended (suspended or finished) and its effects may still be applying;
            // the invocation runs again, so that attempt is done.
            running.cancel.cancel();
        }
        self.next_token += 1;
        let token = self.next_token;
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let terminal = Arc::new(AtomicBool::new(false));
        let cancel = self.leader_cancel.child_token();
        self.running.insert(
            id,
            Running {
                token,
                notify: notify_tx,
                terminal: terminal.clone(),
                cancel: cancel.clone(),
            },
        );
        let driver = AttemptDriver {
            ctx: self.ctx.clone(),
            store: self.store.clone(),
            appender: self.appender.clone(),
            control: self.control_tx.clone(),
            state: self.handle.state.clone(),
            id,
            token,
            leader_epoch: self.my_epoch.unwrap_or_default(),
            retry_count: self.retries.get(&id).map_or(0, |r| r.attempts),
            terminal,
            cancel,
        };
        self.ctx.metrics.attempt("started");
        tracing::debug!(partition = self.partition_id, invocation = %id, applied = self.applied, "starting an attempt");
        tokio::spawn(driver.run(permit, notify_rx));
    }
}

/// Bytes of an attempt's failure message kept in the log and the status (an SDK may send a
/// long stack trace with every retry).
const MAX_FAILURE_MESSAGE: usize = 4096;

/// `text` cut to at most `limit` bytes, at a character boundary.
fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …(cut)", &text[..end])
}

fn fsm_key(id: u8) -> Key {
    Key::new(TableKind::Fsm).u8(id)
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
