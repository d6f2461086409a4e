//! The roles as the scheduler sees them: each starts, reports ready, and stops.

use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use restate_types::Role;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One role of the node, driven by the scheduler in [`crate::node`].
#[async_trait]
pub(crate) trait RoleService: Send {
    fn role(&self) -> Role;
    /// Starts the role; returns once it is ready to serve.
    async fn start(&mut self) -> anyhow::Result<()>;
    /// Status (and detail, e.g. what the role does not do yet) once started.
    fn status(&self) -> (restate_types::RoleStatus, String) {
        (restate_types::RoleStatus::Ready, String::new())
    }
    /// Stops the role, waiting at most `grace` for in-flight work.
    async fn stop(&mut self, grace: Duration);
}

/// A role whose work is an HTTP API on its own listener (admin, ingress).
/// Another server an HTTP role runs beside its router (the admin role's PostgreSQL endpoint):
/// started with the role, stopped by its shutdown token.
pub(crate) type Companion = Box<dyn FnOnce(CancellationToken) -> JoinHandle<std::io::Result<()>> + Send + Sync>;

pub(crate) struct HttpRole {
    role: Role,
    limitation: &'static str,
    pending: Option<(TcpListener, Router)>,
    companion: Option<Companion>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    companion_server: Option<JoinHandle<std::io::Result<()>>>,
}

impl HttpRole {
    pub(crate) fn new(
        role: Role,
        listener: TcpListener,
        router: Router,
        limitation: &'static str,
        companion: Option<Companion>,
    ) -> Self {
        Self {
            role,
            limitation,
            pending: Some((listener, router)),
            companion,
            shutdown: CancellationToken::new(),
            server: None,
            companion_server: None,
        }
    }
}

#[async_trait]
impl RoleService for HttpRole {
    fn role(&self) -> Role {
        self.role
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        if let Some((listener, router)) = self.pending.take() {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(role = %self.role, %address, "listening");
            }
            if !self.limitation.is_empty() {
                tracing::warn!(role = %self.role, "{}", self.limitation);
            }
            self.server = Some(tokio::spawn(restate_net::serve(
                listener,
                router,
                self.shutdown.clone(),
            )));
        }
        if let Some(companion) = self.companion.take() {
            self.companion_server = Some(companion(self.shutdown.clone()));
        }
        Ok(())
    }

    fn status(&self) -> (restate_types::RoleStatus, String) {
        (restate_types::RoleStatus::Ready, self.limitation.to_owned())
    }

    async fn stop(&mut self, grace: Duration) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            stop_task(self.role, server, grace).await;
        }
        if let Some(server) = self.companion_server.take() {
            stop_task(self.role, server, grace).await;
        }
    }
}

/// A role whose function does not exist in this build yet: it starts, says so once, and
/// does nothing else (its gRPC services are absent, so callers get UNIMPLEMENTED).
pub(crate) struct UnimplementedRole {
    role: Role,
    limitation: &'static str,
}

impl UnimplementedRole {
    pub(crate) fn new(role: Role, limitation: &'static str) -> Self {
        Self { role, limitation }
    }
}

#[async_trait]
impl RoleService for UnimplementedRole {
    fn role(&self) -> Role {
        self.role
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        tracing::warn!(role = %self.role, "{}", self.limitation);
        Ok(())
    }

    fn status(&self) -> (restate_types::RoleStatus, String) {
        (restate_types::RoleStatus::Ready, self.limitation.to_owned())
    }

    async fn stop(&mut self, _grace: Duration) {}
}

/// Waits for a server task to finish after its shutdown was signalled; aborts it after
/// `grace` so one stuck connection cannot hold the node up.
pub(crate) async fn stop_task(role: impl std::fmt::Display, task: JoinHandle<std::io::Result<()>>, grace: Duration) {
    let abort = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%role, %error, "server ended with an error"),
        Ok(Err(error)) if error.is_cancelled() => {}
        Ok(Err(error)) => tracing::warn!(%role, %error, "server task failed"),
        Err(_) => {
            tracing::warn!(%role, "server did not stop within {grace:?}; closing its connections");
            abort.abort();
        }
    }
}

/// The metadata-server role: the server itself is served on the fabric; this keeps the
/// node's health in step with the server's lifecycle and shuts Raft down on stop.
pub(crate) struct MetadataServerRole {
    server: restate_metadata_server::MetadataServer,
    health: restate_types::NodeHealth,
    /// The failure detector, and the silence after which the Raft leader counts as gone.
    view: restate_types::ClusterView,
    leader_silence: Duration,
    shutdown: CancellationToken,
    reporter: Option<JoinHandle<()>>,
}

impl MetadataServerRole {
    pub(crate) fn new(
        server: restate_metadata_server::MetadataServer,
        health: restate_types::NodeHealth,
        view: restate_types::ClusterView,
        leader_silence: Duration,
    ) -> Self {
        Self {
            server,
            health,
            view,
            leader_silence,
            shutdown: CancellationToken::new(),
            reporter: None,
        }
    }
}

/// How a metadata server's lifecycle shows in the node's health.
pub(crate) fn metadata_server_health(
    status: restate_metadata_server::ServerStatus,
) -> (restate_types::RoleStatus, &'static str) {
    use restate_metadata_server::ServerStatus;
    use restate_types::RoleStatus;
    match status {
        ServerStatus::Member => (RoleStatus::Ready, "member"),
        ServerStatus::Learner => (RoleStatus::StartingUp, "learner: catching up before it votes"),
        ServerStatus::Joining => (RoleStatus::StartingUp, "joining the metadata cluster"),
        ServerStatus::Standby => (
            RoleStatus::Ready,
            "standby: not a member (auto-join is off, or it was removed)",
        ),
        ServerStatus::AwaitingProvisioning => (RoleStatus::AwaitingProvisioning, "awaiting provisioning"),
    }
}

