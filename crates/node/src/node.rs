//! The role scheduler: binds every listener first, then starts the node in dependency
//! order (fabric → metadata-server → provisioning/join → log-server → http-ingress →
//! worker → admin) and stops it in reverse.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use restate_bifrost::Bifrost;
use restate_config::Configuration;
use restate_log_server::LogServer;
use restate_metadata_server::{MetadataServer, MetadataServerError, ServerStatus};
use restate_net::BindError;
use restate_proto::metadata::metadata_proxy_svc_server::MetadataProxySvcServer;
use restate_proto::node_ctl::node_ctl_svc_server::NodeCtlSvcServer;
use restate_types::{ClusterView, LivenessThresholds, NodeHealth, NodeStatus, Role, RoleStatus};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::context::NodeContext;
use crate::join::{JoinError, join_cluster};
use crate::metadata::MetadataProxy;
use crate::metrics::NodeMetrics;
use crate::node_ctl::NodeCtlHandler;
use crate::node_dir::{NodeDir, NodeDirError};
use crate::roles::{
    Companion, HttpRole, LogServerRole, MetadataServerRole, RoleService, UnimplementedRole, WorkerRole, stop_task,
};

/// Time the fabric gets to close its connections at the very end of a shutdown.
const FABRIC_STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    NodeDir(#[from] NodeDirError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    MetadataServer(#[from] MetadataServerError),
    #[error("{0}")]
    MetadataClient(String),
    #[error("cannot join the cluster: {0}")]
    Join(#[from] JoinError),
    #[error("the {role} role failed to start: {reason}")]
    RoleStart { role: Role, reason: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A started node.
pub struct Node {
    ctx: Arc<NodeContext>,
    roles: Vec<Box<dyn RoleService>>,
    background: Vec<JoinHandle<()>>,
    fabric_shutdown: CancellationToken,
    fabric: Option<JoinHandle<std::io::Result<()>>>,
}

/// Listeners bound up front and handed to the roles that serve them.
struct RoleListeners {
    admin: Option<TcpListener>,
    ingress: Option<TcpListener>,
    /// `[admin.query-engine] pgsql-bind-address`, when set on an admin node.
    pgsql: Option<TcpListener>,
}

impl Node {
    /// Starts the node and runs it until SIGTERM or SIGINT, then shuts down gracefully; a
    /// second signal exits at once.
    pub async fn run_until_signalled(config: Configuration) -> Result<(), NodeError> {
        let mut terminate = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
        let node = tokio::select! {
            node = Node::start(config) => node?,
            _ = terminate.recv() => {
                tracing::info!("SIGTERM received while starting: exiting");
                return Ok(());
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received while starting: exiting");
                return Ok(());
            }
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received: shutting down (send another signal to exit at once)"),
            _ = interrupt.recv() => tracing::info!("SIGINT received: shutting down (send another signal to exit at once)"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::warn!("second signal received: exiting now");
            std::process::exit(1);
        });
        node.shutdown().await;
        Ok(())
    }

    /// Prepares the node directory, binds every listener, joins the cluster, then starts
    /// the roles in order.
    pub async fn start(config: Configuration) -> Result<Node, NodeError> {
        let mut node_dir = NodeDir::prepare(&config)?;
        // A zipped web UI is unpacked before anything starts, so a bad archive fails the start.
        let web_ui = if config.has_role(Role::Admin) {
            restate_admin::WebUi::prepare(&config.admin, &node_dir.path.join("web-ui")).map_err(|reason| {
                NodeError::RoleStart {
                    role: Role::Admin,
                    reason,
                }
            })?
        } else {
            restate_admin::WebUi::Disabled
        };
        tracing::info!(
            node = config.node_name(),
            cluster = %config.cluster_name,
            dir = %node_dir.path.display(),
            version = restate_types::BINARY_VERSION,
            "starting node"
        );
        let health = NodeHealth::new(
            config.node_name(),
            &config.cluster_name,
            config.advertised_address().as_str(),
            &config.roles,
        );
        health.set_metadata_migration_mode(config.metadata_migration_mode);

        // Every listener is bound before anything starts, so a port conflict fails at once.
        let fabric_listener = restate_net::bind(config.bind_address, "bind-address").await?;
        let mut listeners = RoleListeners {
            admin: match config.has_role(Role::Admin) {
                true => Some(restate_net::bind(config.admin.bind_address, "admin.bind-address").await?),
                false => None,
            },
            ingress: match config.has_role(Role::HttpIngress) {
                true => Some(restate_net::bind(config.ingress.bind_address, "ingress.bind-address").await?),
                false => None,
            },
            pgsql: match (
                config.has_role(Role::Admin),
                config.admin.query_engine.pgsql_bind_address,
            ) {
                (true, Some(address)) => {
                    Some(restate_net::bind(address, "admin.query-engine.pgsql-bind-address").await?)
                }
                _ => None,
            },
        };

        let metadata_server = match config.has_role(Role::MetadataServer) {
            true => Some(MetadataServer::open(&config)?),
            false => None,
        };
        let log_server = match config.has_role(Role::LogServer) {
            true => Some(LogServer::open(&config).map_err(|e| NodeError::RoleStart {
                role: Role::LogServer,
                reason: e.to_string(),
            })?),
            false => None,
        };
        let (metadata, replicated) = crate::metadata::create_client(&config)
            .await
            .map_err(NodeError::MetadataClient)?;
        let message_limit = usize::try_from(config.networking.message_size_limit.0).unwrap_or(usize::MAX);
        let view = ClusterView::new(LivenessThresholds {
            suspect_after: config.gossip_suspect_after,
            dead_after: config.gossip_dead_after,
        });
        if let Some(client) = &replicated {
            // Half the failover silence: a metadata leader silent that long is being replaced by
            // its Raft peers, and a partition claim (made after the whole silence) must go to
            // them rather than wait on it.
            client.skip_silent_servers(view.clone(), config.failover_silence() / 2);
        }
        let partitions = restate_partition_api::Partitions::new(
            metadata.clone(),
            view.clone(),
            config.advertised_address().as_str(),
            message_limit,
            config.failover_silence(),
        );
        let schema = restate_metadata_store::SchemaCache::new(metadata.clone());
        let ctx = Arc::new(NodeContext {
            config,
            health,
            view,
            metadata,
            replicated,
            metadata_server,
            log_server,
            bifrost: Arc::default(),
            worker: Arc::default(),
            partitions,
            schema,
            worker_metrics: restate_worker::WorkerMetrics::default(),
            web_ui,
        });
        if let Some(fingerprint) = node_dir.marker.cluster_fingerprint {
            ctx.learn_fingerprint(fingerprint);
        }

        let fabric_shutdown = CancellationToken::new();
        let fabric = spawn_fabric(&ctx, fabric_listener, fabric_shutdown.clone());
        let mut node = Node {
            ctx: ctx.clone(),
            roles: Vec::new(),
            background: Vec::new(),
            fabric_shutdown,
            fabric: Some(fabric),
        };

        if let Some(server) = &ctx.metadata_server {
            node.start_role(Box::new(MetadataServerRole::new(
                server.clone(),
                ctx.health.clone(),
                ctx.view.clone(),
                ctx.config.failover_silence() / 2,
            )))
            .await?;
        }

        let auto_provision = (ctx.config.auto_provision && !node_dir.marker.is_provisioned).then(|| {
            let ctx = ctx.clone();
            tokio::spawn(async move { crate::provision::auto_provision(&ctx).await })
        });
        let joined = join_cluster(&ctx).await;
        if let Some(mut task) = auto_provision {
            // A provisioner that is still writing (the join only needs `nodes_config`) gets
            // to finish and report; one waiting for peers ends by itself once this node joined.
            if joined.is_err() || tokio::time::timeout(Duration::from_secs(10), &mut task).await.is_err() {
                task.abort();
            }
        }
        let joined = match joined {
            Ok(joined) => joined,
            Err(error) => {
                node.shutdown().await;
                return Err(error.into());
            }
        };
        let fingerprint = joined.nodes_config.cluster_fingerprint.0;
        ctx.learn_fingerprint(fingerprint);
        ctx.health.set_status(
            NodeStatus::StartingUp,
            "waiting for the partition table and the logs configuration",
        );
        if let Err(error) = crate::provision::await_complete_provisioning(&ctx).await {
            node.shutdown().await;
            return Err(NodeError::MetadataClient(error.to_string()));
        }
        node_dir.mark_provisioned(fingerprint)?;
        ctx.health.set_node_id(joined.node_id);
        ctx.health.set_nodes_config_version(joined.version.0);
        node.background.push(crate::gossip::spawn(
            ctx.clone(),
            joined.node_id,
            node.fabric_shutdown.child_token(),
        ));
        let bifrost = Bifrost::new(
            &ctx.config,
            joined.node_id,
            ctx.metadata.clone(),
            ctx.view.clone(),
            ctx.log_server.as_ref().map(|server| server.local_service()),
        )
        .map_err(|e| NodeError::MetadataClient(format!("cannot start Bifrost: {e}")))?;
        let _ = ctx.bifrost.set(bifrost.clone());
        node.background
            .push(spawn_log_watchdog(ctx.clone(), bifrost, joined.node_id));
        if let Some(server) = &ctx.metadata_server {
            server.set_assigned_node(joined.node_id);
            // Beside an external store (migration mode) the server waits to become a migration
            // target; there is no replicated cluster to join yet.
            let replicated = ctx.config.metadata_client.kind == restate_config::MetadataClientKind::Replicated;
            if replicated && server.auto_join() && server.status() != ServerStatus::Member {
                ctx.health.set_status(
                    NodeStatus::StartingUp,
                    "joining the metadata cluster as a voting member",
                );
                if let Err(error) =
                    tokio::time::timeout(ctx.config.initialization_timeout, server.join(joined.node_id.id.0))
                        .await
                        .unwrap_or_else(|_| {
                            Err(MetadataServerError::Refused(format!(
                                "this metadata server did not become a member within `initialization-timeout` ({:?})",
                                ctx.config.initialization_timeout
                            )))
                        })
                {
                    node.shutdown().await;
                    return Err(error.into());
                }
                let (status, detail) = crate::roles::metadata_server_health(server.status());
                ctx.health.set_role(Role::MetadataServer, status, detail);
            }
        }

        if [Role::Worker, Role::HttpIngress, Role::Admin]
            .iter()
            .any(|role| ctx.config.has_role(*role))
        {
            // Aborted with the other background tasks at shutdown.
            node.background
                .push(ctx.schema.spawn_refresher(CancellationToken::new()));
        }
        for role in ctx.config.roles.clone() {
            if role == Role::MetadataServer {
                continue;
            }
            let service = build_role(role, &ctx, &mut listeners);
            node.start_role(service).await?;
        }
        if ctx.config.has_role(Role::Worker) {
            node.background.push(spawn_worker_health(ctx.clone()));
        }
        let detail = match ctx.config.metadata_migration_mode {
            true => "metadata migration mode: only the admin and metadata-server roles run",
            false => "",
        };
        ctx.health.set_status(NodeStatus::Alive, detail);
        tracing::info!(node = ctx.config.node_name(), node_id = %joined.node_id, "node is ALIVE");
        Ok(node)
    }

    async fn start_role(&mut self, mut service: Box<dyn RoleService>) -> Result<(), NodeError> {
        let role = service.role();
        let health = &self.ctx.health;
        health.set_role(role, RoleStatus::StartingUp, "");
        health.set_status(NodeStatus::StartingUp, format!("starting the {role} role"));
        if let Err(error) = service.start().await {
            health.set_role(role, RoleStatus::Failed, error.to_string());
            let reason = format!("{error:#}");
            self.stop_all().await;
            return Err(NodeError::RoleStart { role, reason });
        }
        let (status, detail) = service.status();
        health.set_role(role, status, detail);
        self.roles.push(service);
        Ok(())
    }

    pub fn health(&self) -> &NodeHealth {
        &self.ctx.health
    }

    async fn stop_all(&mut self) {
        self.ctx.health.set_status(NodeStatus::ShuttingDown, "shutting down");
        for task in self.background.drain(..) {
            task.abort();
        }
        let grace = self.ctx.config.shutdown_timeout;
        while let Some(mut service) = self.roles.pop() {
            let role = service.role();
            self.ctx.health.set_role(role, RoleStatus::Stopping, "");
            service.stop(grace).await;
            self.ctx.health.set_role(role, RoleStatus::Stopped, "");
            tracing::info!(%role, "role stopped");
        }
        self.fabric_shutdown.cancel();
        if let Some(fabric) = self.fabric.take() {
            stop_task("fabric", fabric, FABRIC_STOP_GRACE.min(grace)).await;
        }
    }

    /// Stops the roles in reverse start order, then the fabric.
    pub async fn shutdown(mut self) {
        self.stop_all().await;
        tracing::info!("node stopped");
    }
}

fn spawn_fabric(
    ctx: &Arc<NodeContext>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let message_limit = usize::try_from(ctx.config.networking.message_size_limit.0).unwrap_or(usize::MAX);
    let mut services = Routes::from(Router::new())
        .add_service(NodeCtlSvcServer::new(NodeCtlHandler { ctx: ctx.clone() }))
        .add_service(
            MetadataProxySvcServer::new(MetadataProxy {
                cluster_name: ctx.config.cluster_name.clone(),
                client: ctx.metadata.clone(),
            })
            .max_decoding_message_size(message_limit)
            .max_encoding_message_size(message_limit),
        );
    if let Some(server) = &ctx.metadata_server {
        services = services
            .add_service(server.store_service())
            .add_service(server.network_service());
    }
    if let Some(server) = &ctx.log_server {
        services = services.add_service(server.service());
    }
    services = services.add_service(restate_bifrost::BifrostService::server(
        ctx.bifrost.clone(),
        message_limit,
    ));
    if ctx.config.has_role(Role::Worker) {
        services = services.add_service(
            restate_partition_api::PartitionServer::new(ctx.partitions.clone()).into_service(message_limit),
        );
    }
    if ctx.config.has_role(Role::Admin) {
        let cluster_ctrl = restate_admin::ClusterCtrl::new(
            ctx.metadata.clone(),
            ctx.view.clone(),
            ctx.health.clone(),
            ctx.bifrost.clone(),
            &ctx.config.cluster_name,
            ctx.config.metadata_client.clone(),
            ctx.config.networking.message_size_limit.0 as usize,
        );
        services = services.add_service(cluster_ctrl.into_service());
    }
    let metrics = Arc::new(NodeMetrics::new(ctx.health.clone(), &ctx.worker_metrics));
    let router = crate::fabric::router(
        ctx.health.clone(),
        ctx.view.clone(),
        metrics,
        services.into_axum_router(),
    );
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, advertised = %ctx.config.advertised_address(), "fabric listening");
    }
    tokio::spawn(restate_net::serve(listener, router, shutdown))
}

/// On the node running the active cluster controller, once a second: moves logs whose
/// sequencer is gone to a new segment, and keeps the partition placement current.
fn spawn_log_watchdog(
    ctx: Arc<NodeContext>,
    bifrost: Bifrost,
    me: restate_types::GenerationalNodeId,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !ctx.config.has_role(Role::Admin) || ctx.view.active_controller() != Some(me.id) {
                continue;
            }
            if let Err(error) = bifrost.reconfigure_orphaned_logs().await {
                tracing::debug!(%error, "log watchdog");
            }
            if let Err(error) = bifrost.reconfigure_outdated_logs().await {
                tracing::debug!(%error, "log watchdog: moving logs to the configured provider");
            }
            if let Err(error) = restate_admin::update_placement(&ctx.metadata).await {
                tracing::debug!(%error, "cannot update the partition placement");
            }
        }
    })
}

