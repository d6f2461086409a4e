//! Client of the replicated metadata store: talks to the metadata servers' gRPC service,
//! follows leader hints, and learns the members from the nodes configuration it reads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use restate_proto::metadata as pb;
use restate_proto::metadata_server::metadata_server_svc_client::MetadataServerSvcClient;
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, Precondition, Version, VersionedValue};
use restate_types::{ClusterView, Role};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::proto_conv::{self, certainly_not_applied};
use crate::{MetadataStore, ReadError, WriteError};

/// Largest value the replicated store keeps. A Raft entry must reach the followers within one
/// heartbeat interval (openraft's append timeout), so entries stay small.
pub const REPLICATED_MAX_VALUE_SIZE: usize = 1024 * 1024;

/// Header on a follower's UNAVAILABLE answer naming the leader it knows (JSON [`LeaderHint`]).
pub const KNOWN_LEADER_HEADER: &str = "x-restate-known-leader";
/// Leader redirects followed within one attempt round before pausing.
const MAX_REDIRECTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// The leader a follower points to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderHint {
    pub node_id: u32,
    pub address: String,
}

impl LeaderHint {
    pub fn from_status(status: &Status) -> Option<Self> {
        let value = status.metadata().get(KNOWN_LEADER_HEADER)?.to_str().ok()?;
        serde_json::from_str(value).ok()
    }
}

/// The replicated store's client.
pub struct ReplicatedStoreClient {
    cluster_name: String,
    /// 0 until known; then every request carries it.
    fingerprint: AtomicU64,
    connect_timeout: Duration,
    request_timeout: Duration,
    state: Mutex<Endpoints>,
    liveness: OnceLock<Liveness>,
}

/// The failure detector's view, so the client passes over a server that stopped answering
/// heartbeats instead of waiting out the request timeout on it (a paused metadata leader's
/// connection stays open and silent).
struct Liveness {
    view: ClusterView,
    silence: Duration,
}

#[derive(Default)]
struct Endpoints {
    addresses: Vec<String>,
    leader: Option<String>,
    next: usize,
    channels: HashMap<String, Channel>,
}

impl ReplicatedStoreClient {
    /// `addresses`: fabric URLs of metadata servers (configured, plus this node's own when it
    /// hosts one).
    pub fn new(
        cluster_name: &str,
        addresses: Vec<String>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let mut endpoints = Endpoints::default();
        for address in addresses {
            endpoints.add(&address);
        }
        Self {
            cluster_name: cluster_name.to_owned(),
            fingerprint: AtomicU64::new(0),
            connect_timeout,
            request_timeout,
            state: Mutex::new(endpoints),
            liveness: OnceLock::new(),
        }
    }

    /// From now on, servers the failure detector has not heard from for `silence` are passed
    /// over, and a request in flight to a server that falls silent is given up (a write then
    /// learns its outcome from the new leader). Set once; later calls change nothing.
    pub fn skip_silent_servers(&self, view: ClusterView, silence: Duration) {
        let _ = self.liveness.set(Liveness { view, silence });
    }

    /// Whether the server at `address` is known to have stopped answering heartbeats.
    fn silent(&self, address: &str) -> bool {
        self.liveness.get().is_some_and(|liveness| {
            liveness.view.silent_at(
                |known| restate_net::normalize_address(known) == address,
                liveness.silence,
            )
        })
    }

    /// Resolves once the server at `address` falls silent; never without a failure detector.
    async fn until_silent(&self, address: &str) -> Duration {
        let Some(liveness) = self.liveness.get() else {
            return std::future::pending().await;
        };
        restate_net::until(|| self.silent(address)).await;
        liveness.silence
    }

