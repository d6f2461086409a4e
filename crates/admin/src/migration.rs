//! Copying a cluster's metadata to another store, key by key with versions unchanged, then
//! verifying every key by reading it back.
//!
//! Any store can be the source or the target. The replicated store as a target is first
//! provisioned: its first metadata server (which runs on a node of this cluster in migration
//! mode) seeds a Raft group with the source's nodes configuration; the other keys follow.

use std::sync::Arc;
use std::time::Duration;

use restate_config::{MetadataClientKind, MetadataClientOptions};
use restate_metadata_store::{MetadataClient, ReplicatedStoreClient};
use restate_proto::cluster_ctrl::{
    KeyCopied, KeyPlan, MigrateMetadataProgress, MigrationDone, MigrationPlan, migrate_metadata_progress::Event,
};
use restate_proto::metadata as pb;
use restate_proto::metadata_server::metadata_server_svc_client::MetadataServerSvcClient;
use restate_proto::metadata_server::{ProvisionRequest, StatusRequest};
use restate_types::Role;
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, Precondition, VersionedValue};
use tokio::sync::mpsc::Sender;
use tonic::Status;

type Progress = Sender<Result<MigrateMetadataProgress, Status>>;
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Migration {
    source: MetadataClient,
    cluster_name: String,
    target_options: MetadataClientOptions,
    message_size_limit: usize,
}

/// The target store, and for the replicated store its client (to hand it the fingerprint).
pub(crate) struct Target {
    client: MetadataClient,
    replicated: Option<Arc<ReplicatedStoreClient>>,
}

/// What will be copied: every key with its current value.
pub(crate) struct Plan {
    entries: Vec<(String, VersionedValue, Option<u32>)>,
    /// The target is a replicated store that belongs to no cluster yet.
    provision_target: bool,
}

impl Migration {
    pub(crate) fn new(
        source: MetadataClient,
        cluster_name: &str,
        target_options: MetadataClientOptions,
        message_size_limit: usize,
    ) -> Self {
        Self {
            source,
            cluster_name: cluster_name.to_owned(),
            target_options,
            message_size_limit,
        }
    }

    async fn nodes_config(&self) -> Result<NodesConfiguration, Status> {
        match self
            .source
            .get_json::<NodesConfiguration>(NODES_CONFIG_KEY)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
        {
            Some((_, nodes)) => Ok(nodes),
            None => Err(Status::failed_precondition(
                "the cluster is not provisioned: there is no metadata to migrate",
            )),
        }
    }

    /// Refuses while any node may still write metadata: only admin and metadata-server may run.
    pub(crate) async fn check_roles(&self) -> Result<(), Status> {
        let nodes = self.nodes_config().await?;
        let busy: Vec<String> = nodes
            .nodes
            .values()
            .filter_map(|node| {
                let extra: Vec<&str> = node
                    .roles
                    .iter()
                    .filter(|r| !matches!(r, Role::Admin | Role::MetadataServer))
                    .map(Role::as_str)
                    .collect();
                (!extra.is_empty()).then(|| format!("{} ({}) runs {}", node.id, node.name, extra.join(", ")))
            })
            .collect();
        if !busy.is_empty() {
            return Err(Status::failed_precondition(format!(
                "nodes still run roles that write metadata: {}; restart every node with --metadata-migration-mode first",
                busy.join("; ")
            )));
        }
        Ok(())
    }

    pub(crate) async fn connect_target(&self) -> Result<Target, Status> {
        if self.target_options.kind == MetadataClientKind::Replicated {
            if self.target_options.addresses.is_empty() {
                return Err(Status::invalid_argument(
                    "a replicated target needs `addresses`: the fabric URLs of the nodes that run the metadata-server role",
                ));
            }
            let client = Arc::new(ReplicatedStoreClient::new(
                &self.cluster_name,
                self.target_options.addresses.clone(),
                self.target_options.connect_timeout,
                self.target_options.request_timeout,
            ));
            return Ok(Target {
                client: MetadataClient::new(client.clone(), self.message_size_limit),
                replicated: Some(client),
            });
        }
        let store = restate_metadata_providers::connect(&self.target_options)
            .await
            .map_err(|e| Status::failed_precondition(format!("target store: {e}")))?
            .ok_or_else(|| Status::internal("no client for the target store"))?;
        Ok(Target {
            client: MetadataClient::new(store, self.message_size_limit),
            replicated: None,
        })
    }

