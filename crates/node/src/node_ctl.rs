//! `NodeCtlSvc`: identification of this node, and provisioning through it.

use std::sync::Arc;

use restate_config::LogProviderKind;
use restate_proto::node_ctl::node_ctl_svc_server::NodeCtlSvc;
use restate_proto::node_ctl::{
    GetIdentRequest, GossipMessage, IdentResponse, ProvisionClusterRequest, ProvisionClusterResponse, RoleState,
};
use restate_types::ReplicationProperty;
use restate_types::metadata::LogProviderConfig;
use tonic::{Request, Response, Status};

use crate::context::NodeContext;
use crate::provision::{ProvisionError, ProvisionParams, provision};

pub(crate) struct NodeCtlHandler {
    pub(crate) ctx: Arc<NodeContext>,
}

#[tonic::async_trait]
impl NodeCtlSvc for NodeCtlHandler {
    async fn create_snapshots(
        &self,
        request: Request<restate_proto::node_ctl::CreateSnapshotsRequest>,
    ) -> Result<Response<restate_proto::node_ctl::CreateSnapshotsResponse>, Status> {
        let request = request.into_inner();
        let only = match request.partition_id {
            Some(id) => {
                Some(u16::try_from(id).map_err(|_| Status::invalid_argument(format!("there is no partition {id}")))?)
            }
            None => None,
        };
        let Some(worker) = self.ctx.worker.get() else {
            return Ok(Response::new(restate_proto::node_ctl::CreateSnapshotsResponse {
                snapshots: Vec::new(),
                node_name: self.ctx.config.node_name().to_owned(),
            }));
        };
        let created = worker
            .create_snapshots(only, request.trim_log)
            .await
            .map_err(|error| match error {
                restate_worker::SnapshotsError::NotConfigured(reason) => Status::failed_precondition(reason),
                failed => Status::internal(failed.to_string()),
            })?;
        Ok(Response::new(restate_proto::node_ctl::CreateSnapshotsResponse {
            snapshots: created
                .into_iter()
                .map(|s| restate_proto::node_ctl::CreatedSnapshot {
                    partition_id: u32::from(s.partition_id),
                    snapshot_id: s.snapshot_id,
                    min_applied_lsn: s.min_applied_lsn,
                    location: s.location,
                    size_bytes: s.size_bytes,
                    entries: s.entries,
                    trim_point: s.trim_point,
                })
                .collect(),
            node_name: self.ctx.config.node_name().to_owned(),
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<restate_proto::node_ctl::ListSnapshotsRequest>,
    ) -> Result<Response<restate_proto::node_ctl::ListSnapshotsResponse>, Status> {
        let only = match request.into_inner().partition_id {
            Some(id) => {
                Some(u16::try_from(id).map_err(|_| Status::invalid_argument(format!("there is no partition {id}")))?)
            }
            None => None,
        };
        let Some(worker) = self.ctx.worker.get() else {
            return Err(Status::failed_precondition(format!(
                "node {} runs no worker: ask a node with the worker role",
                self.ctx.config.node_name()
            )));
        };
        let (repository, listed) = worker.list_snapshots(only).await.map_err(|error| match error {
            restate_worker::SnapshotsError::NotConfigured(reason) => Status::failed_precondition(reason),
            failed => Status::internal(failed.to_string()),
        })?;
        Ok(Response::new(restate_proto::node_ctl::ListSnapshotsResponse {
            snapshots: listed
                .into_iter()
                .map(|s| restate_proto::node_ctl::ListedSnapshot {
                    partition_id: u32::from(s.partition_id),
                    snapshot_id: s.snapshot_id,
                    min_applied_lsn: s.min_applied_lsn,
                    created_at: s.created_at,
                    location: s.location,
                    latest: s.latest,
                })
                .collect(),
            repository,
        }))
    }

    async fn get_partitions(
        &self,
        _request: Request<restate_proto::node_ctl::GetPartitionsRequest>,
    ) -> Result<Response<restate_proto::node_ctl::GetPartitionsResponse>, Status> {
        let partitions = match self.ctx.worker.get() {
            Some(worker) => worker
                .partitions()
                .into_iter()
                .map(|p| restate_proto::node_ctl::PartitionProcessorState {
                    partition_id: u32::from(p.partition_id),
                    applied_lsn: p.applied_lsn,
                    durable_lsn: p.durable_lsn,
                    archived_lsn: p.archived_lsn,
                    trim_point: p.trim_point,
                    is_leader: p.is_leader,
                    leader_epoch: p.leader_epoch,
                    failure: p.failure,
                    log_problem: p.log_problem,
                    outbox_problem: p.outbox_problem,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Response::new(restate_proto::node_ctl::GetPartitionsResponse {
            partitions,
        }))
    }

    async fn get_ident(&self, _request: Request<GetIdentRequest>) -> Result<Response<IdentResponse>, Status> {
        let health = &self.ctx.health;
        let state = health.snapshot();
        Ok(Response::new(IdentResponse {
            status: state.status.to_string(),
            node_id: state.node_id.map(|id| id.id.0),
            generation: state.node_id.map(|id| id.generation),
            node_name: state.node_name,
            cluster_name: state.cluster_name,
            roles: state.roles.keys().map(|role| role.to_string()).collect(),
            age_s: health.age_seconds(),
            role_states: state
                .roles
                .iter()
                .map(|(role, s)| RoleState {
                    role: role.to_string(),
                    status: s.status.to_string(),
                    detail: s.detail.clone(),
                })
                .collect(),
            version: restate_types::BINARY_VERSION.to_owned(),
            advertised_address: state.advertised_address,
            nodes_config_version: state.nodes_config_version,
            detail: state.detail,
        }))
    }

    async fn gossip(&self, request: Request<GossipMessage>) -> Result<Response<GossipMessage>, Status> {
        let message = request.into_inner();
        if message.cluster_name != self.ctx.config.cluster_name {
            return Err(Status::permission_denied(format!(
                "this node belongs to cluster `{}`, but the heartbeat comes from cluster `{}`",
                self.ctx.config.cluster_name, message.cluster_name
            )));
        }
        crate::gossip::record(&self.ctx, &message);
        self.ctx.health.set_nodes_config_version(message.nodes_config_version);
        Ok(Response::new(crate::gossip::own_message(&self.ctx)))
    }

    async fn provision_cluster(
        &self,
        request: Request<ProvisionClusterRequest>,
    ) -> Result<Response<ProvisionClusterResponse>, Status> {
        let request = request.into_inner();
        let params = params_from_request(&self.ctx, &request)?;
        let mut response = ProvisionClusterResponse {
            dry_run: request.dry_run,
            cluster_name: self.ctx.config.cluster_name.clone(),
            num_partitions: u32::from(params.num_partitions),
            partition_replication: params.partition_replication.to_string(),
            log_provider: params.log_provider.kind().to_owned(),
            log_replication: params
                .log_provider
                .replication()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            metadata_store: self.ctx.metadata.kind().to_owned(),
            cluster_fingerprint: String::new(),
            warnings: params.warnings(&self.ctx.config),
        };
        if request.dry_run {
            return Ok(Response::new(response));
        }
        match provision(&self.ctx, &params).await {
            Ok(fingerprint) => {
                response.cluster_fingerprint = fingerprint.to_string();
                for warning in &response.warnings {
                    tracing::warn!("provisioned: {warning}");
                }
                Ok(Response::new(response))
            }
            Err(error @ ProvisionError::AlreadyProvisioned(_)) => Err(Status::already_exists(error.to_string())),
            Err(error @ ProvisionError::Invalid(_)) => Err(Status::failed_precondition(error.to_string())),
            Err(error @ ProvisionError::Failed(_)) => Err(Status::unavailable(error.to_string())),
        }
    }
}

fn params_from_request(ctx: &NodeContext, request: &ProvisionClusterRequest) -> Result<ProvisionParams, Status> {
    let mut params = ProvisionParams::from_config(&ctx.config);
    if let Some(count) = request.num_partitions {
        params.num_partitions = u16::try_from(count)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Status::invalid_argument(format!("--num-partitions {count}: use 1 to 65535")))?;
    }
    let parse = |flag: &str, text: &str| -> Result<ReplicationProperty, Status> {
        text.parse()
            .map_err(|e: restate_types::ReplicationPropertyError| Status::invalid_argument(format!("{flag}: {e}")))
    };
    if let Some(text) = &request.partition_replication {
        params.partition_replication = parse("--partition-replication", text)?;
    }
    let provider_kind = match request.log_provider.as_deref() {
        None => None,
        Some("local") => Some(LogProviderKind::Local),
        Some("replicated") => Some(LogProviderKind::Replicated),
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "--log-provider `{other}`: expected local or replicated"
            )));
        }
    };
    let log_replication = match &request.log_replication {
        Some(text) => Some(parse("--log-replication", text)?),
        None => None,
    };
    params.log_provider = match (provider_kind, params.log_provider.clone()) {
        (Some(LogProviderKind::Local), _) => LogProviderConfig::Local,
        (Some(LogProviderKind::Replicated), current) | (None, current @ LogProviderConfig::Replicated { .. }) => {
            let (replication, target_nodeset_size) = match current {
                LogProviderConfig::Replicated {
                    replication,
                    target_nodeset_size,
                } => (replication, target_nodeset_size),
                _ => (ctx.config.default_replication.clone(), 0),
            };
            LogProviderConfig::Replicated {
                replication: log_replication.clone().unwrap_or(replication),
                target_nodeset_size,
            }
        }
        (None, current) => current,
    };
    if log_replication.is_some() && params.log_provider.replication().is_none() {
        return Err(Status::invalid_argument(format!(
            "--log-replication only applies to the replicated log provider, not `{}`",
            params.log_provider.kind()
        )));
    }
    Ok(params)
}
