//! etcd back-end. Each metadata key is three etcd keys under the configured prefix, each kind
//! in its own namespace, so no metadata key can name another key's entry:
//!
//! - `<prefix>value/<key>`: the value bytes;
//! - `<prefix>version/<key>`: the version, a little-endian u32;
//! - `<prefix>token/<key>`: the random token of the write that stored them.
//!
//! They are written (or deleted) together in one transaction whose comparison on the version
//! entry is the precondition. A transaction whose outcome is unknown (e.g. the connection broke
//! after it was sent) is resolved by reading the version and token back (`crate::outcome`).
//!
//! # The earlier layout
//!
//! Earlier versions stored `<prefix><key>` (the value) and `<prefix><key>::version`, where a
//! key ending in `::version` collided with another key's version entry. On connect, every
//! pair in that layout (a key next to a `::version` entry of 4 bytes) is moved into the
//! current layout in one transaction per key, which also overwrites the old version entry
//! with a marker: a node still running an earlier version then fails its conditional writes
//! of that key instead of recreating it unseen. Stop nodes of earlier versions before
//! starting upgraded ones; a key found in both layouts (written by an earlier version after the
//! move) stops the connect with an error rather than picking one. Earlier-layout keys whose
//! name starts with `value/`, `version/` or `token/` cannot be told apart from the current
//! layout and are left alone (`validate_key` forbids `/` in keys, so there should be none).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use restate_config::MetadataClientOptions;
use restate_metadata_store::{MetadataStore, ReadError, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::ProviderError;
use crate::outcome::{self, Stored};

/// Namespaces under the prefix; none is a prefix of another.
const VALUES: &str = "value/";
const VERSIONS: &str = "version/";
const TOKENS: &str = "token/";
/// Suffix of the version entries of the earlier layout.
const EARLIER_VERSION_SUFFIX: &str = "::version";
/// What an earlier-layout version entry holds once its key was moved (not 4 bytes, so no
/// earlier version reads it as a version or matches it in a comparison).
const MOVED_MARKER: &[u8] = b"moved to the value/ version/ token/ layout";

pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: Vec<String>,
}

/// The etcd keys of one metadata key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entries {
    value: String,
    version: String,
    token: String,
}

impl Entries {
    fn new(prefix: &str, key: &str) -> Self {
        Self {
            value: format!("{prefix}{VALUES}{key}"),
            version: format!("{prefix}{VERSIONS}{key}"),
            token: format!("{prefix}{TOKENS}{key}"),
        }
    }
}

