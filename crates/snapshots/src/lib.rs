//! The snapshot repository: where partition snapshots are kept so a new or lagging replica
//! can start from one instead of from the beginning of its log, and so the log can be trimmed.
//!
//! The layout is the reference's, per partition under the destination:
//!
//! ```text
//! <destination>/<partition id>/latest.json
//! <destination>/<partition id>/lsn_<min applied LSN, 20 digits>-<snapshot id>/metadata.json
//! <destination>/<partition id>/lsn_<min applied LSN, 20 digits>-<snapshot id>/<files>
//! ```
//!
//! A snapshot directory never changes once written; `latest.json` names the newest and the
//! retained ones and is replaced as a whole (written aside, then renamed over the old one).
//! Destinations: `file:///path` (a local or mounted directory) and `s3://bucket/prefix`.

mod s3;

pub use restate_aws::AwsSettings;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "[worker.snapshots] destination `{0}` is not supported: use `s3://bucket/prefix` or `file:///absolute/path`"
    )]
    UnsupportedDestination(String),
    #[error("{0}")]
    Config(String),
    #[error("snapshot repository {url}: {reason}")]
    Remote { url: String, reason: String },
    #[error("snapshot repository {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("snapshot repository: {path} does not decode: {reason}")]
    Corrupt { path: String, reason: String },
}

