//! Chains in `bifrost_config`: lazy creation, sealing and extending, trimming. Every change
//! is a compare-and-swap of `bifrost_config`, so concurrent reconfigurations of one log settle
//! on one result.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use restate_metadata_store::{ReadModifyWrite, WriteError};
use restate_types::metadata::Version;
use restate_types::metadata::{
    BIFROST_CONFIG_KEY, Chain, FIRST_LSN, LogProviderConfig, LogletParams, LogsConfiguration, Lsn, ReplicatedParams,
    Segment, StorageState, display_loglet_id, loglet_id,
};
use restate_types::{PlainNodeId, Role};

use crate::{Bifrost, BifrostError, replicated};

/// `bifrost_config` as this node last read or wrote it.
#[derive(Clone)]
pub(crate) struct CachedLogs {
    version: Version,
    logs: Arc<LogsConfiguration>,
    /// The `logs_epoch` at which this was known to be current.
    checked_at_epoch: u64,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn metadata_error(error: WriteError) -> BifrostError {
    match error {
        WriteError::Rejected(reason) => BifrostError::Invalid(reason),
        other => BifrostError::Unavailable(format!("updating `{BIFROST_CONFIG_KEY}`: {other}")),
    }
}

impl Bifrost {
    /// The cached configuration, shared (every append and read looks its log up here). Once
    /// forgotten, the store's version is read first: the configuration (every log's chain) is
    /// fetched and decoded again only when it changed, which the idle readers' checks rarely find.
    async fn logs(&self) -> Result<Arc<LogsConfiguration>, BifrostError> {
        if let Some(logs) = self.cached_logs_checked_since(self.logs_epoch()) {
            return Ok(logs);
        }
        let _one_check_at_a_time = self.inner.logs_refresh.lock().await;
        // Forgets after this point are honoured by the next look-up.
        let epoch = self.logs_epoch();
        if let Some(logs) = self.cached_logs_checked_since(epoch) {
            return Ok(logs);
        }
        let written_before = self.inner.logs_changes_cached.load(Ordering::Acquire);
        let cached = self.cached_logs();
        if let Some(cached) = cached {
            let current = self
                .inner
                .metadata
                .get_version(BIFROST_CONFIG_KEY)
                .await
                .map_err(|e| BifrostError::Unavailable(e.to_string()))?;
            if current == Some(cached.version) {
                let logs = cached.logs.clone();
                self.cache_read_logs(
                    written_before,
                    CachedLogs {
                        checked_at_epoch: epoch,
                        ..cached
                    },
                );
                return Ok(logs);
            }
        }
        let (version, logs) = self
            .inner
            .metadata
            .get_json::<LogsConfiguration>(BIFROST_CONFIG_KEY)
            .await
            .map_err(|e| BifrostError::Unavailable(e.to_string()))?
            .ok_or_else(|| BifrostError::Unavailable("the logs configuration does not exist yet".into()))?;
        let logs = Arc::new(logs);
        self.cache_read_logs(
            written_before,
            CachedLogs {
                version,
                logs: logs.clone(),
                checked_at_epoch: epoch,
            },
        );
        Ok(logs)
    }

    fn logs_epoch(&self) -> u64 {
        self.inner.logs_epoch.load(Ordering::Acquire)
    }

