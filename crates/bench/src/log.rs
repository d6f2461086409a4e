//! `restate-bench log`: concurrent appenders on one log through a node's Bifrost, or, as the
//! reference on the same machine, the same appends as etcd transactions (one transaction per
//! append, one key per record: etcd's own replicated, fsynced log).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use etcd_client::{Txn, TxnOp};
use restate_proto::bifrost::AppendRequest;
use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
use tonic::transport::Channel;

use crate::report::{Latencies, print};
use crate::verify::{self, History, RecordId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogTarget {
    /// A restate-rs node's Bifrost (its fabric address).
    Bifrost,
    /// An etcd cluster (client endpoints, comma separated).
    Etcd,
}

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Fabric addresses of nodes, comma separated (appenders spread over them and move to
    /// the next one after a failed append), or etcd endpoints.
    #[arg(long)]
    address: String,
    #[arg(long, value_enum, default_value = "bifrost")]
    target: LogTarget,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Appenders running at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Records per append.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bytes per record.
    #[arg(long, default_value_t = 128)]
    record_size: usize,
    /// A log of its own: the partitions' logs (0 up to their number) refuse appends from outside.
    #[arg(long, default_value_t = 1000)]
    log_id: u32,
    /// Give every record an identity, read the whole log back afterwards and print the counts
    /// of acknowledged, lost, duplicated and out-of-order records as the last line (JSON);
    /// exits with 3 if any acknowledged record is lost or misplaced.
    #[arg(long)]
    verify: bool,
}

/// One appender's connection.
enum Appender {
    Bifrost {
        /// One client per node address; appends go to `clients[current]`.
        clients: Vec<BifrostSvcClient<Channel>>,
        current: usize,
        log_id: u32,
    },
    Etcd {
        client: Box<etcd_client::Client>,
        prefix: String,
        next: u64,
    },
}

/// Why an append failed, as far as the checker is concerned.
enum AppendFailure {
    /// The node said nothing was appended.
    NotAppended,
    /// The records may or may not be in the log.
    Unknown,
}

/// Longest wait for one append (past it, the outcome is unknown and the appender moves on).
const APPEND_TIMEOUT: Duration = Duration::from_secs(40);

/// Bifrost answers "not appended" with this header (anything else may have landed).
const NOT_APPENDED_HEADER: &str = "x-restate-not-appended";

fn classify(error: &anyhow::Error) -> AppendFailure {
    match error.downcast_ref::<tonic::Status>() {
        Some(status) if status.metadata().contains_key(NOT_APPENDED_HEADER) => AppendFailure::NotAppended,
        _ => AppendFailure::Unknown,
    }
}

impl Appender {
    /// Appends; returns the first LSN (0 for etcd, which has none).
    async fn append(&mut self, payloads: &[Vec<u8>]) -> anyhow::Result<u64> {
        match self {
            Appender::Bifrost {
                clients,
                current,
                log_id,
            } => {
                let request = AppendRequest {
                    log_id: *log_id,
                    payloads: payloads.to_vec(),
                };
                let outcome = tokio::time::timeout(APPEND_TIMEOUT, clients[*current].append(request)).await;
                return match outcome {
                    Ok(Ok(response)) => Ok(response.into_inner().first_lsn),
                    Ok(Err(status)) => {
                        *current = (*current + 1) % clients.len();
                        Err(status.into())
                    }
                    Err(_) => {
                        *current = (*current + 1) % clients.len();
                        anyhow::bail!("no answer within {APPEND_TIMEOUT:?}")
                    }
                };
            }
            Appender::Etcd { client, prefix, next } => {
                let puts: Vec<TxnOp> = payloads
                    .iter()
                    .map(|payload| {
                        *next += 1;
                        TxnOp::put(format!("{prefix}/{next:012}"), payload.clone(), None)
                    })
                    .collect();
                client.txn(Txn::new().and_then(puts)).await?;
            }
        }
        Ok(0)
    }
}

async fn connect(args: &LogArgs, worker: usize) -> anyhow::Result<Appender> {
    Ok(match args.target {
        LogTarget::Bifrost => {
            let mut clients = Vec::new();
            for address in args.address.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                let channel = tonic::transport::Endpoint::from_shared(fabric_url(address))
                    .with_context(|| format!("`{address}` is not an address"))?
                    .tcp_nodelay(true)
                    .connect_lazy();
                clients.push(BifrostSvcClient::new(channel));
            }
            if clients.is_empty() {
                anyhow::bail!("--address names no node");
            }
            Appender::Bifrost {
                current: worker % clients.len(),
                clients,
                log_id: args.log_id,
            }
        }
        LogTarget::Etcd => {
            let endpoints: Vec<&str> = args.address.split(',').map(str::trim).collect();
            let client = etcd_client::Client::connect(&endpoints, None)
                .await
                .with_context(|| format!("cannot connect to etcd at {}", args.address))?;
            Appender::Etcd {
                client: Box::new(client),
                prefix: format!("bench-log-{}/{worker}", args.log_id),
                next: 0,
            }
        }
    })
}

