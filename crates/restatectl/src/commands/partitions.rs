//! `restatectl partitions list`: each partition's replica set, leader and epoch, and how far
//! each replica applied its log.
//!
//! `restatectl partitions skip-record`: the way out for a partition held at a record it
//! cannot apply (its failure in `restatectl status` names the record). The skip is kept in the
//! metadata store (`pp_skip_<partition>`), so every replica of the partition passes over the
//! same record.

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use restate_proto::metadata as pb;
use restate_proto::metadata::metadata_proxy_svc_client::MetadataProxySvcClient;
use restate_proto::node_ctl::PartitionProcessorState;
use restate_types::metadata::{PARTITION_PLACEMENT_KEY, PARTITION_TABLE_KEY, PartitionPlacement, PartitionTable};
use serde::{Deserialize, Serialize};

use crate::connection::Addresses;

#[derive(Debug, Subcommand)]
pub(crate) enum PartitionsCommand {
    /// Each partition's replica set (the worker nodes the cluster controller placed it on), its
    /// leader and leader epoch, and the LSN each running replica applied. Nodes that do not
    /// answer are left out of the replicas.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Row order: by partition id, by leader node, or partitions with a leader first.
        #[arg(long, value_enum, default_value_t = SortOrder::Partition)]
        sort: SortOrder,
    },
    /// Print a partition table with equal key ranges as JSON (the value of the
    /// `partition_table` metadata key; write it with `restatectl metadata put`).
    GenerateMetadata(GenerateMetadataArgs),
    /// Partition processor placement: which nodes run each partition.
    #[command(subcommand)]
    Placement(PlacementCommand),
    /// Partition leadership: which replica leads each partition.
    #[command(subcommand)]
    Leadership(LeadershipCommand),
    /// Make a partition pass over one record of its log without applying it. Whatever the
    /// record did (an invocation it started, a result it carried) is lost: use it only for
    /// the record that `restatectl status` names as the reason a partition failed.
    SkipRecord {
        /// The partition (its log has the same id).
        partition: u16,
        /// The LSN of the record to skip.
        lsn: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SortOrder {
    Partition,
    Node,
    Active,
}

#[derive(Debug, Args)]
pub(crate) struct GenerateMetadataArgs {
    /// Number of partitions.
    #[arg(short = 'n', long = "num-partition", alias = "num-partitions")]
    num_partitions: u16,
    /// Partition replication, e.g. 2 (default 1).
    #[arg(short = 'r', long)]
    replication: Option<String>,
    /// The metadata version the value is meant for; restate-rs keeps versions beside the
    /// value, so give it to `restatectl metadata put --version` when writing it.
    #[arg(long, default_value_t = 2)]
    version: u32,
    /// Pretty-print the JSON.
    #[arg(long)]
    pretty: bool,
}

/// Restate's `partitions placement …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PlacementCommand {
    /// Explicitly set the replicas of a partition (refused: restate-rs's cluster controller
    /// places partitions itself).
    Set {
        partition_id: u16,
        #[arg(short = 'r', long, num_args = 0.., value_delimiter = ',', required = true)]
        replicas: Vec<String>,
        #[arg(long, value_name = "REASON")]
        freeze: Option<String>,
    },
    /// Freeze automatic placement (refused: not offered by restate-rs).
    Freeze {
        #[arg(required = true)]
        partition_id: Vec<String>,
        #[arg(long, required = true)]
        reason: String,
    },
    /// Unfreeze automatic placement (refused: not offered by restate-rs).
    Unfreeze {
        #[arg(required = true)]
        partition_id: Vec<String>,
    },
    /// The nodes the cluster controller placed each partition on.
    Show {
        /// Partition ids or ranges, e.g. 0 or 1-4; all by default.
        partition_id: Vec<String>,
    },
}

/// Restate's `partitions leadership …`.
#[derive(Debug, Subcommand)]
pub(crate) enum LeadershipCommand {
    /// Pin a partition's leader to a node (refused: restate-rs elects leaders itself).
    Pin {
        #[arg(required = true)]
        partition_id: Vec<String>,
        #[arg(long, required = true)]
        node: String,
    },
    /// Unpin (refused: restate-rs has no pinned leaders).
    Unpin {
        #[arg(required = true)]
        partition_id: Vec<String>,
    },
    /// Freeze leadership (refused: not offered by restate-rs).
    Freeze {
        #[arg(required = true)]
        partition_id: Vec<String>,
        #[arg(long, required = true)]
        reason: String,
    },
    /// Unfreeze leadership (refused: not offered by restate-rs).
    Unfreeze {
        #[arg(required = true)]
        partition_id: Vec<String>,
    },
    /// Each partition's leader and leader epoch, as its replicas report them.
    Show {
        /// Partition ids or ranges, e.g. 0 or 1-4; all by default.
        partition_id: Vec<String>,
    },
}

