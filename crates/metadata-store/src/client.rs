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
/// Conflicts a read-modify-write survives (each one is another writer's success).
const MAX_CONFLICTS: u32 = 100;
/// Longest pause after a conflict.
const CONFLICT_JITTER_MS: u64 = 20;
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
        Ok(Some((value.version, decode_json(key, &value.value)?)))
    }

    /// Encodes `object` as JSON and writes it as `version`.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        version: Version,
        object: &T,
        precondition: Precondition,
    ) -> Result<(), WriteError> {
        let bytes = encode_json(key, object)?;
        self.put(key, VersionedValue::new(version, bytes), precondition).await
    }

    /// Reads the object, lets `modify` decide, and writes the result with the next version
    /// on the condition that nobody wrote in between; repeats on conflicts with backoff.
    /// Returns the version and object that are stored afterwards.
    ///
    /// # Unknown outcomes
    ///
    /// The stores resolve most writes whose outcome is unknown themselves (a per-write token
    /// read back); a [`WriteError::UnknownOutcome`] that reaches this loop could not be
    /// resolved there (e.g. the key could not be read back). `modify` is then *not* simply run
    /// again on a state that may already contain this call's write. The key is read first:
    ///
    /// - it holds exactly the version and bytes this call wrote: the write applied, and the
    ///   call returns it;
    /// - it still holds the version the write was conditioned on: the write did not apply
    ///   (so far), and the loop goes on; if a later read shows the earlier write after all,
    ///   that counts as its success;
    /// - anything else (another writer changed the key, so whether this call's write applied
    ///   before cannot be told), or the loop gives up: the call returns
    ///   [`WriteError::UnknownOutcome`], and the caller has to read the key and decide.
    ///
    /// Another writer that stored exactly the same bytes at the same version cannot be told
    /// apart from this call. That is harmless when `modify` computes a target state (add this
    /// node, set this configuration), as the callers in this workspace do; for a blind
    /// increment it would count two calls once.
    pub async fn read_modify_write<T, F>(&self, key: &str, mut modify: F) -> Result<(Version, T), WriteError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(Option<&T>) -> Result<ReadModifyWrite<T>, WriteError>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = None;
        // This call's writes whose outcome is unknown; all were conditioned on one version.
        let mut unresolved: Vec<UnresolvedWrite<T>> = Vec::new();
        let (mut failures, mut conflicts) = (0, 0);
        while failures < MAX_ATTEMPTS && conflicts < MAX_CONFLICTS {
            let error = match self.read_modify_write_once(key, &mut modify, &mut unresolved).await? {
                Attempt::Done(stored) => return Ok(stored),
                Attempt::Again(error) => error,
            };
            tracing::debug!(key, %error, "read-modify-write did not complete; trying again");
            // A conflict means another writer just succeeded: read again after a moment's
            // jitter. Backing off as for an unavailable store made the last of a few writers
            // racing for one key (logs moving off a dead node) wait seconds.
            if error.is_precondition_failure() {
                conflicts += 1;
                tokio::time::sleep(Duration::from_millis(rand::random_range(1..=CONFLICT_JITTER_MS))).await;
            } else {
                failures += 1;
                tokio::time::sleep(backoff).await;
                backoff = backoff.mul_f64(1.4).min(MAX_BACKOFF);
            }
            last_error = Some(error);
        }
        let last_error =
            last_error.unwrap_or_else(|| WriteError::Unavailable(format!("read-modify-write of `{key}` gave up")));
        Err(match unresolved.is_empty() {
            true => last_error,
            false => WriteError::UnknownOutcome(format!(
                "read-modify-write of `{key}` gave up with a write whose outcome is unknown: {last_error}"
            )),
        })
    }

    /// One round of [`Self::read_modify_write`]; `Err` ends the loop.
    async fn read_modify_write_once<T, F>(
        &self,
        key: &str,
        modify: &mut F,
        unresolved: &mut Vec<UnresolvedWrite<T>>,
    ) -> Result<Attempt<T>, WriteError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(Option<&T>) -> Result<ReadModifyWrite<T>, WriteError>,
    {
        let current = match self.get(key).await {
            Ok(current) => current,
            Err(error) => return again_or_fail(error.into()),
        };
        if let Some(applied) = resolve_unresolved(key, unresolved, current.as_ref())? {
            return Ok(Attempt::Done(applied));
        }
        let current = match current {
            Some(value) => Some((value.version, decode_json::<T>(key, &value.value)?)),
            None => None,
        };
        let decision = match modify(current.as_ref().map(|(_, object)| object)) {
            Ok(decision) => decision,
            Err(error) => return again_or_fail(error),
        };
        let (object, base) = match (decision, current) {
            (ReadModifyWrite::Keep, Some(current)) => return Ok(Attempt::Done(current)),
            (ReadModifyWrite::Keep, None) => {
                return Err(WriteError::Rejected(format!(
                    "`{key}` does not exist and the update wrote nothing"
                )));
            }
            (ReadModifyWrite::Write(object), current) => (object, current.map(|(version, _)| version)),
        };
        let (version, precondition) = match base {
            Some(base) => (base.next(), Precondition::MatchesVersion(base)),
            None => (Version::MIN, Precondition::DoesNotExist),
        };
        let written = VersionedValue::new(version, encode_json(key, &object)?);
        match self.put(key, written.clone(), precondition).await {
            Ok(()) => Ok(Attempt::Done((version, object))),
            Err(error @ WriteError::UnknownOutcome(_)) => {
                // Resolved by the next round's read.
                unresolved.push(UnresolvedWrite { base, written, object });
                Ok(Attempt::Again(error))
            }
            Err(error) => again_or_fail(error),
        }
    }
}

