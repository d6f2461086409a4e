//! `restatectl logs list|describe|trim|find-tail`, and Restate's other `logs` commands refused
//! with what restate-rs offers instead.

use clap::Subcommand;
use restate_proto::bifrost::FindTailRequest;
use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
use restate_proto::cluster_ctrl::{
    DescribeLogRequest, ListLogsRequest, ListLogsResponse, LogDescription, SegmentDescription, TrimLogRequest,
};

use crate::cluster::{admin_addresses, on_admin, read_from_admin};
use crate::connection::Addresses;
use crate::table::new_table;

#[derive(Debug, Subcommand)]
pub(crate) enum LogsCommand {
    /// Every log with its current segment, tail and trim point.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Generate a logs configuration (refused: restate-rs creates each log's chain itself).
    GenerateMetadata(GenerateMetadataArgs),
    /// The segments of logs (all logs by default). The table shows the last 25 segments of
    /// each log unless --head, --tail, --skip, --from-segment-id or --all say otherwise; JSON
    /// has every segment unless they are given.
    Describe {
        /// Log ids or ranges, e.g. 0 or 1-4.
        log_id: Vec<String>,
        #[arg(long)]
        json: bool,
        /// The first segment index to show.
        #[arg(long)]
        from_segment_id: Option<u32>,
        /// Skip over the first N segments.
        #[arg(long)]
        skip: Option<usize>,
        /// Show the last N segments (25 by default).
        #[arg(long, conflicts_with = "head")]
        tail: Option<usize>,
        /// Show the first N segments.
        #[arg(long)]
        head: Option<usize>,
        /// Show every segment.
        #[arg(long, conflicts_with_all = ["head", "tail"])]
        all: bool,
        /// Also say how many segments were left out and why a tail is unknown (kind,
        /// replication, sequencer and nodeset are always shown).
        #[arg(long)]
        extra: bool,
    },
    /// Drop the records of logs below an LSN (trim points only move forward). Note: the trim
    /// point is the first LSN kept; Restate's restatectl counts it as the last LSN dropped.
    Trim {
        /// Log ids or ranges, e.g. 0 or 1-4.
        #[arg(required = true)]
        log_id: Vec<String>,
        #[arg(short = 't', long)]
        trim_point: u64,
    },
    /// Seal a log's tail segment and extend it with a new one (refused: see the message).
    Reconfigure(ReconfigureArgs),
    /// Seal a log's chain (refused: see the message).
    Seal {
        #[arg(required = true)]
        log_id: Vec<String>,
        #[arg(short = 'i', long)]
        segment_index: Option<u32>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The tail (next LSN to be written) and trim point of logs, found on their segments.
    FindTail {
        /// Log ids or ranges, e.g. 0 or 1-4.
        #[arg(required = true)]
        log_id: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct GenerateMetadataArgs {
    #[arg(long, default_value_t = 2)]
    version: u32,
    #[arg(short = 'r', long, required = true)]
    replication: String,
    #[arg(long, num_args = 1.., value_delimiter = ',', required = true)]
    nodeset: Vec<String>,
    #[arg(long, required = true)]
    sequencer: String,
    #[arg(short = 'n', long, required = true)]
    num_logs: u32,
    #[arg(long)]
    pretty: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReconfigureArgs {
    #[arg(short = 'l', long, required = true)]
    log_id: String,
    #[arg(short = 'p', long, value_parser = ["local", "replicated"])]
    provider: Option<String>,
    #[arg(short = 'i', long)]
    segment_index: Option<u32>,
    #[arg(short = 'm', long, default_value_t = 1)]
    min_version: u32,
    #[arg(long)]
    replication: Option<String>,
    #[arg(long, num_args = 0.., value_delimiter = ',')]
    nodeset: Vec<String>,
    #[arg(long)]
    sequencer: Option<String>,
}

const RECONFIGURED_BY_BIFROST: &str = "restate-rs seals and extends log segments itself: when a sequencer or \
     log-server fails, and when the default provider or replication changes (`restatectl config set --log-provider \
     replicated --log-replication N`). It takes no manual seal or reconfiguration; see the segments with \
     `restatectl logs describe`";

/// `logs generate-metadata`: needs no node.
pub(crate) fn generate_metadata(_args: GenerateMetadataArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`logs generate-metadata`: restate-rs creates each log's chain of segments on the log's first append, so a \
         logs configuration is not written by hand. To change the default provider or replication use `restatectl \
         config set`; to inspect or repair the value use `restatectl metadata get --key bifrost_config` and \
         `restatectl metadata put --key bifrost_config`"
    )
}

pub(crate) async fn run(command: LogsCommand, addresses: &Addresses) -> anyhow::Result<()> {
    let admins = || async {
        let nodes = crate::cluster::nodes_config(addresses).await?.1;
        Ok::<_, anyhow::Error>(admin_addresses(addresses, Some(&nodes)))
    };
    match command {
        LogsCommand::GenerateMetadata(args) => generate_metadata(args),
        LogsCommand::Reconfigure(args) => {
            anyhow::bail!("`logs reconfigure --log-id {}`: {RECONFIGURED_BY_BIFROST}", args.log_id)
        }
        LogsCommand::Seal { log_id, .. } => {
            anyhow::bail!("`logs seal {}`: {RECONFIGURED_BY_BIFROST}", log_id.join(" "))
        }
        LogsCommand::List { json } => {
            let admins = admins().await?;
            let logs = list_logs(addresses, &admins).await?;
            if json {
                let rows: Vec<serde_json::Value> = logs.logs.iter().map(log_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("Logs provider: {}", logs.default_provider);
            if !logs.default_replication.is_empty() {
                println!("Log replication: {}", logs.default_replication);
            }
            let mut table = new_table(&[
                "L-ID",
                "SEGMENTS",
                "FROM",
                "KIND",
                "LOGLET-ID",
                "REPLICATION",
                "SEQUENCER",
                "NODESET",
                "TAIL",
                "TRIM",
            ]);
            for log in &logs.logs {
                let Some(tail) = log.segments.last() else { continue };
                table.add_row(vec![
                    log.log_id.to_string(),
                    log.segments.len().to_string(),
                    tail.base_lsn.to_string(),
                    tail.kind.clone(),
                    tail.loglet_id.clone(),
                    tail.replication.clone(),
                    tail.sequencer.clone(),
                    format!("[{}]", tail.nodeset.join(", ")),
                    log.tail_lsn.map_or("?".to_owned(), |t| t.to_string()),
                    log.trim_point.to_string(),
                ]);
            }
            println!("{table}");
            if logs.logs.is_empty() {
                println!("No log has been written yet: logs are created on their first append.");
            }
            Ok(())
        }
        LogsCommand::Describe {
            log_id,
            json,
            from_segment_id,
            skip,
            tail,
            head,
            all,
            extra,
        } => {
            let selection = Selection {
                from_segment_id,
                skip,
                tail,
                head,
                all,
            };
            let admins = admins().await?;
            let logs: Vec<LogDescription> = if log_id.is_empty() {
                list_logs(addresses, &admins).await?.logs
            } else {
                let mut logs = Vec::new();
                for log_id in super::parse_id_ranges(&log_id, "log")? {
                    logs.push(describe_log(addresses, &admins, log_id).await?);
                }
                logs
            };
            if json {
                let limited = !selection.is_default();
                let rows: Vec<serde_json::Value> = logs
                    .iter()
                    .map(|log| {
                        let mut log = log.clone();
                        if limited {
                            log.segments = selection.apply(&log.segments, usize::MAX).0;
                        }
                        log_json(&log)
                    })
                    .collect();
                // One log asked for by id: the object itself (as before ranges were taken).
                let output = match (log_id.len(), rows.as_slice()) {
                    (1, [row]) if !log_id[0].contains(['-', ',']) => row.clone(),
                    _ => serde_json::Value::Array(rows),
                };
                println!("{}", serde_json::to_string_pretty(&output)?);
                return Ok(());
            }
            if logs.is_empty() {
                println!("No log has been written yet: logs are created on their first append.");
            }
            for (i, log) in logs.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                describe_table(log, &selection, extra);
            }
            Ok(())
        }
        LogsCommand::Trim { log_id, trim_point } => {
            let admins = admins().await?;
            for log_id in super::parse_id_ranges(&log_id, "log")? {
                let done = on_admin(addresses, &admins, |mut client| async move {
                    client
                        .trim_log(TrimLogRequest { log_id, trim_point })
                        .await
                        .map(|r| r.into_inner())
                })
                .await?;
                println!("✅ Log {log_id} is trimmed up to LSN {} (exclusive)", done.trim_point);
            }
            Ok(())
        }
        LogsCommand::FindTail { log_id, json } => {
            let mut rows = Vec::new();
            for log_id in super::parse_id_ranges(&log_id, "log")? {
                let found = addresses
                    .first_answer(|channel, _| async move {
                        BifrostSvcClient::new(channel)
                            .find_tail(FindTailRequest { log_id })
                            .await
                            .map(|r| r.into_inner())
                    })
                    .await?;
                rows.push((log_id, found));
            }
            if json {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(log_id, found)| {
                        serde_json::json!({"log_id": log_id, "tail_lsn": found.tail_lsn, "trim_point": found.trim_point})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let mut table = new_table(&["L-ID", "TAIL-LSN", "TRIM-POINT"]);
            for (log_id, found) in &rows {
                table.add_row(vec![
                    log_id.to_string(),
                    found.tail_lsn.to_string(),
                    found.trim_point.to_string(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

async fn list_logs(addresses: &Addresses, admins: &[String]) -> anyhow::Result<ListLogsResponse> {
    read_from_admin(addresses, admins, |mut client| async move {
        client.list_logs(ListLogsRequest {}).await.map(|r| r.into_inner())
    })
    .await
}

async fn describe_log(addresses: &Addresses, admins: &[String], log_id: u32) -> anyhow::Result<LogDescription> {
    read_from_admin(addresses, admins, |mut client| async move {
        client
            .describe_log(DescribeLogRequest { log_id })
            .await
            .map(|r| r.into_inner())
    })
    .await
}

/// Which segments of a log `logs describe` shows.
struct Selection {
    from_segment_id: Option<u32>,
    skip: Option<usize>,
    tail: Option<usize>,
    head: Option<usize>,
    all: bool,
}

/// Segments the table shows by default (the newest).
const DEFAULT_TAIL: usize = 25;

impl Selection {
    fn is_default(&self) -> bool {
        self.from_segment_id.is_none() && self.skip.is_none() && self.tail.is_none() && self.head.is_none() && !self.all
    }

    /// The selected segments and how many were left out.
    fn apply(&self, segments: &[SegmentDescription], default_tail: usize) -> (Vec<SegmentDescription>, usize) {
        let from = self.from_segment_id.unwrap_or(0);
        let mut chosen: Vec<SegmentDescription> = segments
            .iter()
            .filter(|s| s.index >= from)
            .skip(self.skip.unwrap_or(0))
            .cloned()
            .collect();
        if !self.all {
            if let Some(head) = self.head {
                chosen.truncate(head);
            } else {
                let tail = self.tail.unwrap_or(default_tail);
                let drop = chosen.len().saturating_sub(tail);
                chosen.drain(..drop);
            }
        }
        let left_out = segments.len() - chosen.len();
        (chosen, left_out)
    }
}

fn describe_table(log: &LogDescription, selection: &Selection, extra: bool) {
    println!(
        "Log {}: tail {}, trim point {}",
        log.log_id,
        log.tail_lsn
            .map_or(format!("unknown ({})", log.tail_error), |t| t.to_string()),
        log.trim_point
    );
    let (segments, left_out) = selection.apply(&log.segments, DEFAULT_TAIL);
    let mut table = new_table(&[
        "SEGMENT",
        "FROM-LSN",
        "KIND",
        "LOGLET-ID",
        "REPLICATION",
        "SEQUENCER",
        "NODESET",
    ]);
    for segment in &segments {
        table.add_row(vec![
            segment.index.to_string(),
            segment.base_lsn.to_string(),
            segment.kind.clone(),
            segment.loglet_id.clone(),
            segment.replication.clone(),
            segment.sequencer.clone(),
            format!("[{}]", segment.nodeset.join(", ")),
        ]);
    }
    println!("{table}");
    if left_out > 0 && (extra || selection.is_default()) {
        println!(
            "{left_out} of {} segments not shown (use --all, --head, --tail or --from-segment-id)",
            log.segments.len()
        );
    }
    if extra && !log.tail_error.is_empty() {
        println!("Tail lookup: {}", log.tail_error);
    }
}

fn log_json(log: &LogDescription) -> serde_json::Value {
    serde_json::json!({
        "log_id": log.log_id,
        "trim_point": log.trim_point,
        "tail_lsn": log.tail_lsn,
        "segments": log.segments.iter().map(|s| serde_json::json!({
            "index": s.index,
            "base_lsn": s.base_lsn,
            "kind": s.kind,
            "loglet_id": s.loglet_id,
            "replication": s.replication,
            "sequencer": s.sequencer,
            "nodeset": s.nodeset,
        })).collect::<Vec<_>>(),
    })
}
