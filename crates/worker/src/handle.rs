//! This node's partition replicas as the partition API reaches them: submit an invocation to
//! the partition that owns its key (through its log), and wait for its result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use restate_types::InvocationId;
use restate_types::metadata::Lsn;
use tokio::sync::oneshot;

use restate_bifrost::Bifrost;

use restate_partition_api::{
    AttemptInfo, LocalPartition, Managed, Management, Output, PartitionApi, PartitionSnapshot, Restarted, SubmitError,
    Terminated,
};

use crate::model::{InvocationResult, InvocationStatus, InvokeRequest, Phase, ResponseSink, SignalResult};
use crate::processor::appender::{AppendError, Appender};
use crate::wal::{Command, Envelope, now_ms};

/// How long a request waits for its partition to take records again after a failed append
/// (a leader re-establishing itself takes well under a second) before it is refused.
const REESTABLISH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// Pause before proposing a refused record again.
const REFUSED_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// A request that takes this long is logged (at debug) with where its time went.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_millis(200);

/// What a waiting ingress request learns.
#[derive(Debug)]
pub(crate) enum Answer {
    Completed(InvocationId, Arc<InvocationResult>),
    NotFound,
    /// A send: whether it created the invocation.
    Submitted(bool),
    /// Its place among the invocation's waiters was taken by a newer request.
    Evicted,
}

/// How long a caller waits for its record to be applied before reporting the partition stopped.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

type Waiters = Arc<Mutex<HashMap<u128, oneshot::Sender<Answer>>>>;

#[derive(Clone, Default)]
pub struct PartitionState {
    inner: Arc<Mutex<PartitionSnapshot>>,
    attempts: Arc<Mutex<HashMap<InvocationId, AttemptInfo>>>,
}

impl PartitionState {
    pub(crate) fn update(&self, change: impl FnOnce(&mut PartitionSnapshot)) {
        if let Ok(mut state) = self.inner.lock() {
            change(&mut state);
        }
    }

    pub(crate) fn set_failed(&self, reason: String) {
        self.update(|s| {
            s.failure = Some(reason);
            s.is_leader = false;
        });
    }

    pub fn snapshot(&self) -> PartitionSnapshot {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Why the partition cannot apply its log, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.inner.lock().ok().and_then(|s| s.failure.clone())
    }

    pub(crate) fn attempt(&self, id: InvocationId, change: impl FnOnce(&mut AttemptInfo)) {
        if let Ok(mut attempts) = self.attempts.lock() {
            change(attempts.entry(id).or_default());
        }
    }

    pub(crate) fn forget_attempt(&self, id: &InvocationId) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(id);
        }
    }

    pub(crate) fn clear_attempts(&self) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.clear();
        }
    }

    /// The invocations the leader runs or retries now (empty on a follower).
    pub fn attempts(&self) -> HashMap<InvocationId, AttemptInfo> {
        self.attempts.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

/// One partition, as the ingress sees it; cheap to clone.
#[derive(Clone)]
pub struct PartitionHandle {
    pub partition_id: u16,
    /// The processor's applied LSN, for callers that wait until their record took effect.
    pub(crate) applied: Arc<tokio::sync::watch::Sender<Lsn>>,
    pub(crate) appender: Appender,
    /// Read-only: `output` looks results up without going through the log.
    pub(crate) store: restate_partition_store::PartitionStore,
    pub(crate) bifrost: Bifrost,
    waiters: Waiters,
    pub state: PartitionState,
}

/// Removes a waiter whose caller went away (the HTTP client disconnected), and takes its
/// response sink off the invocation, so a client that polls `attach` with a timeout leaves
/// nothing behind.
struct WaiterGuard {
    handle: PartitionHandle,
    request_id: u128,
    /// The invocation that keeps this request as a response sink.
    sink_of: Option<InvocationId>,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let unanswered = self
            .handle
            .waiters
            .lock()
            .is_ok_and(|mut waiters| waiters.remove(&self.request_id).is_some());
        if let (true, Some(id)) = (unanswered, self.sink_of)
            && self.handle.state.failure().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let handle = self.handle.clone();
            let request_id = self.request_id;
            runtime.spawn(async move {
                // Best effort: a sink that stays is answered into the void at the end.
                let _ = handle.append(Command::Detach { id, request_id }).await;
            });
        }
    }
}