    pub fn set_fingerprint(&self, fingerprint: u64) {
        self.fingerprint.store(fingerprint, Ordering::Relaxed);
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, Endpoints> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn addresses(&self) -> Vec<String> {
        self.endpoints().addresses.clone()
    }

    fn identity(&self) -> pb::ClusterIdentity {
        pb::ClusterIdentity {
            cluster_name: self.cluster_name.clone(),
            fingerprint: self.fingerprint.load(Ordering::Relaxed),
        }
    }

    /// Learns members and the fingerprint from a nodes configuration it read.
    fn learn_from(&self, value: &VersionedValue) {
        let Ok(nodes) = serde_json::from_slice::<NodesConfiguration>(&value.value) else {
            return;
        };
        self.set_fingerprint(nodes.cluster_fingerprint.0);
        let mut endpoints = self.endpoints();
        for node in nodes.with_role(Role::MetadataServer) {
            endpoints.add(&node.address);
        }
    }

    /// Runs `op` against the leader (or whoever may be it) until it gets an answer that is not
    /// "try elsewhere", or the request timeout passes. A call that is not `idempotent` (a
    /// write) is only repeated when it certainly did not reach a server.
    async fn call<T, F, Fut>(&self, what: &str, idempotent: bool, op: F) -> Result<T, (Status, String)>
    where
        F: Fn(MetadataServerSvcClient<Channel>, pb::ClusterIdentity) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let mut pause = FIRST_PAUSE;
        let mut failures: Vec<String> = Vec::new();
        loop {
            let mut redirects = 0;
            // Servers that answered this round (even if they could not serve); when fewer
            // than a majority of the known servers answer, no leader can exist: fail fast.
            let mut answered: Vec<String> = Vec::new();
            let mut awaiting_provisioning = 0;
            let attempts = self.endpoints().addresses.len().max(1) + MAX_REDIRECTS as usize;
            for _ in 0..attempts {
                let Some((address, channel)) = self.pick() else {
                    return Err((
                        Status::unavailable(
                            "no metadata server address is known; set `[metadata-client] addresses` to the fabric URLs \
                             of the metadata servers",
                        ),
                        String::new(),
                    ));
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                if self.silent(&address) {
                    failures.push(format!("{address}: no heartbeat answered lately"));
                    let mut endpoints = self.endpoints();
                    if endpoints.leader.as_deref() == Some(address.as_str()) {
                        endpoints.leader = None;
                    }
                    endpoints.advance();
                    continue;
                }
                // Values are bounded by the store's own limit; do not cap them a second time.
                let client = MetadataServerSvcClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX);
                let status = tokio::select! {
                    answer = tokio::time::timeout(remaining, op(client, self.identity())) => match answer {
                        Ok(Ok(answer)) => {
                            self.endpoints().leader = Some(address);
                            return Ok(answer);
                        }
                        Ok(Err(status)) => status,
                        Err(_) => Status::deadline_exceeded(format!("no answer within {:?}", self.request_timeout)),
                    },
                    silence = self.until_silent(&address) => Status::unavailable(format!(
                        "the server stopped answering heartbeats (silent for {silence:?}) while the request was in flight"
                    )),
                };
                let try_elsewhere = matches!(
                    status.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                );
                if !try_elsewhere || (!idempotent && !certainly_not_applied(&status)) {
                    return Err((status, address));
                }
                failures.push(format!("{address}: {}", short_reason(&status)));
                if status.metadata().contains_key(proto_conv::NOT_APPLIED_HEADER) && !answered.contains(&address) {
                    answered.push(address.clone());
                    if status.metadata().contains_key(proto_conv::AWAITING_PROVISIONING_HEADER) {
                        awaiting_provisioning += 1;
                    }
                }
                let mut endpoints = self.endpoints();
                match LeaderHint::from_status(&status) {
                    Some(hint)
                        if redirects < MAX_REDIRECTS
                            && hint.address != address
                            && !self.silent(&restate_net::normalize_address(&hint.address)) =>
                    {
                        redirects += 1;
                        endpoints.add(&hint.address);
                        endpoints.leader = Some(restate_net::normalize_address(&hint.address));
                    }
                    _ => {
                        if endpoints.leader.as_deref() == Some(address.as_str()) {
                            endpoints.leader = None;
                        }
                        endpoints.advance();
                    }
                }
            }
            let known = self.endpoints().addresses.len();
            let majority = known / 2 + 1;
            if !answered.is_empty() && awaiting_provisioning == answered.len() {
                return Err((
                    proto_conv::awaiting_provisioning(format!(
                        "{what}: the cluster is {}: no metadata server that answered ({}) belongs to a cluster yet",
                        crate::AWAITING_PROVISIONING,
                        answered.join(", ")
                    )),
                    String::new(),
                ));
            }
            if answered.len() < majority && failures.len() >= known {
                return Err((
                    Status::unavailable(format!(
                        "{what}: only {} of {known} metadata servers answered ({majority} needed for a quorum): {}",
                        answered.len(),
                        summarize(&failures)
                    )),
                    String::new(),
                ));
            }
            if Instant::now() + pause >= deadline {
                return Err((
                    Status::unavailable(format!(
                        "{what}: no metadata server answered within {:?} ({})",
                        self.request_timeout,
                        summarize(&failures)
                    )),
                    String::new(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn pick(&self) -> Option<(String, Channel)> {
        let mut endpoints = self.endpoints();
        let address = endpoints.leader.clone().or_else(|| endpoints.current())?;
        if let Some(channel) = endpoints.channels.get(&address) {
            return Some((address, channel.clone()));
        }
        let channel = restate_net::channel(&address, self.connect_timeout, self.request_timeout).ok()?;
        endpoints.channels.insert(address.clone(), channel.clone());
        Some((address, channel))
    }
}

impl ReplicatedStoreClient {
    /// The value and the id of the write that stored it.
    async fn get_with_writer(&self, key: &str) -> Result<(Option<VersionedValue>, u64), ReadError> {
        let response = self
            .call("get", true, |mut client, cluster| {
                let request = pb::GetRequest {
                    cluster: Some(cluster),
                    key: key.to_owned(),
                };
                async move { client.get(request).await.map(|r| r.into_inner()) }
            })
            .await
            .map_err(|(status, address)| proto_conv::status_to_read_error(key, &status, &address))?;
        let value = response.value.map(|v| VersionedValue::new(Version(v.version), v.value));
        if key == NODES_CONFIG_KEY
            && let Some(value) = &value
        {
            self.learn_from(value);
        }
        Ok((value, response.write_id))
    }
}

impl Endpoints {
    fn add(&mut self, address: &str) {
        let address = restate_net::normalize_address(address);
        if !self.addresses.contains(&address) {
            self.addresses.push(address);
        }
    }

    fn current(&self) -> Option<String> {
        if self.addresses.is_empty() {
            return None;
        }
        Some(self.addresses[self.next % self.addresses.len()].clone())
    }

    fn advance(&mut self) {
        self.next = self.next.wrapping_add(1);
    }
}

fn short_reason(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    if text.is_empty() {
        format!("{:?}", status.code())
    } else {
        text
    }
}

/// The distinct recent failures, newest last, at most three.
fn summarize(failures: &[String]) -> String {
    let mut distinct: Vec<&String> = Vec::new();
    for failure in failures.iter().rev() {
        if !distinct.contains(&failure) {
            distinct.push(failure);
        }
        if distinct.len() == 3 {
            break;
        }
    }
    distinct.reverse();
    distinct.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
}

#[async_trait]
impl MetadataStore for ReplicatedStoreClient {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        Ok(self.get_with_writer(key).await?.0)
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        self.call("get-version", true, |mut client, cluster| {
            let request = pb::GetRequest {
                cluster: Some(cluster),
                key: key.to_owned(),
            };
            async move {
                client
                    .get_version(request)
                    .await
                    .map(|r| r.into_inner().version.map(Version))
            }
        })
        .await
        .map_err(|(status, address)| proto_conv::status_to_read_error(key, &status, &address))
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        // The same id on every resend of this write: reading it back tells whether *this*
        // write landed, even when another writer stored the same bytes and version.
        let write_id = rand::random::<u64>().max(1);
        let deadline = Instant::now() + self.request_timeout;
        let mut resent = false;
        loop {
            let outcome = self
                .call("put", false, |mut client, cluster| {
                    let request = pb::PutRequest {
                        cluster: Some(cluster),
                        key: key.to_owned(),
                        value: Some(proto_conv::value_to_proto(value.clone())),
                        precondition: Some(proto_conv::precondition_to_proto(precondition)),
                        write_id,
                    };
                    async move { client.put(request).await.map(|_| ()) }
                })
                .await;
            let (status, address) = match outcome {
                Ok(()) => {
                    if key == NODES_CONFIG_KEY {
                        self.learn_from(&value);
                    }
                    return Ok(());
                }
                Err(failure) => failure,
            };
            let error = proto_conv::status_to_write_error(key, &status, &address);
            let ambiguous = proto_conv::ambiguous_transport_failure(&status);
            if !(ambiguous || (resent && error.is_precondition_failure())) || Instant::now() >= deadline {
                return Err(error);
            }
            // The connection failed mid-request (e.g. the leader died): a linearizable read
            // shows whether this write landed; if it did not, resending is safe, because a
            // write only applies on the version it expects.
            match self.get_with_writer(key).await {
                Ok((_, writer)) if writer == write_id => return Ok(()),
                Ok((stored, _)) if ambiguous && stored.as_ref().is_none_or(|s| s.version < value.version) => {
                    resent = true;
                }
                Ok(_) => return Err(error),
                Err(read_error) => {
                    return Err(WriteError::UnknownOutcome(format!(
                        "{error}; reading the key back failed too: {read_error}"
                    )));
                }
            }
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        self.call("delete", false, |mut client, cluster| {
            let request = pb::DeleteRequest {
                cluster: Some(cluster),
                key: key.to_owned(),
                precondition: Some(proto_conv::precondition_to_proto(precondition)),
            };
            async move { client.delete(request).await.map(|_| ()) }
        })
        .await
        .map_err(|(status, address)| proto_conv::status_to_write_error(key, &status, &address))
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        self.call("list-keys", true, |mut client, cluster| {
            let request = pb::ListKeysRequest { cluster: Some(cluster) };
            async move { client.list_keys(request).await.map(|r| r.into_inner().keys) }
        })
        .await
        .map_err(|(status, address)| proto_conv::status_to_read_error("*", &status, &address))
    }

    fn kind(&self) -> &'static str {
        "replicated"
    }

    fn max_value_size(&self) -> Option<usize> {
        Some(REPLICATED_MAX_VALUE_SIZE)
    }

    fn retries_when_unavailable(&self) -> bool {
        true
    }
}