    fn cached_logs(&self) -> Option<CachedLogs> {
        self.inner.logs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cached_logs_checked_since(&self, epoch: u64) -> Option<Arc<LogsConfiguration>> {
        self.cached_logs()
            .filter(|cached| cached.checked_at_epoch == epoch)
            .map(|cached| cached.logs)
    }

    /// Caches what a refresh read, unless this node changed the chains (and cached the result)
    /// since the refresh began: what it read may be older than that change.
    fn cache_read_logs(&self, written_before: u64, cached: CachedLogs) {
        let mut slot = self.inner.logs.write().unwrap_or_else(|p| p.into_inner());
        if self.inner.logs_changes_cached.load(Ordering::Acquire) == written_before {
            *slot = Some(cached);
        }
    }

    /// Caches the result of a change this node made.
    fn cache_changed_logs(&self, cached: CachedLogs) {
        let mut slot = self.inner.logs.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(cached);
        self.inner.logs_changes_cached.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes `bifrost_config` by compare-and-swap (`change` says whether it changed
    /// anything) and caches the result.
    async fn update_logs(
        &self,
        mut change: impl FnMut(&mut LogsConfiguration) -> Result<bool, WriteError>,
    ) -> Result<LogsConfiguration, BifrostError> {
        let _one_at_a_time = self.inner.logs_writes.lock().await;
        let epoch = self.logs_epoch();
        let (version, logs) = self
            .inner
            .metadata
            .read_modify_write(BIFROST_CONFIG_KEY, |current: Option<&LogsConfiguration>| {
                let mut logs = current
                    .cloned()
                    .ok_or_else(|| WriteError::Rejected("the logs configuration does not exist".into()))?;
                match change(&mut logs)? {
                    true => Ok(ReadModifyWrite::Write(logs)),
                    false => Ok(ReadModifyWrite::Keep),
                }
            })
            .await
            .map_err(metadata_error)?;
        self.cache_changed_logs(CachedLogs {
            version,
            logs: Arc::new(logs.clone()),
            checked_at_epoch: epoch,
        });
        Ok(logs)
    }

    /// Every log's chain.
    pub async fn chains(&self) -> Result<LogsConfiguration, BifrostError> {
        self.forget_logs();
        Ok(self.logs().await?.as_ref().clone())
    }

    /// The chain of `log_id`; with `create`, a missing log gets its first segment.
    pub(crate) async fn chain(&self, log_id: u32, create: bool) -> Result<Chain, BifrostError> {
        if let Some(chain) = self.logs().await?.logs.get(&log_id) {
            return Ok(chain.clone());
        }
        self.forget_logs();
        if let Some(chain) = self.logs().await?.logs.get(&log_id) {
            return Ok(chain.clone());
        }
        if !create {
            return Err(BifrostError::Invalid(format!("log {log_id} does not exist")));
        }
        let provider = self.logs().await?.default_provider.clone();
        let first = Segment {
            index: 0,
            base_lsn: FIRST_LSN,
            loglet: self.new_loglet(&provider, log_id, 0).await?,
            created_at_millis: now_millis(),
        };
        let logs = self
            .update_logs(|logs| {
                if logs.logs.contains_key(&log_id) {
                    return Ok(false);
                }
                logs.logs.insert(
                    log_id,
                    Chain {
                        segments: vec![first.clone()],
                        trim_point: FIRST_LSN,
                    },
                );
                Ok(true)
            })
            .await?;
        tracing::info!(log_id, provider = provider.kind(), "created a log");
        logs.logs
            .get(&log_id)
            .cloned()
            .ok_or_else(|| BifrostError::Unavailable(format!("log {log_id} vanished")))
    }

    /// Creates every missing log of `log_ids` in one change of `bifrost_config` (a node
    /// starting many partitions would otherwise race itself log by log).
    pub async fn create_logs(&self, log_ids: &[u32]) -> Result<(), BifrostError> {
        self.forget_logs();
        let logs = self.logs().await?;
        let missing: Vec<u32> = log_ids
            .iter()
            .copied()
            .filter(|id| !logs.logs.contains_key(id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut chains = Vec::with_capacity(missing.len());
        for log_id in &missing {
            let first = Segment {
                index: 0,
                base_lsn: FIRST_LSN,
                loglet: self.new_loglet(&logs.default_provider, *log_id, 0).await?,
                created_at_millis: now_millis(),
            };
            chains.push((
                *log_id,
                Chain {
                    segments: vec![first],
                    trim_point: FIRST_LSN,
                },
            ));
        }
        self.update_logs(|logs| {
            let mut changed = false;
            for (log_id, chain) in &chains {
                if !logs.logs.contains_key(log_id) {
                    logs.logs.insert(*log_id, chain.clone());
                    changed = true;
                }
            }
            Ok(changed)
        })
        .await?;
        tracing::info!(
            logs = missing.len(),
            provider = logs.default_provider.kind(),
            "created logs"
        );
        Ok(())
    }

    /// Params of a new segment from the default provider, with this node as its sequencer.
    async fn new_loglet(
        &self,
        provider: &LogProviderConfig,
        log_id: u32,
        index: u32,
    ) -> Result<LogletParams, BifrostError> {
        let id = loglet_id(log_id, index);
        match provider {
            LogProviderConfig::Local => Ok(LogletParams::Local {
                loglet_id: id,
                node: self.inner.me.id,
            }),
            LogProviderConfig::Replicated {
                replication,
                target_nodeset_size,
            } => {
                let nodes = self.nodes_config(true).await?;
                let mut candidates: Vec<PlainNodeId> = nodes
                    .with_role(Role::LogServer)
                    .filter(|n| n.log_server_state == StorageState::ReadWrite)
                    .map(|n| n.id)
                    .collect();
                let needed = usize::from(replication.num_copies());
                if candidates.len() < needed {
                    return Err(BifrostError::Unavailable(format!(
                        "log replication {replication} needs at least {needed} read-write log-servers, but the cluster has {}",
                        candidates.len()
                    )));
                }
                // Alive nodes first, so a fresh segment does not start on dead ones.
                candidates.sort_by_key(|id| (self.gone(*id), id.0));
                let size = match usize::from(*target_nodeset_size) {
                    0 => candidates.len(),
                    size => size.clamp(needed, candidates.len()),
                };
                candidates.truncate(size);
                candidates.sort();
                Ok(LogletParams::Replicated(ReplicatedParams {
                    loglet_id: id,
                    sequencer: self.inner.me,
                    replication: replication.clone(),
                    nodeset: candidates,
                }))
            }
        }
    }

    /// Seals the tail segment `segment_index` of `log_id` and extends the chain with a new
    /// segment whose sequencer is this node. Does nothing if the chain already moved on.
    pub async fn seal_and_extend(&self, log_id: u32, segment_index: u32) -> Result<(), BifrostError> {
        self.forget_logs();
        let chain = self.chain(log_id, false).await?;
        let Some(tail) = chain.tail().cloned() else {
            return Ok(());
        };
        if tail.index != segment_index {
            return Ok(());
        }
        let trimmed_below = u32::try_from(chain.trim_point.saturating_sub(tail.base_lsn)).unwrap_or(u32::MAX);
        let end = match &tail.loglet {
            LogletParams::Local { loglet_id, node } if *node == self.inner.me.id => {
                self.inner
                    .local
                    .seal(*loglet_id)
                    .await
                    .map_err(|e| BifrostError::Unavailable(e.to_string()))?
                    .local_tail
            }
            LogletParams::Local { node, .. } => {
                return Err(BifrostError::Unavailable(format!(
                    "log {log_id} is a local log of {node}; only {node} can take its records"
                )));
            }
            LogletParams::Replicated(params) => {
                if let Some(sequencer) = self.inner.sequencers.get(params.loglet_id) {
                    sequencer.seal();
                }
                let nodes = self.nodes_config(true).await?;
                let addresses = nodes.nodes.values().map(|n| (n.id, n.address.clone())).collect();
                // Members whose storage was lost answer from an empty store: never count them.
                let lost: BTreeSet<PlainNodeId> = params
                    .nodeset
                    .iter()
                    .copied()
                    .filter(|id| {
                        nodes
                            .nodes
                            .get(id)
                            .is_some_and(|n| n.log_server_state == StorageState::DataLoss)
                    })
                    .collect();
                replicated::seal(&self.inner.peers, params, &addresses, &lost, trimmed_below).await?
            }
        };
        // Trimmed records were committed: the segment never ends below the trim point.
        let end = end.max(trimmed_below);
        let provider = self.logs().await?.default_provider.clone();
        let next = Segment {
            index: tail.index + 1,
            base_lsn: tail.base_lsn + Lsn::from(end),
            loglet: self.new_loglet(&provider, log_id, tail.index + 1).await?,
            created_at_millis: now_millis(),
        };
        let description = match &next.loglet {
            LogletParams::Replicated(params) => params.to_string(),
            LogletParams::Local { loglet_id, node } => {
                format!("local loglet {} on {node}", display_loglet_id(*loglet_id))
            }
        };
        // The change may run more than once (a lost race reads again); the last run counts.
        let mut extended = false;
        self.update_logs(|logs| {
            extended = match logs.logs.get_mut(&log_id) {
                Some(chain) if chain.tail().map(|s| s.index) == Some(segment_index) => {
                    chain.segments.push(next.clone());
                    true
                }
                _ => false,
            };
            Ok(extended)
        })
        .await?;
        if !extended {
            // Another node extended the chain first.
            return Ok(());
        }
        tracing::info!(log_id, sealed_at = next.base_lsn, next = %description, "sealed a log segment and extended the chain");
        self.inner.chains_extended.send_modify(|count| *count += 1);
        Ok(())
    }

    /// Reconfigures every log whose tail segment's sequencer is dead or has restarted (its
    /// in-memory state is gone), so the log takes records again without waiting for an
    /// appender to notice. Run by the active cluster controller. Returns how many it moved.
    pub async fn reconfigure_orphaned_logs(&self) -> Result<usize, BifrostError> {
        let logs = self.chains().await?;
        let nodes = self.nodes_config(true).await?;
        let mut moved = 0;
        for (log_id, chain) in &logs.logs {
            let Some(LogletParams::Replicated(params)) = chain.tail().map(|s| &s.loglet) else {
                continue;
            };
            if params.sequencer == self.inner.me {
                continue;
            }
            let restarted = nodes
                .nodes
                .get(&params.sequencer.id)
                .is_some_and(|n| n.generation > params.sequencer.generation);
            if restarted || self.gone(params.sequencer.id) {
                let index = chain.tail().map_or(0, |s| s.index);
                tracing::info!(log_id, sequencer = %params.sequencer, restarted, "the log's sequencer is gone; reconfiguring");
                self.seal_and_extend(*log_id, index).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Moves every log whose tail segment was made by another provider configuration than
    /// the one now in effect (`restatectl config set --log-provider/--log-replication`) to a
    /// new segment of the configured kind, so a grown cluster's logs get their new copies
    /// without waiting for a failure. A log whose new segment cannot be made yet (too few
    /// log-servers) keeps its segment. Run by the active cluster controller. Returns how many
    /// it moved.
    pub async fn reconfigure_outdated_logs(&self) -> Result<usize, BifrostError> {
        let logs = self.chains().await?;
        let provider = logs.default_provider.clone();
        let mut moved = 0;
        for (log_id, chain) in &logs.logs {
            let Some(tail) = chain.tail() else { continue };
            let outdated = match (&tail.loglet, &provider) {
                (LogletParams::Local { .. }, LogProviderConfig::Local) => false,
                (LogletParams::Replicated(params), LogProviderConfig::Replicated { replication, .. }) => {
                    params.replication != *replication
                }
                _ => true,
            };
            if !outdated {
                continue;
            }
            // Only seal what can be extended: the new segment must be possible now.
            if let Err(error) = self.new_loglet(&provider, *log_id, tail.index + 1).await {
                tracing::debug!(log_id, %error, "the log keeps its segment until the configured one can be made");
                continue;
            }
            tracing::info!(
                log_id,
                provider = provider.kind(),
                "the log's segment was made for an earlier log configuration; reconfiguring"
            );
            match self.seal_and_extend(*log_id, tail.index).await {
                Ok(()) => moved += 1,
                Err(error) => tracing::warn!(log_id, %error, "cannot move the log to the configured provider yet"),
            }
        }
        Ok(moved)
    }

    /// The log's trim point as this node last read the logs configuration: no record below it
    /// can be read.
    pub async fn trim_point(&self, log_id: u32) -> Result<Lsn, BifrostError> {
        Ok(self.chain(log_id, false).await?.trim_point)
    }

    /// Moves the log's trim point forward to `trim_point` (never beyond the tail); the records
    /// below it are dropped from storage in the background. Returns the trim point in effect.
    pub async fn trim(&self, log_id: u32, trim_point: Lsn) -> Result<Lsn, BifrostError> {
        let tail = self.find_tail(log_id).await?;
        let target = trim_point.min(tail);
        let logs = self
            .update_logs(|logs| {
                let chain = logs
                    .logs
                    .get_mut(&log_id)
                    .ok_or_else(|| WriteError::Rejected(format!("log {log_id} does not exist")))?;
                if target <= chain.trim_point {
                    return Ok(false);
                }
                chain.trim_point = target;
                Ok(true)
            })
            .await?;
        let chain = logs
            .logs
            .get(&log_id)
            .cloned()
            .ok_or_else(|| BifrostError::Invalid(format!("log {log_id} does not exist")))?;
        // The stored records below the trim point go in the background: no reader asks for them
        // any more, and a log-server that is down now drops them at the next trim (a trim drops
        // everything below its point), so a slow one does not hold up the caller.
        let addresses = self.addresses().await?;
        let bifrost = self.clone();
        let trim_point = chain.trim_point;
        tokio::spawn(async move {
            for segment in &chain.segments {
                if segment.base_lsn >= trim_point {
                    break;
                }
                let offset = (trim_point - segment.base_lsn).min(u64::from(u32::MAX)) as u32;
                match &segment.loglet {
                    LogletParams::Local { loglet_id, node } if *node == bifrost.inner.me.id => {
                        let _ = bifrost.inner.local.trim(*loglet_id, offset).await;
                    }
                    LogletParams::Local { .. } => {}
                    LogletParams::Replicated(params) => {
                        replicated::trim(&bifrost.inner.peers, params, &addresses, offset).await;
                    }
                }
            }
        });
        Ok(chain.trim_point)
    }
}