impl PartitionHandle {
    pub(crate) fn new(
        partition_id: u16,
        appender: Appender,
        store: restate_partition_store::PartitionStore,
        bifrost: Bifrost,
    ) -> Self {
        let state = PartitionState::default();
        state.update(|s| s.partition_id = partition_id);
        Self {
            partition_id,
            applied: Arc::new(tokio::sync::watch::channel(0).0),
            appender,
            store,
            bifrost,
            waiters: Arc::default(),
            state,
        }
    }

    pub(crate) fn respond(&self, request_id: u128, answer: Answer) {
        if let Ok(mut waiters) = self.waiters.lock()
            && let Some(waiter) = waiters.remove(&request_id)
        {
            let _ = waiter.send(answer);
        }
    }

    /// Refuses at once while the partition cannot apply its log.
    fn check_healthy(&self) -> Result<(), SubmitError> {
        match self.state.failure() {
            Some(reason) => Err(SubmitError::Failed {
                partition: self.partition_id,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Why a waiter got no answer: the partition failed, or stopped.
    fn no_answer(&self) -> SubmitError {
        match self.check_healthy() {
            Err(failed) => failed,
            Ok(()) => SubmitError::Stopped(self.partition_id),
        }
    }

    /// Appends `command` (built with the request id) and waits for the answer to it.
    /// `sink_of`: the invocation that keeps the request as a response sink, if any.
    /// `creates`: the invocation a call or send stores; once its record is durable, no answer
    /// is an [`SubmitError::Unanswered`], never an invitation to send it again.
    async fn request(
        &self,
        sink_of: Option<InvocationId>,
        creates: Option<InvocationId>,
        command: impl FnOnce(u128) -> Command,
    ) -> Result<Answer, SubmitError> {
        let request_id: u128 = rand::random();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(request_id, tx);
        }
        let mut guard = WaiterGuard {
            handle: self.clone(),
            request_id,
            sink_of: None,
        };
        // After the waiter is in place: a failure from now on drops it, so it cannot hang.
        self.check_healthy()?;
        let started = std::time::Instant::now();
        let lsn = self.append(command(request_id)).await?;
        let appended = started.elapsed();
        guard.sink_of = sink_of;
        let answer = rx.await.map_err(|_| match creates {
            Some(id) => self.unanswered(id, self.no_answer()),
            None => self.no_answer(),
        });
        if started.elapsed() >= SLOW_REQUEST {
            tracing::debug!(
                partition = self.partition_id,
                lsn,
                append_ms = appended.as_millis(),
                answer_ms = (started.elapsed() - appended).as_millis(),
                "a slow request"
            );
        }
        answer
    }

    /// What a call or send whose record may be durable tells its caller when no answer comes:
    /// once appended, sending it again would run it twice.
    fn unanswered(&self, id: InvocationId, error: SubmitError) -> SubmitError {
        let reason = match error {
            SubmitError::Failed { reason, .. } => reason,
            SubmitError::Stopped(_) => "the partition stopped".into(),
            SubmitError::Evicted => "too many requests wait for its result".into(),
            other => return other,
        };
        SubmitError::Unanswered {
            partition: self.partition_id,
            id,
            reason,
        }
    }

    /// The stored status of an invocation of this partition (read-only).
    fn status(&self, id: &InvocationId) -> Result<Option<InvocationStatus>, SubmitError> {
        self.store
            .get::<InvocationStatus>(&crate::state_machine::status_key(id))
            .map_err(|e| SubmitError::Failed {
                partition: self.partition_id,
                reason: e.to_string(),
            })
    }

    /// The stored status once this replica applied everything the log held when asked: an
    /// admin read right after a change elsewhere sees it.
    async fn fresh_status(&self, id: &InvocationId) -> Result<Option<InvocationStatus>, SubmitError> {
        self.check_healthy()?;
        let tail = self
            .bifrost
            .find_tail(u32::from(self.partition_id))
            .await
            .map_err(|error| SubmitError::Refused {
                partition: self.partition_id,
                reason: format!("cannot find the log's tail: {error}"),
            })?;
        self.wait_applied(tail.saturating_sub(1)).await?;
        self.status(id)
    }

    /// Appends a command (from outside any leader) and waits until it is durable.
    async fn append(&self, command: Command) -> Result<Lsn, SubmitError> {
        let envelope = Envelope {
            timestamp: now_ms(),
            leader_epoch: None,
            dedup: None,
            command,
        };
        // While the partition re-establishes its leader after a failed append, its appender
        // refuses records: wait for it (bounded) rather than answer 503 at once. A refused
        // record never reached the log, so proposing it again cannot apply it twice.
        let deadline = tokio::time::Instant::now() + REESTABLISH_PATIENCE;
        loop {
            let error = match self.appender.append(&envelope).await {
                Ok(lsn) => return Ok(lsn),
                Err(AppendError::Refused(reason))
                    if self.appender.is_failed() && tokio::time::Instant::now() < deadline =>
                {
                    if self.appender.until_accepting(deadline).await {
                        // Not at once: a log that refuses every record fails it again.
                        tokio::time::sleep(REFUSED_RETRY_PAUSE).await;
                        continue;
                    }
                    AppendError::Refused(format!(
                        "{reason} (waited {REESTABLISH_PATIENCE:?} for the partition to take requests again)"
                    ))
                }
                Err(error) => error,
            };
            return Err(match error {
                AppendError::Refused(reason) => SubmitError::Refused {
                    partition: self.partition_id,
                    reason,
                },
                AppendError::Unknown(reason) => SubmitError::Unknown {
                    partition: self.partition_id,
                    reason,
                },
            });
        }
    }

    /// Waits until the processor applied the log up to `lsn`.
    async fn wait_applied(&self, lsn: Lsn) -> Result<(), SubmitError> {
        let mut applied = self.applied.subscribe();
        match tokio::time::timeout(APPLY_WAIT, applied.wait_for(|applied| *applied >= lsn)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.no_answer()),
        }
    }

    /// Appends a command and waits until the processor applied it, so the caller's next read
    /// (e.g. `output` after a kill) sees its effect.
    async fn apply(&self, command: Command) -> Result<(), SubmitError> {
        self.check_healthy()?;
        let lsn = self.append(command).await?;
        self.wait_applied(lsn).await
    }

    /// Fails every waiting call (the processor stopped or failed; its answers would never come).
    pub(crate) fn drop_waiters(&self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.clear();
        }
    }
}

#[async_trait::async_trait]
impl PartitionApi for PartitionHandle {
    fn partition_id(&self) -> u16 {
        self.partition_id
    }