/// Keeps the worker role's health current (partitions led, failed ones) for `/health`,
/// `restatectl` and the node's status.
fn spawn_worker_health(ctx: Arc<NodeContext>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(worker) = ctx.worker.get() {
                let (status, detail) = crate::roles::worker_health(worker);
                ctx.health.set_role(Role::Worker, status, detail);
            }
        }
    })
}

fn build_role(role: Role, ctx: &Arc<NodeContext>, listeners: &mut RoleListeners) -> Box<dyn RoleService> {
    let health = &ctx.health;
    let mut companion: Option<Companion> = None;
    let http = match role {
        Role::HttpIngress => listeners.ingress.take().map(|listener| {
            let limit = ctx
                .config
                .ingress
                .request_size_limit
                .unwrap_or(ctx.config.networking.message_size_limit)
                .0
                .min(ctx.config.networking.message_size_limit.0);
            (
                listener,
                restate_ingress::router(
                    health.clone(),
                    restate_ingress::IngressDeps {
                        partitions: ctx.partitions.clone(),
                        schema: ctx.schema.clone(),
                        retention: restate_partition_api::RetentionDefaults::from_config(&ctx.config),
                    },
                    usize::try_from(limit).unwrap_or(usize::MAX),
                    ctx.config.ingress.concurrent_api_requests_limit,
                ),
                "",
            )
        }),
        Role::Admin => listeners.admin.take().map(|listener| {
            let engine = restate_admin::query_engine(
                ctx.partitions.clone(),
                ctx.schema.clone(),
                &ctx.config.admin.query_engine,
            );
            if let (Some(pgsql), Some(engine)) = (listeners.pgsql.take(), engine.clone()) {
                companion = Some(Box::new(move |shutdown| {
                    if let Ok(address) = pgsql.local_addr() {
                        tracing::info!(%address, "serving SQL over the PostgreSQL wire protocol");
                    }
                    tokio::spawn(restate_admin::serve_pgsql(pgsql, engine, shutdown))
                }) as Companion);
            }
            (
                listener,
                restate_admin::router(
                    health.clone(),
                    ctx.view.clone(),
                    ctx.metadata.clone(),
                    ctx.partitions.clone(),
                    ctx.schema.clone(),
                    engine,
                    ctx.web_ui.clone(),
                ),
                restate_admin::LIMITATION,
            )
        }),
        _ => None,
    };
    if let Some((listener, router, limitation)) = http {
        return Box::new(HttpRole::new(role, listener, router, limitation, companion));
    }
    if role == Role::LogServer
        && let Some(server) = &ctx.log_server
    {
        return Box::new(LogServerRole::new(server.clone(), ctx.clone()));
    }
    if role == Role::Worker {
        return Box::new(WorkerRole::new(ctx.clone()));
    }
    Box::new(UnimplementedRole::new(
        role,
        "this role has nothing to run on this node",
    ))
}
