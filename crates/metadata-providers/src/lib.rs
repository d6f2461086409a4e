//! External metadata stores behind the same [`MetadataStore`] trait as the built-in
//! replicated store: etcd, DynamoDB and S3-compatible object stores.

mod aws;
mod dynamodb;
mod etcd;
mod objstore;

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
         that supports If-None-Match and If-Match on PUT"
    )]
    Unsafe { location: String, reason: String },
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
