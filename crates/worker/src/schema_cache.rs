//! The schema registry as the worker and ingress read it: a copy of `schema_registry`
//! refreshed in the background and on demand (a service that is not known yet may have been
//! registered a moment ago).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use restate_metadata_store::MetadataClient;
use restate_types::metadata::SCHEMA_REGISTRY_KEY;
use restate_types::schema::SchemaRegistry;

/// How often the copy is refreshed without being asked.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// On-demand refreshes are at most this frequent, so a stream of calls to an unknown
/// service does not turn into a stream of metadata reads.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct SchemaCache {
    inner: Arc<Inner>,
}

struct Inner {
    metadata: MetadataClient,
    current: RwLock<Arc<SchemaRegistry>>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl SchemaCache {
    pub fn new(metadata: MetadataClient) -> Self {
        Self {
            inner: Arc::new(Inner {
                metadata,
                current: RwLock::new(Arc::new(SchemaRegistry::default())),
                last_refresh: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The copy as it is now.
    pub fn get(&self) -> Arc<SchemaRegistry> {
        self.inner.current.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Reads the registry again (unless that was just done) and returns it.
    pub async fn refresh(&self) -> Arc<SchemaRegistry> {
        let mut last = self.inner.last_refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFRESH_GAP) {
            return self.get();
        }
        match self
            .inner
            .metadata
            .get_json::<SchemaRegistry>(SCHEMA_REGISTRY_KEY)
            .await
        {
            Ok(Some((_, registry))) => {
                if let Ok(mut current) = self.inner.current.write() {
                    *current = Arc::new(registry);
                }
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "cannot refresh the schema registry"),
        }
        *last = Some(Instant::now());
        self.get()
    }

    /// Keeps the copy fresh until the token is cancelled.
    pub fn spawn_refresher(&self, cancel: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                cache.refresh().await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
                }
            }
        })
    }
}