/// `partitions generate-metadata`: needs no node.
pub(crate) fn generate_metadata(args: GenerateMetadataArgs) -> anyhow::Result<()> {
    if args.num_partitions == 0 {
        bail!("--num-partition 0: a partition table needs at least one partition");
    }
    let replication = match &args.replication {
        Some(text) => text.parse().map_err(|e| anyhow::anyhow!("--replication {text}: {e}"))?,
        None => restate_types::ReplicationProperty::default(),
    };
    let table = restate_types::metadata::PartitionTable::with_equal_ranges(args.num_partitions, replication);
    let json = if args.pretty {
        serde_json::to_string_pretty(&table)?
    } else {
        serde_json::to_string(&table)?
    };
    println!("{json}");
    crate::settings::note(&format!(
        "write it with `restatectl metadata put --key {PARTITION_TABLE_KEY} --version {} --value-file FILE`",
        args.version
    ));
    Ok(())
}

const PLACED_BY_CONTROLLER: &str = "restate-rs's cluster controller places partitions on the worker nodes itself \
     (spreading replicas by load); it takes no manual placement. See the placement with `restatectl partitions \
     placement show` or `restatectl partitions list`, and steer it with `restatectl config set \
     --partition-replication` or by draining nodes with `restatectl nodes set-storage-state`";

const ELECTED_BY_REPLICAS: &str = "restate-rs elects partition leaders itself (the cluster controller picks a live \
     replica); it takes no pinned or frozen leadership. See the leaders with `restatectl partitions leadership show` \
     or `restatectl partitions list`";

/// The value of `pp_skip_<partition>`, as the worker reads it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SkippedRecords {
    lsns: std::collections::BTreeSet<u64>,
}

pub(crate) async fn run(command: PartitionsCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        PartitionsCommand::List { json, sort } => list(addresses, json, sort).await,
        PartitionsCommand::SkipRecord { partition, lsn } => skip_record(addresses, partition, lsn).await,
        PartitionsCommand::GenerateMetadata(args) => generate_metadata(args),
        PartitionsCommand::Placement(PlacementCommand::Show { partition_id }) => {
            show_placement(addresses, &partition_id).await
        }
        PartitionsCommand::Placement(PlacementCommand::Set { .. }) => {
            bail!("`partitions placement set`: {PLACED_BY_CONTROLLER}")
        }
        PartitionsCommand::Placement(PlacementCommand::Freeze { .. }) => {
            bail!("`partitions placement freeze`: {PLACED_BY_CONTROLLER}")
        }
        PartitionsCommand::Placement(PlacementCommand::Unfreeze { .. }) => {
            bail!("`partitions placement unfreeze`: {PLACED_BY_CONTROLLER}")
        }
        PartitionsCommand::Leadership(LeadershipCommand::Show { partition_id }) => {
            show_leadership(addresses, &partition_id).await
        }
        PartitionsCommand::Leadership(LeadershipCommand::Pin { .. }) => {
            bail!("`partitions leadership pin`: {ELECTED_BY_REPLICAS}")
        }
        PartitionsCommand::Leadership(LeadershipCommand::Unpin { .. }) => {
            bail!("`partitions leadership unpin`: {ELECTED_BY_REPLICAS}")
        }
        PartitionsCommand::Leadership(LeadershipCommand::Freeze { .. }) => {
            bail!("`partitions leadership freeze`: {ELECTED_BY_REPLICAS}")
        }
        PartitionsCommand::Leadership(LeadershipCommand::Unfreeze { .. }) => {
            bail!("`partitions leadership unfreeze`: {ELECTED_BY_REPLICAS}")
        }
    }
}

