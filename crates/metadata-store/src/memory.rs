use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::{MetadataStore, ReadError, WriteError};

/// A store in process memory, for unit tests of code built on [`MetadataStore`].
#[derive(Default)]
pub struct InMemoryStore {
    entries: Mutex<BTreeMap<String, VersionedValue>>,
}

impl InMemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VersionedValue>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl MetadataStore for InMemoryStore {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        Ok(self.entries().get(key).cloned())
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        Ok(self.entries().get(key).map(|v| v.version))
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        let mut entries = self.entries();
        let current = entries.get(key).map(|v| v.version);
        precondition
            .check(current)
            .map_err(|reason| WriteError::FailedPrecondition {
                key: key.to_owned(),
                actual: current,
                reason,
            })?;
        entries.insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let mut entries = self.entries();
        let current = entries.get(key).map(|v| v.version);
        precondition
            .check(current)
            .map_err(|reason| WriteError::FailedPrecondition {
                key: key.to_owned(),
                actual: current,
                reason,
            })?;
        entries.remove(key);
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        Ok(self.entries().keys().cloned().collect())
    }

    fn kind(&self) -> &'static str {
        "in-memory"
    }
}
