//! Resolving writes whose outcome is unknown.
//!
//! A request that failed after it may have reached the store (the connection broke, a
//! timeout, an unreadable answer) may or may not have been applied. Every write therefore
//! stores a random token next to the value (DynamoDB: the `token` attribute, S3: the salt in
//! the body, etcd: the `token/<key>` entry). After such a failure the key is read back: our
//! token means the write applied; no token of ours means it did not — unless a newer version
//! replaced it already, in which case nobody can tell and the outcome stays unknown.
//!
//! The read-back answers for the moment of the read: a request still in flight (e.g. held in
//! a network buffer past the failure) could apply later. Stores process a request they
//! received promptly, and a write only applies on the version it expects, so a late
//! write can never overwrite a newer one; it is still the residual risk every store has.

use std::future::Future;
use std::time::Duration;

use restate_metadata_store::{ReadError, WriteError};
use restate_types::metadata::{Precondition, Version};

/// Reads of the key after an unknown outcome, while the store is briefly unreachable.
const READ_BACK_ATTEMPTS: u32 = 4;
const READ_BACK_FIRST_PAUSE: Duration = Duration::from_millis(100);

/// A fresh write token: 128 random bits as 32 hex digits.
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What a key holds, as far as resolving a write needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub version: Version,
    /// The token of the write that stored it; `None` for values written before tokens.
    pub token: Option<String>,
}

impl Stored {
    pub(crate) fn new(version: Version, token: Option<String>) -> Self {
        Self { version, token }
    }
}

/// Decides a put of version `written` with `token` whose request failed with an unknown
/// outcome (`reason`), from what the key holds afterwards (`now`).
pub(crate) fn resolve_put(
    key: &str,
    reason: &str,
    token: &str,
    written: Version,
    precondition: Precondition,
    now: Option<&Stored>,
) -> Result<(), WriteError> {
    if now.is_some_and(|stored| stored.token.as_deref() == Some(token)) {
        return Ok(());
    }
    let actual = now.map(|stored| stored.version);
    if let Some(newer) = actual.filter(|version| *version > written) {
        // Versions only grow: the newer value may have been written on top of ours.
        return Err(WriteError::UnknownOutcome(format!(
            "{reason}; `{key}` already holds {newer}, newer than the {written} this write carried, so whether it \
             applied before that cannot be told"
        )));
    }
    // Our token is not stored and nothing newer replaced it: the write did not apply.
    match precondition.check(actual) {
        Ok(()) => Err(WriteError::Unavailable(format!(
            "{reason}; reading `{key}` back shows the write was not applied"
        ))),
        Err(why) => Err(WriteError::FailedPrecondition {
            key: key.to_owned(),
            actual,
            reason: format!("{why} (read back after: {reason})"),
        }),
    }
}

/// Decides a delete whose request failed with an unknown outcome (`reason`), from what the key
/// holds afterwards (`now`). `before` is the stored write the delete was conditioned on, when
/// the back-end read it first.
///
/// Absent means the delete applied (if another writer deleted the key instead, the end state
/// is the same). Present and still satisfying the precondition (and, when known, still the
/// same write as before) means it did not apply. Present with another version is unknown: the
/// key changed before the delete, or was deleted by it and written again.
pub(crate) fn resolve_delete(
    key: &str,
    reason: &str,
    precondition: Precondition,
    before: Option<&Stored>,
    now: Option<&Stored>,
) -> Result<(), WriteError> {
    let Some(now) = now else {
        return Ok(());
    };
    let actual = Some(now.version);
    if precondition == Precondition::DoesNotExist {
        // Such a delete can only apply to an absent key, where it does nothing.
        return Err(WriteError::FailedPrecondition {
            key: key.to_owned(),
            actual,
            reason: precondition.check(actual).err().unwrap_or_default(),
        });
    }
    let same_write = before.is_none_or(|before| before == now);
    if precondition.check(actual).is_ok() && same_write {
        return Err(WriteError::Unavailable(format!(
            "{reason}; reading `{key}` back shows the delete was not applied"
        )));
    }
    Err(WriteError::UnknownOutcome(format!(
        "{reason}; `{key}` now holds {}, so whether the delete applied before it was written again cannot be told",
        now.version
    )))
}

