//! The cached logs configuration: a forgotten cache costs a version read, and is read and
//! decoded again only when the stored configuration changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use restate_config::Configuration;
use restate_metadata_store::{
    InMemoryStore, MetadataClient, MetadataStore, Precondition, ReadError, Version, VersionedValue, WriteError,
};
use restate_types::metadata::{BIFROST_CONFIG_KEY, LogProviderConfig, LogsConfiguration};
use restate_types::{ClusterView, GenerationalNodeId, LivenessThresholds, PlainNodeId};

use crate::Bifrost;

/// The in-memory store, counting full reads and version reads of `bifrost_config`.
#[derive(Default)]
struct CountingStore {
    inner: InMemoryStore,
    gets: AtomicUsize,
    version_reads: AtomicUsize,
}

#[async_trait]
impl MetadataStore for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        if key == BIFROST_CONFIG_KEY {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(key).await
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        if key == BIFROST_CONFIG_KEY {
            self.version_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_version(key).await
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        self.inner.put(key, value, precondition).await
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        self.inner.delete(key, precondition).await
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        self.inner.keys().await
    }

    fn kind(&self) -> &'static str {
        "counting"
    }
}

#[tokio::test]
async fn a_forgotten_cache_is_read_again_only_when_the_configuration_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Configuration {
        base_dir: dir.path().to_path_buf(),
        ..Configuration::default()
    };
    let store = Arc::new(CountingStore::default());
    let metadata = MetadataClient::new(store.clone(), 32 << 20);
    let local_only = LogsConfiguration {
        default_provider: LogProviderConfig::Local,
        logs: Default::default(),
    };
    metadata
        .put_json(BIFROST_CONFIG_KEY, Version(1), &local_only, Precondition::DoesNotExist)
        .await
        .expect("write the logs configuration");
    let me = GenerationalNodeId {
        id: PlainNodeId(1),
        generation: 1,
    };
    let bifrost = Bifrost::new(
        &config,
        me,
        metadata.clone(),
        ClusterView::new(LivenessThresholds {
            suspect_after: Duration::from_secs(1),
            dead_after: Duration::from_secs(2),
        }),
        None,
    )
    .expect("start bifrost");

    // Creating log 0 writes the configuration and caches what it wrote.
    bifrost.chain(0, true).await.expect("create log 0");
    let gets = store.gets.load(Ordering::SeqCst);
    let version_reads = store.version_reads.load(Ordering::SeqCst);

    // Forgotten, unchanged: one version read each time, no read of the configuration.
    for _ in 0..3 {
        let logs = bifrost.chains().await.expect("chains");
        assert!(logs.logs.contains_key(&0));
    }
    assert_eq!(store.gets.load(Ordering::SeqCst), gets);
    assert_eq!(store.version_reads.load(Ordering::SeqCst), version_reads + 3);
    // Not forgotten: no read at all.
    bifrost.chain(0, false).await.expect("log 0");
    assert_eq!(store.version_reads.load(Ordering::SeqCst), version_reads + 3);

    // Changed elsewhere (another node created log 1): the next check reads it.
    let (version, mut changed) = metadata
        .get_json::<LogsConfiguration>(BIFROST_CONFIG_KEY)
        .await
        .expect("read")
        .expect("stored");
    let created = changed.logs.get(&0).cloned().expect("log 0 stored");
    changed.logs.insert(1, created);
    metadata
        .put_json(
            BIFROST_CONFIG_KEY,
            version.next(),
            &changed,
            Precondition::MatchesVersion(version),
        )
        .await
        .expect("change the logs configuration");
    let logs = bifrost.chains().await.expect("chains");
    assert!(logs.logs.contains_key(&1), "{logs:?}");
    assert_eq!(store.version_reads.load(Ordering::SeqCst), version_reads + 4);
    // One read by the test itself, one by the check that found the new version.
    assert_eq!(store.gets.load(Ordering::SeqCst), gets + 2);
}
