//! `restatectl metadata get|put|patch`: raw metadata values through any node's metadata client.

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
    /// Change a JSON value with a JSON Patch (RFC 6902, e.g.
    /// `[{"op": "replace", "path": "/a", "value": 1}]`); writes the next version, only if
    /// nobody wrote the key meanwhile.
    Patch {
        #[arg(short, long)]
        key: String,
        /// The JSON Patch document.
        #[arg(short, long)]
        patch: String,
        /// The version the key must have now.
        #[arg(long)]
        version: Option<u32>,
        /// Show the patched value without writing it.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
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
    /// Write a value. Two forms: `--value-file FILE --version N` writes version N, only if
    /// the key is at N-1 (or, for 1, does not exist yet); `DOC [--version N]` (Restate's form,
    /// DOC a JSON document: a file, `-` for stdin, or the JSON itself) writes the version after
    /// the current one, only if the key is still at it (at N, if given).
    Put {
        #[arg(short, long)]
        key: String,
        /// The JSON document to store: a file path, `-` for stdin, or the JSON text.
        #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
        doc: Option<String>,
        /// With --value-file: the new version (≥ 1). With DOC: the version the key must have now.
        #[arg(long)]
        version: Option<u32>,
        /// File with the new value, any bytes (`-` for stdin).
        #[arg(long)]
        value_file: Option<PathBuf>,
        /// Write whatever version is stored (no compare-and-swap).
        #[arg(long)]
        force: bool,
        /// Show what would be written without writing it.
        #[arg(short = 'n', long)]
        dry_run: bool,
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
            doc,
            version,
            value_file,
            force,
            dry_run,
        } => {
            let write = match (value_file, doc) {
                (Some(file), _) => {
                    let Some(version) = version else {
                        bail!(
                            "--value-file needs --version, the version to write (the stored one plus 1); or give the \
                             value as DOC to write the next version"
                        );
                    };
                    if version == 0 {
                        bail!("--version 0 is invalid: versions start at 1");
                    }
                    let precondition = match (force, version) {
                        (true, _) => pb::precondition::Kind::None(true),
                        (false, 1) => pb::precondition::Kind::DoesNotExist(true),
                        (false, v) => pb::precondition::Kind::MatchesVersion(v - 1),
                    };
                    Write {
                        bytes: read_input(&file.display().to_string(), "--value-file")?,
                        version,
                        precondition,
                    }
                }
                (None, Some(doc)) => {
                    let bytes = read_doc(&doc)?;
                    next_write(addresses, &key, bytes, version, force).await?
                }
                (None, None) => bail!("give the value as DOC (a JSON file, `-` for stdin) or with --value-file"),
            };
            put(addresses, &key, write, dry_run).await
        }
        MetadataCommand::Patch {
            key,
            patch,
            version,
            dry_run,
        } => {
            let patch: serde_json::Value = serde_json::from_str(&patch)
                .map_err(|e| anyhow::anyhow!("--patch is not JSON: {e}; expected a JSON Patch array such as [{{\"op\": \"replace\", \"path\": \"/a\", \"value\": 1}}]"))?;
            let Some(current) = addresses.metadata_value(&key).await? else {
                bail!("`{key}` does not exist: there is nothing to patch (write it with `restatectl metadata put`)");
            };
            let mut document: serde_json::Value = serde_json::from_slice(&current.value)
                .map_err(|e| anyhow::anyhow!("`{key}` does not hold JSON ({e}); a JSON Patch needs a JSON value"))?;
            apply_patch(&mut document, &patch)?;
            if let Some(expected) = version
                && expected != current.version
            {
                bail!(
                    "`{key}` is at version {}, not at the expected version {expected}; nothing was written",
                    current.version
                );
            }
            // Conditional on the version the patch was applied to.
            let write = Write {
                bytes: serde_json::to_vec(&document)?,
                version: current.version + 1,
                precondition: pb::precondition::Kind::MatchesVersion(current.version),
            };
            put(addresses, &key, write, dry_run).await
        }
    }
}

/// A write of a key: its bytes, its version, and the condition it applies on.
struct Write {
    bytes: Vec<u8>,
    version: u32,
    precondition: pb::precondition::Kind,
}

