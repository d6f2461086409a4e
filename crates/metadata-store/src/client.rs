use std::sync::Arc;
use std::time::{Duration, Instant};

use restate_types::metadata::{Precondition, Version, VersionedValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{MetadataStore, ReadError, WriteError};

/// First wait of the read-modify-write loop; grows ×1.4 up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Attempts of one read-modify-write before giving up.
const MAX_ATTEMPTS: u32 = 10;
/// How long a write keeps trying through brief unavailability (e.g. an etcd election).
const RETRY_BUDGET: Duration = Duration::from_secs(10);

/// What a read-modify-write step decided.
pub enum ReadModifyWrite<T> {
    /// Write this value with the next version.
    Write(T),
    /// The stored value is already right; write nothing.
    Keep,
}

/// The metadata client roles use: any store, plus the size limit, typed JSON objects and a
/// read-modify-write loop.
#[derive(Clone)]
pub struct MetadataClient {
    store: Arc<dyn MetadataStore>,
    /// Writes above this size are rejected (95 % of the message size limit).
    reject_above: usize,
    /// Writes above this size log a warning (80 % of the limit).
    warn_above: usize,
}

impl MetadataClient {
    pub fn new(store: Arc<dyn MetadataStore>, message_size_limit: usize) -> Self {
        let limit = match store.max_value_size() {
            // The back-end's own limit applies in full; it has no message framing around it.
            Some(store_limit) => store_limit.min(message_size_limit / 100 * 95),
            None => message_size_limit / 100 * 95,
        };
        Self {
            store,
            reject_above: limit,
            warn_above: limit / 95 * 80,
        }
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Largest value a write may carry.
    pub fn max_value_size(&self) -> usize {
        self.reject_above
    }

    pub async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        self.retrying_read(|| self.store.get(key)).await
    }

    pub async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        self.retrying_read(|| self.store.get_version(key)).await
    }

    /// Repeats a read while the store is briefly unavailable (unless the back-end retries
    /// itself).
    async fn retrying_read<T, F, Fut>(&self, read: F) -> Result<T, ReadError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ReadError>>,
    {
        let deadline = Instant::now() + RETRY_BUDGET;
        let mut pause = FIRST_BACKOFF;
        loop {
            match read().await {
                Err(error)
                    if error.is_retryable()
                        && !self.store.retries_when_unavailable()
                        && Instant::now() + pause <= deadline =>
                {
                    tracing::debug!(%error, "metadata read failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = pause.mul_f64(2.0).min(MAX_BACKOFF);
                }
                outcome => return outcome,
            }
        }
    }

    pub async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        let size = value.value.len();
        if size > self.reject_above {
            return Err(WriteError::TooLarge {
                key: key.to_owned(),
                size,
                limit: self.reject_above,
            });
        }
        if size > self.warn_above {
            tracing::warn!(
                key,
                size,
                limit = self.reject_above,
                "metadata value is close to the size limit"
            );
        }
        if value.version == Version::INVALID {
            return Err(WriteError::Rejected(format!(
                "version 0 is invalid for `{key}`; versions start at 1"
            )));
        }
        self.put_retrying_unavailable(key, value, precondition).await
    }

    /// Writes, retrying while the store is briefly unavailable. Only failures that certainly
    /// wrote nothing are retried: an unknown outcome goes back to the caller, because two
    /// writers of the same bytes and version could not be told apart by reading the key.
    async fn put_retrying_unavailable(
        &self,
        key: &str,
        value: VersionedValue,
        precondition: Precondition,
    ) -> Result<(), WriteError> {
        let deadline = Instant::now() + RETRY_BUDGET;
        let mut pause = FIRST_BACKOFF;
        loop {
            match self.store.put(key, value.clone(), precondition).await {
                Err(WriteError::Unavailable(reason))
                    if !self.store.retries_when_unavailable() && Instant::now() + pause <= deadline =>
                {
                    tracing::debug!(key, %reason, "metadata store unavailable; trying the write again");
                    tokio::time::sleep(pause).await;
                    pause = pause.mul_f64(2.0).min(MAX_BACKOFF);
                }
                outcome => return outcome,
            }
        }
    }

    pub async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        self.store.delete(key, precondition).await
    }

    /// Reads and decodes a JSON object with its version.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(Version, T)>, ReadError> {
        let Some(value) = self.get(key).await? else {
            return Ok(None);
        };
        let decoded = serde_json::from_slice(&value.value).map_err(|e| ReadError::Codec {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some((value.version, decoded)))
    }

    /// Encodes `object` as JSON and writes it as `version`.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        version: Version,
        object: &T,
        precondition: Precondition,
    ) -> Result<(), WriteError> {
        let bytes = serde_json::to_vec(object).map_err(|e| WriteError::Codec {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        self.put(key, VersionedValue::new(version, bytes), precondition).await
    }

    /// Reads the object, lets `modify` decide, and writes the result with the next version
    /// on the condition that nobody wrote in between; repeats on conflicts with backoff.
    /// Returns the version and object that are stored afterwards.
    pub async fn read_modify_write<T, F>(&self, key: &str, mut modify: F) -> Result<(Version, T), WriteError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(Option<&T>) -> Result<ReadModifyWrite<T>, WriteError>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = None;
        for _ in 0..MAX_ATTEMPTS {
            let attempt = async {
                let current = self.get_json::<T>(key).await?;
                let decision = modify(current.as_ref().map(|(_, object)| object))?;
                match (decision, current) {
                    (ReadModifyWrite::Keep, Some(current)) => Ok(current),
                    (ReadModifyWrite::Keep, None) => Err(WriteError::Rejected(format!(
                        "`{key}` does not exist and the update wrote nothing"
                    ))),
                    (ReadModifyWrite::Write(object), current) => {
                        let (version, precondition) = match &current {
                            Some((version, _)) => (version.next(), Precondition::MatchesVersion(*version)),
                            None => (Version::MIN, Precondition::DoesNotExist),
                        };
                        self.put_json(key, version, &object, precondition).await?;
                        Ok((version, object))
                    }
                }
            };
            match attempt.await {
                Ok(stored) => return Ok(stored),
                Err(error) if error.is_precondition_failure() || error.is_retryable() => {
                    tracing::debug!(key, %error, "read-modify-write conflict; retrying");
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.mul_f64(1.4).min(MAX_BACKOFF);
        }
        Err(last_error.unwrap_or_else(|| WriteError::Unavailable(format!("read-modify-write of `{key}` gave up"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryStore;

    fn client(limit: usize) -> MetadataClient {
        MetadataClient::new(Arc::new(InMemoryStore::default()), limit)
    }

    #[tokio::test]
    async fn read_modify_write_bumps_versions_and_retries_conflicts() {
        let client = client(1 << 20);
        for expected in 1..=3u32 {
            let (version, value) = client
                .read_modify_write("counter", |current: Option<&u32>| {
                    Ok(ReadModifyWrite::Write(current.copied().unwrap_or(0) + 1))
                })
                .await
                .unwrap();
            assert_eq!((version, value), (Version(expected), expected));
        }
        // A concurrent writer between read and write forces another round.
        let mut interfered = false;
        let store = client.clone();
        let (version, value) = client
            .read_modify_write("counter", |current: Option<&u32>| {
                if !interfered {
                    interfered = true;
                    let store = store.clone();
                    let bump = std::thread::spawn(move || {
                        tokio::runtime::Runtime::new().unwrap().block_on(async move {
                            store
                                .put_json("counter", Version(4), &100u32, Precondition::MatchesVersion(Version(3)))
                                .await
                        })
                    });
                    bump.join().unwrap().unwrap();
                }
                Ok(ReadModifyWrite::Write(current.copied().unwrap_or(0) + 1))
            })
            .await
            .unwrap();
        assert_eq!((version, value), (Version(5), 101));
    }

    #[tokio::test]
    async fn oversized_values_are_rejected_before_writing() {
        let client = client(1000);
        let err = client
            .put("big", VersionedValue::new(Version(1), vec![0; 951]), Precondition::None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::TooLarge {
                    size: 951,
                    limit: 950,
                    ..
                }
            ),
            "{err}"
        );
        assert!(client.get("big").await.unwrap().is_none());
        client
            .put("ok", VersionedValue::new(Version(1), vec![0; 950]), Precondition::None)
            .await
            .unwrap();
    }
}
