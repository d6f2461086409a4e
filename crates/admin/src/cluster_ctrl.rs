//! `ClusterCtrlSvc`: cluster-wide operations served by admin nodes.

use std::sync::Arc;

use restate_config::{MetadataClientKind, MetadataClientOptions};
use restate_metadata_store::MetadataClient;
use restate_proto::cluster_ctrl::cluster_ctrl_svc_server::{ClusterCtrlSvc, ClusterCtrlSvcServer};
use restate_proto::cluster_ctrl::{
    ClusterConfiguration, ClusterState, DescribeLogRequest, GetClusterConfigurationRequest, GetClusterStateRequest,
    ListLogsRequest, ListLogsResponse, LogDescription, MigrateMetadataProgress, MigrateMetadataRequest, NodeState,
    SetClusterConfigurationRequest, SetClusterConfigurationResponse, SetStorageStateRequest, SetStorageStateResponse,
    TrimLogRequest, TrimLogResponse,
};
use restate_types::{ClusterView, NodeHealth};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::migration::Migration;

/// The cluster controller's gRPC face.
pub struct ClusterCtrl {
    metadata: MetadataClient,
    view: ClusterView,
    health: NodeHealth,
    bifrost: Arc<std::sync::OnceLock<restate_bifrost::Bifrost>>,
    cluster_name: String,
    /// This node's own `[metadata-client]`, the migration source.
    source_options: MetadataClientOptions,
    message_size_limit: usize,
}

impl ClusterCtrl {
    pub fn new(
        metadata: MetadataClient,
        view: ClusterView,
        health: NodeHealth,
        bifrost: Arc<std::sync::OnceLock<restate_bifrost::Bifrost>>,
        cluster_name: &str,
        source_options: MetadataClientOptions,
        message_size_limit: usize,
    ) -> Self {
        Self {
            metadata,
            view,
            health,
            bifrost,
            cluster_name: cluster_name.to_owned(),
            source_options,
            message_size_limit,
        }
    }

    pub fn into_service(self) -> ClusterCtrlSvcServer<ClusterCtrl> {
        ClusterCtrlSvcServer::new(self)
    }
}

#[tonic::async_trait]
impl ClusterCtrlSvc for ClusterCtrl {
    async fn get_cluster_state(
        &self,
        _request: Request<GetClusterStateRequest>,
    ) -> Result<Response<ClusterState>, Status> {
        let own = self.health.snapshot();
        let nodes = self
            .view
            .peers()
            .into_iter()
            .map(|peer| NodeState {
                node_id: peer.node_id.id.0,
                generation: peer.node_id.generation,
                name: peer.name,
                address: peer.address,
                roles: peer.roles.iter().map(|r| r.to_string()).collect(),
                liveness: peer.liveness.as_str().to_owned(),
                last_seen_ms_ago: peer.last_seen_ms_ago,
                uptime_s: peer.uptime_s,
                // This node's own state is current, not as of its last heartbeat.
                status: match own.node_id {
                    Some(me) if me == peer.node_id => own.status.to_string(),
                    _ => peer.status,
                },
                role_status: peer.role_status.into_iter().collect(),
            })
            .collect();
        let state = own;
        Ok(Response::new(ClusterState {
            controller: self.view.active_controller().map_or(0, |id| id.0),
            reported_by: state.node_id.map_or(0, |id| id.id.0),
            nodes_config_version: state.nodes_config_version,
            nodes,
        }))
    }

    async fn list_logs(&self, _request: Request<ListLogsRequest>) -> Result<Response<ListLogsResponse>, Status> {
        let bifrost = crate::logs::bifrost(&self.bifrost)?;
        let logs = bifrost.chains().await.map_err(crate::logs::to_status)?;
        let mut described = Vec::new();
        for (log_id, chain) in &logs.logs {
            described.push(crate::logs::describe(bifrost, *log_id, chain).await);
        }
        Ok(Response::new(ListLogsResponse {
            default_provider: logs.default_provider.kind().to_owned(),
            default_replication: logs
                .default_provider
                .replication()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            logs: described,
        }))
    }

