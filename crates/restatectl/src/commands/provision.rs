//! `restatectl provision`: shows what provisioning will write, asks, then provisions.

use anyhow::bail;
use clap::Args;
use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{ProvisionClusterRequest, ProvisionClusterResponse};

use crate::connection::{Addresses, call_error};

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Provision without asking for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Number of partitions (default: the node's `default-num-partitions`).
    #[arg(short = 'n', long)]
    num_partitions: Option<u32>,
    /// Log provider for new logs: local or replicated.
    #[arg(long)]
    log_provider: Option<String>,
    /// Log replication, e.g. 2 or "{zone: 2, node: 3}".
    #[arg(long)]
    log_replication: Option<String>,
    /// Partition replication, e.g. 2.
    #[arg(short = 'r', long)]
    partition_replication: Option<String>,
}

pub(crate) async fn run(args: ProvisionArgs, addresses: &Addresses) -> anyhow::Result<()> {
    let Some(address) = addresses.addresses.first() else {
        bail!("no address given: use --address");
    };
    if addresses.addresses.len() > 1 {
        eprintln!("note: provisioning through {address} (the first address)");
    }
    let request = |dry_run| ProvisionClusterRequest {
        dry_run,
        num_partitions: args.num_partitions,
        log_provider: args.log_provider.clone(),
        log_replication: args.log_replication.clone(),
        partition_replication: args.partition_replication.clone(),
    };
    let mut client = NodeCtlSvcClient::new(addresses.channel(address)?);
    let plan = client
        .provision_cluster(request(true))
        .await
        .map_err(|status| call_error(address, &status))?
        .into_inner();
    println!("Cluster configuration to provision through {address}:");
    print_configuration(&plan);
    if !args.yes && !super::confirm("Provision the cluster with this configuration?")? {
        bail!("provisioning cancelled; nothing was written");
    }
    match client.provision_cluster(request(false)).await {
        Ok(done) => {
            let done = done.into_inner();
            println!(
                "✅ Cluster `{}` provisioned (fingerprint {})",
                done.cluster_name, done.cluster_fingerprint
            );
            Ok(())
        }
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            bail!("{}; nothing was changed", status.message())
        }
        Err(status) => Err(call_error(address, &status)),
    }
}

fn print_configuration(plan: &ProvisionClusterResponse) {
    println!(" Cluster name:          {}", plan.cluster_name);
    println!(" Metadata store:        {}", plan.metadata_store);
    println!(" Partitions:            {}", plan.num_partitions);
    println!(" Partition replication: {}", plan.partition_replication);
    println!(" Log provider:          {}", plan.log_provider);
    if !plan.log_replication.is_empty() {
        println!(" Log replication:       {}", plan.log_replication);
    }
    for warning in &plan.warnings {
        println!("⚠ {warning}");
    }
}
