//! `restate-bench metadata`: N clients, each on its own key, alternating a linearizable get
//! and a compare-and-swap put of the next version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use restate_metadata_store::{MetadataStore, ReplicatedStoreClient};
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::report::{Latencies, print};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Store {
    /// restate-rs's replicated metadata store (fabric addresses of metadata servers).
    Replicated,
    /// An etcd cluster (client endpoints), with the same workload in etcd's own terms.
    Etcd,
}

#[derive(Debug, Args)]
pub(crate) struct MetadataArgs {
    /// Addresses of the store (repeatable or comma separated).
    #[arg(long, value_delimiter = ',', required = true)]
    address: Vec<String>,
    #[arg(long, value_enum, default_value = "replicated")]
    store: Store,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Size of each value in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Cluster name, for the replicated store.
    #[arg(long, default_value = "restate-cluster")]
    cluster_name: String,
    /// Prefix of the keys the clients use.
    #[arg(long, default_value = "bench")]
    key_prefix: String,
}

/// One client's view of its key.
enum Cursor {
    Replicated(Version),
    Etcd(i64),
}

#[derive(Clone)]
enum Target {
    Replicated(Arc<ReplicatedStoreClient>),
    Etcd(Box<etcd_client::Client>),
}

impl Target {
    async fn get(&mut self, key: &str) -> anyhow::Result<Option<Cursor>> {
        match self {
            Target::Replicated(client) => Ok(client.get(key).await?.map(|v| Cursor::Replicated(v.version))),
            Target::Etcd(client) => {
                let response = client.get(key, None).await?;
                Ok(response.kvs().first().map(|kv| Cursor::Etcd(kv.mod_revision())))
            }
        }
    }

    /// Writes the next version if nobody wrote since `cursor`; returns the new cursor.
    async fn compare_and_swap(&mut self, key: &str, cursor: Option<Cursor>, value: &[u8]) -> anyhow::Result<Cursor> {
        match (self, cursor) {
            (Target::Replicated(client), cursor) => {
                let (version, precondition) = match cursor {
                    Some(Cursor::Replicated(v)) => (v.next(), Precondition::MatchesVersion(v)),
                    _ => (Version::MIN, Precondition::DoesNotExist),
                };
                client
                    .put(key, VersionedValue::new(version, value.to_vec()), precondition)
                    .await?;
                Ok(Cursor::Replicated(version))
            }
            (Target::Etcd(client), cursor) => {
                let compare = match cursor {
                    Some(Cursor::Etcd(revision)) => Compare::mod_revision(key, CompareOp::Equal, revision),
                    _ => Compare::version(key, CompareOp::Equal, 0),
                };
                let txn = Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key, value.to_vec(), None)]);
                let response = client.txn(txn).await?;
                if !response.succeeded() {
                    bail!("etcd compare failed for {key}");
                }
                let revision = response.header().map(|h| h.revision()).unwrap_or_default();
                Ok(Cursor::Etcd(revision))
            }
        }
    }
}

pub(crate) async fn run(args: MetadataArgs) -> anyhow::Result<()> {
    let target = match args.store {
        Store::Replicated => Target::Replicated(Arc::new(ReplicatedStoreClient::new(
            &args.cluster_name,
            args.address.clone(),
            Duration::from_secs(3),
            Duration::from_secs(10),
        ))),
        Store::Etcd => Target::Etcd(Box::new(
            etcd_client::Client::connect(&args.address, None)
                .await
                .with_context(|| format!("cannot connect to etcd at {:?}", args.address))?,
        )),
    };
    let value = vec![b'x'; args.value_size];
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for client_index in 0..args.clients {
        let mut target = target.clone();
        let key = format!("{}-{client_index}-{}", args.key_prefix, std::process::id());
        let value = value.clone();
        workers.push(tokio::spawn(async move {
            let mut gets = Latencies::new("get")?;
            let mut puts = Latencies::new("put (CAS)")?;
            let mut cursor = None;
            while Instant::now() < deadline {
                let begin = Instant::now();
                match target.get(&key).await {
                    Ok(found) => {
                        gets.record(begin.elapsed());
                        cursor = found;
                    }
                    Err(_) => gets.errors += 1,
                }
                let begin = Instant::now();
                match target.compare_and_swap(&key, cursor.take(), &value).await {
                    Ok(next) => {
                        puts.record(begin.elapsed());
                        cursor = Some(next);
                    }
                    Err(_) => puts.errors += 1,
                }
            }
            anyhow::Ok((gets, puts))
        }));
    }
    let mut gets = Latencies::new("get")?;
    let mut puts = Latencies::new("put (CAS)")?;
    for worker in workers {
        let (g, p) = worker.await??;
        gets.merge(&g);
        puts.merge(&p);
    }
    let name = match args.store {
        Store::Replicated => "restate-rs replicated metadata store",
        Store::Etcd => "etcd",
    };
    print(name, args.clients, started.elapsed(), &[&puts, &gets]);
    Ok(())
}