    /// Stores the invocation and waits for its result (at once if an idempotent duplicate
    /// finds it completed).
    async fn call(&self, mut request: InvokeRequest) -> Result<(InvocationId, Arc<InvocationResult>), SubmitError> {
        let id = request.id;
        let answer = self
            .request(Some(id), Some(id), |request_id| {
                request.response_sink = Some(ResponseSink::Ingress { request_id });
                Command::Invoke(Box::new(request))
            })
            .await;
        match answer {
            Ok(Answer::Completed(id, result)) => Ok((id, result)),
            Ok(Answer::Evicted) => Err(self.unanswered(id, SubmitError::Evicted)),
            Ok(_) => Err(self.unanswered(id, self.no_answer())),
            Err(error) => Err(error),
        }
    }

    /// Stores the invocation; returns whether this created it (`false`: the idempotency key
    /// or id named one that exists).
    async fn send(&self, mut request: InvokeRequest) -> Result<bool, SubmitError> {
        let id = request.id;
        let answer = self
            .request(None, Some(id), |request_id| {
                request.response_sink = None;
                request.submit_notification = Some(request_id);
                Command::Invoke(Box::new(request))
            })
            .await;
        match answer {
            Ok(Answer::Submitted(new)) => Ok(new),
            Ok(_) => Err(self.unanswered(id, self.no_answer())),
            Err(error) => Err(error),
        }
    }

