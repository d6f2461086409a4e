//! `restatectl snapshots create`: each partition's leader writes a snapshot of its partition
//! store into the cluster's snapshot repository (`[worker.snapshots] destination`).

use anyhow::bail;
use clap::Subcommand;
use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{CreateSnapshotsRequest, CreatedSnapshot};
use restate_types::Role;

use crate::connection::Addresses;

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotsCommand {
    /// Take a snapshot of every partition (or of one) on its leader, into the snapshot
    /// repository the worker nodes are configured with (`[worker.snapshots] destination`).
    Create {
        /// Only this partition.
        #[arg(long, short = 'p')]
        partition: Option<u16>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(command: SnapshotsCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        SnapshotsCommand::Create { partition, json } => create(addresses, partition, json).await,
    }
}

async fn create(addresses: &Addresses, partition: Option<u16>, json: bool) -> anyhow::Result<()> {
    let (_, nodes) = crate::cluster::nodes_config(addresses).await?;
    let workers: Vec<_> = nodes.with_role(Role::Worker).collect();
    if workers.is_empty() {
        bail!("the cluster has no node with the worker role: there is no partition to take a snapshot of");
    }
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.set_message(format!(
        "taking snapshots on the leaders ({} worker nodes)…",
        workers.len()
    ));
    progress.enable_steady_tick(std::time::Duration::from_millis(100));
    let answers = join_all(workers.iter().map(|node| {
        let address = restate_net::normalize_address(&node.address);
        let label = format!("{} ({})", node.id, node.name);
        async move {
            let answer = match addresses.channel(&address) {
                Ok(channel) => NodeCtlSvcClient::new(channel)
                    .create_snapshots(CreateSnapshotsRequest {
                        partition_id: partition.map(u32::from),
                    })
                    .await
                    .map(|r| r.into_inner().snapshots),
                Err(error) => Err(tonic::Status::unavailable(error.to_string())),
            };
            (label, answer)
        }
    }))
    .await;
    progress.finish_and_clear();

    let mut created: Vec<(String, CreatedSnapshot)> = Vec::new();
    let mut problems = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(snapshots) => created.extend(snapshots.into_iter().map(|s| (node.clone(), s))),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                bail!("{node}: {}", status.message())
            }
            Err(status) => problems.push(format!("{node}: {}", status.message())),
        }
    }
    created.sort_by_key(|(_, s)| s.partition_id);
    for problem in &problems {
        eprintln!("note: no snapshots from {problem}");
    }
    if created.is_empty() {
        bail!(match partition {
            Some(id) => format!("no node that answered leads partition {id}: no snapshot was taken"),
            None => "no node that answered leads a partition: no snapshot was taken".to_owned(),
        });
    }
    if json {
        let rows: Vec<serde_json::Value> = created
            .iter()
            .map(|(node, s)| {
                serde_json::json!({
                    "partition_id": s.partition_id,
                    "snapshot_id": s.snapshot_id,
                    "min_applied_lsn": s.min_applied_lsn,
                    "node": node,
                    "location": s.location,
                    "size_bytes": s.size_bytes,
                    "entries": s.entries,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let mut table =
            crate::table::new_table(&["PARTITION", "SNAPSHOT", "MIN APPLIED LSN", "NODE", "SIZE", "LOCATION"]);
        for (node, s) in &created {
            table.add_row(vec![
                s.partition_id.to_string(),
                s.snapshot_id.clone(),
                s.min_applied_lsn.to_string(),
                node.clone(),
                format!("{} B", s.size_bytes),
                s.location.clone(),
            ]);
        }
        println!("{table}");
        println!("✅ {} snapshot(s) taken", created.len());
    }
    if !problems.is_empty() {
        bail!(
            "{} node(s) did not answer; the partitions they lead have no new snapshot",
            problems.len()
        );
    }
    Ok(())
}
