//! `restatectl partitions list`: each partition's replica set, leader and epoch, and how far
//! each replica applied its log.
//!
//! `restatectl partitions skip-record`: the way out for a partition held at a record it
//! cannot apply (its failure in `restatectl status` names the record). The skip is kept in the
//! metadata store (`pp_skip_<partition>`), so every replica of the partition passes over the
//! same record.

use anyhow::{Context, bail};
use clap::Subcommand;
use restate_proto::metadata as pb;
use restate_proto::metadata::metadata_proxy_svc_client::MetadataProxySvcClient;
use restate_proto::node_ctl::PartitionProcessorState;
use restate_types::metadata::{PARTITION_PLACEMENT_KEY, PartitionPlacement};
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
    },
    /// Make a partition pass over one record of its log without applying it. Whatever the
    /// record did (an invocation it started, a result it carried) is lost: use it only for
    /// the record that `restatectl status` names as the reason a partition failed.
    SkipRecord {
        /// The partition (its log has the same id).
        partition: u16,
        /// The LSN of the record to skip.
        lsn: u64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// The value of `pp_skip_<partition>`, as the worker reads it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SkippedRecords {
    lsns: std::collections::BTreeSet<u64>,
}

pub(crate) async fn run(command: PartitionsCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        PartitionsCommand::List { json } => list(addresses, json).await,
        PartitionsCommand::SkipRecord { partition, lsn, yes } => skip_record(addresses, partition, lsn, yes).await,
    }
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

async fn list(addresses: &Addresses, json: bool) -> anyhow::Result<()> {
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
    if json {
        let rows: Vec<serde_json::Value> = partitions
            .iter()
            .map(|(id, replicas)| {
                let leader = leader_of(replicas);
                serde_json::json!({
                    "partition_id": id,
                    "replica_set": replica_set(*id),
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
    for (id, replicas) in &partitions {
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

async fn skip_record(addresses: &Addresses, partition: u16, lsn: u64, yes: bool) -> anyhow::Result<()> {
    if lsn == 0 {
        bail!("LSN 0 is not a record: LSNs start at 1");
    }
    let question = format!(
        "Skip record {lsn} of partition {partition}'s log? What it did is lost on every replica that has not applied it yet"
    );
    if !yes && !super::confirm(&question)? {
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
