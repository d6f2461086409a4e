//! `restatectl logs list|describe|trim`.

use clap::Subcommand;
use restate_proto::cluster_ctrl::{DescribeLogRequest, ListLogsRequest, LogDescription, TrimLogRequest};

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
    /// Every segment of one log.
    Describe {
        log_id: u32,
        #[arg(long)]
        json: bool,
    },
    /// Drop the records of a log below an LSN (trim points only move forward).
    Trim {
        log_id: u32,
        #[arg(long)]
        trim_point: u64,
    },
}

pub(crate) async fn run(command: LogsCommand, addresses: &Addresses) -> anyhow::Result<()> {
    let nodes = crate::cluster::nodes_config(addresses).await?.1;
    let admins = admin_addresses(addresses, Some(&nodes));
    match command {
        LogsCommand::List { json } => {
            let logs = read_from_admin(addresses, &admins, |mut client| async move {
                client.list_logs(ListLogsRequest {}).await.map(|r| r.into_inner())
            })
            .await?;
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
        LogsCommand::Describe { log_id, json } => {
            let log = read_from_admin(addresses, &admins, |mut client| async move {
                client
                    .describe_log(DescribeLogRequest { log_id })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log_json(&log))?);
                return Ok(());
            }
            println!(
                "Log {log_id}: tail {}, trim point {}",
                log.tail_lsn
                    .map_or(format!("unknown ({})", log.tail_error), |t| t.to_string()),
                log.trim_point
            );
            let mut table = new_table(&[
                "SEGMENT",
                "FROM-LSN",
                "KIND",
                "LOGLET-ID",
                "REPLICATION",
                "SEQUENCER",
                "NODESET",
            ]);
            for segment in &log.segments {
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
            Ok(())
        }
        LogsCommand::Trim { log_id, trim_point } => {
            let done = on_admin(addresses, &admins, |mut client| async move {
                client
                    .trim_log(TrimLogRequest { log_id, trim_point })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
            println!("✅ Log {log_id} is trimmed up to LSN {} (exclusive)", done.trim_point);
            Ok(())
        }
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
