//! `restatectl metadata migrate`: moves the cluster's metadata to another store.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use restate_proto::cluster_ctrl::cluster_ctrl_svc_client::ClusterCtrlSvcClient;
use restate_proto::cluster_ctrl::migrate_metadata_progress::Event;
use restate_proto::cluster_ctrl::{MigrateMetadataRequest, MigrationPlan};

use crate::connection::{Addresses, call_error};
use crate::table::new_table;

/// The `[metadata-client]` table of the file, as JSON for the admin node.
fn target_from_file(path: &Path) -> anyhow::Result<String> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading the target from stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read --toml {}", path.display()))?
    };
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let Some(client) = table.get("metadata-client") else {
        bail!(
            "{} has no [metadata-client] table; it must describe the target store, e.g.\n\n[metadata-client]\ntype = \"etcd\"\naddresses = [\"127.0.0.1:2379\"]",
            path.display()
        );
    };
    Ok(serde_json::to_string(client)?)
}

pub(crate) async fn run(addresses: &Addresses, toml: &Path, force: bool, dry_run: bool) -> anyhow::Result<()> {
    let target_json = target_from_file(toml)?;
    let request = MigrateMetadataRequest {
        target_json,
        force,
        dry_run,
    };
    let mut last_error = None;
    let nodes = addresses.nodes_config().await.ok().flatten().map(|(_, nodes)| nodes);
    for address in crate::cluster::admin_addresses(addresses, nodes.as_ref()) {
        let channel = addresses.channel(&address)?;
        let mut client = ClusterCtrlSvcClient::new(channel);
        match client.migrate_metadata(request.clone()).await {
            Ok(stream) => return follow(stream.into_inner(), &address).await,
            Err(status) if status.code() == tonic::Code::Unimplemented && status.message().contains("not served") => {
                last_error = Some(call_error(&address, &status));
            }
            Err(status) if crate::connection::is_unreachable(&status) => {
                crate::settings::note(&format!("skipped {address}: unreachable"));
                last_error = Some(call_error(&address, &status));
            }
            Err(status) => return Err(call_error(&address, &status)),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no admin node is known: pass the address of one with --address")))
}

async fn follow(
    mut stream: tonic::Streaming<restate_proto::cluster_ctrl::MigrateMetadataProgress>,
    address: &str,
) -> anyhow::Result<()> {
    let mut bar: Option<ProgressBar> = None;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => bail!("{address} ended the migration without a result; check its log"),
            Err(status) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(call_error(address, &status));
            }
        };
        match message.event {
            Some(Event::Plan(plan)) => {
                print_plan(&plan);
                let progress = ProgressBar::new(plan.keys.len() as u64);
                progress.set_style(
                    ProgressStyle::with_template("{bar:40} {pos}/{len} keys copied {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                progress.enable_steady_tick(Duration::from_millis(200));
                bar = Some(progress);
            }
            Some(Event::Copied(copied)) => {
                if let Some(bar) = &bar {
                    bar.set_message(copied.key);
                    bar.inc(1);
                }
            }
            Some(Event::Done(done)) => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                if done.dry_run {
                    println!("Dry run: {} keys would be copied; nothing was written.", done.keys);
                    return Ok(());
                }
                println!("✅ Copied and verified {} keys.\n", done.keys);
                println!("Next steps:");
                println!(" 1. In every node's configuration, replace [metadata-client] with (fill in the secrets):\n");
                for line in done.target_config_toml.lines() {
                    println!("    {line}");
                }
                println!("\n 2. Remove the metadata-server role from every node's roles.");
                println!(" 3. Restart every node without --metadata-migration-mode.");
                return Ok(());
            }
            None => {}
        }
    }
}

fn print_plan(plan: &MigrationPlan) {
    println!("Migrating metadata: {} → {}", plan.source, plan.target);
    let mut table = new_table(&["KEY", "VERSION", "SIZE", "IN TARGET"]);
    for key in &plan.keys {
        table.add_row(vec![
            key.key.clone(),
            format!("v{}", key.version),
            format!("{} B", key.size),
            key.target_version
                .map_or("-".to_owned(), |v| format!("v{v} (overwritten)")),
        ]);
    }
    println!("{table}");
}