impl EtcdStore {
    /// Connects, checks that the cluster answers within the connect timeout, and moves keys of
    /// the earlier layout into the current one.
    pub async fn connect(options: &MetadataClientOptions) -> Result<Self, ProviderError> {
        if options.addresses.is_empty() {
            return Err(ProviderError::Config(
                "`[metadata-client] addresses` is empty: give the etcd endpoints, e.g. [\"127.0.0.1:2379\"]".into(),
            ));
        }
        let endpoints: Vec<String> = options
            .addresses
            .iter()
            .map(|a| a.trim().trim_start_matches("http://").trim_end_matches('/').to_owned())
            .collect();
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            .with_keep_alive_while_idle(true);
        let unreachable = |reason: String| ProviderError::Unreachable {
            store: "etcd",
            address: endpoints.join(", "),
            reason,
        };
        let mut client = tokio::time::timeout(
            options.connect_timeout,
            Client::connect(&endpoints, Some(connect_options)),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {:?}", options.connect_timeout)))?
        .map_err(|e| unreachable(e.to_string()))?;
        // The client connects lazily; one cheap read proves the cluster answers. Requests are
        // spread over the endpoints, so a dead member only fails some attempts.
        let deadline = std::time::Instant::now() + options.connect_timeout.max(Duration::from_secs(1));
        loop {
            let probe = client.get("restate-connectivity-check", Some(GetOptions::new().with_count_only()));
            let reason = match tokio::time::timeout(Duration::from_secs(1), probe).await {
                Ok(Ok(_)) => break,
                Ok(Err(error)) => error.to_string(),
                Err(_) => "no answer within 1s".to_owned(),
            };
            if std::time::Instant::now() >= deadline {
                return Err(unreachable(reason));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let store = Self {
            client,
            prefix: options.key_prefix.clone().unwrap_or_default(),
            endpoints,
        };
        // Like the probe, the listing may land on a dead member: retry until the deadline.
        let deadline = std::time::Instant::now() + options.connect_timeout.max(Duration::from_secs(1));
        store.move_earlier_layout(deadline).await?;
        Ok(store)
    }

    fn entries(&self, key: &str) -> Entries {
        Entries::new(&self.prefix, key)
    }

    fn precondition_compare(&self, key: &str, precondition: Precondition) -> Option<Compare> {
        let version_key = self.entries(key).version;
        match precondition {
            Precondition::None => None,
            Precondition::DoesNotExist => Some(Compare::version(version_key, CompareOp::Equal, 0)),
            Precondition::MatchesVersion(version) => Some(Compare::value(
                version_key,
                CompareOp::Equal,
                version.0.to_le_bytes().to_vec(),
            )),
        }
    }

    /// Runs a conditional transaction; on a failed comparison reads the current version for
    /// the error.
    async fn conditional(&self, key: &str, precondition: Precondition, ops: Vec<TxnOp>) -> Result<(), WriteError> {
        let mut txn = Txn::new();
        if let Some(compare) = self.precondition_compare(key, precondition) {
            txn = txn.when([compare]);
        }
        let mut client = self.client.clone();
        let response = client
            .txn(txn.and_then(ops))
            .await
            .map_err(|e| write_error(&self.endpoints, e))?;
        if response.succeeded() {
            return Ok(());
        }
        let actual = self.get_version(key).await.ok().flatten();
        let reason = precondition
            .check(actual)
            .err()
            .unwrap_or_else(|| format!("the key changed concurrently (precondition {precondition})"));
        Err(WriteError::FailedPrecondition {
            key: key.to_owned(),
            actual,
            reason,
        })
    }

    /// Reads several etcd keys in one transaction (one consistent snapshot).
    async fn read_entries(&self, keys: &[&str]) -> Result<Vec<Option<(Vec<u8>, i64)>>, etcd_client::Error> {
        let ops: Vec<TxnOp> = keys.iter().map(|key| TxnOp::get(*key, None)).collect();
        let mut client = self.client.clone();
        let response = client.txn(Txn::new().and_then(ops)).await?;
        Ok(first_values(&response))
    }

    /// The version and token of `key`, to resolve a write with an unknown outcome.
    async fn stored(&self, key: &str) -> Result<Option<Stored>, ReadError> {
        let entries = self.entries(key);
        let read = self
            .read_entries(&[&entries.version, &entries.token])
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        let mut read = read.into_iter();
        let (version, token) = (read.next().flatten(), read.next().flatten());
        let Some((version, _)) = version else {
            return Ok(None);
        };
        let token = token.and_then(|(token, _)| String::from_utf8(token).ok());
        Ok(Some(Stored::new(decode_version(key, &version)?, token)))
    }

    async fn put_with_token(
        &self,
        key: &str,
        value: VersionedValue,
        precondition: Precondition,
        token: &str,
    ) -> Result<(), WriteError> {
        let entries = self.entries(key);
        let written = value.version;
        let ops = vec![
            TxnOp::put(entries.value, value.value, None),
            TxnOp::put(entries.version, value.version.0.to_le_bytes().to_vec(), None),
            TxnOp::put(entries.token, token, None),
        ];
        match self.conditional(key, precondition, ops).await {
            Err(WriteError::UnknownOutcome(reason)) => {
                outcome::settle_put(key, reason, token, written, precondition, || self.stored(key)).await
            }
            other => other,
        }
    }

    /// Moves every key of the earlier layout (see the module documentation).
    async fn move_earlier_layout(&self, deadline: std::time::Instant) -> Result<(), ProviderError> {
        let unreachable = |error: etcd_client::Error| ProviderError::Unreachable {
            store: "etcd",
            address: self.endpoints.join(", "),
            reason: format!("listing the keys under `{}`: {error}", self.prefix),
        };
        let mut client = self.client.clone();
        let listing = loop {
            let listed = client
                .get(
                    self.prefix.clone(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await;
            match listed {
                Ok(listing) => break listing,
                Err(error) if std::time::Instant::now() >= deadline => return Err(unreachable(error)),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let names: BTreeSet<&str> = listing
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.strip_prefix(&self.prefix))
            .collect();
        let keys = earlier_layout_keys(&names);
        for key in &keys {
            self.move_key(key).await?;
        }
        if !keys.is_empty() {
            tracing::info!(
                prefix = self.prefix,
                keys = keys.len(),
                "moved metadata keys from the earlier etcd layout (`<key>`, `<key>::version`) to `value/`, `version/`, `token/`"
            );
        }
        Ok(())
    }

    /// Moves one key of the earlier layout, atomically: only if neither old entry changed
    /// since it was read and the key does not exist in the current layout.
    async fn move_key(&self, key: &str) -> Result<(), ProviderError> {
        let old_value = format!("{}{key}", self.prefix);
        let old_version = format!("{}{key}{EARLIER_VERSION_SUFFIX}", self.prefix);
        let entries = self.entries(key);
        let failed = |reason: String| ProviderError::Unreachable {
            store: "etcd",
            address: self.endpoints.join(", "),
            reason: format!("moving `{key}` from the earlier layout: {reason}"),
        };
        for _ in 0..5 {
            let read = self
                .read_entries(&[&old_value, &old_version, &entries.version])
                .await
                .map_err(|e| failed(e.to_string()))?;
            let mut read = read.into_iter();
            let (value, version, current) = (read.next().flatten(), read.next().flatten(), read.next().flatten());
            let (Some((value, value_revision)), Some((version, version_revision))) = (value, version) else {
                return Ok(()); // moved meanwhile
            };
            if version.len() != 4 || value == MOVED_MARKER {
                return Ok(()); // not a pair of the earlier layout
            }
            if current.is_some() {
                return Err(ProviderError::Layout(format!(
                    "etcd key `{key}` exists both in the current layout (`{}`) and in the earlier one (`{old_value}`, \
                     `{old_version}`): a node of an earlier restate-rs version may still write under this prefix. Stop \
                     it, then delete the earlier entries (after copying anything needed) and restart",
                    entries.version
                )));
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(old_value.as_str(), CompareOp::Equal, value_revision),
                    Compare::mod_revision(old_version.as_str(), CompareOp::Equal, version_revision),
                    Compare::version(entries.version.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(entries.value.as_str(), value, None),
                    TxnOp::put(entries.version.as_str(), version, None),
                    TxnOp::put(old_version.as_str(), MOVED_MARKER, None),
                    TxnOp::delete(old_value.as_str(), None),
                ]);
            let mut client = self.client.clone();
            if client.txn(txn).await.map_err(|e| failed(e.to_string()))?.succeeded() {
                return Ok(());
            }
        }
        Err(ProviderError::Layout(format!(
            "etcd key `{key}` of the earlier layout kept changing while it was being moved: a node of an earlier \
             restate-rs version may still write under `{}`; stop it and restart",
            self.prefix
        )))
    }
}

/// The keys stored in the earlier layout, from the names under the prefix: a name `<key>`
/// next to `<key>::version`, neither of them in a namespace of the current layout.
fn earlier_layout_keys(names: &BTreeSet<&str>) -> Vec<String> {
    let current = |name: &str| [VALUES, VERSIONS, TOKENS].iter().any(|ns| name.starts_with(ns));
    names
        .iter()
        .filter_map(|name| name.strip_suffix(EARLIER_VERSION_SUFFIX))
        .filter(|key| names.contains(key) && !current(key))
        .map(str::to_owned)
        .collect()
}

/// The first key-value of every get of a transaction, in order: its value and mod revision.
fn first_values(response: &TxnResponse) -> Vec<Option<(Vec<u8>, i64)>> {
    response
        .op_responses()
        .into_iter()
        .map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())),
            _ => None,
        })
        .collect()
}

fn read_error(endpoints: &[String], error: etcd_client::Error) -> ReadError {
    ReadError::Unavailable(format!("etcd at {}: {error}", endpoints.join(", ")))
}

fn write_error(endpoints: &[String], error: etcd_client::Error) -> WriteError {
    let text = error.to_string();
    // Only a connection that was never opened proves the request was not sent.
    let not_sent = matches!(error, etcd_client::Error::TransportError(_))
        || ["tcp connect error", "Connection refused", "trying to connect"]
            .iter()
            .any(|phrase| text.contains(phrase));
    let reason = format!("etcd at {}: {text}", endpoints.join(", "));
    match not_sent {
        true => WriteError::Unavailable(reason),
        false => WriteError::UnknownOutcome(reason),
    }
}

fn decode_version(key: &str, bytes: &[u8]) -> Result<Version, ReadError> {
    let array: [u8; 4] = bytes.try_into().map_err(|_| ReadError::Codec {
        key: key.to_owned(),
        reason: format!("the version entry has {} bytes, expected 4", bytes.len()),
    })?;
    Ok(Version(u32::from_le_bytes(array)))
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        let entries = self.entries(key);
        let read = self
            .read_entries(&[&entries.value, &entries.version])
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        let mut read = read.into_iter();
        match (read.next().flatten(), read.next().flatten()) {
            (Some((value, _)), Some((version, _))) => {
                Ok(Some(VersionedValue::new(decode_version(key, &version)?, value)))
            }
            (None, None) => Ok(None),
            // Both are written in one transaction; one without the other is not ours.
            _ => Err(ReadError::Codec {
                key: key.to_owned(),
                reason: format!("only one of `{}` and `{}` exists", entries.value, entries.version),
            }),
        }
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        let mut client = self.client.clone();
        let response = client
            .get(self.entries(key).version, None)
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        response
            .kvs()
            .first()
            .map(|kv| decode_version(key, kv.value()))
            .transpose()
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        self.put_with_token(key, value, precondition, &outcome::new_token())
            .await
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let entries = self.entries(key);
        let ops = vec![
            TxnOp::delete(entries.value, None),
            TxnOp::delete(entries.version, None),
            TxnOp::delete(entries.token, None),
        ];
        match self.conditional(key, precondition, ops).await {
            Err(WriteError::UnknownOutcome(reason)) => {
                outcome::settle_delete(key, reason, precondition, None, || self.stored(key)).await
            }
            other => other,
        }
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        let mut client = self.client.clone();
        let values = format!("{}{VALUES}", self.prefix);
        let options = GetOptions::new().with_prefix().with_keys_only();
        let response = client
            .get(values.clone(), Some(options))
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.strip_prefix(&values))
            .map(str::to_owned)
            .collect())
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    /// etcd refuses requests above `--max-request-bytes` (1.5 MiB by default).
    fn max_value_size(&self) -> Option<usize> {
        Some(1_500_000)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::test_servers::{Etcd, etcd_options};

    #[test]
    fn no_key_names_another_keys_entry() {
        let keys = [
            "a",
            "a::version",
            "a::version::version",
            "value",
            "value/a",
            "version/a",
            "token/a",
            "",
            "/",
        ];
        for prefix in ["", "cluster-a/", "x"] {
            let mut seen = HashSet::new();
            for key in keys {
                let entries = Entries::new(prefix, key);
                for entry in [entries.value, entries.version, entries.token] {
                    assert!(
                        seen.insert(entry.clone()),
                        "`{entry}` is used twice (prefix `{prefix}`)"
                    );
                }
            }
        }
    }

    #[test]
    fn earlier_layout_pairs_are_found() {
        let names: BTreeSet<&str> = [
            "a",
            "a::version",
            "lonely",
            "orphan::version",
            "value/b",
            "value/b::version",
            "version/b",
            "c::version",
            "c",
        ]
        .into_iter()
        .collect();
        assert_eq!(earlier_layout_keys(&names), vec!["a".to_owned(), "c".to_owned()]);
    }

    fn value(version: u32, bytes: &[u8]) -> VersionedValue {
        VersionedValue::new(Version(version), bytes.to_vec())
    }

    #[tokio::test]
    async fn keys_ending_in_version_are_keys_like_any_other() {
        let etcd = Etcd::start_in_temp_dir(1);
        let store = EtcdStore::connect(&etcd_options(&etcd, Some("cluster/")))
            .await
            .unwrap();
        store
            .put("a", value(1, b"first"), Precondition::DoesNotExist)
            .await
            .unwrap();
        // Used to overwrite the version entry of `a`.
        store
            .put("a::version", value(5, b"second"), Precondition::DoesNotExist)
            .await
            .unwrap();
        assert_eq!(store.get("a").await.unwrap(), Some(value(1, b"first")));
        assert_eq!(store.get_version("a").await.unwrap(), Some(Version(1)));
        assert_eq!(store.get("a::version").await.unwrap(), Some(value(5, b"second")));
        store
            .put("a", value(2, b"first again"), Precondition::MatchesVersion(Version(1)))
            .await
            .unwrap();
        let mut keys = store.keys().await.unwrap();
        keys.sort();
        assert_eq!(keys, vec!["a".to_owned(), "a::version".to_owned()]);
        store
            .delete("a", Precondition::MatchesVersion(Version(2)))
            .await
            .unwrap();
        assert_eq!(store.get("a::version").await.unwrap(), Some(value(5, b"second")));
        assert_eq!(store.keys().await.unwrap(), vec!["a::version".to_owned()]);
    }

    /// Writes `key` the way earlier versions did.
    async fn write_earlier_layout(client: &mut Client, prefix: &str, key: &str, version: u32, bytes: &[u8]) {
        client.put(format!("{prefix}{key}"), bytes, None).await.unwrap();
        client
            .put(format!("{prefix}{key}::version"), version.to_le_bytes().to_vec(), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn keys_of_the_earlier_layout_are_moved_on_connect() {
        let etcd = Etcd::start_in_temp_dir(1);
        let mut raw = Client::connect([etcd.endpoints[0].as_str()], None).await.unwrap();
        for prefix in ["cluster/", ""] {
            write_earlier_layout(&mut raw, prefix, "nodes_config", 3, b"{\"nodes\":[]}").await;
            write_earlier_layout(&mut raw, prefix, "greeting", 1, b"hello").await;
            let store = EtcdStore::connect(&etcd_options(&etcd, Some(prefix).filter(|p| !p.is_empty())))
                .await
                .unwrap();
            assert_eq!(
                store.get("nodes_config").await.unwrap(),
                Some(value(3, b"{\"nodes\":[]}")),
                "prefix `{prefix}`"
            );
            assert_eq!(store.get("greeting").await.unwrap(), Some(value(1, b"hello")));
            let mut keys = store.keys().await.unwrap();
            keys.sort();
            assert_eq!(keys, vec!["greeting".to_owned(), "nodes_config".to_owned()]);
            // The old value is gone; its version entry holds the marker.
            let old = raw.get(format!("{prefix}greeting"), None).await.unwrap();
            assert!(old.kvs().is_empty());
            let marker = raw.get(format!("{prefix}greeting::version"), None).await.unwrap();
            assert_eq!(marker.kvs().first().map(|kv| kv.value()), Some(MOVED_MARKER));
            // Moved keys keep working, and connecting again changes nothing.
            store
                .put("greeting", value(2, b"hi"), Precondition::MatchesVersion(Version(1)))
                .await
                .unwrap();
            let again = EtcdStore::connect(&etcd_options(&etcd, Some(prefix).filter(|p| !p.is_empty())))
                .await
                .unwrap();
            assert_eq!(again.get("greeting").await.unwrap(), Some(value(2, b"hi")));
            if !prefix.is_empty() {
                // An earlier version writing the key again after the move is refused loudly.
                write_earlier_layout(&mut raw, prefix, "greeting", 2, b"stale").await;
                match EtcdStore::connect(&etcd_options(&etcd, Some(prefix))).await {
                    Err(ProviderError::Layout(reason)) => assert!(reason.contains("both"), "{reason}"),
                    Err(other) => panic!("{other}"),
                    Ok(_) => panic!("a key in both layouts was accepted"),
                }
                raw.delete(format!("{prefix}greeting"), None).await.unwrap();
                raw.delete(format!("{prefix}greeting::version"), None).await.unwrap();
            }
            // Earlier-layout marker entries never look like data.
            assert_eq!(again.get("greeting::version").await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn the_stored_token_tells_whether_a_write_applied() {
        let etcd = Etcd::start_in_temp_dir(1);
        let store = EtcdStore::connect(&etcd_options(&etcd, Some("t/"))).await.unwrap();
        store
            .put_with_token("k", value(1, b"one"), Precondition::DoesNotExist, "ours")
            .await
            .unwrap();
        assert_eq!(
            store.stored("k").await.unwrap(),
            Some(Stored::new(Version(1), Some("ours".into())))
        );
        let settle = |token: &'static str| {
            outcome::settle_put(
                "k",
                "lost".into(),
                token,
                Version(1),
                Precondition::DoesNotExist,
                || store.stored("k"),
            )
        };
        settle("ours").await.unwrap();
        assert!(settle("theirs").await.unwrap_err().is_precondition_failure());
        store
            .delete("k", Precondition::MatchesVersion(Version(1)))
            .await
            .unwrap();
        assert_eq!(store.stored("k").await.unwrap(), None);
        assert!(matches!(settle("ours").await, Err(WriteError::Unavailable(_))));
    }
}
