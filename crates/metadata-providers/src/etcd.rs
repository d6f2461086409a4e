//! etcd back-end: each key is stored as two etcd keys written together in one transaction,
//! `<prefix><key>` (the value) and `<prefix><key>::version` (the version, little-endian u32).
//! The transaction's comparison implements the precondition.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use restate_config::MetadataClientOptions;
use restate_metadata_store::{MetadataStore, ReadError, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::ProviderError;

const VERSION_SUFFIX: &str = "::version";

pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: Vec<String>,
}

impl EtcdStore {
    /// Connects and checks that the cluster answers within the connect timeout.
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
        Ok(Self {
            client,
            prefix: options.key_prefix.clone().unwrap_or_default(),
            endpoints,
        })
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn version_key(&self, key: &str) -> String {
        format!("{}{key}{VERSION_SUFFIX}", self.prefix)
    }

    fn precondition_compare(&self, key: &str, precondition: Precondition) -> Option<Compare> {
        match precondition {
            Precondition::None => None,
            Precondition::DoesNotExist => Some(Compare::version(self.version_key(key), CompareOp::Equal, 0)),
            Precondition::MatchesVersion(version) => Some(Compare::value(
                self.version_key(key),
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
        let mut client = self.client.clone();
        // `<key>` and `<key>::version` share the prefix `<key>`; one range read gets both.
        let value_key = self.value_key(key);
        let version_key = self.version_key(key);
        let response = client
            .get(
                value_key.clone(),
                Some(GetOptions::new().with_range(format!("{version_key}\0"))),
            )
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        let mut value = None;
        let mut version = None;
        for kv in response.kvs() {
            if kv.key() == value_key.as_bytes() {
                value = Some(kv.value().to_vec());
            } else if kv.key() == version_key.as_bytes() {
                version = Some(decode_version(key, kv.value())?);
            }
        }
        Ok(match (value, version) {
            (Some(value), Some(version)) => Some(VersionedValue::new(version, value)),
            _ => None,
        })
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        let mut client = self.client.clone();
        let response = client
            .get(self.version_key(key), None)
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        response
            .kvs()
            .first()
            .map(|kv| decode_version(key, kv.value()))
            .transpose()
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        let ops = vec![
            TxnOp::put(self.value_key(key), value.value, None),
            TxnOp::put(self.version_key(key), value.version.0.to_le_bytes().to_vec(), None),
        ];
        self.conditional(key, precondition, ops).await
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let ops = vec![
            TxnOp::delete(self.value_key(key), None),
            TxnOp::delete(self.version_key(key), None),
        ];
        self.conditional(key, precondition, ops).await
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        let mut client = self.client.clone();
        let options = GetOptions::new().with_prefix().with_keys_only();
        let response = client
            .get(self.prefix.clone(), Some(options))
            .await
            .map_err(|e| read_error(&self.endpoints, e))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.strip_prefix(&self.prefix))
            .filter(|k| !k.ends_with(VERSION_SUFFIX))
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
