//! Claiming leadership: the next epoch by compare-and-swap in metadata, then an
//! `AnnounceLeader` record; the claimant leads once it applies its own announcement.

use std::sync::Arc;
use std::time::Duration;

use restate_metadata_store::ReadModifyWrite;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::processor::appender::Appender;
use crate::processor::{Control, ProcessorCtx};
use crate::wal::{Command, Envelope, now_ms};

/// The epoch of partition `id` in metadata (`pp_epoch_<id>`): the last one claimed, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMetadata {
    pub epoch: u64,
    pub node: u32,
}

/// How long a failed claim waits before the processor may claim again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Claims the next epoch of `partition` for this node and announces it; reports
/// [`Control::Epoch`] or [`Control::LeadershipFailed`] to the processor.
pub(crate) fn spawn_claim(
    ctx: Arc<ProcessorCtx>,
    appender: Appender,
    control: mpsc::UnboundedSender<Control>,
    partition: u16,
) {
    tokio::spawn(async move {
        let key = format!("pp_epoch_{partition}");
        let node = ctx.node_id;
        let epoch = ctx
            .metadata
            .read_modify_write::<EpochMetadata, _>(&key, |current| {
                Ok(ReadModifyWrite::Write(EpochMetadata {
                    epoch: current.map_or(1, |c| c.epoch + 1),
                    node,
                }))
            })
            .await;
        let epoch = match epoch {
            Ok((_, stored)) => stored.epoch,
            Err(error) => {
                tracing::warn!(partition, %error, "cannot obtain a leader epoch; trying again");
                tokio::time::sleep(RETRY_DELAY).await;
                let _ = control.send(Control::LeadershipFailed);
                return;
            }
        };
        appender.reset(epoch);
        let announce = Envelope {
            timestamp: now_ms(),
            leader_epoch: None,
            dedup: None,
            command: Command::AnnounceLeader { epoch, node },
        };
        match appender.append(&announce).await {
            Ok(_) => {
                let _ = control.send(Control::Epoch(epoch));
            }
            Err(error) => {
                tracing::warn!(partition, %error, "cannot announce leadership; trying again");
                tokio::time::sleep(RETRY_DELAY).await;
                let _ = control.send(Control::LeadershipFailed);
            }
        }
    });
}
