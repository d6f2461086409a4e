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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogTarget {
    /// A restate-rs node's Bifrost (its fabric address).
    Bifrost,
    /// An etcd cluster (client endpoints, comma separated).
    Etcd,
}

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Fabric address of a node (appends go through its Bifrost), or etcd endpoints.
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
    #[arg(long, default_value_t = 0)]
    log_id: u32,
}

/// One appender's connection.
enum Appender {
    Bifrost {
        client: BifrostSvcClient<Channel>,
        log_id: u32,
    },
    Etcd {
        client: Box<etcd_client::Client>,
        prefix: String,
        next: u64,
    },
}

impl Appender {
    async fn append(&mut self, payloads: &[Vec<u8>]) -> anyhow::Result<()> {
        match self {
            Appender::Bifrost { client, log_id } => {
                client
                    .append(AppendRequest {
                        log_id: *log_id,
                        payloads: payloads.to_vec(),
                    })
                    .await?;
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
        Ok(())
    }
}

async fn connect(args: &LogArgs, worker: usize) -> anyhow::Result<Appender> {
    Ok(match args.target {
        LogTarget::Bifrost => {
            let channel = tonic::transport::Endpoint::from_shared(fabric_url(&args.address))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("cannot reach {}", args.address))?;
            Appender::Bifrost {
                client: BifrostSvcClient::new(channel),
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
            .with_context(|| format!("the warm-up append on {} failed", args.address))?;
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for mut appender in appenders {
        let payloads = payloads.clone();
        workers.push(tokio::spawn(async move {
            let mut appends = Latencies::new("append")?;
            // The longest stretch without an acknowledgement: what a failover costs a writer.
            let mut last_ack = Instant::now();
            let mut longest_gap = Duration::ZERO;
            while Instant::now() < deadline {
                let begin = Instant::now();
                match appender.append(&payloads).await {
                    Ok(()) => {
                        appends.record(begin.elapsed());
                        longest_gap = longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                    }
                    Err(_) => appends.errors += 1,
                }
            }
            anyhow::Ok((appends, longest_gap.max(last_ack.elapsed())))
        }));
    }
    let mut appends = Latencies::new("append")?;
    let mut longest_gap = Duration::ZERO;
    for worker in workers {
        let (worker_appends, gap) = worker.await??;
        appends.merge(&worker_appends);
        longest_gap = longest_gap.max(gap);
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
