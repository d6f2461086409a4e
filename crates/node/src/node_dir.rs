//! The node directory `<base-dir>/<node-name>/` and its cluster marker, which ties the
//! directory to one cluster so a node can never start on another cluster's data.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use restate_config::Configuration;
use serde::{Deserialize, Serialize};

const MARKER_FILE: &str = ".cluster-marker";

/// Contents of `<node-dir>/.cluster-marker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMarker {
    pub cluster_name: String,
    /// Set once the node has joined a provisioned cluster.
    #[serde(default)]
    pub cluster_fingerprint: Option<u64>,
    #[serde(default)]
    pub is_provisioned: bool,
    pub node_name: String,
    pub created_at_millis: u64,
    pub binary_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeDirError {
    #[error("cannot create the node directory {dir} (from `base-dir` and `node-name`): {reason}")]
    Create { dir: PathBuf, reason: String },
    #[error("cannot read the cluster marker {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write the cluster marker {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "the node directory {dir} belongs to cluster `{found}`, but this node is configured for cluster `{configured}`; \
         set `cluster-name = \"{found}\"` to rejoin it, or use another `base-dir` for a new cluster"
    )]
    OtherCluster {
        dir: PathBuf,
        found: String,
        configured: String,
    },
}

/// The node directory with its validated marker.
#[derive(Debug, Clone)]
pub struct NodeDir {
    pub path: PathBuf,
    pub marker: ClusterMarker,
}

impl NodeDir {
    /// Creates the node directory if needed and validates (or writes) its cluster marker.
    pub fn prepare(config: &Configuration) -> Result<Self, NodeDirError> {
        let path = config.node_dir();
        fs::create_dir_all(&path).map_err(|e| NodeDirError::Create {
            dir: path.clone(),
            reason: e.to_string(),
        })?;
        let marker_path = path.join(MARKER_FILE);
        let marker = match fs::read(&marker_path) {
            Ok(bytes) => {
                let marker: ClusterMarker = serde_json::from_slice(&bytes).map_err(|e| NodeDirError::Read {
                    path: marker_path.clone(),
                    reason: format!("{e}; the file is not a cluster marker written by restate"),
                })?;
                if marker.cluster_name != config.cluster_name {
                    return Err(NodeDirError::OtherCluster {
                        dir: path,
                        found: marker.cluster_name,
                        configured: config.cluster_name.clone(),
                    });
                }
                marker
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let marker = ClusterMarker {
                    cluster_name: config.cluster_name.clone(),
                    cluster_fingerprint: None,
                    is_provisioned: false,
                    node_name: config.node_name().to_owned(),
                    created_at_millis: now_millis(),
                    binary_version: restate_types::BINARY_VERSION.to_owned(),
                };
                write_marker(&marker_path, &marker)?;
                marker
            }
            Err(e) => {
                return Err(NodeDirError::Read {
                    path: marker_path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self { path, marker })
    }

    /// Records that this node joined a provisioned cluster with the given fingerprint.
    pub fn mark_provisioned(&mut self, fingerprint: u64) -> Result<(), NodeDirError> {
        if self.marker.is_provisioned && self.marker.cluster_fingerprint == Some(fingerprint) {
            return Ok(());
        }
        let mut marker = self.marker.clone();
        marker.is_provisioned = true;
        marker.cluster_fingerprint = Some(fingerprint);
        marker.binary_version = restate_types::BINARY_VERSION.to_owned();
        write_marker(&self.path.join(MARKER_FILE), &marker)?;
        self.marker = marker;
        Ok(())
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Writes the marker through a temporary file, fsync and rename, so a crash leaves either
/// the old or the new marker, never a torn one.
fn write_marker(path: &Path, marker: &ClusterMarker) -> Result<(), NodeDirError> {
    let fail = |e: std::io::Error| NodeDirError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let bytes = serde_json::to_vec_pretty(marker).map_err(|e| NodeDirError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let temp = path.with_extension("tmp");
    let mut file = fs::File::create(&temp).map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    fs::rename(&temp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base: &Path, cluster: &str) -> Configuration {
        Configuration {
            base_dir: base.to_owned(),
            node_name: Some("n1".into()),
            cluster_name: cluster.into(),
            ..Configuration::default()
        }
    }

    #[test]
    fn marker_is_created_then_validated() {
        let base = tempfile::tempdir().unwrap();
        let mut dir = NodeDir::prepare(&config(base.path(), "alpha")).unwrap();
        assert!(!dir.marker.is_provisioned);
        dir.mark_provisioned(42).unwrap();
        let again = NodeDir::prepare(&config(base.path(), "alpha")).unwrap();
        assert_eq!(again.marker.cluster_fingerprint, Some(42));
        assert!(!base.path().join("n1/.cluster-marker.tmp").exists());

        let err = NodeDir::prepare(&config(base.path(), "beta")).unwrap_err().to_string();
        assert!(
            err.contains("belongs to cluster `alpha`") && err.contains("configured for cluster `beta`"),
            "{err}"
        );
    }
}