    /// Whether any of the target metadata servers already belongs to a cluster.
    async fn replicated_target_provisioned(&self) -> Result<bool, Status> {
        let mut answered = false;
        for address in &self.target_options.addresses {
            let Ok(channel) = restate_net::channel(address, self.target_options.connect_timeout, RPC_TIMEOUT) else {
                continue;
            };
            match MetadataServerSvcClient::new(channel).status(StatusRequest {}).await {
                Ok(status) => {
                    answered = true;
                    if status.into_inner().fingerprint != 0 {
                        return Ok(true);
                    }
                }
                Err(status) => {
                    tracing::debug!(%address, reason = status.message(), "target metadata server did not answer")
                }
            }
        }
        if !answered {
            return Err(Status::unavailable(format!(
                "no target metadata server answers at {}; start the nodes that host them with --metadata-migration-mode \
                 and the metadata-server role",
                self.target_options.addresses.join(", ")
            )));
        }
        Ok(false)
    }

    pub(crate) async fn plan(&self, target: &Target, force: bool) -> Result<Plan, Status> {
        let provision_target = target.replicated.is_some() && !self.replicated_target_provisioned().await?;
        let mut keys = self
            .source
            .store()
            .keys()
            .await
            .map_err(|e| Status::unavailable(format!("listing the source keys: {e}")))?;
        keys.sort();
        let mut entries = Vec::new();
        let mut existing = Vec::new();
        for key in keys {
            let Some(value) = self
                .source
                .get(&key)
                .await
                .map_err(|e| Status::unavailable(format!("reading `{key}` from the source: {e}")))?
            else {
                continue;
            };
            if value.value.len() > target.client.max_value_size() {
                return Err(Status::failed_precondition(format!(
                    "`{key}` is {} bytes, more than the target store accepts ({} bytes)",
                    value.value.len(),
                    target.client.max_value_size()
                )));
            }
            let target_version = match provision_target {
                true => None,
                false => target
                    .client
                    .get_version(&key)
                    .await
                    .map_err(|e| Status::unavailable(format!("reading `{key}` from the target: {e}")))?
                    .map(|v| v.0),
            };
            if target_version.is_some() {
                existing.push(key.clone());
            }
            entries.push((key, value, target_version));
        }
        if !existing.is_empty() && !force {
            return Err(Status::failed_precondition(format!(
                "target keys exist: {}; pass --force to overwrite them",
                existing.join(", ")
            )));
        }
        Ok(Plan {
            entries,
            provision_target,
        })
    }

    /// Seeds the replicated target with the nodes configuration, on the metadata server of
    /// the node at the first target address.
    async fn provision_replicated(&self, target: &Target, nodes_config: &VersionedValue) -> Result<(), Status> {
        let nodes: NodesConfiguration = serde_json::from_slice(&nodes_config.value)
            .map_err(|e| Status::internal(format!("the nodes configuration cannot be decoded: {e}")))?;
        let first = restate_net::normalize_address(&self.target_options.addresses[0]);
        let Some(node) = nodes
            .nodes
            .values()
            .find(|n| restate_net::normalize_address(&n.address) == first)
        else {
            return Err(Status::failed_precondition(format!(
                "no node of this cluster has the address {first}; list the fabric URLs of the nodes that run the \
                 metadata-server role as the target addresses"
            )));
        };
        let channel = restate_net::channel(&first, self.target_options.connect_timeout, RPC_TIMEOUT)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let request = ProvisionRequest {
            cluster: Some(pb::ClusterIdentity {
                cluster_name: self.cluster_name.clone(),
                fingerprint: 0,
            }),
            node_id: node.id.0,
            nodes_configuration: nodes_config.value.clone(),
            version: Some(nodes_config.version.0),
        };
        let newly = MetadataServerSvcClient::new(channel)
            .provision(request)
            .await
            .map_err(|status| Status::aborted(format!("provisioning the target at {first}: {}", status.message())))?
            .into_inner()
            .newly_provisioned;
        if !newly {
            return Err(Status::failed_precondition(format!(
                "the metadata server at {first} already holds a cluster"
            )));
        }
        if let Some(replicated) = &target.replicated {
            replicated.set_fingerprint(nodes.cluster_fingerprint.0);
        }
        Ok(())
    }

