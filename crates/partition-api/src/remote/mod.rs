//! Partitions on other nodes: the fabric client ([`RemotePartition`]) and the service that
//! answers it from this node's replicas ([`PartitionServer`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use restate_metadata_store::proto_conv::certainly_not_applied;
use restate_proto::partition::partition_svc_client::PartitionSvcClient;
use restate_proto::partition::partition_svc_server::{PartitionSvc, PartitionSvcServer};
use restate_proto::partition::{PartitionReply, PartitionRequest};
use restate_types::{ClusterView, InvocationId, Liveness, PlainNodeId, Role};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::answers::{AttemptInfo, Managed, Management, Output, PartitionSnapshot, Restarted, SubmitError, Terminated};
use crate::introspect::{InboxRow, JournalRow, KeyScope, LockRow, Page, Paged, PromiseRow, StateRow};
use crate::model::{InvocationResult, InvocationStatus, InvokeRequest, SignalResult};
use crate::partition::{PartitionApi, PartitionReader, ReadError};
use crate::router::{LocalPartition, Partitions};

/// How long opening a connection to another node may take before the next node is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A request as it crosses the fabric.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Call(InvokeRequest),
    Send(InvokeRequest),
    Signal {
        id: InvocationId,
        signal: u32,
        result: SignalResult,
    },
    Manage {
        id: InvocationId,
        operation: Management,
    },
    RestartAsNew(InvocationId),
    PatchState {
        service: String,
        key: String,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    },
    Terminate {
        id: InvocationId,
        kill: bool,
    },
    Attach(InvocationId),
    Output(InvocationId),
    Read(Read),
}

/// Where a paged read continues, owned so it can cross the fabric.
#[derive(Debug, Serialize, Deserialize)]
struct WirePage {
    after: Option<Vec<u8>>,
    limit: u64,
}

impl WirePage {
    fn of(page: Page<'_>) -> Self {
        Self {
            after: page.after.map(<[u8]>::to_vec),
            limit: page.limit as u64,
        }
    }

    fn page(&self) -> Page<'_> {
        Page {
            after: self.after.as_deref(),
            limit: usize::try_from(self.limit).unwrap_or(usize::MAX),
        }
    }
}

/// Which (service, key) rows a read selects, owned.
#[derive(Debug, Serialize, Deserialize)]
struct WireScope {
    service: Option<String>,
    key: Option<String>,
}

impl WireScope {
    fn of(scope: KeyScope<'_>) -> Self {
        Self {
            service: scope.service.map(str::to_owned),
            key: scope.key.map(str::to_owned),
        }
    }

    fn scope(&self) -> KeyScope<'_> {
        KeyScope {
            service: self.service.as_deref(),
            key: self.key.as_deref(),
        }
    }
}

/// A read of a replica's tables (SQL introspection of a partition this node does not run).
#[derive(Debug, Serialize, Deserialize)]
enum Read {
    Snapshot,
    Attempts,
    Status(InvocationId),
    Statuses(WirePage),
    Journal(InvocationId),
    State(WireScope, WirePage),
    Inbox(WireScope, WirePage),
    Locks(WireScope, WirePage),
    Promises(WireScope, WirePage),
}

#[derive(Debug, Serialize, Deserialize)]
enum ReadReply {
    Snapshot(PartitionSnapshot),
    Attempts(Vec<(InvocationId, AttemptInfo)>),
    Status(Option<Box<InvocationStatus>>),
    Statuses(Paged<(InvocationId, InvocationStatus)>),
    Journal(Vec<JournalRow>),
    State(Paged<StateRow>),
    Inbox(Paged<InboxRow>),
    Locks(Paged<LockRow>),
    Promises(Paged<PromiseRow>),
}

impl Request {
    /// Whether sending it again after a lost answer cannot do anything twice.
    fn repeats_harmlessly(&self) -> bool {
        matches!(self, Request::Attach(_) | Request::Output(_) | Request::Read(_))
    }
}