/// What one round of a read-modify-write came to.
enum Attempt<T> {
    Done((Version, T)),
    /// Not this time (a conflict, the store unavailable, an unknown outcome to resolve).
    Again(WriteError),
}

/// Conflicts and unavailability make another round; anything else ends the loop.
fn again_or_fail<T>(error: WriteError) -> Result<Attempt<T>, WriteError> {
    match error {
        WriteError::FailedPrecondition { .. } | WriteError::Unavailable(_) => Ok(Attempt::Again(error)),
        error => Err(error),
    }
}

/// A write of [`MetadataClient::read_modify_write`] whose outcome is unknown.
struct UnresolvedWrite<T> {
    /// The version it was conditioned on (`None`: the key did not exist).
    base: Option<Version>,
    written: VersionedValue,
    object: T,
}

/// Decides earlier writes with unknown outcomes from what the key holds now: `Some` when one
/// of them is stored, `None` when none applied (the key still holds their base version), an
/// unknown outcome when the key changed otherwise.
fn resolve_unresolved<T: Clone>(
    key: &str,
    unresolved: &[UnresolvedWrite<T>],
    current: Option<&VersionedValue>,
) -> Result<Option<(Version, T)>, WriteError> {
    let Some(first) = unresolved.first() else {
        return Ok(None);
    };
    if let Some(current) = current
        && let Some(applied) = unresolved.iter().find(|write| write.written == *current)
    {
        tracing::info!(key, version = %current.version, "a metadata write with an unknown outcome had applied");
        return Ok(Some((applied.written.version, applied.object.clone())));
    }
    let now = current.map(|value| value.version);
    if now == first.base {
        return Ok(None);
    }
    Err(WriteError::UnknownOutcome(format!(
        "a write of {} to `{key}` had an unknown outcome, and the key now holds {} from another writer; whether \
         that write applied before it cannot be told",
        first.written.version,
        now.map(|version| version.to_string())
            .unwrap_or_else(|| "nothing".into())
    )))
}

fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|e| ReadError::Codec {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode_json<T: Serialize>(key: &str, object: &T) -> Result<Vec<u8>, WriteError> {
    serde_json::to_vec(object).map_err(|e| WriteError::Codec {
        key: key.to_owned(),
        reason: e.to_string(),
    })
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

    /// What the next put of a [`LossyStore`] does.
    enum Fault {
        /// Applies the write, then reports an unknown outcome (the answer was lost).
        AppliedButLost,
        /// Reports an unknown outcome without applying anything.
        LostBeforeApplied,
    }

    /// A store whose puts follow a script of faults (then behave normally).
    #[derive(Default)]
    struct LossyStore {
        inner: InMemoryStore,
        faults: std::sync::Mutex<std::collections::VecDeque<Fault>>,
        /// Written (unconditionally) by "another writer" right after a lost answer.
        interloper: std::sync::Mutex<Option<VersionedValue>>,
        puts: std::sync::atomic::AtomicUsize,
    }

    impl LossyStore {
        fn new(faults: impl IntoIterator<Item = Fault>, interloper: Option<VersionedValue>) -> Arc<Self> {
            Arc::new(Self {
                faults: std::sync::Mutex::new(faults.into_iter().collect()),
                interloper: std::sync::Mutex::new(interloper),
                ..Default::default()
            })
        }
    }

    #[async_trait::async_trait]
    impl MetadataStore for LossyStore {
        async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
            self.inner.get(key).await
        }

        async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
            self.inner.get_version(key).await
        }

        async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
            self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let fault = self.faults.lock().unwrap().pop_front();
            match fault {
                None => self.inner.put(key, value, precondition).await,
                Some(fault) => {
                    if matches!(fault, Fault::AppliedButLost) {
                        self.inner.put(key, value, precondition).await?;
                    }
                    let interloper = self.interloper.lock().unwrap().take();
                    if let Some(other) = interloper {
                        self.inner.put(key, other, Precondition::None).await?;
                    }
                    Err(WriteError::UnknownOutcome("the answer was lost".into()))
                }
            }
        }

        async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
            self.inner.delete(key, precondition).await
        }

        async fn keys(&self) -> Result<Vec<String>, ReadError> {
            self.inner.keys().await
        }

        fn kind(&self) -> &'static str {
            "lossy"
        }
    }

    async fn increment(store: &Arc<LossyStore>) -> Result<(Version, u32), WriteError> {
        MetadataClient::new(store.clone(), 1 << 20)
            .read_modify_write("counter", |current: Option<&u32>| {
                Ok(ReadModifyWrite::Write(current.copied().unwrap_or(0) + 1))
            })
            .await
    }

    async fn stored(store: &Arc<LossyStore>) -> Option<(Version, u32)> {
        MetadataClient::new(store.clone(), 1 << 20)
            .get_json("counter")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn read_modify_write_does_not_reapply_a_write_that_applied_with_a_lost_answer() {
        let store = LossyStore::new([Fault::AppliedButLost], None);
        assert_eq!(increment(&store).await.unwrap(), (Version(1), 1));
        assert_eq!(stored(&store).await, Some((Version(1), 1)), "applied exactly once");
        assert_eq!(store.puts.load(std::sync::atomic::Ordering::SeqCst), 1);

        // The same on an existing key.
        store.faults.lock().unwrap().push_back(Fault::AppliedButLost);
        assert_eq!(increment(&store).await.unwrap(), (Version(2), 2));
        assert_eq!(stored(&store).await, Some((Version(2), 2)));
    }

    #[tokio::test]
    async fn read_modify_write_retries_a_write_that_did_not_apply() {
        let store = LossyStore::new([Fault::LostBeforeApplied, Fault::LostBeforeApplied], None);
        assert_eq!(increment(&store).await.unwrap(), (Version(1), 1));
        assert_eq!(stored(&store).await, Some((Version(1), 1)));
        assert_eq!(store.puts.load(std::sync::atomic::Ordering::SeqCst), 3);

        // Not applied, then applied with a lost answer: still exactly one increment.
        let store = LossyStore::new([Fault::LostBeforeApplied, Fault::AppliedButLost], None);
        assert_eq!(increment(&store).await.unwrap(), (Version(1), 1));
        assert_eq!(stored(&store).await, Some((Version(1), 1)));
    }

    #[tokio::test]
    async fn read_modify_write_reports_an_outcome_it_cannot_resolve() {
        // Our write applied, then another writer replaced it before we could read it back:
        // running `modify` again would count our increment twice.
        let other = VersionedValue::new(Version(2), b"100".to_vec());
        let store = LossyStore::new([Fault::AppliedButLost], Some(other));
        match increment(&store).await {
            Err(WriteError::UnknownOutcome(reason)) => assert!(reason.contains("cannot be told"), "{reason}"),
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
        assert_eq!(stored(&store).await, Some((Version(2), 100)), "nothing written on top");
        assert_eq!(store.puts.load(std::sync::atomic::Ordering::SeqCst), 1);
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
