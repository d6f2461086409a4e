//! The schema registry as the worker, the ingress and the admin API read it: a copy of `schema_registry`
//! refreshed in the background and on demand (a service that is not known yet may have been
//! registered a moment ago).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::MetadataClient;
use restate_types::metadata::SCHEMA_REGISTRY_KEY;
use restate_types::schema::SchemaRegistry;

/// How often the copy is refreshed without being asked.
const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

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

    /// Reads the registry again and returns it. Concurrent callers share reads: a caller
    /// waiting behind a read that started after it asked takes that read's result, so a
    /// burst of requests for an unknown service costs one metadata read per round.
    pub async fn refresh(&self) -> Arc<SchemaRegistry> {
        let asked_at = Instant::now();
        let mut last = self.inner.last_refresh.lock().await;
        if last.is_some_and(|started| started >= asked_at) {
            return self.get();
        }
        let started = Instant::now();
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
        *last = Some(started);
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