/// An answer as it crosses the fabric.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// The node runs no replica of the partition (it never saw the request).
    NotHere(String),
    Called(Result<(InvocationId, InvocationResult), SubmitError>),
    Sent(Result<bool, SubmitError>),
    Done(Result<(), SubmitError>),
    Managed(Result<Managed, SubmitError>),
    Restarted(Result<Restarted, SubmitError>),
    Terminated(Result<Terminated, SubmitError>),
    Attached(Result<Option<InvocationResult>, SubmitError>),
    Output(Result<Output, SubmitError>),
    Read(Result<ReadReply, String>),
}

/// Connections to the other nodes' fabric ports, and the view that says which to ask.
#[derive(Clone)]
pub(crate) struct Fabric {
    view: ClusterView,
    /// This node's fabric address (normalized): its own replicas are reached in-process.
    own_address: String,
    message_limit: usize,
    /// A node silent this long is not asked, and a request in flight to it is given up: a
    /// paused node keeps its connections open and answers nothing.
    silence: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Fabric {
    pub(crate) fn new(view: ClusterView, own_address: &str, message_limit: usize, silence: Duration) -> Self {
        Self {
            view,
            own_address: restate_net::normalize_address(own_address),
            message_limit,
            silence,
            channels: Arc::default(),
        }
    }

    /// Worker nodes to ask for `partition`, best first: the one that says it leads it, then
    /// the responsive ones, then those that missed heartbeats; dead and silent ones are left
    /// out (a silent node's last heartbeat may still say it leads).
    fn candidates(&self, partition: u16) -> Vec<(PlainNodeId, String)> {
        let mut nodes: Vec<(u8, PlainNodeId, String)> = self
            .view
            .peers()
            .into_iter()
            .filter(|peer| {
                peer.roles.contains(&Role::Worker)
                    && peer.liveness != Liveness::Dead
                    && !self.view.silent(peer.node_id.id, self.silence)
                    && restate_net::normalize_address(&peer.address) != self.own_address
            })
            .map(|peer| {
                let rank = match (peer.leading_partitions.contains(&partition), peer.liveness) {
                    (true, _) => 0,
                    (false, Liveness::Alive) => 1,
                    _ => 2,
                };
                (rank, peer.node_id.id, peer.address)
            })
            .collect();
        nodes.sort();
        nodes.into_iter().map(|(_, id, address)| (id, address)).collect()
    }

    /// Resolves once `node` falls silent.
    async fn until_silent(&self, node: PlainNodeId) -> Duration {
        restate_net::until(|| self.view.silent(node, self.silence)).await;
        self.silence
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = restate_net::channel_without_deadline(address, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `request` to the first node that runs a replica of `partition` and answers.
    async fn ask(&self, partition: u16, request: Request) -> Result<Reply, SubmitError> {
        let body = postcard::to_allocvec(&request).map_err(|error| SubmitError::Refused {
            partition,
            reason: format!("cannot encode the request: {error}"),
        })?;
        let mut tried = Vec::new();
        for (node, address) in self.candidates(partition) {
            let channel = match self.channel(&address) {
                Ok(channel) => channel,
                Err(error) => {
                    tried.push(format!("{node}: {error}"));
                    continue;
                }
            };
            let mut client = PartitionSvcClient::new(channel)
                .max_decoding_message_size(self.message_limit)
                .max_encoding_message_size(self.message_limit);
            let sent = client.request(PartitionRequest {
                partition_id: u32::from(partition),
                body: body.clone(),
            });
            let answer = tokio::select! {
                answer = sent => answer,
                silence = self.until_silent(node) => {
                    let reason = format!("{node} stopped answering heartbeats (silent for {silence:?})");
                    if request.repeats_harmlessly() {
                        tried.push(reason);
                        continue;
                    }
                    return Err(SubmitError::Unknown {
                        partition,
                        reason: format!("{reason} while it held the request"),
                    });
                }
            };
            let status = match answer {
                Ok(reply) => match postcard::from_bytes::<Reply>(&reply.into_inner().body) {
                    Ok(Reply::NotHere(reason)) => {
                        tried.push(format!("{node}: {reason}"));
                        continue;
                    }
                    Ok(reply) => return Ok(reply),
                    Err(error) => tonic::Status::internal(format!("cannot decode the answer of node {node}: {error}")),
                },
                Err(status) => status,
            };
            if certainly_not_applied(&status) {
                tried.push(format!("{node}: {}", status.message()));
                continue;
            }
            let reason = format!("node {node} did not answer: {}", status.message());
            return Err(match request.repeats_harmlessly() {
                true => SubmitError::Refused { partition, reason },
                false => SubmitError::Unknown { partition, reason },
            });
        }
        Err(SubmitError::Unreachable(match tried.is_empty() {
            true => {
                format!("this node runs no replica of partition {partition} and knows no live worker node that does")
            }
            false => format!(
                "this node runs no replica of partition {partition} and no worker node that does answered ({})",
                tried.join("; ")
            ),
        }))
    }
}

/// A partition whose replicas run on other nodes.
pub(crate) struct RemotePartition {
    partition: u16,
    fabric: Fabric,
}

impl RemotePartition {
    pub(crate) fn new(partition: u16, fabric: Fabric) -> Self {
        Self { partition, fabric }
    }

    fn unexpected(&self, reply: Reply) -> SubmitError {
        SubmitError::Unknown {
            partition: self.partition,
            reason: format!("a node answered with something else than asked for: {reply:?}"),
        }
    }
}

#[async_trait::async_trait]
impl PartitionApi for RemotePartition {
    fn partition_id(&self) -> u16 {
        self.partition
    }

    async fn call(&self, request: InvokeRequest) -> Result<(InvocationId, Arc<InvocationResult>), SubmitError> {
        match self.fabric.ask(self.partition, Request::Call(request)).await? {
            Reply::Called(answer) => answer.map(|(id, result)| (id, Arc::new(result))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn send(&self, request: InvokeRequest) -> Result<bool, SubmitError> {
        match self.fabric.ask(self.partition, Request::Send(request)).await? {
            Reply::Sent(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }

    async fn signal(&self, id: InvocationId, signal: u32, result: SignalResult) -> Result<(), SubmitError> {
        match self
            .fabric
            .ask(self.partition, Request::Signal { id, signal, result })
            .await?
        {
            Reply::Done(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }

    async fn manage(&self, id: InvocationId, operation: Management) -> Result<Managed, SubmitError> {
        match self
            .fabric
            .ask(self.partition, Request::Manage { id, operation })
            .await?
        {
            Reply::Managed(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }

    async fn restart_as_new(&self, id: InvocationId) -> Result<Restarted, SubmitError> {
        match self.fabric.ask(self.partition, Request::RestartAsNew(id)).await? {
            Reply::Restarted(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }

    async fn patch_state(
        &self,
        service: String,
        key: String,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    ) -> Result<(), SubmitError> {
        let request = Request::PatchState {
            service,
            key,
            state,
            expected_version,
        };
        match self.fabric.ask(self.partition, request).await? {
            Reply::Done(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }

    async fn terminate(&self, id: InvocationId, kill: bool) -> Result<Terminated, SubmitError> {
        match self.fabric.ask(self.partition, Request::Terminate { id, kill }).await? {
            Reply::Terminated(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }

    async fn attach(&self, id: InvocationId) -> Result<Option<Arc<InvocationResult>>, SubmitError> {
        match self.fabric.ask(self.partition, Request::Attach(id)).await? {
            Reply::Attached(answer) => answer.map(|result| result.map(Arc::new)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn output(&self, id: InvocationId) -> Result<Output, SubmitError> {
        match self.fabric.ask(self.partition, Request::Output(id)).await? {
            Reply::Output(answer) => answer,
            other => Err(self.unexpected(other)),
        }
    }
}

/// Answers other nodes' requests from this node's replicas (never forwarding them again, so a
/// request cannot go round in circles).
#[derive(Clone)]
pub struct PartitionServer {
    partitions: Partitions,
}

impl PartitionServer {
    pub fn new(partitions: Partitions) -> Self {
        Self { partitions }
    }

    /// The gRPC service for the fabric port.
    pub fn into_service(self, message_limit: usize) -> PartitionSvcServer<Self> {
        PartitionSvcServer::new(self)
            .max_decoding_message_size(message_limit)
            .max_encoding_message_size(message_limit)
    }
}

/// Runs one request on a local replica.
async fn serve(local: &LocalPartition, request: Request) -> Reply {
    let partition = local.api.as_ref();
    match request {
        Request::Call(request) => Reply::Called(
            partition
                .call(request)
                .await
                .map(|(id, result)| (id, Arc::unwrap_or_clone(result))),
        ),
        Request::Send(request) => Reply::Sent(partition.send(request).await),
        Request::Signal { id, signal, result } => Reply::Done(partition.signal(id, signal, result).await),
        Request::Manage { id, operation } => Reply::Managed(partition.manage(id, operation).await),
        Request::RestartAsNew(id) => Reply::Restarted(partition.restart_as_new(id).await),
        Request::PatchState {
            service,
            key,
            state,
            expected_version,
        } => Reply::Done(partition.patch_state(service, key, state, expected_version).await),
        Request::Terminate { id, kill } => Reply::Terminated(partition.terminate(id, kill).await),
        Request::Attach(id) => Reply::Attached(partition.attach(id).await.map(|r| r.map(Arc::unwrap_or_clone))),
        Request::Output(id) => Reply::Output(partition.output(id).await),
        Request::Read(read) => {
            // Store reads block: off the runtime's worker threads.
            let reader = local.reader.clone();
            let answer = tokio::task::spawn_blocking(move || read_locally(reader.as_ref(), read)).await;
            Reply::Read(match answer {
                Ok(answer) => answer.map_err(|error| error.0),
                Err(error) => Err(format!("the read failed: {error}")),
            })
        }
    }
}

fn read_locally(reader: &dyn PartitionReader, read: Read) -> Result<ReadReply, ReadError> {
    Ok(match read {
        Read::Snapshot => ReadReply::Snapshot(reader.snapshot()),
        Read::Attempts => ReadReply::Attempts(reader.attempts().into_iter().collect()),
        Read::Status(id) => ReadReply::Status(reader.invocation_status(&id)?.map(Box::new)),
        Read::Statuses(page) => ReadReply::Statuses(reader.invocation_statuses(page.page())?),
        Read::Journal(id) => ReadReply::Journal(reader.journal(&id)?),
        Read::State(scope, page) => ReadReply::State(reader.state(scope.scope(), page.page())?),
        Read::Inbox(scope, page) => ReadReply::Inbox(reader.inbox(scope.scope(), page.page())?),
        Read::Locks(scope, page) => ReadReply::Locks(reader.locks(scope.scope(), page.page())?),
        Read::Promises(scope, page) => ReadReply::Promises(reader.promises(scope.scope(), page.page())?),
    })
}

/// The tables of a partition whose replicas run on other nodes. Its reads block the calling
/// thread on the fabric call: call them where store reads are expected to block (the query
/// engine reads in `spawn_blocking`), never on a runtime's worker thread.
pub(crate) struct RemoteReader {
    partition: u16,
    fabric: Fabric,
}

impl RemoteReader {
    pub(crate) fn new(partition: u16, fabric: Fabric) -> Self {
        Self { partition, fabric }
    }

    fn read(&self, read: Read) -> Result<ReadReply, ReadError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ReadError("no runtime to reach the nodes that run this partition".into()))?;
        match runtime.block_on(self.fabric.ask(self.partition, Request::Read(read))) {
            Ok(Reply::Read(answer)) => answer.map_err(ReadError),
            Ok(other) => Err(ReadError(format!(
                "a node answered with something else than asked for: {other:?}"
            ))),
            Err(error) => Err(ReadError(error.to_string())),
        }
    }

    fn unexpected(&self, reply: ReadReply) -> ReadError {
        ReadError(format!(
            "a node answered a read of partition {} with {reply:?}",
            self.partition
        ))
    }
}

impl PartitionReader for RemoteReader {
    fn snapshot(&self) -> PartitionSnapshot {
        match self.read(Read::Snapshot) {
            Ok(ReadReply::Snapshot(snapshot)) => snapshot,
            _ => PartitionSnapshot {
                partition_id: self.partition,
                ..PartitionSnapshot::default()
            },
        }
    }

    fn attempts(&self) -> HashMap<InvocationId, AttemptInfo> {
        match self.read(Read::Attempts) {
            Ok(ReadReply::Attempts(attempts)) => attempts.into_iter().collect(),
            _ => HashMap::new(),
        }
    }

    fn invocation_status(&self, id: &InvocationId) -> Result<Option<InvocationStatus>, ReadError> {
        match self.read(Read::Status(*id))? {
            ReadReply::Status(status) => Ok(status.map(|status| *status)),
            other => Err(self.unexpected(other)),
        }
    }

    fn invocation_statuses(&self, page: Page<'_>) -> Result<Paged<(InvocationId, InvocationStatus)>, ReadError> {
        match self.read(Read::Statuses(WirePage::of(page)))? {
            ReadReply::Statuses(rows) => Ok(rows),
            other => Err(self.unexpected(other)),
        }
    }

    fn journal(&self, id: &InvocationId) -> Result<Vec<JournalRow>, ReadError> {
        match self.read(Read::Journal(*id))? {
            ReadReply::Journal(rows) => Ok(rows),
            other => Err(self.unexpected(other)),
        }
    }

    fn state(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<StateRow>, ReadError> {
        match self.read(Read::State(WireScope::of(scope), WirePage::of(page)))? {
            ReadReply::State(rows) => Ok(rows),
            other => Err(self.unexpected(other)),
        }
    }

    fn inbox(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<InboxRow>, ReadError> {
        match self.read(Read::Inbox(WireScope::of(scope), WirePage::of(page)))? {
            ReadReply::Inbox(rows) => Ok(rows),
            other => Err(self.unexpected(other)),
        }
    }

    fn locks(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<LockRow>, ReadError> {
        match self.read(Read::Locks(WireScope::of(scope), WirePage::of(page)))? {
            ReadReply::Locks(rows) => Ok(rows),
            other => Err(self.unexpected(other)),
        }
    }

    fn promises(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<PromiseRow>, ReadError> {
        match self.read(Read::Promises(WireScope::of(scope), WirePage::of(page)))? {
            ReadReply::Promises(rows) => Ok(rows),
            other => Err(self.unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl PartitionSvc for PartitionServer {
    async fn request(
        &self,
        request: tonic::Request<PartitionRequest>,
    ) -> Result<tonic::Response<PartitionReply>, tonic::Status> {
        let request = request.into_inner();
        let partition_id = u16::try_from(request.partition_id)
            .map_err(|_| tonic::Status::invalid_argument(format!("no partition has id {}", request.partition_id)))?;
        let body = postcard::from_bytes::<Request>(&request.body)
            .map_err(|error| tonic::Status::invalid_argument(format!("cannot decode the request: {error}")))?;
        let reply = match self.partitions.local_by_id(partition_id) {
            Some(local) => serve(&local, body).await,
            None => Reply::NotHere(format!("it runs no replica of partition {partition_id}")),
        };
        let body = postcard::to_allocvec(&reply)
            .map_err(|error| tonic::Status::internal(format!("cannot encode the answer: {error}")))?;
        Ok(tonic::Response::new(PartitionReply { body }))
    }
}

#[cfg(test)]
mod tests;
