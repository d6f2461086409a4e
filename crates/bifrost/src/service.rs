//! `BifrostSvc`: appends, reads, tails and trims for clients on other processes, and the
//! calls nodes forward to a loglet's sequencer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use restate_proto::bifrost as pb;
use restate_proto::bifrost::bifrost_svc_server::{BifrostSvc, BifrostSvcServer};
use restate_types::PlainNodeId;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::{Bifrost, BifrostError, LogEntry, NotAppended};

/// Longest a tail request waits for new records before it looks at the chain again.
const MAX_TAIL_WAIT: Duration = Duration::from_secs(1);
/// Entries per message of a followed log.
const FOLLOW_BATCH: usize = 1000;

/// Tells the caller that nothing was appended, and why.
const NOT_APPENDED_HEADER: &str = "x-restate-not-appended";

/// Serves the node's Bifrost once the node has joined its cluster (it needs the node's id);
/// until then calls are refused as "not joined yet".
pub struct BifrostService {
    slot: Arc<OnceLock<Bifrost>>,
}

impl BifrostService {
    /// `message_limit`: the largest message accepted or sent (`[networking] message-size-limit`).
    pub fn server(slot: Arc<OnceLock<Bifrost>>, message_limit: usize) -> BifrostSvcServer<BifrostService> {
        BifrostSvcServer::new(BifrostService { slot })
            .max_decoding_message_size(message_limit)
            .max_encoding_message_size(message_limit)
    }

    fn bifrost(&self) -> Result<&Bifrost, Status> {
        self.slot.get().ok_or_else(|| {
            let mut status = Status::unavailable("this node has not joined its cluster yet");
            status
                .metadata_mut()
                .insert(NOT_APPENDED_HEADER, MetadataValue::from_static("transient"));
            status
        })
    }
}

fn error_to_status(error: BifrostError) -> Status {
    let (mut status, reason) = match &error {
        BifrostError::NotAppended(NotAppended::Sealed) => {
            (Status::failed_precondition(error.to_string()), Some("sealed"))
        }
        BifrostError::NotAppended(NotAppended::SequencerGone(_)) => {
            (Status::failed_precondition(error.to_string()), Some("sequencer-gone"))
        }
        BifrostError::NotAppended(NotAppended::Transient(_)) => {
            (Status::unavailable(error.to_string()), Some("transient"))
        }
        BifrostError::Unavailable(_) => (Status::unavailable(error.to_string()), Some("transient")),
        BifrostError::UnknownOutcome(_) => (Status::unknown(error.to_string()), None),
        BifrostError::Invalid(_) => (Status::invalid_argument(error.to_string()), None),
    };
    if let Some(reason) = reason {
        status
            .metadata_mut()
            .insert(NOT_APPENDED_HEADER, MetadataValue::from_static(reason));
    }
    status
}

/// Maps the answer of another node's Bifrost back to an error.
pub(crate) fn status_to_error(status: &Status, node: PlainNodeId) -> BifrostError {
    let message = format!("{node}: {}", status.message());
    match status.metadata().get(NOT_APPENDED_HEADER).and_then(|v| v.to_str().ok()) {
        Some("sealed") => BifrostError::sealed(),
        Some("sequencer-gone") => BifrostError::sequencer_gone(message),
        Some(_) => BifrostError::transient(message),
        None if crate::peers::refused(status) => {
            BifrostError::sequencer_gone(format!("{node} does not answer: {}", status.message()))
        }
        None if status.code() == tonic::Code::InvalidArgument => BifrostError::Invalid(message),
        None => BifrostError::UnknownOutcome(message),
    }
}