    /// Delivers a signal to an invocation of this partition (e.g. an awakeable's result);
    /// returns once it is durable.
    async fn signal(&self, id: InvocationId, signal: u32, result: SignalResult) -> Result<(), SubmitError> {
        self.check_healthy()?;
        self.append(Command::NotifySignal { id, signal, result })
            .await
            .map(|_| ())
    }

    /// Pauses, resumes or purges the invocation, if its state allows it (see [`Managed`]).
    async fn manage(&self, id: InvocationId, operation: Management) -> Result<Managed, SubmitError> {
        let status = self.fresh_status(&id).await?;
        let Some(phase) = status.map(|s| s.phase) else {
            return Ok(Managed::NotFound);
        };
        let refused = |why: &str| Ok(Managed::Refused(why.to_owned()));
        let command = match (operation, &phase) {
            (Management::Purge, Phase::Completed { .. }) => Command::Purge { id },
            (Management::Purge, _) => return refused("it has not completed; cancel or kill it first"),
            (Management::PurgeJournal, Phase::Completed { .. }) => Command::PurgeJournal { id },
            (Management::PurgeJournal, _) => return refused("it has not completed; cancel or kill it first"),
            (_, Phase::Completed { .. }) => return refused("it has already completed"),
            (Management::Pause, Phase::Paused) | (Management::Resume, Phase::Invoked | Phase::Suspended { .. }) => {
                return Ok(Managed::Done);
            }
            (Management::Pause, Phase::Invoked | Phase::Suspended { .. }) => Command::Pause { id },
            (Management::Resume, Phase::Paused) => Command::Resume { id },
            (_, Phase::Scheduled | Phase::Inboxed { .. }) => return refused("it has not started yet"),
        };
        self.apply(command).await?;
        Ok(Managed::Done)
    }

    /// Starts a new invocation with the input of an ended one (see [`Restarted`]).
    async fn restart_as_new(&self, id: InvocationId) -> Result<Restarted, SubmitError> {
        let refusal = |status: Option<InvocationStatus>| -> Option<Restarted> {
            let Some(status) = status else {
                return Some(Restarted::NotFound);
            };
            match status.phase {
                Phase::Completed { .. }
                    if status.target.handler_type == restate_types::manifest::HandlerType::Workflow =>
                {
                    Some(Restarted::Workflow)
                }
                Phase::Completed { .. } if status.journal_length == 0 => Some(Restarted::JournalGone),
                Phase::Completed { .. } => None,
                Phase::Scheduled | Phase::Inboxed { .. } => Some(Restarted::NotStarted),
                _ => Some(Restarted::StillRunning),
            }
        };
        if let Some(refused) = refusal(self.fresh_status(&id).await?) {
            return Ok(refused);
        }
        // The new invocation stays in this partition: same partition key, a fresh id.
        let new_id = InvocationId::generate(id.partition_key);
        self.apply(Command::RestartAsNew { id, new_id }).await?;
        // Report what the state machine did: the invocation may have changed in between.
        if self.status(&new_id)?.is_some() {
            return Ok(Restarted::Started(new_id));
        }
        Ok(refusal(self.status(&id)?).unwrap_or(Restarted::NotFound))
    }

    /// Replaces the whole state of an object or workflow key; returns once it is durable (it
    /// takes effect when no handler runs on the key).
    async fn patch_state(
        &self,
        service: String,
        key: String,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    ) -> Result<(), SubmitError> {
        self.check_healthy()?;
        let command = Command::PatchState {
            service,
            key,
            state,
            expected_version,
        };
        self.append(command).await.map(|_| ())
    }

    /// Cancels or kills the invocation (see [`Terminated`]).
    async fn terminate(&self, id: InvocationId, kill: bool) -> Result<Terminated, SubmitError> {
        let status = self.fresh_status(&id).await?;
        let terminated = match status.map(|s| s.phase) {
            None => return Ok(Terminated::NotFound),
            Some(Phase::Completed { .. }) => return Ok(Terminated::AlreadyCompleted),
            Some(phase) if kill || !phase.is_in_flight() => Terminated::Done,
            Some(_) => Terminated::Requested,
        };
        self.apply(Command::Terminate { id, kill }).await?;
        Ok(terminated)
    }

