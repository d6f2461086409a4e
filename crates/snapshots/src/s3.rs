//! The repository in an S3 bucket (`s3://bucket/prefix`), in the same layout as a directory.
//! `latest.json` is replaced with a conditional put (create-only, or `If-Match` on the ETag it
//! was read with), so two nodes that snapshot the same partition never lose each other's
//! retained snapshots. The methods are blocking (like the file repository's): they run the
//! SDK's requests on the runtime they were created on, from a blocking thread.

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use tokio::runtime::Handle;

use crate::{
    LATEST_FILE, LatestSnapshot, METADATA_FILE, SnapshotError, SnapshotMetadata, json, next_latest, snapshot_path,
};

/// Tries of the read-and-conditionally-replace of `latest.json` before giving up.
const LATEST_UPDATE_TRIES: usize = 5;

#[derive(Debug, Clone)]
pub struct S3Repository {
    client: Client,
    bucket: String,
    /// Without leading or trailing slashes; may be empty.
    prefix: String,
    runtime: Handle,
}

impl S3Repository {
    /// The repository at `s3://bucket/prefix`, with the section's AWS settings.
    pub(crate) async fn open(
        destination: &str,
        path: &str,
        aws: &restate_aws::AwsSettings<'_>,
    ) -> Result<Self, SnapshotError> {
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(SnapshotError::UnsupportedDestination(destination.to_owned()));
        }
        restate_aws::refuse_plain_http(aws).map_err(SnapshotError::Config)?;
        let config = restate_aws::sdk_config(aws).await.map_err(SnapshotError::Config)?;
        let mut builder = aws_sdk_s3::config::Builder::from(&config);
        if aws.endpoint_url.is_some() {
            // S3-compatible servers (MinIO, moto, …) address buckets by path.
            builder = builder.force_path_style(true);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            runtime: Handle::current(),
        })
    }

    pub(crate) fn describe(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    fn key(&self, partition_id: u16, rest: &str) -> String {
        match self.prefix.is_empty() {
            true => format!("{partition_id}/{rest}"),
            false => format!("{}/{partition_id}/{rest}", self.prefix),
        }
    }

    fn remote(&self, key: &str, error: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Remote {
            url: format!("s3://{}/{key}", self.bucket),
            reason: error.to_string(),
        }
    }

    fn describe_error<E, R>(&self, key: &str, error: &aws_sdk_s3::error::SdkError<E, R>) -> SnapshotError
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        self.remote(key, restate_aws::describe_sdk_error(error))
    }

    pub(crate) fn put(
        &self,
        metadata: &SnapshotMetadata,
        files_dir: &Path,
        num_retained: u32,
    ) -> Result<String, SnapshotError> {
        let partition = metadata.partition_id;
        let name = snapshot_path(metadata.min_applied_lsn, &metadata.snapshot_id);
        self.runtime.block_on(async {
            for file in &metadata.files {
                let key = self.key(partition, &format!("{name}/{}", file.name));
                let body = ByteStream::from_path(files_dir.join(&file.name))
                    .await
                    .map_err(|e| self.remote(&key, e))?;
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.describe_error(&key, &e))?;
            }
            let key = self.key(partition, &format!("{name}/{METADATA_FILE}"));
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(json(metadata)?))
                .send()
                .await
                .map_err(|e| self.describe_error(&key, &e))?;

            let latest_key = self.key(partition, LATEST_FILE);
            for _ in 0..LATEST_UPDATE_TRIES {
                let previous = self.read_latest(partition).await?;
                let (etag, previous) = match previous {
                    Some((etag, latest)) => (Some(etag), Some(latest)),
                    None => (None, None),
                };
                let Some((latest, dropped)) = next_latest(metadata, &name, previous, num_retained) else {
                    // A newer snapshot became the latest meanwhile: this one stays as an extra copy.
                    return Ok(self.location(partition, &name));
                };
                let mut request = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&latest_key)
                    .body(ByteStream::from(json(&latest)?));
                request = match &etag {
                    Some(etag) => request.if_match(etag),
                    None => request.if_none_match("*"),
                };
                match request.send().await {
                    Ok(_) => {
                        for old in dropped {
                            if let Err(error) = self.delete_snapshot(partition, &old.path).await {
                                // Kept by mistake is better than a failed snapshot: say so and go on.
                                tracing::warn!(%error, "cannot delete a snapshot beyond num-retained");
                            }
                        }
                        return Ok(self.location(partition, &name));
                    }
                    // Another node replaced it since it was read: read it again.
                    Err(error) if matches!(error.code(), Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
                        continue;
                    }
                    Err(error) => return Err(self.describe_error(&latest_key, &error)),
                }
            }
            Err(self.remote(
                &latest_key,
                format!("it kept changing while this snapshot was made the latest ({LATEST_UPDATE_TRIES} tries)"),
            ))
        })
    }

    pub(crate) fn location(&self, partition_id: u16, snapshot_path: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(partition_id, snapshot_path))
    }

    /// `latest.json` with its ETag, if the partition has one.
    async fn read_latest(&self, partition_id: u16) -> Result<Option<(String, LatestSnapshot)>, SnapshotError> {
        let key = self.key(partition_id, LATEST_FILE);
        let Some((etag, bytes)) = self.get(&key).await? else {
            return Ok(None);
        };
        let latest = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Corrupt {
            path: format!("s3://{}/{key}", self.bucket),
            reason: e.to_string(),
        })?;
        Ok(Some((etag, latest)))
    }

    async fn get(&self, key: &str) -> Result<Option<(String, Vec<u8>)>, SnapshotError> {
        let output = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => output,
            Err(error) if error.code() == Some("NoSuchKey") => return Ok(None),
            Err(error) => return Err(self.describe_error(key, &error)),
        };
        let etag = output.e_tag().unwrap_or_default().to_owned();
        let bytes = output.body.collect().await.map_err(|e| self.remote(key, e))?;
        Ok(Some((etag, bytes.to_vec())))
    }

    async fn delete_snapshot(&self, partition_id: u16, snapshot_path: &str) -> Result<(), SnapshotError> {
        let prefix = self.key(partition_id, &format!("{snapshot_path}/"));
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(|e| self.describe_error(&prefix, &e))?;
        for object in listed.contents() {
            if let Some(key) = object.key() {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.describe_error(key, &e))?;
            }
        }
        Ok(())
    }

    pub(crate) fn latest(&self, partition_id: u16) -> Result<Option<LatestSnapshot>, SnapshotError> {
        self.runtime
            .block_on(self.read_latest(partition_id))
            .map(|latest| latest.map(|(_, latest)| latest))
    }

    /// Streams one file of a snapshot into `to` (never whole in memory).
    pub(crate) fn copy_file(
        &self,
        partition_id: u16,
        snapshot_path: &str,
        name: &str,
        to: &Path,
    ) -> Result<u64, SnapshotError> {
        let key = self.key(partition_id, &format!("{snapshot_path}/{name}"));
        self.runtime.block_on(async {
            let output = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.describe_error(&key, &e))?;
            let mut reader = output.body.into_async_read();
            let mut file = tokio::fs::File::create(to).await.map_err(|e| crate::io(to, e))?;
            let copied = tokio::io::copy(&mut reader, &mut file)
                .await
                .map_err(|e| self.remote(&key, e))?;
            file.sync_all().await.map_err(|e| crate::io(to, e))?;
            Ok(copied)
        })
    }

    pub(crate) fn metadata(&self, partition_id: u16, snapshot_path: &str) -> Result<SnapshotMetadata, SnapshotError> {
        let key = self.key(partition_id, &format!("{snapshot_path}/{METADATA_FILE}"));
        let Some((_, bytes)) = self.runtime.block_on(self.get(&key))? else {
            return Err(self.remote(&key, "it does not exist"));
        };
        serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Corrupt {
            path: format!("s3://{}/{key}", self.bucket),
            reason: e.to_string(),
        })
    }
}