#[tonic::async_trait]
impl BifrostSvc for BifrostService {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let request = request.into_inner();
        let count = request.payloads.len() as u64;
        let bifrost = self.bifrost()?;
        // A partition's log holds only what its processors propose: a record from outside
        // could stop the partition (it cannot be applied) or change its state behind its back.
        match bifrost.is_partition_log(request.log_id).await {
            Ok(false) => {}
            Ok(true) => {
                return Err(Status::permission_denied(format!(
                    "log {} is the log of partition {}: only its partition processors append to it",
                    request.log_id, request.log_id
                )));
            }
            Err(error) => return Err(error_to_status(error)),
        }
        let first = bifrost
            .append(request.log_id, request.payloads)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::AppendResponse {
            first_lsn: first,
            last_lsn: first + count.saturating_sub(1),
        }))
    }

    async fn read(&self, request: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        let request = request.into_inner();
        let max = (request.max_records as usize).clamp(1, 10_000);
        let (entries, tail) = self
            .bifrost()?
            .read(request.log_id, request.from_lsn.max(1), max)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(read_response(entries, tail)))
    }

    type TailStream = ReceiverStream<Result<pb::ReadResponse, Status>>;

    async fn tail(&self, request: Request<pb::TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        let request = request.into_inner();
        let bifrost = self.bifrost()?.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let log_id = request.log_id;
            let mut from = request.from_lsn.max(1);
            let mut last_problem = String::new();
            loop {
                let outcome = tokio::select! {
                    _ = sender.closed() => return,
                    outcome = bifrost.read_next(log_id, from, FOLLOW_BATCH, MAX_TAIL_WAIT) => outcome,
                };
                match outcome {
                    Ok((entries, _)) if entries.is_empty() => {}
                    Ok((entries, tail)) => {
                        from = entries.last().map_or(from, LogEntry::next_lsn);
                        if sender.send(Ok(read_response(entries, tail))).await.is_err() {
                            return;
                        }
                    }
                    Err(error @ BifrostError::Invalid(_)) => {
                        let _ = sender.send(Err(error_to_status(error))).await;
                        return;
                    }
                    Err(error) => {
                        // Keep following (e.g. through a reconfiguration); say so once per cause.
                        let problem = error.to_string();
                        if problem != last_problem {
                            tracing::warn!(log_id, from, %problem, "a log follower waits");
                            last_problem = problem;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn find_tail(&self, request: Request<pb::FindTailRequest>) -> Result<Response<pb::FindTailResponse>, Status> {
        let log_id = request.into_inner().log_id;
        let tail = self.bifrost()?.find_tail(log_id).await.map_err(error_to_status)?;
        let trim_point = self
            .bifrost()?
            .chain(log_id, false)
            .await
            .map_err(error_to_status)?
            .trim_point;
        Ok(Response::new(pb::FindTailResponse {
            tail_lsn: tail,
            trim_point,
        }))
    }

    async fn trim(&self, request: Request<pb::TrimRequest>) -> Result<Response<pb::TrimResponse>, Status> {
        let request = request.into_inner();
        let trim_point = self
            .bifrost()?
            .trim(request.log_id, request.trim_point)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::TrimResponse { trim_point }))
    }

    async fn sequencer_append(
        &self,
        request: Request<pb::SequencerAppendRequest>,
    ) -> Result<Response<pb::SequencerAppendResponse>, Status> {
        let request = request.into_inner();
        let first_offset = self
            .bifrost()?
            .serve_forwarded_append(request.loglet_id, request.sequencer_generation, request.payloads)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(pb::SequencerAppendResponse { first_offset }))
    }

    async fn sequencer_tail(
        &self,
        request: Request<pb::SequencerTailRequest>,
    ) -> Result<Response<pb::SequencerTailResponse>, Status> {
        let request = request.into_inner();
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_TAIL_WAIT);
        let tail = self
            .bifrost()?
            .served_tail(request.loglet_id, request.wait_beyond.map(|beyond| (beyond, max_wait)))
            .await
            .ok_or_else(|| Status::not_found("this node does not run the loglet's sequencer"))?;
        Ok(Response::new(pb::SequencerTailResponse {
            committed_tail: tail,
            sealed: false,
        }))
    }
}

fn read_response(entries: Vec<LogEntry>, tail: u64) -> pb::ReadResponse {
    let entries = entries
        .into_iter()
        .map(|entry| pb::LogEntry {
            entry: Some(match entry {
                LogEntry::Record { lsn, payload } => pb::log_entry::Entry::Record(pb::LogRecord { lsn, payload }),
                LogEntry::TrimGap { from, to } => pb::log_entry::Entry::TrimGap(pb::TrimGap {
                    from_lsn: from,
                    to_lsn: to,
                }),
            }),
        })
        .collect();
    pb::ReadResponse {
        entries,
        tail_lsn: tail,
    }
}