/// The partition ids of the partition table, restricted to `wanted` (ids and ranges) if given.
async fn selected_partitions(addresses: &Addresses, wanted: &[String]) -> anyhow::Result<Vec<u16>> {
    let all: Vec<u16> = match addresses.metadata_value(PARTITION_TABLE_KEY).await? {
        Some(value) => serde_json::from_slice::<PartitionTable>(&value.value)
            .with_context(|| format!("`{PARTITION_TABLE_KEY}` in the metadata store cannot be decoded"))?
            .partitions
            .iter()
            .map(|p| p.id)
            .collect(),
        None => bail!("the cluster has no partition table yet: provision it with `restatectl provision`"),
    };
    if wanted.is_empty() {
        return Ok(all);
    }
    let ids = super::parse_id_ranges(wanted, "partition")?;
    let existing: Vec<u32> = all.iter().map(|&id| u32::from(id)).collect();
    super::ensure_partitions_exist(&ids, &existing)?;
    Ok(ids.into_iter().filter_map(|id| u16::try_from(id).ok()).collect())
}

async fn show_placement(addresses: &Addresses, wanted: &[String]) -> anyhow::Result<()> {
    let ids = selected_partitions(addresses, wanted).await?;
    let placement = placement(addresses).await?;
    let mut table = crate::table::new_table(&["PARTITION", "REPLICAS"]);
    for id in ids {
        let replicas = placement
            .replicas_of(id)
            .map_or("all worker nodes (not placed yet)".to_owned(), |set| {
                set.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
            });
        table.add_row(vec![id.to_string(), replicas]);
    }
    println!("{table}");
    Ok(())
}

