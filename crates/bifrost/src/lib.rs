//! Bifrost: the durable, ordered logs behind the partitions.
//!
//! A log is a chain of segments in `bifrost_config`; the last segment takes appends. A
//! segment's records live in a loglet: `local` (a RocksDB store on one node, for single-node
//! deployments) or `replicated` (one sequencer assigns offsets and stores each record on
//! `replication` log-servers). When a segment's sequencer is gone or its appends keep failing,
//! the segment is sealed and the chain extended with a new one (new sequencer, new nodeset) by
//! compare-and-swap on `bifrost_config`. See `OVERVIEW.md`.

mod chain;
mod error;
#[cfg(test)]
mod fault_tests;
mod follow;
#[cfg(test)]
mod logs_cache_tests;
mod peers;
mod replicated;
mod sequencer;
mod service;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use error::{BifrostError, NotAppended};
use restate_config::{BifrostOptions, Configuration};
use restate_log_server::LogStore;
use restate_metadata_store::MetadataClient;
use restate_types::metadata::{Chain, LogletParams, Lsn, NODES_CONFIG_KEY, NodesConfiguration, ReplicatedParams};
use restate_types::{ClusterView, GenerationalNodeId, PlainNodeId, Role};
pub use service::BifrostService;

use crate::chain::CachedLogs;
use crate::peers::Peers;
use crate::sequencer::Sequencers;

/// Closes this node's sequencer of a loglet that another node sealed (its seal reached this
/// node's log-server): readers waiting at the sequencer for more records of the segment move
/// on to the next one at once, instead of after their wait.
async fn close_sequencers_on_seal(inner: std::sync::Weak<Inner>, mut seals: tokio::sync::broadcast::Receiver<u64>) {
    loop {
        let loglet_id = match seals.recv().await {
            Ok(loglet_id) => loglet_id,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        if let Some(sequencer) = inner.sequencers.get(loglet_id) {
            sequencer.seal();
        }
    }
}

/// Directory of this node's local loglets inside the node directory.
pub const LOCAL_LOGLET_DIR: &str = "local-loglet";

/// One entry read from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    Record {
        lsn: Lsn,
        payload: Vec<u8>,
    },
    /// Records `[from, to)` were trimmed.
    TrimGap {
        from: Lsn,
        to: Lsn,
    },
}

impl LogEntry {
    /// Where a reader continues after this entry.
    pub fn next_lsn(&self) -> Lsn {
        match self {
            LogEntry::Record { lsn, .. } => lsn + 1,
            LogEntry::TrimGap { to, .. } => *to,
        }
    }
}

/// Bifrost on this node; cheap to clone.
#[derive(Clone)]
pub struct Bifrost {
    inner: Arc<Inner>,
}

struct Inner {
    me: GenerationalNodeId,
    metadata: MetadataClient,
    view: ClusterView,
    options: BifrostOptions,
    peers: Arc<Peers>,
    local: LogStore,
    /// Serializes offset assignment of this node's local loglets.
    local_appends: tokio::sync::Mutex<()>,
    /// Bumped after every append to a local loglet, to wake followers.
    local_appended: tokio::sync::watch::Sender<u64>,
    sequencers: Sequencers,
    /// Cached `bifrost_config`; checked again (by version) once it may be stale.
    logs: RwLock<Option<CachedLogs>>,
    /// Bumped by every `forget_logs`: a cache checked at an older epoch may be stale.
    logs_epoch: std::sync::atomic::AtomicU64,
    /// One check of a stale cache at a time: every partition's reader can find it stale at
    /// once (each idle wait ends that way), and one version read answers them all.
    logs_refresh: tokio::sync::Mutex<()>,
    /// Bumped each time this node caches the result of its own change of the chains.
    logs_changes_cached: std::sync::atomic::AtomicU64,
    /// Cached nodes configuration, for addresses and log-server states.
    nodes: RwLock<Option<Arc<NodesConfiguration>>>,
    /// The tail segment of each log as an append last saw it: while the chains cannot be read
    /// (metadata lost its quorum too), it still tells whether a log can take records at all.
    last_tails: std::sync::Mutex<std::collections::HashMap<u32, LogletParams>>,
    /// Bumped when this node extends a chain, so its readers waiting at the old tail
    /// segment's node move on at once.
    chains_extended: tokio::sync::watch::Sender<u64>,
    /// One change of the chains at a time from this node: they all rewrite one metadata key,
    /// and racing each other only made them retry.
    logs_writes: tokio::sync::Mutex<()>,
}

