//! `restatectl partitions skip-record`: the way out for a partition held at a record it
//! cannot apply (its failure in `restatectl status` names the record). The skip is kept in the
//! metadata store (`pp_skip_<partition>`), so every replica of the partition passes over the
//! same record.

use anyhow::{Context, bail};
use clap::Subcommand;
use restate_proto::metadata as pb;
use restate_proto::metadata::metadata_proxy_svc_client::MetadataProxySvcClient;
use serde::{Deserialize, Serialize};

use crate::connection::Addresses;

#[derive(Debug, Subcommand)]
pub(crate) enum PartitionsCommand {
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
        PartitionsCommand::SkipRecord { partition, lsn, yes } => skip_record(addresses, partition, lsn, yes).await,
    }
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
