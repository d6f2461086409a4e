//! `restatectl provision`: shows what provisioning will write, asks, then provisions.

use anyhow::bail;
use clap::Args;
use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{ProvisionClusterRequest, ProvisionClusterResponse};

use crate::connection::{Addresses, call_error};

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Number of partitions (default: the node's `default-num-partitions`).
    #[arg(short = 'n', long)]
    num_partitions: Option<u32>,
    /// Replication of both logs and partitions, e.g. 2 (--log-replication and
    /// --partition-replication override it for one of them).
    #[arg(short = 'r', long)]
    replication: Option<String>,
    /// Log provider for new logs: local or replicated.
    #[arg(long)]
    log_provider: Option<String>,
    /// Log replication, e.g. 2 or "{zone: 2, node: 3}".
    #[arg(long)]
    log_replication: Option<String>,
    /// Partition replication, e.g. 2.
    #[arg(long)]
    partition_replication: Option<String>,
    /// Log-servers per segment of replicated logs (0 = automatic, the default). Provisioning
    /// only takes 0; set another size afterwards with `restatectl config set
    /// --log-default-nodeset-size`.
    #[arg(long)]
    log_default_nodeset_size: Option<u32>,
    /// Restate's optional cluster features; restate-rs has none to turn off, so this is refused.
    #[arg(long = "disable-feature", value_name = "DISABLE_FEATURES", num_args = 1.., value_parser = ["controlled-idempotent-sharding"])]
    disable_features: Vec<String>,
}

pub(crate) async fn run(args: ProvisionArgs, addresses: &Addresses) -> anyhow::Result<()> {
    if !args.disable_features.is_empty() {
        bail!(
            "--disable-feature {}: restate-rs has no optional cluster features to disable (idempotent invocations are \
             always routed by their key); provision without --disable-feature",
            args.disable_features.join(",")
        );
    }
    if let Some(size) = args.log_default_nodeset_size.filter(|size| *size != 0) {
        bail!(
            "--log-default-nodeset-size {size}: provisioning always starts with an automatic nodeset size (0); \
             provision without it, then run `restatectl config set --log-default-nodeset-size {size}`"
        );
    }
    let Some(address) = addresses.addresses.first() else {
        bail!("no address given: use --address");
    };
    if addresses.addresses.len() > 1 {
        crate::settings::note(&format!("provisioning through {address} (the first address)"));
    }
    let partition_replication = args.partition_replication.clone().or_else(|| args.replication.clone());
    let request = |dry_run, log_replication: Option<String>| ProvisionClusterRequest {
        dry_run,
        num_partitions: args.num_partitions,
        log_provider: args.log_provider.clone(),
        log_replication,
        partition_replication: partition_replication.clone(),
    };
    let mut client = NodeCtlSvcClient::new(addresses.channel(address)?);
    let mut log_replication = args.log_replication.clone();
    let mut plan = client
        .provision_cluster(request(true, log_replication.clone()))
        .await
        .map_err(|status| call_error(address, &status))?
        .into_inner();
    // --replication applies to the logs only where they are replicated (the provider the
    // node would provision, which the dry run told).
    if log_replication.is_none()
        && let Some(replication) = &args.replication
        && plan.log_provider == "replicated"
    {
        log_replication = Some(replication.clone());
        plan = client
            .provision_cluster(request(true, log_replication.clone()))
            .await
            .map_err(|status| call_error(address, &status))?
            .into_inner();
    }
    println!("Cluster configuration to provision through {address}:");
    print_configuration(&plan);
    if !super::confirm("Provision the cluster with this configuration?")? {
        bail!("provisioning cancelled; nothing was written");
    }
    match client.provision_cluster(request(false, log_replication)).await {
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