/// Reads the key back, trying a few times while the store is briefly unreachable.
pub(crate) async fn read_back<F, Fut>(mut read: F) -> Result<Option<Stored>, ReadError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Stored>, ReadError>>,
{
    let mut pause = READ_BACK_FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match read().await {
            Err(error) if error.is_retryable() && attempt < READ_BACK_ATTEMPTS => {
                tracing::debug!(%error, "reading a key back after an unknown write outcome failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Resolves a put with an unknown outcome by reading the key back.
pub(crate) async fn settle_put<F, Fut>(
    key: &str,
    reason: String,
    token: &str,
    written: Version,
    precondition: Precondition,
    read: F,
) -> Result<(), WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Stored>, ReadError>>,
{
    let resolved = match read_back(read).await {
        Ok(now) => resolve_put(key, &reason, token, written, precondition, now.as_ref()),
        Err(read_error) => Err(WriteError::UnknownOutcome(format!(
            "{reason}; reading `{key}` back to find out failed too: {read_error}"
        ))),
    };
    log_resolution(key, "put", &reason, &resolved);
    resolved
}

/// Resolves a delete with an unknown outcome by reading the key back.
pub(crate) async fn settle_delete<F, Fut>(
    key: &str,
    reason: String,
    precondition: Precondition,
    before: Option<&Stored>,
    read: F,
) -> Result<(), WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Stored>, ReadError>>,
{
    let resolved = match read_back(read).await {
        Ok(now) => resolve_delete(key, &reason, precondition, before, now.as_ref()),
        Err(read_error) => Err(WriteError::UnknownOutcome(format!(
            "{reason}; reading `{key}` back to find out failed too: {read_error}"
        ))),
    };
    log_resolution(key, "delete", &reason, &resolved);
    resolved
}

fn log_resolution(key: &str, operation: &str, reason: &str, resolved: &Result<(), WriteError>) {
    match resolved {
        Ok(()) => tracing::info!(key, operation, reason, "write with an unknown outcome had applied"),
        Err(error) => tracing::info!(key, operation, %error, "resolved a write with an unknown outcome"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "0123456789abcdef0123456789abcdef";

    fn stored(version: u32, token: Option<&str>) -> Stored {
        Stored::new(Version(version), token.map(str::to_owned))
    }

    fn put(precondition: Precondition, written: u32, now: Option<Stored>) -> Result<(), WriteError> {
        resolve_put("k", "lost", OURS, Version(written), precondition, now.as_ref())
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn our_token_means_the_put_applied() {
        for precondition in [
            Precondition::None,
            Precondition::DoesNotExist,
            Precondition::MatchesVersion(Version(1)),
        ] {
            assert!(
                put(precondition, 2, Some(stored(2, Some(OURS)))).is_ok(),
                "{precondition}"
            );
        }
    }

    #[test]
    fn an_unchanged_key_means_the_put_did_not_apply() {
        // The key still holds what the write was conditioned on (an old value may have no token).
        for (precondition, now) in [
            (Precondition::DoesNotExist, None),
            (Precondition::MatchesVersion(Version(1)), Some(stored(1, None))),
            (Precondition::MatchesVersion(Version(1)), Some(stored(1, Some("other")))),
            (Precondition::None, Some(stored(1, Some("other")))),
            (Precondition::None, None),
        ] {
            match put(precondition, 2, now.clone()) {
                Err(WriteError::Unavailable(reason)) => assert!(reason.contains("not applied"), "{reason}"),
                other => panic!("{precondition} with {now:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn another_writer_at_our_version_means_a_precondition_failure() {
        // Someone else wrote version 2 from version 1 first; ours, also from 1, cannot apply.
        match put(
            Precondition::MatchesVersion(Version(1)),
            2,
            Some(stored(2, Some("other"))),
        ) {
            Err(WriteError::FailedPrecondition { actual, .. }) => assert_eq!(actual, Some(Version(2))),
            other => panic!("{other:?}"),
        }
        match put(Precondition::DoesNotExist, 1, Some(stored(1, Some("other")))) {
            Err(WriteError::FailedPrecondition { actual, .. }) => assert_eq!(actual, Some(Version(1))),
            other => panic!("{other:?}"),
        }
        match put(Precondition::MatchesVersion(Version(3)), 4, None) {
            Err(WriteError::FailedPrecondition { actual: None, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_newer_version_leaves_the_put_unknown() {
        // Ours (v2) may have applied and been replaced by v3 before the read.
        for precondition in [Precondition::MatchesVersion(Version(1)), Precondition::None] {
            match put(precondition, 2, Some(stored(3, Some("other")))) {
                Err(WriteError::UnknownOutcome(reason)) => assert!(reason.contains("v3"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_absent_key_means_the_delete_applied() {
        for precondition in [Precondition::None, Precondition::MatchesVersion(Version(3))] {
            assert!(resolve_delete("k", "lost", precondition, None, None).is_ok());
            let before = stored(3, Some("t"));
            assert!(resolve_delete("k", "lost", precondition, Some(&before), None).is_ok());
        }
    }

    #[test]
    fn a_delete_whose_key_is_unchanged_did_not_apply() {
        let before = stored(3, Some("t"));
        for (precondition, before) in [
            (Precondition::MatchesVersion(Version(3)), None),
            (Precondition::MatchesVersion(Version(3)), Some(&before)),
            (Precondition::None, None),
        ] {
            match resolve_delete("k", "lost", precondition, before, Some(&stored(3, Some("t")))) {
                Err(WriteError::Unavailable(reason)) => assert!(reason.contains("not applied"), "{reason}"),
                other => panic!("{precondition}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_delete_whose_key_changed_is_unknown() {
        // Another version, or the same version from another write (deleted and written again).
        let before = stored(3, Some("t"));
        for (before, now) in [
            (None, stored(4, None)),
            (None, stored(1, None)),
            (Some(&before), stored(3, Some("recreated"))),
        ] {
            match resolve_delete(
                "k",
                "lost",
                Precondition::MatchesVersion(Version(3)),
                before,
                Some(&now),
            ) {
                Err(WriteError::UnknownOutcome(_)) => {}
                other => panic!("{now:?}: {other:?}"),
            }
        }
        assert!(
            resolve_delete("k", "lost", Precondition::DoesNotExist, None, Some(&stored(1, None)))
                .unwrap_err()
                .is_precondition_failure()
        );
    }

    #[tokio::test]
    async fn read_back_retries_while_unavailable_and_reports_a_lasting_failure() {
        let mut calls = 0;
        let result = read_back(|| {
            calls += 1;
            let answer = if calls < 3 {
                Err(ReadError::Unavailable("down".into()))
            } else {
                Ok(Some(stored(1, Some(OURS))))
            };
            async move { answer }
        })
        .await;
        assert_eq!(result.unwrap(), Some(stored(1, Some(OURS))));

        let resolved = settle_put(
            "k",
            "lost".into(),
            OURS,
            Version(1),
            Precondition::DoesNotExist,
            || async { Err(ReadError::Unavailable("down".into())) },
        )
        .await;
        match resolved {
            Err(WriteError::UnknownOutcome(reason)) => assert!(reason.contains("failed too"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