/// The write of the version after the stored one (`expected`, if given, must be the stored
/// one); `force` drops the condition.
async fn next_write(
    addresses: &Addresses,
    key: &str,
    bytes: Vec<u8>,
    expected: Option<u32>,
    force: bool,
) -> anyhow::Result<Write> {
    let stored = addresses.metadata_value(key).await?.map(|v| v.version);
    if let Some(expected) = expected
        && !force
        && stored.unwrap_or(0) != expected
    {
        bail!(
            "`{key}` is at {}, not at the expected version {expected}; nothing was written",
            stored.map_or("no version (it does not exist)".to_owned(), |v| format!("version {v}"))
        );
    }
    let precondition = match (force, stored) {
        (true, _) => pb::precondition::Kind::None(true),
        (false, None) => pb::precondition::Kind::DoesNotExist(true),
        (false, Some(v)) => pb::precondition::Kind::MatchesVersion(v),
    };
    Ok(Write {
        bytes,
        version: stored.unwrap_or(0) + 1,
        precondition,
    })
}

/// Bytes from a file or, for `-`, stdin.
fn read_input(path: &str, flag: &str) -> anyhow::Result<Vec<u8>> {
    if path == "-" {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer).context("reading the value from stdin")?;
        Ok(buffer)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {flag} {path}"))
    }
}

/// DOC: `-` (stdin), a file, or the JSON text itself; it must be JSON.
fn read_doc(doc: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = if doc == "-" || std::path::Path::new(doc).is_file() {
        read_input(doc, "DOC")?
    } else if serde_json::from_str::<serde_json::Value>(doc).is_ok() {
        doc.as_bytes().to_vec()
    } else {
        bail!("DOC `{doc}` is neither a file nor a JSON document");
    };
    if let Err(error) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        bail!("DOC {doc} is not a JSON document ({error}); write other bytes with --value-file");
    }
    Ok(bytes)
}

/// Applies an RFC 6902 JSON Patch.
fn apply_patch(document: &mut serde_json::Value, patch: &serde_json::Value) -> anyhow::Result<()> {
    let Some(operations) = patch.as_array() else {
        bail!("--patch must be a JSON array of operations, e.g. [{{\"op\": \"remove\", \"path\": \"/a\"}}]");
    };
    for (i, operation) in operations.iter().enumerate() {
        let text = |field: &str| -> anyhow::Result<&str> {
            operation[field]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("patch operation {i} has no \"{field}\" string: {operation}"))
        };
        let value = || -> anyhow::Result<serde_json::Value> {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("patch operation {i} has no \"value\": {operation}"))
        };
        let op = text("op")?;
        let path = text("path")?;
        let failed =
            |e: anyhow::Error| anyhow::anyhow!("patch operation {i} ({op} {path}): {e:#}; nothing was written");
        match op {
            "add" => add(document, path, value()?).map_err(failed)?,
            "remove" => remove(document, path).map(drop).map_err(failed)?,
            "replace" => {
                remove(document, path).map_err(failed)?;
                add(document, path, value()?).map_err(failed)?;
            }
            "move" => {
                let from = text("from")?;
                let moved = remove(document, from).map_err(failed)?;
                add(document, path, moved).map_err(failed)?;
            }
            "copy" => {
                let from = text("from")?;
                let copied = lookup(document, from).map_err(failed)?.clone();
                add(document, path, copied).map_err(failed)?;
            }
            "test" => {
                let expected = value()?;
                let found = lookup(document, path).map_err(failed)?;
                if *found != expected {
                    bail!(
                        "patch operation {i} (test {path}): the value is {found}, not {expected}; nothing was written"
                    );
                }
            }
            other => {
                bail!("patch operation {i}: unknown op `{other}`; expected add, remove, replace, move, copy or test")
            }
        }
    }
    Ok(())
}

/// A JSON Pointer (RFC 6901) as its unescaped tokens.
fn pointer(path: &str) -> anyhow::Result<Vec<String>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        bail!("`{path}` is not a JSON Pointer: it must start with /");
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> anyhow::Result<usize> {
    let index: usize = token
        .parse()
        .map_err(|_| anyhow::anyhow!("`{token}` is not an array index"))?;
    if index > len || (index == len && !allow_end) {
        bail!("array index {index} is out of bounds (length {len})");
    }
    Ok(index)
}

