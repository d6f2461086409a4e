//! `LogServerSvc`: the log-server's gRPC API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use restate_proto::log_server as pb;
use restate_proto::log_server::log_server_svc_server::LogServerSvc;
use tonic::{Request, Response, Status};

use crate::store::{LogStore, LogletState, StoreError, StoreRefusal};

/// Serves the store. Every call is refused until the store was checked against the node's
/// storage state ([`crate::LogServer::activate`]): a wiped store answers from empty state, and
/// counting such an answer toward a seal would cut acknowledged records.
pub struct LogServerService {
    store: LogStore,
    cluster_name: String,
    writable: Arc<AtomicBool>,
    activated: Arc<AtomicBool>,
}

impl LogServerService {
    pub fn new(store: LogStore, cluster_name: String, writable: Arc<AtomicBool>, activated: Arc<AtomicBool>) -> Self {
        Self {
            store,
            cluster_name,
            writable,
            activated,
        }
    }

    /// The ids of loglets sealed on this log-server from now on.
    pub fn seals(&self) -> tokio::sync::broadcast::Receiver<u64> {
        self.store.seals()
    }

    fn check(&self, identity: Option<&pb::LogServerIdentity>) -> Result<(), Status> {
        if !self.activated.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "this log-server has not checked its storage yet (starting, or its storage was lost)",
            ));
        }
        match identity {
            Some(identity) if identity.cluster_name == self.cluster_name => Ok(()),
            Some(identity) => Err(Status::permission_denied(format!(
                "this log-server belongs to cluster `{}`, not `{}`",
                self.cluster_name, identity.cluster_name
            ))),
            None => Err(Status::invalid_argument("the request names no cluster")),
        }
    }
}

fn info(state: &LogletState) -> pb::LogletInfo {
    pb::LogletInfo {
        sealed: state.sealed,
        local_tail: state.local_tail,
        known_global_tail: state.known_global_tail,
        trim_point: state.trim_point,
    }
}

fn io(error: StoreError) -> Status {
    Status::internal(error.to_string())
}

#[tonic::async_trait]
impl LogServerSvc for LogServerService {
    async fn store(&self, request: Request<pb::StoreRequest>) -> Result<Response<pb::StoreResponse>, Status> {
        let request = request.into_inner();
        if !self.activated.load(Ordering::Acquire) {
            // Answered as a refusal, so the sequencer knows nothing was stored.
            return Ok(Response::new(pb::StoreResponse {
                status: pb::StoreStatus::NotWritable as i32,
                local_tail: 0,
                detail: "this log-server has not checked its storage yet".into(),
            }));
        }
        self.check(request.identity.as_ref())?;
        if !self.writable.load(Ordering::Relaxed) && !request.repair {
            return Ok(Response::new(pb::StoreResponse {
                status: pb::StoreStatus::NotWritable as i32,
                local_tail: 0,
                detail: "this log-server's storage is not read-write".into(),
            }));
        }
        let sequencer = request
            .sequencer
            .map(|s| (s.node_id, s.generation))
            .ok_or_else(|| Status::invalid_argument("the store names no sequencer"))?;
        let outcome = self
            .store
            .store(
                request.loglet_id,
                sequencer,
                request.first_offset,
                &request.payloads,
                request.known_global_tail,
                request.repair,
            )
            .await
            .map_err(io)?;
        let response = match outcome {
            Ok(local_tail) => pb::StoreResponse {
                status: pb::StoreStatus::Stored as i32,
                local_tail,
                detail: String::new(),
            },
            Err(StoreRefusal::Sealed) => pb::StoreResponse {
                status: pb::StoreStatus::Sealed as i32,
                local_tail: 0,
                detail: "the loglet is sealed".into(),
            },
            Err(StoreRefusal::SequencerMismatch { owner }) => pb::StoreResponse {
                status: pb::StoreStatus::SequencerMismatch as i32,
                local_tail: 0,
                detail: format!("the loglet belongs to sequencer N{}:{}", owner.0, owner.1),
            },
        };
        Ok(Response::new(response))
    }

    async fn seal(&self, request: Request<pb::SealRequest>) -> Result<Response<pb::LogletInfo>, Status> {
        let request = request.into_inner();
        self.check(request.identity.as_ref())?;
        let state = self.store.seal(request.loglet_id).await.map_err(io)?;
        Ok(Response::new(info(&state)))
    }

    async fn get_records(
        &self,
        request: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        let request = request.into_inner();
        self.check(request.identity.as_ref())?;
        let max = (request.max_records as usize).clamp(1, 10_000);
        let range = self
            .store
            .read_records(request.loglet_id, request.from_offset, request.to_offset, max)
            .await
            .map_err(io)?;
        Ok(Response::new(pb::GetRecordsResponse {
            info: Some(info(&range.state)),
            records: range
                .records
                .into_iter()
                .map(|(offset, payload)| pb::StoredRecord { offset, payload })
                .collect(),
            corrupt_offsets: range.corrupt,
        }))
    }

    async fn get_loglet_info(
        &self,
        request: Request<pb::GetLogletInfoRequest>,
    ) -> Result<Response<pb::LogletInfo>, Status> {
        let request = request.into_inner();
        self.check(request.identity.as_ref())?;
        Ok(Response::new(info(&self.store.state(request.loglet_id).map_err(io)?)))
    }

    async fn trim(&self, request: Request<pb::TrimRequest>) -> Result<Response<pb::LogletInfo>, Status> {
        let request = request.into_inner();
        self.check(request.identity.as_ref())?;
        let state = self
            .store
            .trim(request.loglet_id, request.trim_point)
            .await
            .map_err(io)?;
        Ok(Response::new(info(&state)))
    }
}