pub(crate) fn io(path: &Path, error: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Io {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// What a snapshot holds, written beside its files as `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    pub version: String,
    pub cluster_name: String,
    pub cluster_fingerprint: String,
    pub partition_id: u16,
    pub node_name: String,
    /// RFC 3339.
    pub created_at: String,
    pub snapshot_id: String,
    pub key_range: KeyRange,
    pub log_id: u32,
    /// The partition had applied at least its log up to here: a replica restored from the
    /// snapshot reads its log from the next record on.
    pub min_applied_lsn: u64,
    pub files: Vec<SnapshotFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub name: String,
    pub size: u64,
    pub num_entries: u64,
}

/// `latest.json`: the newest snapshot of a partition and the ones kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestSnapshot {
    pub version: String,
    pub partition_id: u16,
    pub log_id: u32,
    pub cluster_name: String,
    pub cluster_fingerprint: String,
    pub node_name: String,
    pub created_at: String,
    pub snapshot_id: String,
    pub min_applied_lsn: u64,
    /// The snapshot's directory, relative to the partition's.
    pub path: String,
    /// Newest first; the newest is the one above.
    pub retained_snapshots: Vec<RetainedSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedSnapshot {
    pub snapshot_id: String,
    pub min_applied_lsn: u64,
    pub created_at: String,
    pub path: String,
}

/// A new snapshot id (`snap_` and random base62).
impl LatestSnapshot {
    /// The LSN of the oldest retained snapshot: a replica that loses its disk can always come
    /// back if the log keeps the records above it.
    pub fn archived_lsn(&self) -> u64 {
        self.retained_snapshots
            .iter()
            .map(|s| s.min_applied_lsn)
            .min()
            .unwrap_or(self.min_applied_lsn)
    }
}

pub fn new_snapshot_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let id: String = (0..23)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("snap_{id}")
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The directory name of a snapshot: sorts by LSN.
pub fn snapshot_path(min_applied_lsn: u64, snapshot_id: &str) -> String {
    format!("lsn_{min_applied_lsn:020}-{snapshot_id}")
}

/// Where snapshots are kept.
#[derive(Debug, Clone)]
pub enum Repository {
    /// A directory of this machine (or mounted on it).
    File(PathBuf),
    /// A bucket (and prefix) of S3 or an S3-compatible store.
    S3(s3::S3Repository),
}

/// Name of the file of a snapshot that holds the partition's data.
pub const DATA_FILE: &str = "data.sst";
pub(crate) const METADATA_FILE: &str = "metadata.json";
pub(crate) const LATEST_FILE: &str = "latest.json";

/// The `latest.json` that makes `metadata` (stored as `name`) the newest snapshot on top of
/// `previous`, and the snapshots it no longer retains; `None` when `previous` is newer.
pub(crate) fn next_latest(
    metadata: &SnapshotMetadata,
    name: &str,
    previous: Option<LatestSnapshot>,
    num_retained: u32,
) -> Option<(LatestSnapshot, Vec<RetainedSnapshot>)> {
    if previous
        .as_ref()
        .is_some_and(|previous| previous.min_applied_lsn > metadata.min_applied_lsn)
    {
        return None;
    }
    let mut retained = vec![RetainedSnapshot {
        snapshot_id: metadata.snapshot_id.clone(),
        min_applied_lsn: metadata.min_applied_lsn,
        created_at: metadata.created_at.clone(),
        path: name.to_owned(),
    }];
    retained.extend(previous.map(|p| p.retained_snapshots).unwrap_or_default());
    let keep = usize::try_from(num_retained.max(1)).unwrap_or(usize::MAX);
    let dropped = retained.split_off(keep.min(retained.len()));
    let latest = LatestSnapshot {
        version: "V2".into(),
        partition_id: metadata.partition_id,
        log_id: metadata.log_id,
        cluster_name: metadata.cluster_name.clone(),
        cluster_fingerprint: metadata.cluster_fingerprint.clone(),
        node_name: metadata.node_name.clone(),
        created_at: metadata.created_at.clone(),
        snapshot_id: metadata.snapshot_id.clone(),
        min_applied_lsn: metadata.min_applied_lsn,
        path: name.to_owned(),
        retained_snapshots: retained,
    };
    Some((latest, dropped))
}

impl Repository {
    /// The repository of a `[worker.snapshots] destination`, with the section's AWS settings
    /// for `s3://`. Must run on the runtime the repository's S3 requests will use.
    pub async fn open(destination: &str, aws: &restate_aws::AwsSettings<'_>) -> Result<Self, SnapshotError> {
        if let Some(path) = destination.strip_prefix("s3://") {
            return Ok(Repository::S3(s3::S3Repository::open(destination, path, aws).await?));
        }
        match destination.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Ok(Repository::File(PathBuf::from(path))),
            _ => Err(SnapshotError::UnsupportedDestination(destination.to_owned())),
        }
    }

    /// Where this repository is, as the operator wrote it.
    pub fn describe(&self) -> String {
        match self {
            Repository::File(root) => format!("file://{}", root.display()),
            Repository::S3(s3) => s3.describe(),
        }
    }

    /// Where one snapshot of a partition is, as a URL.
    pub fn location(&self, partition_id: u16, snapshot_path: &str) -> String {
        match self {
            Repository::File(root) => format!(
                "file://{}",
                root.join(partition_id.to_string()).join(snapshot_path).display()
            ),
            Repository::S3(s3) => s3.location(partition_id, snapshot_path),
        }
    }

    fn partition_dir(root: &Path, partition_id: u16) -> PathBuf {
        root.join(partition_id.to_string())
    }

    /// Stores a snapshot whose files are in `files_dir` (moved, not copied, when it is on the
    /// same file system), then makes it the partition's latest and deletes the snapshots
    /// beyond the newest `num_retained`. Returns where the snapshot is.
    pub fn put(
        &self,
        metadata: &SnapshotMetadata,
        files_dir: &Path,
        num_retained: u32,
    ) -> Result<String, SnapshotError> {
        let root = match self {
            Repository::File(root) => root,
            Repository::S3(s3) => return s3.put(metadata, files_dir, num_retained),
        };
        let partition_dir = Self::partition_dir(root, metadata.partition_id);
        std::fs::create_dir_all(&partition_dir).map_err(|e| io(&partition_dir, e))?;
        let name = snapshot_path(metadata.min_applied_lsn, &metadata.snapshot_id);
        let staging = partition_dir.join(format!(".staging-{}", metadata.snapshot_id));
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        for file in &metadata.files {
            let from = files_dir.join(&file.name);
            let to = staging.join(&file.name);
            if std::fs::rename(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| io(&to, e))?;
            }
        }
        write_synced(&staging.join(METADATA_FILE), &json(metadata)?)?;
        let final_dir = partition_dir.join(&name);
        std::fs::rename(&staging, &final_dir).map_err(|e| io(&final_dir, e))?;

        let previous = self.latest(metadata.partition_id)?;
        let Some((latest, dropped)) = next_latest(metadata, &name, previous, num_retained) else {
            // A newer snapshot became the latest meanwhile: this one stays as an extra copy.
            return Ok(self.location(metadata.partition_id, &name));
        };
        // The atomic rename is the file system's conditional put.
        let latest_path = partition_dir.join(LATEST_FILE);
        let aside = partition_dir.join(format!(".{LATEST_FILE}.{}", metadata.snapshot_id));
        write_synced(&aside, &json(&latest)?)?;
        std::fs::rename(&aside, &latest_path).map_err(|e| io(&latest_path, e))?;
        for old in dropped {
            let dir = partition_dir.join(&old.path);
            if let Err(error) = std::fs::remove_dir_all(&dir) {
                // Kept by mistake is better than a failed snapshot: say so and go on.
                tracing::warn!(dir = %dir.display(), %error, "cannot delete a snapshot beyond num-retained");
            }
        }
        Ok(self.location(metadata.partition_id, &name))
    }

    /// The partition's `latest.json`, if it has a snapshot.
    pub fn latest(&self, partition_id: u16) -> Result<Option<LatestSnapshot>, SnapshotError> {
        let root = match self {
            Repository::File(root) => root,
            Repository::S3(s3) => return s3.latest(partition_id),
        };
        let path = Self::partition_dir(root, partition_id).join(LATEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SnapshotError::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io(&path, error)),
        }
    }

    /// Copies one file of a snapshot to `to`.
    pub fn copy_file(
        &self,
        partition_id: u16,
        snapshot_path: &str,
        name: &str,
        to: &Path,
    ) -> Result<u64, SnapshotError> {
        let root = match self {
            Repository::File(root) => root,
            Repository::S3(s3) => return s3.copy_file(partition_id, snapshot_path, name, to),
        };
        let from = Self::partition_dir(root, partition_id).join(snapshot_path).join(name);
        std::fs::copy(&from, to).map_err(|e| io(&from, e))
    }

    /// The metadata of one of the partition's snapshots.
    pub fn metadata(&self, partition_id: u16, snapshot_path: &str) -> Result<SnapshotMetadata, SnapshotError> {
        let root = match self {
            Repository::File(root) => root,
            Repository::S3(s3) => return s3.metadata(partition_id, snapshot_path),
        };
        let path = Self::partition_dir(root, partition_id)
            .join(snapshot_path)
            .join(METADATA_FILE);
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

pub(crate) fn json(value: &impl Serialize) -> Result<Vec<u8>, SnapshotError> {
    serde_json::to_vec_pretty(value).map_err(|e| SnapshotError::Io {
        path: "-".into(),
        reason: e.to_string(),
    })
}

/// Writes `bytes` to `path` and fsyncs it, so a rename that follows publishes complete data.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|e| io(path, e))?;
    file.write_all(bytes).map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(partition_id: u16, lsn: u64) -> SnapshotMetadata {
        SnapshotMetadata {
            version: "V1".into(),
            cluster_name: "test".into(),
            cluster_fingerprint: "fp".into(),
            partition_id,
            node_name: "node-1".into(),
            created_at: now_rfc3339(),
            snapshot_id: new_snapshot_id(),
            key_range: KeyRange { start: 0, end: 99 },
            log_id: u32::from(partition_id),
            min_applied_lsn: lsn,
            files: vec![SnapshotFile {
                name: DATA_FILE.into(),
                size: 4,
                num_entries: 1,
            }],
        }
    }

    fn data_dir(root: &Path, lsn: u64) -> PathBuf {
        let dir = root.join(format!("export-{lsn}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(DATA_FILE), b"data").unwrap();
        dir
    }

    fn no_aws() -> restate_aws::AwsSettings<'static> {
        restate_aws::AwsSettings {
            section: "[worker.snapshots]",
            profile: None,
            region: Some("us-east-1"),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            endpoint_url: None,
            allow_http: None,
        }
    }

    #[tokio::test]
    async fn file_destinations_need_an_absolute_path_and_s3_ones_a_bucket() {
        assert!(matches!(
            Repository::open("file:///var/snapshots", &no_aws()).await,
            Ok(Repository::File(path)) if path == Path::new("/var/snapshots")
        ));
        let s3 = Repository::open("s3://bucket/some/prefix/", &no_aws()).await.unwrap();
        assert_eq!(s3.describe(), "s3://bucket/some/prefix");
        assert_eq!(s3.location(3, "lsn_1-snap"), "s3://bucket/some/prefix/3/lsn_1-snap");
        for refused in ["file://relative", "s3://", "/var/snapshots", "gs://bucket"] {
            let error = Repository::open(refused, &no_aws()).await.unwrap_err().to_string();
            assert!(error.contains(refused) && error.contains("file:///"), "{error}");
        }
        let plain = restate_aws::AwsSettings {
            endpoint_url: Some("http://127.0.0.1:5000"),
            ..no_aws()
        };
        let error = Repository::open("s3://bucket", &plain).await.unwrap_err().to_string();
        assert!(
            error.contains("aws-allow-http = true") && error.contains("[worker.snapshots]"),
            "{error}"
        );
    }

    #[test]
    fn snapshots_are_laid_out_per_partition_and_only_the_retained_ones_are_kept() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("repo");
        let repository = Repository::File(root.clone());
        assert_eq!(repository.latest(3).unwrap(), None);
        let mut dirs = Vec::new();
        for lsn in [10, 20, 30] {
            let meta = metadata(3, lsn);
            let location = repository.put(&meta, &data_dir(scratch.path(), lsn), 2).unwrap();
            let dir = root.join("3").join(snapshot_path(lsn, &meta.snapshot_id));
            assert_eq!(location, format!("file://{}", dir.display()));
            assert_eq!(std::fs::read(dir.join(DATA_FILE)).unwrap(), b"data");
            assert_eq!(
                repository.metadata(3, &snapshot_path(lsn, &meta.snapshot_id)).unwrap(),
                meta
            );
            dirs.push(dir);
        }
        let latest = repository.latest(3).unwrap().unwrap();
        assert_eq!(latest.min_applied_lsn, 30);
        let kept: Vec<u64> = latest.retained_snapshots.iter().map(|s| s.min_applied_lsn).collect();
        assert_eq!(kept, vec![30, 20]);
        assert_eq!(latest.archived_lsn(), 20, "the oldest retained snapshot's");
        assert!(!dirs[0].exists(), "the oldest beyond num-retained is deleted");
        assert!(dirs[1].exists() && dirs[2].exists());

        // An older snapshot that finishes late does not replace the latest.
        let late = metadata(3, 25);
        repository.put(&late, &data_dir(scratch.path(), 25), 2).unwrap();
        assert_eq!(repository.latest(3).unwrap().unwrap().min_applied_lsn, 30);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn s3_snapshots_have_the_same_layout_and_only_the_retained_ones_are_kept() {
        let moto = restate_test_servers::Moto::start_in_temp_dir();
        moto.create_bucket("snaps");
        let aws = restate_aws::AwsSettings {
            endpoint_url: Some(&moto.endpoint),
            allow_http: Some(true),
            access_key_id: Some("test"),
            secret_access_key: Some("test"),
            ..no_aws()
        };
        let repository = Repository::open("s3://snaps/cluster", &aws).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        tokio::task::spawn_blocking(move || {
            assert_eq!(repository.latest(3).unwrap(), None);
            let mut paths = Vec::new();
            for lsn in [10, 20, 30] {
                let meta = metadata(3, lsn);
                let path = snapshot_path(lsn, &meta.snapshot_id);
                let location = repository.put(&meta, &data_dir(scratch.path(), lsn), 2).unwrap();
                assert_eq!(location, format!("s3://snaps/cluster/3/{path}"));
                assert_eq!(repository.metadata(3, &path).unwrap(), meta);
                let copy = scratch.path().join(format!("copy-{lsn}"));
                assert_eq!(repository.copy_file(3, &path, DATA_FILE, &copy).unwrap(), 4);
                assert_eq!(std::fs::read(&copy).unwrap(), b"data");
                paths.push(path);
            }
            let latest = repository.latest(3).unwrap().unwrap();
            assert_eq!(latest.min_applied_lsn, 30);
            let kept: Vec<u64> = latest.retained_snapshots.iter().map(|s| s.min_applied_lsn).collect();
            assert_eq!(kept, vec![30, 20]);
            assert!(
                repository.metadata(3, &paths[0]).is_err(),
                "the oldest beyond num-retained is deleted"
            );
            assert!(repository.metadata(3, &paths[1]).is_ok());
            let late = metadata(3, 25);
            repository.put(&late, &data_dir(scratch.path(), 25), 2).unwrap();
            assert_eq!(repository.latest(3).unwrap().unwrap().min_applied_lsn, 30);
            drop(moto);
        })
        .await
        .unwrap();
    }
}