fn lookup<'a>(document: &'a serde_json::Value, path: &str) -> anyhow::Result<&'a serde_json::Value> {
    let mut current = document;
    for token in pointer(path)? {
        current = match current {
            serde_json::Value::Object(map) => map.get(&token).ok_or_else(|| anyhow::anyhow!("no member `{token}`"))?,
            serde_json::Value::Array(items) => &items[index(&token, items.len(), false)?],
            _ => bail!("`{token}` is below a value that is neither an object nor an array"),
        };
    }
    Ok(current)
}

/// The parent of the value at `path` and the last token.
fn parent_mut<'a>(
    document: &'a mut serde_json::Value,
    path: &str,
) -> anyhow::Result<(&'a mut serde_json::Value, String)> {
    let mut tokens = pointer(path)?;
    let Some(last) = tokens.pop() else {
        bail!("the whole document cannot be the target here");
    };
    let mut current = document;
    for token in tokens {
        current = match current {
            serde_json::Value::Object(map) => map
                .get_mut(&token)
                .ok_or_else(|| anyhow::anyhow!("no member `{token}`"))?,
            serde_json::Value::Array(items) => {
                let i = index(&token, items.len(), false)?;
                &mut items[i]
            }
            _ => bail!("`{token}` is below a value that is neither an object nor an array"),
        };
    }
    Ok((current, last))
}

fn add(document: &mut serde_json::Value, path: &str, value: serde_json::Value) -> anyhow::Result<()> {
    if path.is_empty() {
        *document = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(document, path)?;
    match parent {
        serde_json::Value::Object(map) => {
            map.insert(last, value);
        }
        serde_json::Value::Array(items) if last == "-" => items.push(value),
        serde_json::Value::Array(items) => {
            let i = index(&last, items.len(), true)?;
            items.insert(i, value);
        }
        _ => bail!("the parent of `{path}` is neither an object nor an array"),
    }
    Ok(())
}

fn remove(document: &mut serde_json::Value, path: &str) -> anyhow::Result<serde_json::Value> {
    let (parent, last) = parent_mut(document, path)?;
    match parent {
        serde_json::Value::Object(map) => map.remove(&last).ok_or_else(|| anyhow::anyhow!("no member `{last}`")),
        serde_json::Value::Array(items) => {
            let i = index(&last, items.len(), false)?;
            Ok(items.remove(i))
        }
        _ => bail!("the parent of `{path}` is neither an object nor an array"),
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

async fn put(addresses: &Addresses, key: &str, write: Write, dry_run: bool) -> anyhow::Result<()> {
    let Write {
        bytes,
        version,
        precondition,
    } = write;
    if dry_run {
        let condition = match precondition {
            pb::precondition::Kind::None(_) => "whatever is stored".to_owned(),
            pb::precondition::Kind::DoesNotExist(_) => "only if it does not exist".to_owned(),
            pb::precondition::Kind::MatchesVersion(v) => format!("only if it is at version {v}"),
        };
        println!("Dry run: would write `{key}` as version {version} ({condition}):");
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) => println!("{}", serde_json::to_string_pretty(&value)?),
            Err(_) => println!("{} bytes (not JSON)", bytes.len()),
        }
        println!("Nothing was written.");
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"a": 1, "list": [1, 2], "nested": {"x/y": true}});
        let patch = json!([
            {"op": "replace", "path": "/a", "value": 2},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "add", "path": "/list/0", "value": 0},
            {"op": "remove", "path": "/nested/x~1y"},
            {"op": "copy", "from": "/a", "path": "/b"},
            {"op": "move", "from": "/b", "path": "/c"},
            {"op": "test", "path": "/c", "value": 2},
        ]);
        apply_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, json!({"a": 2, "c": 2, "list": [0, 1, 2, 3], "nested": {}}));
        let error = apply_patch(&mut doc, &json!([{"op": "test", "path": "/a", "value": 5}])).unwrap_err();
        assert!(error.to_string().contains("not 5"), "{error}");
        let error = apply_patch(&mut doc, &json!([{"op": "remove", "path": "/missing"}])).unwrap_err();
        assert!(error.to_string().contains("no member `missing`"), "{error}");
        assert!(apply_patch(&mut doc, &json!({"op": "add"})).is_err());
        assert!(apply_patch(&mut doc, &json!([{"op": "frobnicate", "path": "/a"}])).is_err());
        assert!(apply_patch(&mut doc, &json!([{"op": "add", "path": "/list/9", "value": 1}])).is_err());
    }
}