async fn show_leadership(addresses: &Addresses, wanted: &[String]) -> anyhow::Result<()> {
    let ids = selected_partitions(addresses, wanted).await?;
    let (_, nodes) = crate::cluster::nodes_config(addresses).await?;
    let processors = super::status::partition_processors(addresses, &nodes).await;
    let mut table = crate::table::new_table(&["PARTITION", "LEADER", "EPOCH"]);
    for id in ids {
        let leader = processors
            .iter()
            .find(|(_, p)| p.partition_id == u32::from(id) && p.is_leader);
        table.add_row(vec![
            id.to_string(),
            leader.map_or("-".to_owned(), |(node, _)| node.clone()),
            leader
                .and_then(|(_, p)| p.leader_epoch)
                .map_or("-".to_owned(), |epoch| epoch.to_string()),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// The controller's placement; an empty one while none is stored (every worker node runs every
/// partition then).
async fn placement(addresses: &Addresses) -> anyhow::Result<PartitionPlacement> {
    match addresses.metadata_value(PARTITION_PLACEMENT_KEY).await? {
        Some(value) => serde_json::from_slice(&value.value)
            .with_context(|| format!("`{PARTITION_PLACEMENT_KEY}` in the metadata store cannot be decoded")),
        None => Ok(PartitionPlacement::default()),
    }
}

async fn list(addresses: &Addresses, json: bool, sort: SortOrder) -> anyhow::Result<()> {
    let (_, nodes) = crate::cluster::nodes_config(addresses).await?;
    let placement = placement(addresses).await?;
    let replica_set = |id: u32| -> Option<Vec<String>> {
        let id = u16::try_from(id).ok()?;
        Some(placement.replicas_of(id)?.iter().map(|n| n.to_string()).collect())
    };
    let processors = super::status::partition_processors(addresses, &nodes).await;
    let mut partitions: std::collections::BTreeMap<u32, Vec<(String, PartitionProcessorState)>> =
        std::collections::BTreeMap::new();
    for (node, processor) in processors {
        partitions
            .entry(processor.partition_id)
            .or_default()
            .push((node, processor));
    }
    let leader_of = |replicas: &[(String, PartitionProcessorState)]| {
        replicas
            .iter()
            .find(|(_, p)| p.is_leader)
            .map(|(node, p)| (node.clone(), p.leader_epoch))
    };
    // Each replica reports what it last saw; the newest report is the truest.
    let archived_of =
        |replicas: &[(String, PartitionProcessorState)]| replicas.iter().filter_map(|(_, p)| p.archived_lsn).max();
    let trim_point_of =
        |replicas: &[(String, PartitionProcessorState)]| replicas.iter().filter_map(|(_, p)| p.trim_point).max();
    let or_dash = |lsn: Option<u64>| lsn.map_or("-".to_owned(), |lsn| lsn.to_string());
    let mut order: Vec<(&u32, &Vec<(String, PartitionProcessorState)>)> = partitions.iter().collect();
    let node_number = |label: &str| label.trim_start_matches('N').parse::<u32>().unwrap_or(u32::MAX);
    match sort {
        SortOrder::Partition => {}
        SortOrder::Node => order.sort_by_key(|(id, replicas)| {
            (
                leader_of(replicas).map_or(u32::MAX, |(node, _)| node_number(&node)),
                **id,
            )
        }),
        SortOrder::Active => order.sort_by_key(|(id, replicas)| (leader_of(replicas).is_none(), **id)),
    }
    if json {
        let rows: Vec<serde_json::Value> = order
            .iter()
            .map(|(id, replicas)| {
                let leader = leader_of(replicas);
                serde_json::json!({
                    "partition_id": id,
                    "replica_set": replica_set(**id),
                    "leader": leader.as_ref().map(|(node, _)| node),
                    "leader_epoch": leader.and_then(|(_, epoch)| epoch),
                    "archived_lsn": archived_of(replicas),
                    "trim_point": trim_point_of(replicas),
                    "replicas": replicas.iter().map(|(node, p)| serde_json::json!({
                        "node": node,
                        "mode": super::status::mode(p),
                        "applied_lsn": p.applied_lsn,
                        "durable_lsn": p.durable_lsn,
                        "failure": p.failure,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if partitions.is_empty() {
        println!("No worker node answered: no partition processor is known.");
        return Ok(());
    }
    let mut table = crate::table::new_table(&[
        "PARTITION",
        "REPLICA SET",
        "LEADER",
        "EPOCH",
        "REPLICAS (MODE@APPLIED/DURABLE LSN)",
        "ARCHIVED LSN",
        "TRIM POINT",
    ]);
    for (id, replicas) in order {
        let leader = leader_of(replicas);
        let (archived, trim_point) = (or_dash(archived_of(replicas)), or_dash(trim_point_of(replicas)));
        let replicas: Vec<String> = replicas
            .iter()
            .map(|(node, p)| format!("{node}:{}@{}/{}", super::status::mode(p), p.applied_lsn, p.durable_lsn))
            .collect();
        table.add_row(vec![
            id.to_string(),
            replica_set(*id).map_or("all workers".to_owned(), |set| set.join(",")),
            leader.as_ref().map_or("-".to_owned(), |(node, _)| node.clone()),
            leader
                .and_then(|(_, epoch)| epoch)
                .map_or("-".to_owned(), |epoch| epoch.to_string()),
            replicas.join(" "),
            archived,
            trim_point,
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn skip_record(addresses: &Addresses, partition: u16, lsn: u64) -> anyhow::Result<()> {
    if lsn == 0 {
        bail!("LSN 0 is not a record: LSNs start at 1");
    }
    let question = format!(
        "Skip record {lsn} of partition {partition}'s log? What it did is lost on every replica that has not applied it yet"
    );
    if !super::confirm(&question)? {
        bail!("nothing changed");
    }
    let key = format!("pp_skip_{partition}");
    // Read, add, write if unchanged meanwhile; a concurrent change makes the write fail.
    let current = addresses
        .first_answer(|channel, _| {
            let key = key.clone();
            async move {
                MetadataProxySvcClient::new(channel)
                    .get(pb::GetRequest { cluster: None, key })
                    .await
                    .map(|r| r.into_inner().value)
            }
        })
        .await?;
    let (mut skipped, version) = match current {
        Some(value) => (
            serde_json::from_slice::<SkippedRecords>(&value.value)
                .with_context(|| format!("`{key}` in the metadata store is not a list of skipped records"))?,
            value.version,
        ),
        None => (SkippedRecords::default(), 0),
    };
    if !skipped.lsns.insert(lsn) {
        println!("Record {lsn} of partition {partition} is already skipped.");
        return Ok(());
    }
    let bytes = serde_json::to_vec(&skipped)?;
    let precondition = match version {
        0 => pb::precondition::Kind::DoesNotExist(true),
        version => pb::precondition::Kind::MatchesVersion(version),
    };
    addresses
        .first_answer(|channel, _| {
            let request = pb::PutRequest {
                cluster: None,
                key: key.clone(),
                value: Some(pb::VersionedValue {
                    version: version + 1,
                    value: bytes.clone(),
                }),
                precondition: Some(pb::Precondition {
                    kind: Some(precondition),
                }),
                write_id: 0,
            };
            async move { MetadataProxySvcClient::new(channel).put(request).await.map(|_| ()) }
        })
        .await
        .context("the skipped records changed meanwhile; run the command again")?;
    println!(
        "✅ Record {lsn} of partition {partition} will be skipped; the partition applies its log on within a second \
         (see `restatectl status`)."
    );
    Ok(())
}
