//! S3 object-store back-end: one object per key under `s3://bucket/prefix/`.
//!
//! Compare-and-swap uses the store's conditional writes: create-only puts
//! (`If-None-Match: *`), puts and deletes conditional on the ETag read with the version
//! (`If-Match`). Every body carries a random salt, so two writers of equal bytes never share an
//! ETag; the salt is also the write's token: a write whose outcome is unknown is resolved by
//! reading the object back and comparing salts (`crate::outcome`). Writes go through a client
//! without SDK retries, which would resend a conditional write that applied and then report
//! its own condition failing. At start-up a self-test proves the store honours the conditions
//! on PUT and DELETE; a store that ignores them is refused before it can corrupt a cluster.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use restate_config::MetadataClientOptions;
use restate_metadata_store::{MetadataStore, ReadError, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::ProviderError;
use crate::aws::{Fate, describe_sdk_error, fate};
use crate::outcome::{self, Stored as WriteState};

/// Body layout version byte, then salt (u64 LE), version (u32 LE), value.
const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 8 + 4;
/// An ETag no object has, for the self-test's stale conditions.
const STALE_ETAG: &str = "\"00000000000000000000000000000000\"";

pub struct ObjectStore {
    /// Reads, with the SDK's retries.
    client: Client,
    /// Puts and deletes, without SDK retries.
    write_client: Client,
    bucket: String,
    prefix: String,
    location: String,
}

/// `s3://bucket/prefix` → (bucket, prefix without slashes at the ends).
pub(crate) fn parse_path(path: &str) -> Result<(String, String), ProviderError> {
    let rest = path.strip_prefix("s3://").ok_or_else(|| {
        ProviderError::Config(format!(
            "`[metadata-client] path = \"{path}\"`: only s3:// locations are supported, e.g. \"s3://bucket/prefix\""
        ))
    })?;
    let rest = rest.split('?').next().unwrap_or_default();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ProviderError::Config(format!(
            "`[metadata-client] path = \"{path}\"` names no bucket; use \"s3://bucket/prefix\""
        )));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

struct Stored {
    value: VersionedValue,
    etag: String,
    salt: u64,
}

impl Stored {
    fn state(&self) -> WriteState {
        WriteState::new(self.value.version, Some(salt_token(self.salt)))
    }
}

/// The salt of a body as a write token.
fn salt_token(salt: u64) -> String {
    format!("{salt:016x}")
}

impl ObjectStore {
    /// Connects, then runs the conditional-write self-test on a scratch key.
    pub async fn connect(options: &MetadataClientOptions) -> Result<Self, ProviderError> {
        let path = options.path.as_deref().ok_or_else(|| {
            ProviderError::Config(
                "`[metadata-client] path` is required for type = \"object-store\", e.g. \"s3://bucket/prefix\"".into(),
            )
        })?;
        let (bucket, prefix) = parse_path(path)?;
        restate_aws::refuse_plain_http(&crate::aws::settings(options)).map_err(ProviderError::Config)?;
        let config = crate::aws::sdk_config(options).await?;
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        if options.aws_endpoint_url.is_some() {
            // S3-compatible servers (MinIO, moto, …) address buckets by path.
            builder = builder.force_path_style(true);
        }
        let write_config = builder.clone().retry_config(crate::aws::without_retries()).build();
        let store = Self {
            client: Client::from_conf(builder.build()),
            write_client: Client::from_conf(write_config),
            bucket,
            prefix,
            location: format!(
                "{path}{}",
                options
                    .aws_endpoint_url
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
        };
        tokio::time::timeout(
            options.connect_timeout.max(std::time::Duration::from_secs(5)),
            store.self_test(),
        )
        .await
        .map_err(|_| ProviderError::Unreachable {
            store: "object store",
            address: store.location.clone(),
            reason: format!("no answer within {:?}", options.connect_timeout),
        })??;
        Ok(store)
    }

    fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Proves that create-only puts, ETag-conditional puts and ETag-conditional deletes are
    /// honoured.
    async fn self_test(&self) -> Result<(), ProviderError> {
        let scratch = self.object_key(&format!(".conditional-write-check-{:016x}", rand::random::<u64>()));
        let body = || ByteStream::from(b"restate-rs conditional write check".to_vec());
        let created = self
            .write_client
            .put_object()
            .bucket(&self.bucket)
            .key(&scratch)
            .if_none_match("*")
            .body(body())
            .send()
            .await;
        let created = match created {
            Ok(created) => created,
            Err(error) => {
                return Err(match error.code() {
                    Some("NoSuchBucket") => ProviderError::Missing(format!(
                        "bucket `{}` does not exist ({}); create it, e.g. `aws s3 mb s3://{}`",
                        self.bucket, self.location, self.bucket
                    )),
                    _ => ProviderError::Unreachable {
                        store: "object store",
                        address: self.location.clone(),
                        reason: describe_sdk_error(&error),
                    },
                });
            }
        };
        let result = self.check_conditions(&scratch, created.e_tag(), body).await;
        let _ = self
            .write_client
            .delete_object()
            .bucket(&self.bucket)
            .key(&scratch)
            .send()
            .await;
        result
    }

    /// The self-test's checks on the freshly created `scratch` object.
    async fn check_conditions(
        &self,
        scratch: &str,
        etag: Option<&str>,
        body: impl Fn() -> ByteStream,
    ) -> Result<(), ProviderError> {
        let refuse = |what: String| ProviderError::Unsafe {
            location: self.location.clone(),
            reason: what,
        };
        let again = self
            .write_client
            .put_object()
            .bucket(&self.bucket)
            .key(scratch)
            .if_none_match("*")
            .body(body())
            .send()
            .await;
        expect_refused("a second create-only put (If-None-Match: *) of the same key", again).map_err(refuse)?;
        let stale = self
            .write_client
            .put_object()
            .bucket(&self.bucket)
            .key(scratch)
            .if_match(STALE_ETAG)
            .body(body())
            .send()
            .await;
        expect_refused("a put with a stale If-Match ETag", stale).map_err(refuse)?;
        let stale_delete = self
            .write_client
            .delete_object()
            .bucket(&self.bucket)
            .key(scratch)
            .if_match(STALE_ETAG)
            .send()
            .await;
        expect_refused("a delete with a stale If-Match ETag", stale_delete).map_err(refuse)?;
        // The matching ETag must delete: conditional deletes are what `delete` relies on.
        let etag = match etag {
            Some(etag) => etag.to_owned(),
            None => self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(scratch)
                .send()
                .await
                .map_err(|e| {
                    refuse(format!(
                        "the check object cannot be read back: {}",
                        describe_sdk_error(&e)
                    ))
                })?
                .e_tag()
                .unwrap_or_default()
                .to_owned(),
        };
        self.write_client
            .delete_object()
            .bucket(&self.bucket)
            .key(scratch)
            .if_match(etag)
            .send()
            .await
            .map_err(|e| {
                refuse(format!(
                    "a delete with the current If-Match ETag failed: {}",
                    describe_sdk_error(&e)
                ))
            })?;
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<Option<Stored>, ReadError> {
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await;
        let output = match response {
            Ok(output) => output,
            Err(error) if error.code() == Some("NoSuchKey") || status_of(&error) == Some(404) => return Ok(None),
            Err(error) => {
                return Err(ReadError::Unavailable(format!(
                    "object store: {}",
                    describe_sdk_error(&error)
                )));
            }
        };
        let etag = output.e_tag().unwrap_or_default().to_owned();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| ReadError::Unavailable(format!("object store: reading `{key}`: {e}")))?
            .into_bytes();
        let codec = |reason: &str| ReadError::Codec {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() < HEADER_LEN || bytes[0] != FORMAT_V1 {
            return Err(codec("the object is not a restate-rs metadata value"));
        }
        let salt = u64::from_le_bytes(bytes[1..9].try_into().map_err(|_| codec("truncated header"))?);
        let version = u32::from_le_bytes(bytes[9..13].try_into().map_err(|_| codec("truncated header"))?);
        Ok(Some(Stored {
            value: VersionedValue::new(Version(version), bytes[HEADER_LEN..].to_vec()),
            etag,
            salt,
        }))
    }

    /// The version and salt of the object, to resolve a write with an unknown outcome.
    async fn state(&self, key: &str) -> Result<Option<WriteState>, ReadError> {
        Ok(self.read(key).await?.map(|stored| stored.state()))
    }

    fn encode(value: &VersionedValue, salt: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(HEADER_LEN + value.value.len());
        body.push(FORMAT_V1);
        body.extend_from_slice(&salt.to_le_bytes());
        body.extend_from_slice(&value.version.0.to_le_bytes());
        body.extend_from_slice(&value.value);
        body
    }

    fn failed(key: &str, actual: Option<Version>, precondition: Precondition) -> WriteError {
        WriteError::FailedPrecondition {
            key: key.to_owned(),
            actual,
            reason: precondition
                .check(actual)
                .err()
                .unwrap_or_else(|| format!("the key changed concurrently (precondition {precondition})")),
        }
    }
}

fn status_of<E, R>(error: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    match error {
        SdkError::ServiceError(service) => Some(service.raw().status_code()),
        _ => None,
    }
}

/// Access to the HTTP status of a raw response, whatever its type.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The self-test's verdict on a request whose condition must not hold.
fn expect_refused<O, E>(
    what: &str,
    outcome: Result<O, SdkError<E, aws_smithy_runtime_api::http::Response>>,
) -> Result<(), String>
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match outcome {
        Err(error) if is_precondition_failure(&error) => Ok(()),
        Ok(_) => Err(format!("{what} succeeded")),
        Err(error) => Err(format!("{what} failed oddly: {}", describe_sdk_error(&error))),
    }
}

/// Whether a conditional request was refused because its condition did not hold: 412, 409
/// (a conflicting conditional write in progress), or `NoSuchKey` (S3 answers `If-Match` on
/// a missing object so; only conditional puts and deletes can get it).
fn is_precondition_failure<E: ProvideErrorMetadata>(
    error: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    matches!(status_of(error), Some(412 | 409)) || matches!(error.code(), Some("PreconditionFailed" | "NoSuchKey"))
}

/// What a failed write request means for the write: only failures that certainly changed
/// nothing are `Unavailable` or `Rejected`; the rest are `UnknownOutcome`, to be resolved by
/// reading the object back.
fn write_failure<E: ProvideErrorMetadata + std::error::Error>(
    error: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> WriteError {
    let reason = format!("object store: {}", describe_sdk_error(error));
    match fate(error) {
        Fate::NotSent => WriteError::Unavailable(reason),
        Fate::Unknown => WriteError::UnknownOutcome(reason),
        Fate::Answered => match (status_of(error), error.code()) {
            // Turned away before it was processed: throttling, or a request that took too long to arrive.
            (Some(429 | 503), _) | (_, Some("RequestTimeout" | "SlowDown")) => WriteError::Unavailable(reason),
            (Some(400 | 401 | 403 | 404 | 405 | 411 | 413 | 501), _) => WriteError::Rejected(reason),
            // E.g. 500 `InternalError`: the request may have been processed.
            _ => WriteError::UnknownOutcome(reason),
        },
    }
}

#[async_trait]
impl MetadataStore for ObjectStore {
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError> {
        Ok(self.read(key).await?.map(|stored| stored.value))
    }

    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError> {
        Ok(self.read(key).await?.map(|stored| stored.value.version))
    }

    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError> {
        let mut request = self
            .write_client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .content_type("application/octet-stream");
        match precondition {
            Precondition::None => {}
            Precondition::DoesNotExist => request = request.if_none_match("*"),
            Precondition::MatchesVersion(expected) => {
                let current = self.read(key).await?;
                match current {
                    Some(stored) if stored.value.version == expected => request = request.if_match(stored.etag),
                    other => return Err(Self::failed(key, other.map(|s| s.value.version), precondition)),
                }
            }
        }
        let salt = rand::random::<u64>();
        match request.body(ByteStream::from(Self::encode(&value, salt))).send().await {
            Ok(_) => Ok(()),
            Err(error) if is_precondition_failure(&error) => {
                let actual = self.read(key).await.ok().flatten().map(|s| s.value.version);
                Err(Self::failed(key, actual, precondition))
            }
            Err(error) => match write_failure(&error) {
                WriteError::UnknownOutcome(reason) => {
                    let token = salt_token(salt);
                    outcome::settle_put(key, reason, &token, value.version, precondition, || self.state(key)).await
                }
                certain => Err(certain),
            },
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let mut request = self
            .write_client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key));
        let mut before = None;
        match precondition {
            Precondition::None => {}
            Precondition::DoesNotExist => {
                return Err(WriteError::Rejected(format!(
                    "deleting `{key}` on the condition that it does not exist does nothing; use a version or none"
                )));
            }
            Precondition::MatchesVersion(expected) => match self.read(key).await? {
                Some(stored) if stored.value.version == expected => {
                    before = Some(stored.state());
                    request = request.if_match(stored.etag);
                }
                other => return Err(Self::failed(key, other.map(|s| s.value.version), precondition)),
            },
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) if is_precondition_failure(&error) => {
                let actual = self.read(key).await.ok().flatten().map(|s| s.value.version);
                Err(Self::failed(key, actual, precondition))
            }
            Err(error) => match write_failure(&error) {
                WriteError::UnknownOutcome(reason) => {
                    outcome::settle_delete(key, reason, precondition, before.as_ref(), || self.state(key)).await
                }
                certain => Err(certain),
            },
        }
    }

    async fn keys(&self) -> Result<Vec<String>, ReadError> {
        let list_prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&list_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| ReadError::Unavailable(format!("object store: {}", describe_sdk_error(&e))))?;
            for object in output.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&list_prefix))
                    && !key.contains('/')
                    && !key.starts_with(".conditional-write-check-")
                {
                    keys.push(key.to_owned());
                }
            }
            match output.next_continuation_token() {
                Some(next) if output.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    fn kind(&self) -> &'static str {
        "object-store"
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use restate_config::MetadataClientKind;

    use super::*;
    use crate::test_servers::{
        LossyProxy, Moto, RequestFilter, aws_options, lost_answers_are_resolved, lost_requests_did_not_apply,
    };

    fn service_error(status: u16, code: &str) -> SdkError<PutObjectError, Response> {
        SdkError::service_error(
            PutObjectError::generic(ErrorMetadata::builder().code(code).message("test").build()),
            Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn write_failures_are_unknown_unless_certainly_not_applied() {
        for (status, code) in [(500, "InternalError"), (502, "BadGateway")] {
            assert!(
                matches!(
                    write_failure(&service_error(status, code)),
                    WriteError::UnknownOutcome(_)
                ),
                "{status}"
            );
        }
        for (status, code) in [(503, "SlowDown"), (429, "TooManyRequests"), (400, "RequestTimeout")] {
            assert!(
                matches!(write_failure(&service_error(status, code)), WriteError::Unavailable(_)),
                "{status}"
            );
        }
        for (status, code) in [(403, "AccessDenied"), (404, "NoSuchBucket"), (400, "InvalidArgument")] {
            assert!(
                matches!(write_failure(&service_error(status, code)), WriteError::Rejected(_)),
                "{status}"
            );
        }
        let lost: SdkError<PutObjectError, Response> = SdkError::dispatch_failure(
            aws_smithy_runtime_api::client::result::ConnectorError::io("connection reset by peer".into()),
        );
        assert!(matches!(write_failure(&lost), WriteError::UnknownOutcome(_)));
        for (status, code) in [
            (412, "PreconditionFailed"),
            (409, "ConditionalRequestConflict"),
            (404, "NoSuchKey"),
        ] {
            assert!(is_precondition_failure(&service_error(status, code)), "{status} {code}");
        }
        assert!(!is_precondition_failure(&service_error(404, "NoSuchBucket")));
    }

    #[test]
    fn the_salt_is_the_write_token() {
        let value = VersionedValue::new(Version(7), b"seven".to_vec());
        let body = ObjectStore::encode(&value, 0xfeed);
        assert_eq!(body[0], FORMAT_V1);
        assert_eq!(u64::from_le_bytes(body[1..9].try_into().unwrap()), 0xfeed);
        assert_eq!(u32::from_le_bytes(body[9..13].try_into().unwrap()), 7);
        assert_eq!(&body[HEADER_LEN..], b"seven");
        assert_eq!(salt_token(0xfeed), "000000000000feed");
    }

    async fn moto_with_bucket(moto: &Moto) {
        let options = aws_options(MetadataClientKind::ObjectStore, &format!("http://{}", moto.address));
        let config = crate::aws::sdk_config(&options).await.unwrap();
        let client = Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        client.create_bucket().bucket("restate-metadata").send().await.unwrap();
    }

    async fn connect(endpoint: &str) -> Result<ObjectStore, ProviderError> {
        let options = MetadataClientOptions {
            path: Some("s3://restate-metadata/test".into()),
            ..aws_options(MetadataClientKind::ObjectStore, endpoint)
        };
        ObjectStore::connect(&options).await
    }

    /// What a store that ignores `If-Match` on DELETE receives.
    fn strip_if_match_on_delete(chunk: &[u8]) -> Vec<u8> {
        if !chunk.starts_with(b"DELETE ") {
            return chunk.to_vec();
        }
        let text = String::from_utf8_lossy(chunk);
        text.split("\r\n")
            .filter(|line| !line.to_ascii_lowercase().starts_with("if-match:"))
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes()
    }

    #[tokio::test]
    async fn the_self_test_refuses_a_store_that_ignores_conditional_deletes() {
        let moto = Moto::start_in_temp_dir();
        moto_with_bucket(&moto).await;
        // moto itself honours every condition.
        let honest = LossyProxy::start(moto.address, None).await;
        connect(&honest.endpoint).await.unwrap();
        let filter: RequestFilter = strip_if_match_on_delete;
        let careless = LossyProxy::start(moto.address, Some(filter)).await;
        match connect(&careless.endpoint).await {
            Err(ProviderError::Unsafe { reason, .. }) => {
                assert!(
                    reason.contains("a delete with a stale If-Match ETag succeeded"),
                    "{reason}"
                )
            }
            Err(other) => panic!("expected the store to be refused as unsafe, got {other}"),
            Ok(_) => panic!("a store that ignores If-Match on DELETE was accepted"),
        }
    }

    /// The write lands, its answer is lost. With SDK retries the resent conditional write
    /// failed its own condition (a precondition failure for puts, `NoSuchKey` for the
    /// delete); now the salt read back shows that it applied.
    #[tokio::test]
    async fn conditional_writes_whose_answer_is_lost_are_resolved_by_their_salt() {
        let moto = Moto::start_in_temp_dir();
        moto_with_bucket(&moto).await;
        let proxy = LossyProxy::start(moto.address, None).await;
        let store = connect(&proxy.endpoint).await.unwrap();
        lost_answers_are_resolved(&store, &proxy, "PUT ", "DELETE ").await;
    }

    #[tokio::test]
    async fn writes_lost_on_the_way_did_not_apply() {
        let moto = Moto::start_in_temp_dir();
        moto_with_bucket(&moto).await;
        let proxy = LossyProxy::start(moto.address, None).await;
        let store = connect(&proxy.endpoint).await.unwrap();
        lost_requests_did_not_apply(&store, &proxy, "PUT ", "DELETE ").await;
    }

    #[test]
    fn paths_name_bucket_and_prefix() {
        assert_eq!(parse_path("s3://b/p/q/").unwrap(), ("b".into(), "p/q".into()));
        assert_eq!(parse_path("s3://b").unwrap(), ("b".into(), String::new()));
        assert!(parse_path("gs://b/p").is_err());
        assert!(parse_path("s3:///p").is_err());
    }
}
