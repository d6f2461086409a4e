//! `restatectl snapshots create|list`: each partition's leader writes a snapshot of its
//! partition store into the cluster's snapshot repository (`[worker.snapshots] destination`);
//! a worker node lists what the repository holds.

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{CreateSnapshotsRequest, CreatedSnapshot, GetPartitionsRequest, ListSnapshotsRequest};
use restate_types::Role;
use restate_types::metadata::{PARTITION_TABLE_KEY, PartitionTable};

use crate::connection::Addresses;

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotsCommand {
    /// Take a snapshot of every partition (or of the given ones) on its leader, into the snapshot
    /// repository the worker nodes are configured with (`[worker.snapshots] destination`).
    #[command(alias = "create-snapshot")]
    Create {
        /// Partition ids or ranges, e.g. 0 or 1-4 (all partitions by default).
        partition_id: Vec<String>,
        /// Only this partition (same as giving its id).
        #[arg(long, short = 'p')]
        partition: Option<u16>,
        /// Only snapshot partitions whose leader applied its log at least up to this LSN; the
        /// others are reported and make the command fail.
        #[arg(short = 'm', long)]
        min_lsn: Option<u64>,
        /// Then trim each partition's log up to what its snapshot holds (replicas behind it
        /// restore from the snapshot).
        #[arg(short = 't', long)]
        trim_log: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The snapshots in the repository, newest first per partition.
    List {
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
        SnapshotsCommand::Create {
            partition_id,
            partition,
            min_lsn,
            trim_log,
            json,
        } => {
            let mut ids = super::parse_id_ranges(&partition_id, "partition")?;
            if let Some(partition) = partition {
                ids.push(u32::from(partition));
                ids.sort_unstable();
                ids.dedup();
            }
            create(addresses, ids, min_lsn, trim_log, json).await
        }
        SnapshotsCommand::List { partition, json } => list(addresses, partition, json).await,
    }
}

async fn list(addresses: &Addresses, partition: Option<u16>, json: bool) -> anyhow::Result<()> {
    let (_, nodes) = crate::cluster::nodes_config(addresses).await?;
    let workers: Vec<_> = nodes.with_role(Role::Worker).collect();
    if workers.is_empty() {
        bail!("the cluster has no node with the worker role: no node knows the snapshot repository");
    }
    // Every worker node uses the cluster's repository: the first that answers lists it.
    let mut problems = Vec::new();
    let mut answer = None;
    for node in &workers {
        let address = restate_net::normalize_address(&node.address);
        let listed = match addresses.channel(&address) {
            Ok(channel) => NodeCtlSvcClient::new(channel)
                .list_snapshots(ListSnapshotsRequest {
                    partition_id: partition.map(u32::from),
                })
                .await
                .map(|r| r.into_inner()),
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        match listed {
            Ok(listed) => {
                answer = Some(listed);
                break;
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                bail!("{} ({}): {}", node.id, node.name, status.message())
            }
            Err(status) => problems.push(format!("{} ({}): {}", node.id, node.name, status.message())),
        }
    }
    let Some(answer) = answer else {
        bail!("no worker node answered: {}", problems.join("; "));
    };
    if json {
        let rows: Vec<serde_json::Value> = answer
            .snapshots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "partition_id": s.partition_id,
                    "snapshot_id": s.snapshot_id,
                    "min_applied_lsn": s.min_applied_lsn,
                    "created_at": s.created_at,
                    "location": s.location,
                    "latest": s.latest,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if answer.snapshots.is_empty() {
        println!(
            "{} holds no snapshot yet: take one with `restatectl snapshots create`.",
            answer.repository
        );
        return Ok(());
    }
    let mut table = crate::table::new_table(&["PARTITION", "SNAPSHOT", "MIN APPLIED LSN", "CREATED", "LATEST"]);
    for s in &answer.snapshots {
        table.add_row(vec![
            s.partition_id.to_string(),
            s.snapshot_id.clone(),
            s.min_applied_lsn.to_string(),
            match crate::settings::get().time_format {
                crate::settings::TimeFormat::Human => s.created_at.clone(),
                _ => crate::settings::format_timestamp(&s.created_at),
            },
            if s.latest { "yes" } else { "" }.to_owned(),
        ]);
    }
    println!("Snapshots in {}:", answer.repository);
    println!("{table}");
    Ok(())
}

/// How long `snapshots create` waits for every partition to have a leader.
const LEADERS_SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Snapshots of `only` (all partitions if empty) on their leaders.
async fn create(
    addresses: &Addresses,
    only: Vec<u32>,
    min_lsn: Option<u64>,
    trim_log: bool,
    json: bool,
) -> anyhow::Result<()> {
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
    // Only nodes that answer a quick question get the long one: a paused node must not hold
    // up the command (its partitions fail over to nodes that answer).
    let all = partition_ids(addresses).await?;
    super::ensure_partitions_exist(&only, &all)?;
    // Ask for each partition on its own only where needed (a subset, or a minimum LSN to check).
    let one_by_one = !only.is_empty() || min_lsn.is_some();
    let wanted: Vec<u32> = if only.is_empty() { all } else { only };
    let mut below_min: Vec<String> = Vec::new();
    // Leaders may still be settling (a node that just started): wait a little for them.
    let settle_deadline = tokio::time::Instant::now() + LEADERS_SETTLE_WITHIN;
    let (mut answers, asked) = loop {
        let leads = join_all(workers.iter().map(|node| {
            let address = restate_net::normalize_address(&node.address);
            async move {
                let partitions = match addresses.channel(&address) {
                    Ok(channel) => NodeCtlSvcClient::new(channel)
                        .get_partitions(GetPartitionsRequest {})
                        .await
                        .map(|r| r.into_inner().partitions),
                    Err(error) => Err(tonic::Status::unavailable(error.to_string())),
                };
                (node, address, partitions)
            }
        }))
        .await;
        let mut answers = Vec::new();
        let mut asked = Vec::new();
        let mut led = std::collections::BTreeSet::new();
        below_min.clear();
        for (node, address, partitions) in leads {
            let label = format!("{} ({})", node.id, node.name);
            match partitions {
                Ok(partitions) => {
                    let leading: Vec<&restate_proto::node_ctl::PartitionProcessorState> = partitions
                        .iter()
                        .filter(|p| p.is_leader && wanted.contains(&p.partition_id))
                        .collect();
                    led.extend(leading.iter().map(|p| p.partition_id));
                    let mut ready = Vec::new();
                    for p in leading {
                        match min_lsn {
                            Some(min) if p.applied_lsn < min => below_min.push(format!(
                                "partition {}: its leader {label} applied its log up to LSN {}, below --min-lsn {min}",
                                p.partition_id, p.applied_lsn
                            )),
                            _ => ready.push(p.partition_id),
                        }
                    }
                    if !ready.is_empty() {
                        asked.push((label, address, ready));
                    }
                }
                Err(status) => answers.push((label, Err(status))),
            }
        }
        if led.len() == wanted.len() || tokio::time::Instant::now() >= settle_deadline {
            break (answers, asked);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    answers.extend(
        join_all(asked.into_iter().map(|(label, address, ready)| async move {
            let requests: Vec<Option<u32>> = if one_by_one {
                ready.into_iter().map(Some).collect()
            } else {
                vec![None]
            };
            let answer = match addresses.long_channel(&address) {
                Ok(channel) => {
                    let mut client = NodeCtlSvcClient::new(channel);
                    let mut snapshots = Vec::new();
                    let mut failure = None;
                    for partition_id in requests {
                        match client
                            .create_snapshots(CreateSnapshotsRequest { partition_id, trim_log })
                            .await
                        {
                            Ok(r) => snapshots.extend(r.into_inner().snapshots),
                            Err(status) => {
                                failure = Some(status);
                                break;
                            }
                        }
                    }
                    match failure {
                        Some(status) if snapshots.is_empty() => Err(status),
                        Some(status) => {
                            crate::settings::note(&format!("{label}: {}", status.message()));
                            Ok(snapshots)
                        }
                        None => Ok(snapshots),
                    }
                }
                Err(error) => Err(tonic::Status::unavailable(error.to_string())),
            };
            (label, answer)
        }))
        .await,
    );
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
        crate::settings::note(&format!("no snapshots from {problem}"));
    }
    if created.is_empty() {
        if !below_min.is_empty() {
            bail!("no snapshot was taken: {}", below_min.join("; "));
        }
        bail!(match wanted.as_slice() {
            [id] => format!("no node that answered leads partition {id}: no snapshot was taken"),
            _ => "no node that answered leads a partition: no snapshot was taken".to_owned(),
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
                    "trim_point": s.trim_point,
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
        for (_, s) in &created {
            if let Some(trim_point) = s.trim_point {
                println!(
                    "   log {} trimmed: no record below LSN {trim_point} is kept",
                    s.partition_id
                );
            }
        }
    }
    if !below_min.is_empty() {
        bail!(
            "{} partition(s) have no new snapshot: {}",
            below_min.len(),
            below_min.join("; ")
        );
    }
    if !problems.is_empty() {
        // A node that did not answer matters only if a partition was left without a snapshot
        // (its partitions may have moved to nodes that did answer).
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| created.iter().all(|(_, s)| s.partition_id != **id))
            .map(u32::to_string)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} node(s) did not answer; partition(s) {} have no new snapshot: run it again once their leaders answer",
                problems.len(),
                missing.join(", ")
            );
        }
    }
    Ok(())
}

/// The partitions of the partition table.
async fn partition_ids(addresses: &Addresses) -> anyhow::Result<Vec<u32>> {
    let Some(value) = addresses.metadata_value(PARTITION_TABLE_KEY).await? else {
        bail!("the cluster has no partition table yet: provision it first");
    };
    let table: PartitionTable = serde_json::from_slice(&value.value)
        .with_context(|| format!("`{PARTITION_TABLE_KEY}` in the metadata store cannot be decoded"))?;
    Ok(table.partitions.iter().map(|p| u32::from(p.id)).collect())
}