    /// Waits for the result of an existing invocation; `None` if there is none.
    async fn attach(&self, id: InvocationId) -> Result<Option<Arc<InvocationResult>>, SubmitError> {
        let answer = self
            .request(Some(id), None, |request_id| Command::Attach {
                id,
                sink: ResponseSink::Ingress { request_id },
            })
            .await?;
        match answer {
            Answer::Completed(_, result) => Ok(Some(result)),
            Answer::NotFound => Ok(None),
            Answer::Evicted => Err(SubmitError::Evicted),
            Answer::Submitted(_) => Err(self.no_answer()),
        }
    }

    /// The invocation's result if it completed (and is still kept), without waiting.
    async fn output(&self, id: InvocationId) -> Result<Output, SubmitError> {
        let status = self.fresh_status(&id).await?;
        Ok(match status {
            None => Output::NotFound,
            Some(InvocationStatus {
                phase: Phase::Completed { .. },
                output: Some(result),
                ..
            }) => Output::Completed(result),
            Some(_) => Output::NotReady,
        })
    }
}

/// The worker of this node, as the node sees it; cheap to clone.
#[derive(Clone, Default)]
pub struct WorkerHandle {
    partitions: Arc<std::sync::RwLock<Arc<ReplicaList>>>,
    snapshotter: Arc<std::sync::OnceLock<Arc<crate::snapshots::Snapshotter>>>,
}

/// This node's replicas with the keys each owns.
type ReplicaList = Vec<(std::ops::RangeInclusive<u64>, PartitionHandle)>;

impl WorkerHandle {
    fn current(&self) -> Arc<ReplicaList> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the replicas (the placement moved some to or from this node).
    pub(crate) fn set(&self, partitions: ReplicaList) {
        *self.partitions.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(partitions);
    }

    /// Gives the handle what taking snapshots needs (once, when the worker starts).
    pub(crate) fn set_snapshotter(&self, snapshotter: Arc<crate::snapshots::Snapshotter>) {
        let _ = self.snapshotter.set(snapshotter);
    }

    /// Takes a snapshot of each partition this node leads (only of `only` if given) into the
    /// snapshot repository; returns what it took (nothing if it leads none of them). With
    /// `trim_log`, each partition's log is then trimmed up to what its snapshot holds.
    pub async fn create_snapshots(
        &self,
        only: Option<u16>,
        trim_log: bool,
    ) -> Result<Vec<crate::snapshots::CreatedSnapshot>, crate::snapshots::SnapshotsError> {
        self.started_snapshotter()?.create(self, only, trim_log).await
    }

    /// The snapshots in the repository (only `only`'s if given), and the repository's URL.
    pub async fn list_snapshots(
        &self,
        only: Option<u16>,
    ) -> Result<(String, Vec<crate::snapshots::ListedSnapshot>), crate::snapshots::SnapshotsError> {
        let snapshotter = self.started_snapshotter()?;
        tokio::task::spawn_blocking(move || snapshotter.list_blocking(only))
            .await
            .map_err(|e| crate::snapshots::SnapshotsError::NotConfigured(e.to_string()))?
    }

    fn started_snapshotter(&self) -> Result<Arc<crate::snapshots::Snapshotter>, crate::snapshots::SnapshotsError> {
        self.snapshotter.get().cloned().ok_or_else(|| {
            crate::snapshots::SnapshotsError::NotConfigured("the worker of this node has not started yet".into())
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// Every partition replica of this node, for the partition API to route to in-process.
    pub fn local_partitions(&self) -> Vec<LocalPartition> {
        self.current()
            .iter()
            .map(|(keys, handle)| LocalPartition {
                partition_id: handle.partition_id,
                keys: keys.clone(),
                api: Arc::new(handle.clone()),
                reader: Arc::new(handle.clone()),
            })
            .collect()
    }

    pub fn partitions(&self) -> Vec<PartitionSnapshot> {
        self.current().iter().map(|(_, h)| h.state.snapshot()).collect()
    }

    /// Each replica's store and reported state, to record what it made durable.
    pub(crate) fn stores(&self) -> Vec<(restate_partition_store::PartitionStore, PartitionState)> {
        self.current()
            .iter()
            .map(|(_, h)| (h.store.clone(), h.state.clone()))
            .collect()
    }
}