impl Bifrost {
    /// Starts Bifrost for this node (after it joined the cluster as `me`).
    ///
    /// `local_log_server` is this node's log-server, if it runs one: records this node's
    /// sequencers store on it skip gRPC.
    pub fn new(
        config: &Configuration,
        me: GenerationalNodeId,
        metadata: MetadataClient,
        view: ClusterView,
        local_log_server: Option<restate_log_server::LogServerService>,
    ) -> Result<Self, BifrostError> {
        let path = config.node_dir().join(LOCAL_LOGLET_DIR);
        let (local, _) = LogStore::open(&path).map_err(|e| BifrostError::Invalid(e.to_string()))?;
        let mut peers = Peers::new(
            &config.cluster_name,
            config.networking.connect_timeout,
            config.bifrost.replicated_loglet.rpc_timeout,
            config.bifrost.auto_recovery_interval,
            usize::try_from(config.networking.message_size_limit.0).unwrap_or(usize::MAX),
        );
        let seals = local_log_server.as_ref().map(|service| service.seals());
        if let Some(service) = local_log_server {
            peers = peers.with_local_log_server(me.id, service);
        }
        let peers = peers.with_liveness(view.clone(), config.failover_silence(), me.id);
        let bifrost = Self {
            inner: Arc::new(Inner {
                me,
                metadata,
                view,
                options: config.bifrost.clone(),
                peers: Arc::new(peers),
                local,
                local_appends: tokio::sync::Mutex::new(()),
                local_appended: tokio::sync::watch::channel(0).0,
                sequencers: Sequencers::default(),
                logs: RwLock::new(None),
                logs_epoch: Default::default(),
                logs_refresh: tokio::sync::Mutex::new(()),
                logs_changes_cached: Default::default(),
                nodes: RwLock::new(None),
                last_tails: Default::default(),
                chains_extended: tokio::sync::watch::channel(0).0,
                logs_writes: tokio::sync::Mutex::new(()),
            }),
        };
        if let (Some(seals), Ok(runtime)) = (seals, tokio::runtime::Handle::try_current()) {
            runtime.spawn(close_sequencers_on_seal(Arc::downgrade(&bifrost.inner), seals));
        }
        Ok(bifrost)
    }

    pub fn me(&self) -> GenerationalNodeId {
        self.inner.me
    }