    pub(crate) async fn run(
        &self,
        target: Target,
        plan: Plan,
        force: bool,
        dry_run: bool,
        progress: Progress,
    ) -> Result<(), Status> {
        let event = |event| Ok(MigrateMetadataProgress { event: Some(event) });
        let described = MigrationPlan {
            source: self.source.kind().to_owned(),
            target: target.client.kind().to_owned(),
            keys: plan
                .entries
                .iter()
                .map(|(key, value, target_version)| KeyPlan {
                    key: key.clone(),
                    version: value.version.0,
                    size: value.value.len() as u64,
                    target_version: *target_version,
                })
                .collect(),
        };
        let _ = progress.send(event(Event::Plan(described))).await;
        let count = plan.entries.len() as u32;
        if !dry_run {
            let copied = |key: &str, value: &VersionedValue| {
                event(Event::Copied(KeyCopied {
                    key: key.to_owned(),
                    version: value.version.0,
                }))
            };
            if plan.provision_target {
                let Some((_, nodes_config, _)) = plan.entries.iter().find(|(key, _, _)| key == NODES_CONFIG_KEY) else {
                    return Err(Status::failed_precondition("the source has no nodes configuration"));
                };
                self.provision_replicated(&target, nodes_config).await?;
                let _ = progress.send(copied(NODES_CONFIG_KEY, nodes_config)).await;
            }
            for (key, value, _) in &plan.entries {
                if plan.provision_target && key == NODES_CONFIG_KEY {
                    continue;
                }
                let precondition = if force {
                    Precondition::None
                } else {
                    Precondition::DoesNotExist
                };
                target
                    .client
                    .put(key, value.clone(), precondition)
                    .await
                    .map_err(|e| Status::aborted(format!("copying `{key}`: {e}")))?;
                let _ = progress.send(copied(key, value)).await;
            }
            for (key, value, _) in &plan.entries {
                let stored = target
                    .client
                    .get(key)
                    .await
                    .map_err(|e| Status::aborted(format!("verifying `{key}`: {e}")))?;
                if stored.as_ref() != Some(value) {
                    return Err(Status::data_loss(format!(
                        "verification failed: `{key}` in the target is {:?}, expected version {}",
                        stored.map(|v| v.version.0),
                        value.version.0
                    )));
                }
            }
            tracing::info!(
                keys = count,
                target = target.client.kind(),
                "metadata migrated and verified"
            );
        }
        let done = MigrationDone {
            keys: count,
            dry_run,
            target_config_toml: target_block(&self.target_options),
        };
        let _ = progress.send(event(Event::Done(done))).await;
        Ok(())
    }
}

/// The `[metadata-client]` block the nodes need afterwards (secrets shown as `***`).
fn target_block(options: &MetadataClientOptions) -> String {
    let mut root = toml::Table::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(options) {
        let defaults = toml::Value::try_from(MetadataClientOptions::default()).ok();
        let mut trimmed = toml::Table::new();
        for (key, value) in table {
            let is_default = defaults
                .as_ref()
                .and_then(|d| d.get(&key))
                .is_some_and(|default| *default == value);
            if key == "type" || !is_default {
                trimmed.insert(key, value);
            }
        }
        root.insert("metadata-client".into(), toml::Value::Table(trimmed));
    }
    toml::to_string(&root).unwrap_or_default()
}
