//! Harness for multi-process tests: starts real `restate` processes on 127.0.0.1 with free
//! ports and temporary directories, waits for their health, and kills or stops them.
//!
//! The binaries come from the workspace target directory (`cargo build --bins` first) or
//! from `RESTATE_BIN_DIR`. Directories of a failed test are kept and its node logs printed.

pub mod chaos;
pub mod linearizability;
/// Real local servers (etcd, moto) for the external-store tests.
pub use restate_test_servers as servers;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Directory holding the `restate` and `restatectl` binaries under test.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RESTATE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build --bins` before the tests (or set RESTATE_BIN_DIR)",
        path.display()
    );
    path
}

pub use restate_test_servers::free_port;

/// Runs `restatectl` with the given arguments.
pub fn restatectl(args: &[&str]) -> Output {
    Command::new(binary("restatectl"))
        .args(args)
        .env_remove("RESTATECTL_ADDRESS")
        .output()
        .unwrap_or_else(|e| panic!("cannot run restatectl: {e}"))
}

/// Runs `restate` to completion (for commands that exit, such as bad configs or `--dump-config`).
pub fn restate_output(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut command = Command::new(binary("restate"));
    command.args(args).current_dir(dir);
    clear_restate_env(&mut command);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap_or_else(|e| panic!("cannot run restate: {e}"))
}

fn clear_restate_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("RESTATE_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

/// Ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub fabric: u16,
    pub admin: u16,
    pub ingress: u16,
}

impl Ports {
    /// Three distinct free ports.
    pub fn free() -> Self {
        let fabric = free_port();
        let mut admin = free_port();
        while admin == fabric {
            admin = free_port();
        }
        let mut ingress = free_port();
        while ingress == fabric || ingress == admin {
            ingress = free_port();
        }
        Self { fabric, admin, ingress }
    }
}

/// What to start: a config file (optional) plus environment overrides; the harness adds the
/// ports, base directory and node name.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub config_file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// A cgroup (v2) directory the process joins before it starts, so network faults can
    /// match what it sends.
    pub cgroup: Option<PathBuf>,
}

impl NodeSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            config_file: None,
            env: Vec::new(),
            args: Vec::new(),
            cgroup: None,
        }
    }

    pub fn cgroup(mut self, path: impl Into<PathBuf>) -> Self {
        self.cgroup = Some(path.into());
        self
    }

    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
}

/// A `restate` process under test.
pub struct TestNode {
    pub name: String,
    pub ports: Ports,
    pub base_dir: PathBuf,
    spec: NodeSpec,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl TestNode {
    /// Starts a node whose data lives under `root/<name>/`.
    pub fn start(root: &Path, spec: NodeSpec, ports: Ports) -> Self {
        let base_dir = root.join(&spec.name);
        fs::create_dir_all(&base_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", base_dir.display()));
        let mut node = Self {
            name: spec.name.clone(),
            ports,
            log_path: base_dir.join("node.log"),
            base_dir,
            spec,
            child: None,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        let err_log = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let mut command = match &self.spec.cgroup {
            // The shell joins the cgroup, then becomes `restate` (same pid).
            Some(cgroup) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg("echo $$ > \"$TEST_NODE_CGROUP/cgroup.procs\" && exec \"$0\" \"$@\"")
                    .arg(binary("restate"))
                    .env("TEST_NODE_CGROUP", cgroup);
                command
            }
            None => Command::new(binary("restate")),
        };
        clear_restate_env(&mut command);
        if let Some(file) = &self.spec.config_file {
            command.arg("--config-file").arg(file);
        }
        command
            .args(&self.spec.args)
            .current_dir(&self.base_dir)
            .env("RESTATE_NODE_NAME", &self.name)
            .env("RESTATE_BASE_DIR", &self.base_dir)
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{}", self.ports.fabric))
            .env("RESTATE_ADVERTISED_ADDRESS", self.fabric_url())
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{}", self.ports.admin))
            .env(
                "RESTATE_INGRESS__BIND_ADDRESS",
                format!("127.0.0.1:{}", self.ports.ingress),
            )
            .env("RESTATE_LOG_FILTER", "info")
            .env("RESTATE_LOG_DISABLE_ANSI_CODES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log));
        for (key, value) in &self.spec.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start restate for {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn fabric_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.fabric)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.admin)
    }

    pub fn ingress_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.ingress)
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until `GET <url>health` answers 200 and `accept` approves the JSON.
    pub async fn wait_health(
        &mut self,
        base_url: &str,
        timeout: Duration,
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "{} exited with {status} while waiting for health:\n{}",
                    self.name,
                    tail(&self.log(), 40)
                );
            }
            match client.get(format!("{base_url}health")).send().await {
                Ok(response) if response.status().is_success() => {
                    let body: serde_json::Value = response.json().await?;
                    if accept(&body) {
                        return Ok(body);
                    }
                    last = body.to_string();
                }
                Ok(response) => last = format!("HTTP {}", response.status()),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} did not become healthy at {base_url} within {timeout:?}; last answer: {last}",
            self.name
        )
    }

    /// Waits until the node reports ALIVE on its fabric port.
    pub async fn wait_alive(&mut self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let url = self.fabric_url();
        self.wait_health(&url, timeout, |body| body["status"] == "ALIVE").await
    }

    /// Waits until the node answers on its fabric port that it awaits provisioning.
    pub async fn wait_awaiting_provisioning(&mut self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let url = self.fabric_url();
        self.wait_health(&url, timeout, |body| {
            body["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("awaiting provisioning"))
        })
        .await
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        self.wait_exit(timeout)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("the node is not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {timeout:?}:\n{}",
                    self.name,
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the node again with the same spec, ports and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The spec used by the next [`TestNode::restart`].
    pub fn spec_mut(&mut self) -> &mut NodeSpec {
        &mut self.spec
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
        let log = self.log();
        // A panic inside the node is a bug even when the test's own checks passed: whatever
        // the panicking task owned (an attempt, a connection) was lost.
        if !std::thread::panicking()
            && let Some(at) = log.find("panicked at")
        {
            let from = log[..at].rfind('\n').map_or(0, |line| line + 1);
            let excerpt: String = log[from..].lines().take(30).collect::<Vec<_>>().join("\n");
            panic!("{} panicked ({}):\n{excerpt}", self.name, self.log_path.display());
        }
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ({}) ----\n{}",
                self.name,
                self.log_path.display(),
                tail(&self.log(), 80)
            );
        }
    }
}

/// Runs `restatectl` and parses its JSON output; panics with stderr if it fails.
pub fn restatectl_json(args: &[&str]) -> serde_json::Value {
    let output = restatectl(args);
    assert!(
        output.status.success(),
        "restatectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "restatectl {} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Several nodes started from one config file (or none), named `node-1` … `node-N`, that
/// all list each other as metadata servers.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    pub dir: TestDir,
}

impl Cluster {
    /// Starts `count` nodes; `spec` may add to each node's spec (index from 0).
    pub fn start(count: usize, config_file: Option<PathBuf>, spec: impl Fn(usize, NodeSpec) -> NodeSpec) -> Self {
        let dir = TestDir::new();
        let ports: Vec<Ports> = (0..count).map(|_| Ports::free()).collect();
        let addresses: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{}/", p.fabric))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, ports)| {
                let mut node_spec = NodeSpec::new(&format!("node-{}", i + 1)).env(
                    "RESTATE_METADATA_CLIENT__ADDRESSES",
                    format!("[{}]", addresses.join(",")),
                );
                if let Some(file) = &config_file {
                    node_spec = node_spec.config_file(file);
                }
                TestNode::start(dir.path(), spec(i, node_spec), *ports)
            })
            .collect();
        Self { nodes, dir }
    }

    /// `-s a,b,c` for restatectl.
    pub fn address_list(&self) -> String {
        self.nodes.iter().map(|n| n.fabric_url()).collect::<Vec<_>>().join(",")
    }

    pub async fn wait_all_alive(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.wait_alive(timeout).await?;
        }
        Ok(())
    }

    /// Index of the node whose metadata server leads, per `restatectl metadata-server list-servers`.
    pub fn metadata_leader(&self) -> Option<usize> {
        let servers = restatectl_json(&["-s", &self.address_list(), "metadata-server", "list-servers", "--json"]);
        let servers = servers.as_array()?;
        let leader = servers.iter().find_map(|s| s["leader"].as_str())?;
        let address = servers.iter().find(|s| s["node"] == leader)?["address"].as_str()?;
        self.nodes.iter().position(|n| n.fabric_url() == address)
    }
}

/// One entry read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Record(u64, Vec<u8>),
    TrimGap(u64, u64),
}

impl Entry {
    /// Where a reader continues after this entry.
    pub fn next_lsn(&self) -> u64 {
        match self {
            Entry::Record(lsn, _) => lsn + 1,
            Entry::TrimGap(_, to) => *to,
        }
    }
}

/// Appends and reads through a node's Bifrost (`BifrostSvc` on its fabric port).
pub mod logs {
    use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
    use std::sync::{Arc, Mutex};

    use restate_proto::bifrost::{AppendRequest, ReadRequest, TailRequest, TrimRequest, log_entry};

    use super::Entry;

    fn to_entry(entry: log_entry::Entry) -> Entry {
        match entry {
            log_entry::Entry::Record(record) => Entry::Record(record.lsn, record.payload),
            log_entry::Entry::TrimGap(gap) => Entry::TrimGap(gap.from_lsn, gap.to_lsn),
        }
    }

    /// A follower of a log through `BifrostSvc/Tail`: entries collect in `entries` as they
    /// arrive; dropping it hangs up.
    pub struct Follower {
        pub entries: Arc<Mutex<Vec<Entry>>>,
        task: tokio::task::JoinHandle<Result<(), tonic::Status>>,
    }

    impl Follower {
        pub async fn start(fabric_url: &str, log_id: u32, from: u64) -> Result<Self, tonic::Status> {
            let mut stream = client(fabric_url)
                .await?
                .tail(TailRequest { log_id, from_lsn: from })
                .await?
                .into_inner();
            let entries = Arc::new(Mutex::new(Vec::new()));
            let sink = entries.clone();
            let task = tokio::spawn(async move {
                while let Some(response) = stream.message().await? {
                    let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                    sink.extend(response.entries.into_iter().filter_map(|e| e.entry).map(to_entry));
                }
                Ok(())
            });
            Ok(Self { entries, task })
        }

        pub fn snapshot(&self) -> Vec<Entry> {
            self.entries.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        /// Waits until the follower holds at least `count` entries; returns them.
        pub async fn wait_for(&self, count: usize, timeout: std::time::Duration) -> anyhow::Result<Vec<Entry>> {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let entries = self.snapshot();
                if entries.len() >= count {
                    return Ok(entries);
                }
                if self.task.is_finished() || std::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "the follower has {} of {count} entries: {:?}",
                        entries.len(),
                        entries.last()
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    impl Drop for Follower {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn client(fabric_url: &str) -> Result<BifrostSvcClient<tonic::transport::Channel>, tonic::Status> {
        let endpoint = tonic::transport::Endpoint::from_shared(fabric_url.trim_end_matches('/').to_owned())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_secs(40));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(BifrostSvcClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Appends records; returns the LSN of the first.
    pub async fn append(fabric_url: &str, log_id: u32, payloads: Vec<Vec<u8>>) -> Result<u64, tonic::Status> {
        let response = client(fabric_url)
            .await?
            .append(AppendRequest { log_id, payloads })
            .await?;
        Ok(response.into_inner().first_lsn)
    }

    /// Every entry from `from` up to the tail.
    pub async fn read_all(fabric_url: &str, log_id: u32, from: u64) -> Result<Vec<Entry>, tonic::Status> {
        let mut client = client(fabric_url).await?;
        let mut entries = Vec::new();
        let mut next = from;
        loop {
            let response = client
                .read(ReadRequest {
                    log_id,
                    from_lsn: next,
                    max_records: 1000,
                })
                .await?
                .into_inner();
            if response.entries.is_empty() {
                if next >= response.tail_lsn {
                    return Ok(entries);
                }
                return Err(tonic::Status::data_loss(format!(
                    "no entry at {next} although the tail is {}",
                    response.tail_lsn
                )));
            }
            for entry in response.entries.into_iter().filter_map(|e| e.entry).map(to_entry) {
                next = match entry {
                    Entry::Record(lsn, _) => lsn + 1,
                    Entry::TrimGap(_, to) => to,
                };
                entries.push(entry);
            }
        }
    }

    /// The next LSN to be written.
    pub async fn find_tail(fabric_url: &str, log_id: u32) -> Result<u64, tonic::Status> {
        Ok(client(fabric_url)
            .await?
            .find_tail(restate_proto::bifrost::FindTailRequest { log_id })
            .await?
            .into_inner()
            .tail_lsn)
    }

    pub async fn trim(fabric_url: &str, log_id: u32, trim_point: u64) -> Result<u64, tonic::Status> {
        Ok(client(fabric_url)
            .await?
            .trim(TrimRequest { log_id, trim_point })
            .await?
            .into_inner()
            .trim_point)
    }
}

/// The admin API's `/metadata/{key}` over HTTP, as a user (or Jepsen) drives it.
#[derive(Clone)]
pub struct MetadataHttp {
    client: reqwest::Client,
}

/// Outcome of a conditional write through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    PreconditionFailed(String),
    /// Not answered, or answered with an error that leaves the outcome open.
    Failed(String),
}

impl Default for MetadataHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataHttp {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"));
        Self { client }
    }

    /// `(version, body)` of `key`, `None` if absent.
    pub async fn get(&self, admin_url: &str, key: &str) -> anyhow::Result<Option<(u32, Vec<u8>)>> {
        let response = self.client.get(format!("{admin_url}metadata/{key}")).send().await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => {
                let version = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim_matches('"').parse().ok())
                    .context("GET answered without a numeric ETag")?;
                Ok(Some((version, response.bytes().await?.to_vec())))
            }
            code => bail!("GET {key}: HTTP {code}: {}", response.text().await.unwrap_or_default()),
        }
    }

    pub async fn put(&self, admin_url: &str, key: &str, if_match: &str, version: u32, body: Vec<u8>) -> PutOutcome {
        let request = self
            .client
            .put(format!("{admin_url}metadata/{key}"))
            .header("if-match", if_match)
            .header("etag", version.to_string())
            .body(body);
        match request.send().await {
            Ok(response) if response.status().is_success() => PutOutcome::Written,
            Ok(response) if response.status().as_u16() == 412 => {
                PutOutcome::PreconditionFailed(response.text().await.unwrap_or_default())
            }
            Ok(response) => PutOutcome::Failed(format!(
                "HTTP {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            )),
            Err(error) => PutOutcome::Failed(error.to_string()),
        }
    }
}

/// A temporary directory for a test, kept (and its path printed) when the test fails.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("restate-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        Self { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("/nonexistent"))
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("test directory kept at {}", dir.keep().display());
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The repository's root directory (where `docker/`, `scripts/` and `config/` are).
pub fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a file in the repository's `config/` directory.
pub fn example_config(relative: &str) -> PathBuf {
    repository_root().join("config").join(relative)
}