    /// Appends records to a log (creating it on first use); returns the LSN of the first
    /// once all are durable under the log's provider.
    pub async fn append(&self, log_id: u32, payloads: Vec<Vec<u8>>) -> Result<Lsn, BifrostError> {
        if payloads.is_empty() {
            return Err(BifrostError::Invalid("an append needs at least one record".into()));
        }
        let deadline = Instant::now() + self.inner.options.append_timeout;
        let mut failing_since: Option<Instant> = None;
        let mut last_error = None;
        while Instant::now() < deadline {
            let chain = match self.chain(log_id, true).await {
                Ok(chain) => chain,
                Err(error @ BifrostError::Unavailable(_)) => {
                    let last_tail = self.last_tails().get(&log_id).cloned();
                    if let Some(lost) = last_tail.and_then(|tail| self.quorum_lost(log_id, &tail)) {
                        return Err(lost);
                    }
                    last_error = Some(self.wait_out(log_id, error).await);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let Some(tail) = chain.tail().cloned() else {
                return Err(BifrostError::Invalid(format!("log {log_id} has an empty chain")));
            };
            self.last_tails().insert(log_id, tail.loglet.clone());
            let attempt_started = Instant::now();
            match self.append_to_segment(&tail.loglet, payloads.clone()).await {
                Ok(offset) => return Ok(tail.base_lsn + u64::from(offset)),
                Err(BifrostError::NotAppended(reason)) => {
                    let reconfigure = match &reason {
                        NotAppended::Sealed | NotAppended::SequencerGone(_) => true,
                        NotAppended::Transient(_) => {
                            let since = *failing_since.get_or_insert(attempt_started);
                            since.elapsed() >= self.inner.options.auto_recovery_interval
                                || self.too_few_live_members(&tail.loglet)
                        }
                    };
                    tracing::debug!(log_id, %reason, reconfigure, "append did not land; retrying");
                    // No new segment can be placed either: say so now instead of retrying
                    // until the append timeout.
                    if let Some(lost) = self.quorum_lost(log_id, &tail.loglet) {
                        return Err(lost);
                    }
                    if reconfigure {
                        failing_since = None;
                        if let Err(error) = self.seal_and_extend(log_id, tail.index).await {
                            if let Some(lost) = self.quorum_lost(log_id, &tail.loglet) {
                                return Err(lost);
                            }
                            tracing::warn!(log_id, %error, "cannot reconfigure the log yet");
                            last_error = Some(error);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    self.forget_logs();
                    last_error = Some(BifrostError::NotAppended(reason));
                }
                Err(error @ BifrostError::Unavailable(_)) => last_error = Some(self.wait_out(log_id, error).await),
                Err(error) => return Err(error),
            }
        }
        let waited = self.inner.options.append_timeout;
        Err(match last_error {
            Some(BifrostError::Unavailable(reason)) => BifrostError::Unavailable(format!(
                "{reason} (gave up after [bifrost] append-timeout = {waited:?})"
            )),
            Some(error) => error,
            None => BifrostError::Unavailable(format!("log {log_id} took no records within {waited:?}")),
        })
    }

    fn last_tails(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, LogletParams>> {
        self.inner
            .last_tails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pauses an append that cannot proceed yet (e.g. too few log-servers), saying why, and
    /// makes the next attempt re-read the chains.
    async fn wait_out(&self, log_id: u32, error: BifrostError) -> BifrostError {
        tracing::warn!(log_id, %error, "appends wait");
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.forget_logs();
        error
    }

    async fn append_to_segment(&self, loglet: &LogletParams, payloads: Vec<Vec<u8>>) -> Result<u32, BifrostError> {
        let me = self.inner.me;
        match loglet {
            LogletParams::Local { loglet_id, node } if *node == me.id => self.append_local(*loglet_id, &payloads).await,
            LogletParams::Local { loglet_id, node } => self.forward(*node, *loglet_id, 0, payloads).await,
            LogletParams::Replicated(params) if params.sequencer == me => {
                let addresses = self.addresses().await?;
                let sequencer = self
                    .inner
                    .sequencers
                    .get_or_create(params, || addresses, &self.inner.peers);
                sequencer.append(payloads).await
            }
            LogletParams::Replicated(params) => {
                if self.gone(params.sequencer.id) {
                    return Err(BifrostError::sequencer_gone(format!(
                        "{} stopped answering",
                        params.sequencer
                    )));
                }
                if self.current_generation(params.sequencer.id).await? > params.sequencer.generation {
                    return Err(BifrostError::sequencer_gone(format!("{} restarted", params.sequencer)));
                }
                self.forward(
                    params.sequencer.id,
                    params.loglet_id,
                    params.sequencer.generation,
                    payloads,
                )
                .await
            }
        }
    }

    /// Whether `node` is dead, refuses connections or has been silent for the failover silence:
    /// appends move on from a sequencer or log-server in that state instead of waiting for it.
    pub(crate) fn gone(&self, node: PlainNodeId) -> bool {
        node != self.inner.me.id && (self.inner.view.is_dead(node) || self.inner.peers.silent(node))
    }

    /// Whether a replicated segment's nodeset has fewer members alive (per the failure
    /// detector) than copies to store: no retry can succeed until the log moves to live nodes.
    fn too_few_live_members(&self, loglet: &LogletParams) -> bool {
        match loglet {
            LogletParams::Replicated(params) => {
                let live = params.nodeset.iter().filter(|node| !self.gone(**node)).count();
                live < usize::from(params.replication.num_copies())
            }
            LogletParams::Local { .. } => false,
        }
    }

    /// Why a replicated segment can take no records and no new segment can be placed: fewer
    /// of its members and fewer of the cluster's log-servers are alive than copies needed (dead
    /// per the failure detector: refused connections, or silent past `gossip-dead-after`).
    fn quorum_lost(&self, log_id: u32, loglet: &LogletParams) -> Option<BifrostError> {
        let LogletParams::Replicated(params) = loglet else {
            return None;
        };
        let copies = usize::from(params.replication.num_copies());
        let alive = |node: &PlainNodeId| *node == self.inner.me.id || !self.inner.view.is_dead(*node);
        let members = params.nodeset.iter().filter(|node| alive(node)).count();
        let log_servers = self.inner.view.nodes_with_role(Role::LogServer);
        let (up, down): (Vec<PlainNodeId>, Vec<PlainNodeId>) = log_servers.iter().partition(|node| alive(node));
        if members >= copies || up.len() >= copies || log_servers.is_empty() {
            return None;
        }
        let down: Vec<String> = down.iter().map(ToString::to_string).collect();
        Some(BifrostError::Unavailable(format!(
            "log {log_id} cannot take records: {} of the {} log-servers are alive ({} down), and every record \
             needs {copies} copies; nothing was written, and appending again succeeds once enough log-servers are back",
            up.len(),
            log_servers.len(),
            down.join(", ")
        )))
    }

    /// Appends to one of this node's local loglets: offsets are assigned one append at a time.
    pub(crate) async fn append_local(&self, loglet_id: u64, payloads: &[Vec<u8>]) -> Result<u32, BifrostError> {
        let _serial = self.inner.local_appends.lock().await;
        let store = &self.inner.local;
        let state = store
            .state(loglet_id)
            .map_err(|e| BifrostError::Unavailable(e.to_string()))?;
        if state.sealed {
            return Err(BifrostError::sealed());
        }
        let first = state.local_tail;
        let owner = (self.inner.me.id.0, 0);
        match store.store(loglet_id, owner, first, payloads, first, false).await {
            Ok(Ok(_)) => {
                self.inner.local_appended.send_modify(|count| *count += 1);
                Ok(first)
            }
            Ok(Err(_)) => Err(BifrostError::sealed()),
            Err(error) => Err(BifrostError::UnknownOutcome(error.to_string())),
        }
    }

    /// Sends an append to the node that runs the loglet's sequencer (or owns a local loglet).
    async fn forward(
        &self,
        node: PlainNodeId,
        loglet_id: u64,
        generation: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Result<u32, BifrostError> {
        let address = self.address_of(node).await?;
        let mut client = self.inner.peers.bifrost(&address)?;
        let request = restate_proto::bifrost::SequencerAppendRequest {
            loglet_id,
            sequencer_generation: generation,
            payloads,
        };
        // Long enough for the sequencer to finish the batch: giving up earlier would report
        // "outcome unknown" for records that are still being stored.
        // A sequencer that stops answering heartbeats meanwhile (a paused node keeps the
        // connection open) is not waited for: its segment is about to be sealed.
        let waited = self.inner.peers.forward_timeout();
        tokio::select! {
            answer = tokio::time::timeout(waited, client.sequencer_append(request)) => match answer {
                Ok(Ok(response)) => Ok(response.into_inner().first_offset),
                Ok(Err(status)) => {
                    if peers::refused(&status) {
                        self.inner.peers.note_refused(node);
                    }
                    Err(service::status_to_error(&status, node))
                }
                Err(_) => Err(BifrostError::UnknownOutcome(format!(
                    "{node} did not answer the forwarded append within {waited:?}"
                ))),
            },
            () = self.until_gone(node) => Err(BifrostError::UnknownOutcome(format!(
                "{node} stopped answering heartbeats while it held the forwarded append"
            ))),
        }
    }

    /// Resolves once `node` is [gone](Self::gone).
    pub(crate) async fn until_gone(&self, node: PlainNodeId) {
        restate_net::until(|| self.gone(node)).await;
    }

    /// Serves an append forwarded by another node.
    pub(crate) async fn serve_forwarded_append(
        &self,
        loglet_id: u64,
        generation: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Result<u32, BifrostError> {
        let me = self.inner.me;
        if generation == 0 {
            return self.append_local(loglet_id, &payloads).await;
        }
        if generation != me.generation {
            return Err(BifrostError::sequencer_gone(format!(
                "{} is not running the sequencer of generation {generation}",
                me
            )));
        }
        let params = self.replicated_params(loglet_id).await?;
        if params.sequencer != me {
            return Err(BifrostError::sequencer_gone(format!(
                "{me} is not this loglet's sequencer"
            )));
        }
        let addresses = self.addresses().await?;
        self.inner
            .sequencers
            .get_or_create(&params, || addresses, &self.inner.peers)
            .append(payloads)
            .await
    }

    /// The params of a replicated loglet, from the (refreshed if needed) chains.
    async fn replicated_params(&self, loglet_id: u64) -> Result<ReplicatedParams, BifrostError> {
        let log_id = (loglet_id >> 32) as u32;
        for refresh in [false, true] {
            if refresh {
                self.forget_logs();
            }
            let chain = self.chain(log_id, false).await?;
            if let Some(LogletParams::Replicated(params)) = chain
                .segments
                .iter()
                .map(|s| &s.loglet)
                .find(|l| l.loglet_id() == loglet_id)
            {
                return Ok(params.clone());
            }
        }
        Err(BifrostError::sequencer_gone(format!(
            "loglet {} is not a replicated segment of log {log_id}",
            restate_types::metadata::display_loglet_id(loglet_id)
        )))
    }

    /// Marks the cached chains as possibly stale: the next look-up compares the stored
    /// version first and decodes the configuration again only if it changed.
    fn forget_logs(&self) {
        self.inner.logs_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    async fn nodes_config(&self, refresh: bool) -> Result<Arc<NodesConfiguration>, BifrostError> {
        if !refresh && let Some(nodes) = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(nodes);
        }
        let nodes = self
            .inner
            .metadata
            .get_json::<NodesConfiguration>(NODES_CONFIG_KEY)
            .await
            .map_err(|e| BifrostError::Unavailable(e.to_string()))?
            .map(|(_, nodes)| Arc::new(nodes))
            .ok_or_else(|| BifrostError::Unavailable("the cluster is not provisioned".into()))?;
        *self.inner.nodes.write().unwrap_or_else(|p| p.into_inner()) = Some(nodes.clone());
        Ok(nodes)
    }

    async fn address_of(&self, node: PlainNodeId) -> Result<String, BifrostError> {
        for refresh in [false, true] {
            if let Some(found) = self.nodes_config(refresh).await?.nodes.get(&node) {
                return Ok(found.address.clone());
            }
        }
        Err(BifrostError::Unavailable(format!(
            "{node} is not in the nodes configuration"
        )))
    }

    async fn current_generation(&self, node: PlainNodeId) -> Result<u32, BifrostError> {
        let cached = self.nodes_config(false).await?;
        let generation = cached.nodes.get(&node).map_or(0, |n| n.generation);
        Ok(generation)
    }

    async fn addresses(&self) -> Result<HashMap<PlainNodeId, String>, BifrostError> {
        Ok(self
            .nodes_config(false)
            .await?
            .nodes
            .values()
            .map(|n| (n.id, n.address.clone()))
            .collect())
    }

    /// Reads up to `max` entries from `from` on (records, or a trim gap).
    pub async fn read(&self, log_id: u32, from: Lsn, max: usize) -> Result<(Vec<LogEntry>, Lsn), BifrostError> {
        let mut chain = self.chain(log_id, false).await?;
        let tail = self.find_tail_of(log_id, &chain).await?;
        if from > tail {
            // Our cached chain may be behind a reconfiguration.
            self.forget_logs();
            chain = self.chain(log_id, false).await?;
        }
        let tail = self.find_tail_of(log_id, &chain).await?;
        if from < chain.trim_point {
            return Ok((
                vec![LogEntry::TrimGap {
                    from,
                    to: chain.trim_point,
                }],
                tail,
            ));
        }
        let mut entries = Vec::new();
        let mut lsn = from;
        while entries.len() < max && lsn < tail {
            let Some((segment, end)) = chain.find(lsn) else { break };
            let end = end.unwrap_or(tail).min(tail);
            if lsn >= end {
                break;
            }
            let from_offset = (lsn - segment.base_lsn) as u32;
            let to_offset = ((end - segment.base_lsn) as u32).min(from_offset + (max - entries.len()) as u32);
            let records = match &segment.loglet {
                LogletParams::Local { loglet_id, node } if *node == self.inner.me.id => {
                    let count = (to_offset - from_offset) as usize;
                    let range = (self.inner.local)
                        .read_records(*loglet_id, from_offset, to_offset, count)
                        .await
                        .map_err(|e| BifrostError::Unavailable(format!("reading the local loglet failed: {e}")))?;
                    if !range.corrupt.is_empty() {
                        return Err(BifrostError::Unavailable(format!(
                            "local loglet records {:?} fail their checksum",
                            range.corrupt
                        )));
                    }
                    let trimmed_to = range.state.trim_point.min(to_offset);
                    if trimmed_to > from_offset {
                        let to = segment.base_lsn + u64::from(trimmed_to);
                        entries.push(LogEntry::TrimGap { from: lsn, to });
                        lsn = to;
                    }
                    range.records
                }
                LogletParams::Local { node, .. } => {
                    return Err(BifrostError::Invalid(format!(
                        "log {log_id} is a local log of {node}; read it there"
                    )));
                }
                LogletParams::Replicated(params)
                    if params.sequencer == self.inner.me
                        && let Some(records) = self
                            .inner
                            .sequencers
                            .get(params.loglet_id)
                            .and_then(|s| s.recent_records(from_offset, to_offset)) =>
                {
                    records
                }
                LogletParams::Replicated(params) => {
                    let addresses = self.addresses().await?;
                    let range = replicated::read(&self.inner.peers, params, &addresses, from_offset, to_offset).await?;
                    if range.trimmed_to > from_offset {
                        // Another node trimmed the log since this node cached the chain.
                        self.forget_logs();
                        let to = segment.base_lsn + u64::from(range.trimmed_to);
                        entries.push(LogEntry::TrimGap { from: lsn, to });
                        lsn = to;
                    }
                    range.records
                }
            };
            for (offset, payload) in records {
                let record_lsn = segment.base_lsn + u64::from(offset);
                if record_lsn != lsn {
                    self.forget_logs();
                    return Err(BifrostError::Unavailable(format!(
                        "log {log_id}: record {lsn} is missing (found {record_lsn} next)"
                    )));
                }
                entries.push(LogEntry::Record { lsn, payload });
                lsn += 1;
            }
            if lsn < segment.base_lsn + u64::from(to_offset) {
                break;
            }
        }
        Ok((entries, tail))
    }

    /// Whether `log_id` is a partition's log (partition `n` writes log `n`).
    pub async fn is_partition_log(&self, log_id: u32) -> Result<bool, BifrostError> {
        let table = self
            .inner
            .metadata
            .get_json::<restate_types::metadata::PartitionTable>(restate_types::metadata::PARTITION_TABLE_KEY)
            .await
            .map_err(|e| BifrostError::Unavailable(format!("cannot read the partition table: {e}")))?;
        Ok(table.is_some_and(|(_, table)| table.partitions.iter().any(|p| u32::from(p.id) == log_id)))
    }

    /// The next LSN to be written.
    pub async fn find_tail(&self, log_id: u32) -> Result<Lsn, BifrostError> {
        let chain = self.chain(log_id, false).await?;
        self.find_tail_of(log_id, &chain).await
    }

    async fn find_tail_of(&self, log_id: u32, chain: &Chain) -> Result<Lsn, BifrostError> {
        let Some(tail) = chain.tail() else {
            return Err(BifrostError::Invalid(format!("log {log_id} has an empty chain")));
        };
        let committed = match &tail.loglet {
            LogletParams::Local { loglet_id, node } if *node == self.inner.me.id => {
                self.inner
                    .local
                    .state(*loglet_id)
                    .map_err(|e| BifrostError::Unavailable(e.to_string()))?
                    .local_tail
            }
            LogletParams::Local { loglet_id, node } => self.remote_tail(*node, *loglet_id, None).await?,
            LogletParams::Replicated(params) if params.sequencer == self.inner.me => self
                .inner
                .sequencers
                .get(params.loglet_id)
                .map_or(0, |s| s.committed_tail()),
            LogletParams::Replicated(params) => {
                let asked = match self.gone(params.sequencer.id) {
                    true => Err(BifrostError::Unavailable(format!("{} is gone", params.sequencer))),
                    false => self.remote_tail(params.sequencer.id, params.loglet_id, None).await,
                };
                match asked {
                    Ok(tail) => tail,
                    // The sequencer is unreachable: what log-servers know to be committed.
                    Err(_) => {
                        let addresses = self.addresses().await?;
                        replicated::known_global_tail(&self.inner.peers, params, &addresses).await
                    }
                }
            }
        };
        Ok(tail.base_lsn + u64::from(committed))
    }

    /// The committed tail of a loglet whose sequencer (or local store) is on `node`; with
    /// `wait`, the node answers once the tail is above the offset, or after the duration.
    async fn remote_tail(
        &self,
        node: PlainNodeId,
        loglet_id: u64,
        wait: Option<(u32, Duration)>,
    ) -> Result<u32, BifrostError> {
        let address = self.address_of(node).await?;
        let mut client = self.inner.peers.bifrost(&address)?;
        let max_wait = wait.map_or(Duration::ZERO, |(_, max_wait)| max_wait);
        let request = restate_proto::bifrost::SequencerTailRequest {
            loglet_id,
            wait_beyond: wait.map(|(beyond, _)| beyond),
            max_wait_ms: max_wait.as_millis().try_into().unwrap_or(u32::MAX),
        };
        let deadline = self.inner.peers.rpc_timeout + max_wait;
        tokio::select! {
            answer = tokio::time::timeout(deadline, client.sequencer_tail(request)) => match answer {
                Ok(Ok(response)) => Ok(response.into_inner().committed_tail),
                Ok(Err(status)) => Err(BifrostError::Unavailable(format!("{node}: {}", status.message()))),
                Err(_) => Err(BifrostError::Unavailable(format!("{node}: no answer"))),
            },
            () = self.until_gone(node) => Err(BifrostError::Unavailable(format!("{node}: stopped answering heartbeats"))),
        }
    }
}
