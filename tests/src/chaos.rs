//! Faults for real processes: network partitions of one node (nftables rules matching the
//! node's cgroup for what it sends and its fabric port for what it receives), and a history
//! recorder for compare-and-swap clients of the admin API's `/metadata/{key}`.
//!
//! Partitions need root, nftables (`nft`) and a cgroup v2 hierarchy; without them
//! [`NetworkFaults::new`] says why and the caller runs without partitions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::linearizability::{Event, Op, Outcome, Register};

/// Where the cgroup v2 hierarchy is mounted, if anywhere.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, path, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(path))
    })
}

fn nft(script: &str) -> Result<(), String> {
    let output = Command::new("nft")
        .arg(script)
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {script}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Partitions one node at a time from the others.
pub struct NetworkFaults {
    table: String,
    /// One cgroup per node, by node index.
    cgroups: Vec<PathBuf>,
    /// The path nft names each cgroup by (relative to /sys/fs/cgroup).
    nft_paths: Vec<String>,
    level: usize,
}

impl NetworkFaults {
    /// Prepares cgroups and an nftables table for `nodes` nodes, or says why it cannot.
    pub fn new(nodes: usize) -> Result<Self, String> {
        let mount = cgroup2_mount().ok_or("no cgroup v2 hierarchy is mounted")?;
        let relative = mount
            .strip_prefix("/sys/fs/cgroup")
            .map_err(|_| {
                format!(
                    "the cgroup v2 hierarchy is at {}, not under /sys/fs/cgroup",
                    mount.display()
                )
            })?
            .to_path_buf();
        let me = std::process::id();
        let table = format!("restate_chaos_{me}");
        nft(&format!("add table inet {table}"))?;
        nft(&format!(
            "add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}"
        ))?;
        let mut faults = Self {
            table,
            cgroups: Vec::new(),
            nft_paths: Vec::new(),
            level: 1,
        };
        for node in 0..nodes {
            let name = format!("restate-chaos-{me}-{node}");
            let path = mount.join(&name);
            std::fs::create_dir_all(&path).map_err(|e| format!("cannot create the cgroup {}: {e}", path.display()))?;
            faults
                .nft_paths
                .push(relative.join(&name).to_string_lossy().into_owned());
            faults.cgroups.push(path);
        }
        Ok(faults)
    }

    /// The cgroup node `index` must run in (its `cgroup.procs` takes the process's pid).
    pub fn cgroup(&self, index: usize) -> &Path {
        &self.cgroups[index]
    }

    /// Cuts node `index` off from the other nodes (whose fabric ports are `fabric_ports`,
    /// by node index): nothing it sends reaches their fabric ports, nothing they send reaches
    /// its fabric port. Clients outside the cluster still reach every node.
    pub fn partition(&self, index: usize, fabric_ports: &[u16]) -> Result<(), String> {
        let table = &self.table;
        let own = fabric_ports[index];
        for (other, port) in fabric_ports.iter().enumerate() {
            if other == index {
                continue;
            }
            nft(&format!(
                "add rule inet {table} out socket cgroupv2 level {} \"{}\" tcp dport {port} drop",
                self.level, self.nft_paths[index]
            ))?;
            nft(&format!(
                "add rule inet {table} out socket cgroupv2 level {} \"{}\" tcp dport {own} drop",
                self.level, self.nft_paths[other]
            ))?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<(), String> {
        nft(&format!("flush chain inet {} out", self.table))
    }
}

impl Drop for NetworkFaults {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}", self.table));
        for cgroup in &self.cgroups {
            // Processes still inside (a node not yet reaped) go back to the root first.
            if let (Ok(procs), Some(root)) = (std::fs::read_to_string(cgroup.join("cgroup.procs")), cgroup.parent()) {
                for pid in procs.lines() {
                    let _ = std::fs::write(root.join("cgroup.procs"), pid);
                }
            }
            let _ = std::fs::remove_dir(cgroup);
        }
    }
}

/// Compare-and-swap clients of `/metadata/{key}` through the admin API, recording every
/// operation with its call and return time for the linearizability checker.
#[derive(Clone)]
pub struct MetadataHistory {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    client: reqwest::Client,
}

impl MetadataHistory {
    pub fn new(request_timeout: Duration) -> Self {
        Self {
            started: Instant::now(),
            events: Arc::default(),
            client: reqwest::Client::builder()
                .timeout(request_timeout)
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, key: &str, op: Op, outcome: Outcome, call: u64) {
        let ret = self.now();
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(Event {
            key: key.to_owned(),
            op,
            outcome,
            call,
            ret,
        });
    }

    /// Reads `key`; records the answer (a failed read is recorded as unknown and ignored by
    /// the checker). Returns the register seen, if the read answered.
    pub async fn read(&self, admin_url: &str, key: &str) -> Option<Option<Register>> {
        let call = self.now();
        let seen = async {
            let response = self
                .client
                .get(format!("{admin_url}metadata/{key}"))
                .send()
                .await
                .ok()?;
            match response.status().as_u16() {
                404 => Some(None),
                200 => {
                    let version = response
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim_matches('"').parse().ok())?;
                    let value = String::from_utf8_lossy(&response.bytes().await.ok()?).into_owned();
                    Some(Some(Register { version, value }))
                }
                _ => None,
            }
        }
        .await;
        let outcome = match &seen {
            Some(register) => Outcome::Read(register.clone()),
            None => Outcome::Unknown,
        };
        self.record(key, Op::Read, outcome, call);
        seen
    }

    /// Writes `value` as version `expected + 1` if the key is at `expected` (0: absent).
    pub async fn cas(&self, admin_url: &str, key: &str, expected: u32, value: String) -> Outcome {
        let call = self.now();
        let if_match = match expected {
            0 => "does-not-exist".to_owned(),
            version => version.to_string(),
        };
        let sent = self
            .client
            .put(format!("{admin_url}metadata/{key}"))
            .header("if-match", if_match)
            .header("etag", (expected + 1).to_string())
            .body(value.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Outcome::Written,
            Ok(response) if response.status().as_u16() == 412 => Outcome::Refused,
            // Any other answer or none: the write may or may not have happened.
            _ => Outcome::Unknown,
        };
        self.record(
            key,
            Op::Cas {
                expected,
                version: expected + 1,
                value,
            },
            outcome.clone(),
            call,
        );
        outcome
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