    async fn describe_log(&self, request: Request<DescribeLogRequest>) -> Result<Response<LogDescription>, Status> {
        let log_id = request.into_inner().log_id;
        let bifrost = crate::logs::bifrost(&self.bifrost)?;
        let logs = bifrost.chains().await.map_err(crate::logs::to_status)?;
        let chain = logs
            .logs
            .get(&log_id)
            .ok_or_else(|| Status::not_found(format!("log {log_id} does not exist")))?;
        Ok(Response::new(crate::logs::describe(bifrost, log_id, chain).await))
    }

    async fn trim_log(&self, request: Request<TrimLogRequest>) -> Result<Response<TrimLogResponse>, Status> {
        let request = request.into_inner();
        let bifrost = crate::logs::bifrost(&self.bifrost)?;
        let trim_point = bifrost
            .trim(request.log_id, request.trim_point)
            .await
            .map_err(crate::logs::to_status)?;
        Ok(Response::new(TrimLogResponse { trim_point }))
    }

    async fn set_storage_state(
        &self,
        request: Request<SetStorageStateRequest>,
    ) -> Result<Response<SetStorageStateResponse>, Status> {
        let request = request.into_inner();
        let changes = crate::storage_state::set(&self.metadata, &request).await?;
        for change in changes.iter().filter(|c| c.before != c.after) {
            tracing::info!(node = change.node_id, before = %change.before, after = %change.after, force = request.force, "log-server storage state changed by operator");
        }
        Ok(Response::new(SetStorageStateResponse { changes }))
    }

    async fn get_cluster_configuration(
        &self,
        _request: Request<GetClusterConfigurationRequest>,
    ) -> Result<Response<ClusterConfiguration>, Status> {
        Ok(Response::new(crate::cluster_config::read(&self.metadata).await?))
    }

    async fn set_cluster_configuration(
        &self,
        request: Request<SetClusterConfigurationRequest>,
    ) -> Result<Response<SetClusterConfigurationResponse>, Status> {
        let request = request.into_inner();
        let (before, after) = crate::cluster_config::set(&self.metadata, &request).await?;
        if !request.dry_run && before != after {
            tracing::info!(?before, ?after, "cluster configuration changed");
        }
        Ok(Response::new(SetClusterConfigurationResponse {
            before: Some(before),
            after: Some(after),
            dry_run: request.dry_run,
        }))
    }

    type MigrateMetadataStream = ReceiverStream<Result<MigrateMetadataProgress, Status>>;

    async fn migrate_metadata(
        &self,
        request: Request<MigrateMetadataRequest>,
    ) -> Result<Response<Self::MigrateMetadataStream>, Status> {
        let request = request.into_inner();
        let target: MetadataClientOptions = serde_json::from_str(&request.target_json)
            .map_err(|e| Status::invalid_argument(format!("the target [metadata-client] is invalid: {e}")))?;
        restate_config::validate_metadata_client(&target).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if same_store(&self.source_options, &target) {
            return Err(Status::invalid_argument(
                "the target is the store this cluster already uses; name another store in [metadata-client]",
            ));
        }
        let migration = Arc::new(Migration::new(
            self.metadata.clone(),
            &self.cluster_name,
            target,
            self.message_size_limit,
        ));
        migration.check_roles().await?;
        let target_client = migration.connect_target().await?;
        let plan = migration.plan(&target_client, request.force).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let outcome = migration
                .run(target_client, plan, request.force, request.dry_run, sender.clone())
                .await;
            if let Err(status) = outcome {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Whether two `[metadata-client]` tables name the same place.
fn same_store(a: &MetadataClientOptions, b: &MetadataClientOptions) -> bool {
    if a.kind != b.kind {
        return false;
    }
    let mut a_addresses = a.addresses.clone();
    let mut b_addresses = b.addresses.clone();
    a_addresses.sort();
    b_addresses.sort();
    match a.kind {
        MetadataClientKind::Replicated => true,
        MetadataClientKind::Etcd => a_addresses == b_addresses && a.key_prefix == b.key_prefix,
        MetadataClientKind::DynamoDb => {
            a.table == b.table && a.key_prefix == b.key_prefix && a.aws_endpoint_url == b.aws_endpoint_url
        }
        MetadataClientKind::ObjectStore => a.path == b.path && a.aws_endpoint_url == b.aws_endpoint_url,
    }
}
