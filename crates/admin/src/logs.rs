//! Log listings and trims for `restatectl logs`.

use restate_bifrost::Bifrost;
use restate_proto::cluster_ctrl::{LogDescription, SegmentDescription};
use restate_types::metadata::{Chain, LogletParams, display_loglet_id};
use tonic::Status;

pub(crate) fn bifrost(slot: &std::sync::OnceLock<Bifrost>) -> Result<&Bifrost, Status> {
    slot.get()
        .ok_or_else(|| Status::unavailable("this admin node has not joined its cluster yet"))
}

pub(crate) fn to_status(error: restate_bifrost::BifrostError) -> Status {
    match error {
        restate_bifrost::BifrostError::Invalid(reason) => Status::not_found(reason),
        other => Status::unavailable(other.to_string()),
    }
}

pub(crate) async fn describe(bifrost: &Bifrost, log_id: u32, chain: &Chain) -> LogDescription {
    let (tail_lsn, tail_error) = match bifrost.find_tail(log_id).await {
        Ok(tail) => (Some(tail), String::new()),
        Err(error) => (None, error.to_string()),
    };
    LogDescription {
        log_id,
        trim_point: chain.trim_point,
        tail_lsn,
        tail_error,
        segments: chain
            .segments
            .iter()
            .map(|segment| {
                let (replication, sequencer, nodeset) = match &segment.loglet {
                    LogletParams::Local { node, .. } => (String::new(), node.to_string(), vec![node.to_string()]),
                    LogletParams::Replicated(params) => (
                        params.replication.to_string(),
                        params.sequencer.to_string(),
                        params.nodeset.iter().map(|n| n.to_string()).collect(),
                    ),
                };
                SegmentDescription {
                    index: segment.index,
                    base_lsn: segment.base_lsn,
                    kind: segment.loglet.kind().to_owned(),
                    loglet_id: display_loglet_id(segment.loglet.loglet_id()),
                    replication,
                    sequencer,
                    nodeset,
                }
            })
            .collect(),
    }
}
