//! External metadata stores behind the same [`MetadataStore`] trait as the built-in
//! replicated store: etcd, DynamoDB and S3-compatible object stores.

mod aws;
mod dynamodb;
mod etcd;
mod objstore;
mod outcome;
#[cfg(test)]
mod test_servers;

use std::sync::Arc;

pub use dynamodb::DynamoDbStore;
pub use etcd::EtcdStore;
pub use objstore::ObjectStore;
use restate_config::{MetadataClientKind, MetadataClientOptions};
use restate_metadata_store::MetadataStore;

/// A store that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("invalid [metadata-client] configuration: {0}")]
    Config(String),
    #[error("cannot reach the {store} metadata store at {address}: {reason}")]
    Unreachable {
        store: &'static str,
        address: String,
        reason: String,
    },
    #[error("{0}")]
    Missing(String),
    #[error(
        "the object store {location} does not honour conditional writes ({reason}); restate-rs refuses to keep \
         metadata there, because concurrent writers could overwrite each other: use S3 or a compatible store \
         that supports If-None-Match and If-Match on PUT, and If-Match on DELETE"
    )]
    Unsafe { location: String, reason: String },
    /// The store holds data in a layout this version cannot use as it is.
    #[error("{0}")]
    Layout(String),
}

/// Connects to the external store that `options` describes; `None` for `replicated`, which
/// the node builds itself.
pub async fn connect(options: &MetadataClientOptions) -> Result<Option<Arc<dyn MetadataStore>>, ProviderError> {
    Ok(match options.kind {
        MetadataClientKind::Replicated => None,
        MetadataClientKind::Etcd => Some(Arc::new(EtcdStore::connect(options).await?)),
        MetadataClientKind::DynamoDb => Some(Arc::new(DynamoDbStore::connect(options).await?)),
        MetadataClientKind::ObjectStore => Some(Arc::new(ObjectStore::connect(options).await?)),
    })
}

#[cfg(test)]
mod tests {
    //! The essentials of the cluster tests' conformance suite (`tests/cluster/conformance.rs`),
    //! run here against each provider on a real local server.

    use restate_config::MetadataClientKind;
    use restate_metadata_store::{MetadataClient, ReadModifyWrite, WriteError};
    use restate_types::metadata::{Precondition, Version, VersionedValue};

    use super::*;
    use crate::test_servers::{Etcd, Moto, aws_options, etcd_options};

    fn value(version: u32, bytes: &[u8]) -> VersionedValue {
        VersionedValue::new(Version(version), bytes.to_vec())
    }

    async fn conformance(store: Arc<dyn MetadataStore>) {
        let kind = store.kind();
        let client = MetadataClient::new(store.clone(), 32 * 1024 * 1024);
        assert_eq!(client.get("missing").await.unwrap(), None, "{kind}");
        client
            .put("k", value(1, b"one"), Precondition::DoesNotExist)
            .await
            .unwrap();
        assert_eq!(client.get("k").await.unwrap(), Some(value(1, b"one")), "{kind}");
        let err = client
            .put("k", value(2, b"again"), Precondition::DoesNotExist)
            .await
            .unwrap_err();
        assert!(err.is_precondition_failure(), "{kind}: {err}");
        client
            .put("k", value(2, b"two"), Precondition::MatchesVersion(Version(1)))
            .await
            .unwrap();
        match client
            .put("k", value(3, b"stale"), Precondition::MatchesVersion(Version(1)))
            .await
        {
            Err(WriteError::FailedPrecondition { actual, .. }) => assert_eq!(actual, Some(Version(2)), "{kind}"),
            other => panic!("{kind}: {other:?}"),
        }
        match client
            .put("absent", value(2, b"x"), Precondition::MatchesVersion(Version(1)))
            .await
        {
            Err(WriteError::FailedPrecondition { actual: None, .. }) => {}
            other => panic!("{kind}: {other:?}"),
        }
        client.put("k", value(3, b"three"), Precondition::None).await.unwrap();
        let err = client
            .delete("k", Precondition::MatchesVersion(Version(2)))
            .await
            .unwrap_err();
        assert!(err.is_precondition_failure(), "{kind}: {err}");
        client
            .delete("k", Precondition::MatchesVersion(Version(3)))
            .await
            .unwrap();
        assert_eq!(client.get("k").await.unwrap(), None, "{kind}");
        client
            .put("k", value(1, b"recreated"), Precondition::DoesNotExist)
            .await
            .unwrap();

        // Contention: every increment counted exactly once.
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        client
                            .read_modify_write("counter", |current: Option<&u64>| {
                                Ok(ReadModifyWrite::Write(current.copied().unwrap_or(0) + 1))
                            })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(
            client.get_json::<u64>("counter").await.unwrap(),
            Some((Version(20), 20)),
            "{kind}"
        );

        let mut keys = store.keys().await.unwrap();
        keys.sort();
        assert_eq!(keys, vec!["counter".to_owned(), "k".to_owned()], "{kind}");
    }

    #[tokio::test]
    async fn etcd_conforms() {
        let etcd = Etcd::start_in_temp_dir(1);
        conformance(
            connect(&etcd_options(&etcd, Some("conformance/")))
                .await
                .unwrap()
                .unwrap(),
        )
        .await;
    }

    #[tokio::test]
    async fn dynamodb_conforms() {
        let moto = Moto::start_in_temp_dir();
        let endpoint = format!("http://{}", moto.address);
        let options = aws_options(MetadataClientKind::DynamoDb, &endpoint);
        aws_sdk_dynamodb::Client::new(&aws::sdk_config(&options).await.unwrap())
            .create_table()
            .table_name("restate-metadata")
            .attribute_definitions(
                aws_sdk_dynamodb::types::AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                aws_sdk_dynamodb::types::KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
        let options = MetadataClientOptions {
            table: Some("restate-metadata".into()),
            key_prefix: Some("conformance/".into()),
            ..options
        };
        conformance(connect(&options).await.unwrap().unwrap()).await;
    }

    #[tokio::test]
    async fn s3_conforms() {
        let moto = Moto::start_in_temp_dir();
        let endpoint = format!("http://{}", moto.address);
        let options = aws_options(MetadataClientKind::ObjectStore, &endpoint);
        let config = aws::sdk_config(&options).await.unwrap();
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        )
        .create_bucket()
        .bucket("restate-metadata")
        .send()
        .await
        .unwrap();
        let options = MetadataClientOptions {
            path: Some("s3://restate-metadata/conformance".into()),
            ..options
        };
        conformance(connect(&options).await.unwrap().unwrap()).await;
    }
}