pub(crate) async fn run(args: LogArgs) -> anyhow::Result<()> {
    if args.verify && args.target != LogTarget::Bifrost {
        anyhow::bail!("--verify reads the log back through Bifrost; it needs --target bifrost");
    }
    // Tells this run's records from earlier runs' in the same log.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let verify = args.verify;
    let record_size = args.record_size;
    let batch = args.batch;
    let payloads: Vec<Vec<u8>> = (0..args.batch).map(|_| vec![b'r'; args.record_size]).collect();
    let mut appenders = Vec::new();
    for worker in 0..args.concurrency {
        appenders.push(connect(&args, worker).await?);
    }
    // One warm-up append creates the log, so the measurement starts on a live sequencer.
    if let Some(first) = appenders.first_mut() {
        first
            .append(&payloads)
            .await
            .with_context(|| format!("the warm-up append through {} failed", args.address))?;
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for (worker, mut appender) in appenders.into_iter().enumerate() {
        let mut payloads = payloads.clone();
        let worker = worker as u32;
        workers.push(tokio::spawn(async move {
            let mut appends = Latencies::new("append")?;
            let mut history = History::default();
            let mut sequence = 0u64;
            // The longest stretch without an acknowledgement: what a failover costs a writer.
            let mut last_ack = Instant::now();
            let mut longest_gap = Duration::ZERO;
            while Instant::now() < deadline {
                let ids: Vec<RecordId> = (0..batch as u64).map(|i| (worker, sequence + i)).collect();
                if verify {
                    payloads = ids.iter().map(|id| verify::payload(run_id, *id, record_size)).collect();
                }
                sequence += batch as u64;
                let begin = Instant::now();
                match appender.append(&payloads).await {
                    Ok(first_lsn) => {
                        appends.record(begin.elapsed());
                        longest_gap = longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                        if verify {
                            history.acknowledged.extend(ids.into_iter().zip(first_lsn..));
                        }
                    }
                    Err(error) => {
                        appends.errors += 1;
                        if verify {
                            match classify(&error) {
                                AppendFailure::NotAppended => history.not_appended.extend(ids),
                                AppendFailure::Unknown => history.uncertain.extend(ids),
                            }
                        }
                    }
                }
            }
            anyhow::Ok((appends, longest_gap.max(last_ack.elapsed()), history))
        }));
    }
    let mut appends = Latencies::new("append")?;
    let mut longest_gap = Duration::ZERO;
    let mut history = History::default();
    for worker in workers {
        let (worker_appends, gap, worker_history) = worker.await??;
        appends.merge(&worker_appends);
        longest_gap = longest_gap.max(gap);
        history.merge(worker_history);
    }
    let elapsed = started.elapsed();
    let records = appends.count() * args.batch as u64;
    println!(
        "{:.0} records/s ({} records in {} appends of {} × {} B, {} appenders); longest wait for an acknowledgement {:.0} ms",
        records as f64 / elapsed.as_secs_f64(),
        records,
        appends.count(),
        args.batch,
        args.record_size,
        args.concurrency,
        longest_gap.as_secs_f64() * 1000.0
    );
    let target = match args.target {
        LogTarget::Bifrost => "bifrost log",
        LogTarget::Etcd => "etcd log",
    };
    print(target, args.concurrency, elapsed, &[&appends]);
    if verify {
        let Appender::Bifrost { clients, log_id, .. } = connect(&args, 0).await? else {
            anyhow::bail!("--verify needs --target bifrost");
        };
        let read = verify::read_back(clients, log_id, run_id).await?;
        let verdict = verify::check(&history, &read);
        println!("{}", verdict.json());
        if !verdict.ok() {
            std::process::exit(3);
        }
    }
    Ok(())
}

fn fabric_url(address: &str) -> String {
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    }
}
