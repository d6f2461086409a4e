//! `restatectl replicated-loglet list-servers|info` (and `digest`, refused): the log-servers
//! that store replicated loglets.

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::future::join_all;
use restate_proto::log_server::log_server_svc_client::LogServerSvcClient;
use restate_proto::log_server::{GetLogletInfoRequest, LogServerIdentity};

use crate::cluster::{admin_addresses, read_from_admin};
use crate::connection::{Addresses, call_error};
use crate::table::new_table;

#[derive(Debug, Subcommand)]
pub(crate) enum ReplicatedLogletCommand {
    /// Per-record digest of a loglet (refused: see the message).
    Digest {
        loglet_id: String,
        #[arg(long)]
        from: Option<u32>,
        #[arg(long)]
        to: Option<u32>,
        #[arg(short = 'u', long)]
        under_replicated_only: bool,
    },
    /// What each log-server of a loglet's nodeset stores of it: sealed, local tail, known
    /// global tail, trim point.
    Info {
        /// The loglet id as `logs describe` shows it (e.g. 3_1: log 3, segment 1) or as a number.
        loglet_id: String,
    },
    /// The log-servers with their storage state and liveness.
    #[command(aliases = ["servers", "nodes"])]
    ListServers,
}

pub(crate) async fn run(command: ReplicatedLogletCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        ReplicatedLogletCommand::Digest { loglet_id, .. } => bail!(
            "`replicated-loglet digest {loglet_id}`: restate-rs log-servers offer no per-record digest; see what each \
             log-server stores of the loglet with `restatectl replicated-loglet info {loglet_id}`, and the log's tail \
             with `restatectl logs find-tail <LOG_ID>`"
        ),
        ReplicatedLogletCommand::Info { loglet_id } => info(addresses, &loglet_id).await,
        ReplicatedLogletCommand::ListServers => list_servers(addresses).await,
    }
}

async fn list_servers(addresses: &Addresses) -> anyhow::Result<()> {
    let (version, rows, _) = super::nodes::node_rows(addresses).await?;
    let mut table = new_table(&["NODE", "GEN", "NAME", "ADDRESS", "STORAGE-STATE", "LIVENESS"]);
    let mut any = false;
    for row in rows.iter().filter(|row| row.storage_state.is_some()) {
        any = true;
        table.add_row(vec![
            row.id.clone(),
            row.generation.to_string(),
            row.name.clone(),
            row.address.clone(),
            row.storage_state.clone().unwrap_or_default(),
            row.liveness.clone(),
        ]);
    }
    println!("Log-servers (nodes configuration v{version})");
    if any {
        println!("{table}");
    } else {
        println!("No node has the log-server role.");
    }
    Ok(())
}

/// `3_1` (log 3, segment 1) or the number itself.
fn parse_loglet_id(text: &str) -> anyhow::Result<u64> {
    let invalid = || {
        anyhow::anyhow!(
            "`{text}` is not a loglet id; expected e.g. 3_1 (log 3, segment 1), as `restatectl logs describe` shows"
        )
    };
    match text.split_once('_') {
        Some((log, segment)) => {
            let log: u32 = log.parse().map_err(|_| invalid())?;
            let segment: u32 = segment.parse().map_err(|_| invalid())?;
            Ok(restate_types::metadata::loglet_id(log, segment))
        }
        None => text.parse().map_err(|_| invalid()),
    }
}

async fn info(addresses: &Addresses, text: &str) -> anyhow::Result<()> {
    let loglet_id = parse_loglet_id(text)?;
    let display = restate_types::metadata::display_loglet_id(loglet_id);
    let (_, nodes) = crate::cluster::nodes_config(addresses).await?;
    let admins = admin_addresses(addresses, Some(&nodes));
    let logs = read_from_admin(addresses, &admins, |mut client| async move {
        client
            .list_logs(restate_proto::cluster_ctrl::ListLogsRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await?;
    let Some(segment) = logs
        .logs
        .iter()
        .flat_map(|log| log.segments.iter())
        .find(|segment| segment.loglet_id == display)
    else {
        bail!("no log segment has loglet id {display}; see the loglet ids with `restatectl logs describe`");
    };
    if segment.kind != "replicated" {
        bail!(
            "loglet {display} is a `{}` loglet, not a replicated one: it has no log-servers",
            segment.kind
        );
    }
    println!(
        "Loglet {display}: replication {}, sequencer {}, nodeset [{}]",
        segment.replication,
        segment.sequencer,
        segment.nodeset.join(", ")
    );
    let answers = join_all(segment.nodeset.iter().map(|member| {
        let nodes = &nodes;
        async move {
            let id: restate_types::PlainNodeId = member
                .parse()
                .map_err(|_| anyhow::anyhow!("nodeset member `{member}` is not a node id"))?;
            let node = nodes
                .nodes
                .get(&id)
                .with_context(|| format!("{member} is not in the nodes configuration"))?;
            let address = restate_net::normalize_address(&node.address);
            let info = LogServerSvcClient::new(addresses.channel(&address)?)
                .get_loglet_info(GetLogletInfoRequest {
                    identity: Some(LogServerIdentity {
                        cluster_name: nodes.cluster_name.clone(),
                        node_id: id.0,
                    }),
                    loglet_id,
                })
                .await
                .map_err(|status| call_error(&address, &status))?
                .into_inner();
            anyhow::Ok(info)
        }
    }))
    .await;
    let mut table = new_table(&["NODE", "SEALED", "LOCAL-TAIL", "KNOWN-GLOBAL-TAIL", "TRIM-POINT"]);
    for (member, answer) in segment.nodeset.iter().zip(answers) {
        match answer {
            Ok(info) => table.add_row(vec![
                member.clone(),
                info.sealed.to_string(),
                info.local_tail.to_string(),
                info.known_global_tail.to_string(),
                info.trim_point.to_string(),
            ]),
            Err(error) => table.add_row(vec![member.clone(), format!("unknown: {error:#}")]),
        };
    }
    println!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loglet_ids() {
        assert_eq!(
            parse_loglet_id("3_1").unwrap(),
            restate_types::metadata::loglet_id(3, 1)
        );
        assert_eq!(parse_loglet_id("42").unwrap(), 42);
        assert!(parse_loglet_id("x_1").unwrap_err().to_string().contains("e.g. 3_1"));
    }
}
