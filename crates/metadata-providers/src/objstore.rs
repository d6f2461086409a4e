//! S3 object-store back-end: one object per key under `s3://bucket/prefix/`.
//!
//! Compare-and-swap uses the store's conditional writes: create-only puts
//! (`If-None-Match: *`), puts and deletes conditional on the ETag read with the version
//! (`If-Match`). Every body carries a random salt, so two writers of equal bytes never share an
//! ETag. At start-up a self-test proves the store honours the conditions; a store that
//! ignores them is refused before it can corrupt a cluster.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use restate_config::MetadataClientOptions;
use restate_metadata_store::{MetadataStore, ReadError, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue};

use crate::ProviderError;
use crate::aws::describe_sdk_error;

/// Body layout version byte, then salt (u64 LE), version (u32 LE), value.
const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 8 + 4;

pub struct ObjectStore {
    client: Client,
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
        if let Some(endpoint) = &options.aws_endpoint_url
            && endpoint.starts_with("http://")
            && options.aws_allow_http != Some(true)
        {
            return Err(ProviderError::Config(format!(
                "`aws-endpoint-url = \"{endpoint}\"` is plain HTTP; set `aws-allow-http = true` in [metadata-client] to allow it"
            )));
        }
        let config = crate::aws::sdk_config(options).await?;
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        if options.aws_endpoint_url.is_some() {
            // S3-compatible servers (MinIO, moto, …) address buckets by path.
            builder = builder.force_path_style(true);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
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

    /// Proves that create-only puts and ETag-conditional puts are honoured.
    async fn self_test(&self) -> Result<(), ProviderError> {
        let scratch = self.object_key(&format!(".conditional-write-check-{:016x}", rand::random::<u64>()));
        let body = || ByteStream::from(b"restate-rs conditional write check".to_vec());
        let refuse = |what: &str| ProviderError::Unsafe {
            location: self.location.clone(),
            reason: what.to_owned(),
        };
        let created = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&scratch)
            .if_none_match("*")
            .body(body())
            .send()
            .await;
        if let Err(error) = created {
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
        let again = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&scratch)
            .if_none_match("*")
            .body(body())
            .send()
            .await;
        let stale = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&scratch)
            .if_match("\"00000000000000000000000000000000\"")
            .body(body())
            .send()
            .await;
        let _ = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&scratch)
            .send()
            .await;
        match again {
            Err(error) if is_precondition_failure(&error) => {}
            Ok(_) => {
                return Err(refuse(
                    "a second create-only put (If-None-Match: *) of the same key succeeded",
                ));
            }
            Err(error) => {
                return Err(refuse(&format!(
                    "a second create-only put failed oddly: {}",
                    describe_sdk_error(&error)
                )));
            }
        }
        match stale {
            Err(error) if is_precondition_failure(&error) => Ok(()),
            Ok(_) => Err(refuse("a put with a stale If-Match ETag succeeded")),
            Err(error) => Err(refuse(&format!(
                "a put with a stale If-Match ETag failed oddly: {}",
                describe_sdk_error(&error)
            ))),
        }
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
        let version = u32::from_le_bytes(bytes[9..13].try_into().map_err(|_| codec("truncated header"))?);
        Ok(Some(Stored {
            value: VersionedValue::new(Version(version), bytes[HEADER_LEN..].to_vec()),
            etag,
        }))
    }

    fn encode(value: &VersionedValue) -> Vec<u8> {
        let mut body = Vec::with_capacity(HEADER_LEN + value.value.len());
        body.push(FORMAT_V1);
        body.extend_from_slice(&rand::random::<u64>().to_le_bytes());
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

fn is_precondition_failure<E: ProvideErrorMetadata>(
    error: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    matches!(status_of(error), Some(412 | 409)) || error.code() == Some("PreconditionFailed")
}

fn write_failure<E: ProvideErrorMetadata + std::error::Error>(
    error: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> WriteError {
    let reason = format!("object store: {}", describe_sdk_error(error));
    match (error, status_of(error)) {
        (SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_), _) => WriteError::Unavailable(reason),
        (_, Some(401 | 403)) => WriteError::Rejected(reason),
        (_, Some(429 | 503)) => WriteError::Unavailable(reason),
        _ => WriteError::UnknownOutcome(reason),
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
            .client
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
        match request.body(ByteStream::from(Self::encode(&value))).send().await {
            Ok(_) => Ok(()),
            Err(error) if is_precondition_failure(&error) => {
                let actual = self.read(key).await.ok().flatten().map(|s| s.value.version);
                Err(Self::failed(key, actual, precondition))
            }
            Err(error) => Err(write_failure(&error)),
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let mut request = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key));
        match precondition {
            Precondition::None => {}
            Precondition::DoesNotExist => {
                return Err(WriteError::Rejected(format!(
                    "deleting `{key}` on the condition that it does not exist does nothing; use a version or none"
                )));
            }
            Precondition::MatchesVersion(expected) => match self.read(key).await? {
                Some(stored) if stored.value.version == expected => request = request.if_match(stored.etag),
                other => return Err(Self::failed(key, other.map(|s| s.value.version), precondition)),
            },
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) if is_precondition_failure(&error) => {
                let actual = self.read(key).await.ok().flatten().map(|s| s.value.version);
                Err(Self::failed(key, actual, precondition))
            }
            Err(error) => Err(write_failure(&error)),
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
    use super::*;

    #[test]
    fn paths_name_bucket_and_prefix() {
        assert_eq!(parse_path("s3://b/p/q/").unwrap(), ("b".into(), "p/q".into()));
        assert_eq!(parse_path("s3://b").unwrap(), ("b".into(), String::new()));
        assert!(parse_path("gs://b/p").is_err());
        assert!(parse_path("s3:///p").is_err());
    }
}