#[async_trait]
impl RoleService for MetadataServerRole {
    fn role(&self) -> Role {
        Role::MetadataServer
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        self.server.start().await?;
        let (server, health, shutdown) = (self.server.clone(), self.health.clone(), self.shutdown.clone());
        let (view, silence) = (self.view.clone(), self.leader_silence);
        self.reporter = Some(tokio::spawn(async move {
            let mut reported = None;
            loop {
                let status = server.status();
                if reported != Some(status) {
                    let (role_status, detail) = metadata_server_health(status);
                    health.set_role(Role::MetadataServer, role_status, detail);
                    reported = Some(status);
                }
                // A leader the failure detector finds silent (or refusing connections) is
                // replaced now rather than after the Raft election timeout.
                let gone =
                    |id: u64| u32::try_from(id).is_ok_and(|id| view.silent(restate_types::PlainNodeId(id), silence));
                server.campaign_if_leader_gone(gone).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }));
        Ok(())
    }

    fn status(&self) -> (restate_types::RoleStatus, String) {
        let (status, detail) = metadata_server_health(self.server.status());
        (status, detail.to_owned())
    }

    async fn stop(&mut self, _grace: Duration) {
        self.shutdown.cancel();
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.await;
        }
        self.server.shutdown().await;
    }
}

/// The log-server role: its store is served on the fabric from the start; starting the role
/// checks the store against the node's storage state and makes it writable.
pub(crate) struct LogServerRole {
    server: restate_log_server::LogServer,
    ctx: std::sync::Arc<crate::context::NodeContext>,
    state: Option<restate_types::metadata::StorageState>,
    /// Why the store does not serve (its storage was lost or is disabled).
    refused: Option<String>,
}

impl LogServerRole {
    pub(crate) fn new(server: restate_log_server::LogServer, ctx: std::sync::Arc<crate::context::NodeContext>) -> Self {
        Self {
            server,
            ctx,
            state: None,
            refused: None,
        }
    }
}

#[async_trait]
impl RoleService for LogServerRole {
    fn role(&self) -> Role {
        Role::LogServer
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let node = self
            .ctx
            .health
            .snapshot()
            .node_id
            .ok_or_else(|| anyhow::anyhow!("the node has not joined its cluster"))?;
        match self.server.activate(&self.ctx.metadata, node.id).await {
            Ok(state) => self.state = Some(state),
            // The store must not serve (its answers would count toward seals), but the
            // node's other roles (a metadata member, a worker) keep running.
            Err(
                error @ (restate_log_server::LogServerError::DataLoss { .. }
                | restate_log_server::LogServerError::Refused { .. }),
            ) => {
                tracing::error!(%error, "the log-server role does not serve");
                self.refused = Some(error.to_string());
            }
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    fn status(&self) -> (restate_types::RoleStatus, String) {
        if let Some(reason) = &self.refused {
            return (restate_types::RoleStatus::Failed, reason.clone());
        }
        let detail = match self.state {
            Some(state) => format!("storage {state:?}").to_lowercase(),
            None => String::new(),
        };
        (restate_types::RoleStatus::Ready, detail)
    }

    async fn stop(&mut self, _grace: Duration) {}
}

/// The worker role: the partition processors of this node.
pub(crate) struct WorkerRole {
    ctx: std::sync::Arc<crate::context::NodeContext>,
    worker: Option<restate_worker::Worker>,
}

impl WorkerRole {
    pub(crate) fn new(ctx: std::sync::Arc<crate::context::NodeContext>) -> Self {
        Self { ctx, worker: None }
    }
}

#[async_trait]
impl RoleService for WorkerRole {
    fn role(&self) -> Role {
        Role::Worker
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let bifrost = self
            .ctx
            .bifrost
            .get()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("Bifrost is not running on this node"))?;
        let node_id = bifrost.me().id.0;
        let worker = restate_worker::Worker::start(
            &self.ctx.config,
            bifrost,
            self.ctx.metadata.clone(),
            node_id,
            self.ctx.view.clone(),
            self.ctx.schema.clone(),
            self.ctx.worker_metrics.clone(),
            self.ctx.partitions.clone(),
        )
        .await?;
        let _ = self.ctx.worker.set(worker.handle());
        self.worker = Some(worker);
        Ok(())
    }

    fn status(&self) -> (restate_types::RoleStatus, String) {
        match &self.worker {
            Some(worker) => worker_health(&worker.handle()),
            None => (restate_types::RoleStatus::StartingUp, String::new()),
        }
    }

    async fn stop(&mut self, _grace: Duration) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
    }
}

/// The worker role's health as it is now: failed partitions with their reasons, else how many
/// partitions this node leads.
pub(crate) fn worker_health(worker: &restate_worker::WorkerHandle) -> (restate_types::RoleStatus, String) {
    let partitions = worker.partitions();
    let leading = partitions.iter().filter(|p| p.is_leader).count();
    let failed: Vec<String> = partitions
        .iter()
        .filter_map(|p| p.failure.as_ref().map(|f| format!("partition {}: {f}", p.partition_id)))
        .collect();
    match failed.is_empty() {
        true => (
            restate_types::RoleStatus::Ready,
            format!("{} partitions, {leading} led here", partitions.len()),
        ),
        false => (restate_types::RoleStatus::Failed, failed.join("; ")),
    }
}
