//! `restatectl metadata get|put`: raw metadata values through any node's metadata client.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use restate_proto::metadata as pb;
use restate_proto::metadata::metadata_proxy_svc_client::MetadataProxySvcClient;

use crate::connection::Addresses;

#[derive(Debug, Subcommand)]
pub(crate) enum MetadataCommand {
    /// Print the value of a key (JSON values are pretty-printed) and its version.
    Get {
        #[arg(short, long)]
        key: String,
        /// Print {"key", "version", "value"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a value as a given version. The write only applies if the key is at the
    /// previous version (or, for version 1, does not exist yet).
    /// Copy every key of the cluster's metadata store to another store (the nodes must run
    /// with --metadata-migration-mode), verify it, and print the next steps.
    Migrate {
        /// TOML file (`-` for stdin) with the target `[metadata-client]` table.
        #[arg(long, value_name = "FILE")]
        toml: PathBuf,
        /// Overwrite keys that already exist in the target.
        #[arg(long)]
        force: bool,
        /// Only list what would be copied.
        #[arg(long)]
        dry_run: bool,
    },
    Put {
        #[arg(short, long)]
        key: String,
        /// The new version (≥ 1).
        #[arg(long)]
        version: u32,
        /// File with the new value (`-` for stdin).
        #[arg(long)]
        value_file: PathBuf,
        /// Write whatever version is stored (no compare-and-swap).
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn run(command: MetadataCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        MetadataCommand::Get { key, json } => get(addresses, &key, json).await,
        MetadataCommand::Migrate { toml, force, dry_run } => {
            super::migrate::run(addresses, &toml, force, dry_run).await
        }
        MetadataCommand::Put {
            key,
            version,
            value_file,
            force,
        } => put(addresses, &key, version, &value_file, force).await,
    }
}

async fn get(addresses: &Addresses, key: &str, json: bool) -> anyhow::Result<()> {
    let Some(value) = addresses.metadata_value(key).await? else {
        bail!("`{key}` does not exist");
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&value.value).ok();
    if json {
        let rendered = match parsed {
            Some(v) => v,
            None => serde_json::Value::String(String::from_utf8_lossy(&value.value).into_owned()),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"key": key, "version": value.version, "value": rendered})
            )?
        );
        return Ok(());
    }
    eprintln!("{key} (version {})", value.version);
    match parsed {
        Some(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&value.value)?;
        }
    }
    Ok(())
}

async fn put(addresses: &Addresses, key: &str, version: u32, file: &PathBuf, force: bool) -> anyhow::Result<()> {
    if version == 0 {
        bail!("--version 0 is invalid: versions start at 1");
    }
    let bytes = if file.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer).context("reading the value from stdin")?;
        buffer
    } else {
        std::fs::read(file).with_context(|| format!("cannot read --value-file {}", file.display()))?
    };
    let precondition = match (force, version) {
        (true, _) => pb::precondition::Kind::None(true),
        (false, 1) => pb::precondition::Kind::DoesNotExist(true),
        (false, v) => pb::precondition::Kind::MatchesVersion(v - 1),
    };
    addresses
        .first_answer(|channel, _| {
            let request = pb::PutRequest {
                cluster: None,
                key: key.to_owned(),
                value: Some(pb::VersionedValue {
                    version,
                    value: bytes.clone(),
                }),
                precondition: Some(pb::Precondition {
                    kind: Some(precondition),
                }),
                write_id: 0,
            };
            async move {
                MetadataProxySvcClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX)
                    .put(request)
                    .await
                    .map(|_| ())
            }
        })
        .await?;
    println!("✅ {key} written as version {version}");
    Ok(())
}
