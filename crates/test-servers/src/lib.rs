//! Real local servers for tests, started on 127.0.0.1 with free ports: etcd (Debian
//! `etcd-server`) and moto (PyPI `moto[server]`, which speaks the DynamoDB and S3 APIs), and
//! free ports that concurrent test processes never hand out twice.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1, picked at random below the kernel's
/// ephemeral range and reserved for this test process: a port is handed out once per process,
/// and a file under `<tmp>/restate-test-ports/` keeps other test processes from picking it
/// before the server that gets it has bound it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(10_000..30_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve_port(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between 10000 and 30000")
}

fn reserve_port(port: u16) -> bool {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    if handed_out.contains(&port) {
        return false;
    }
    let dir = std::env::temp_dir().join("restate-test-ports");
    let _ = fs::create_dir_all(&dir);
    // One process at a time checks and takes reservations: taking over a stale one (its
    // owner is gone) is a read, a remove and a link, which two processes must not interleave.
    let Ok(lock) = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
    else {
        return false;
    };
    if lock.lock().is_err() {
        return false;
    }
    let path = dir.join(port.to_string());
    let me = std::process::id();
    // Written aside, then linked into place: the link appears atomically, with the owner.
    let draft = dir.join(format!("{port}.{me}.draft"));
    if fs::write(&draft, me.to_string()).is_err() {
        return false;
    }
    let mut reserved = false;
    for _ in 0..2 {
        match fs::hard_link(&draft, &path) {
            Ok(()) => {
                handed_out.insert(port);
                reserved = true;
                break;
            }
            Err(_) => {
                // Taken over when the process that reserved it is gone.
                let owner = fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match owner {
                    Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => break,
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
    }
    let _ = fs::remove_file(&draft);
    reserved
}

fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("restate-test-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {what}: {e}"))
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 30 s");
}

/// An etcd cluster of one or more members.
pub struct Etcd {
    children: Vec<Child>,
    /// Client endpoints, `127.0.0.1:port`.
    pub endpoints: Vec<String>,
    /// The data directory when the server made its own (removed on drop).
    _own_dir: Option<tempfile::TempDir>,
}

impl Etcd {
    /// Members whose data and logs live in a temporary directory of their own.
    pub fn start_in_temp_dir(members: usize) -> Self {
        let dir = temp_dir("etcd");
        let mut etcd = Self::start(dir.path(), members);
        etcd._own_dir = Some(dir);
        etcd
    }

    pub fn start(dir: &Path, members: usize) -> Self {
        let client_ports: Vec<u16> = (0..members).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..members).map(|_| free_port()).collect();
        let initial: Vec<String> = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut children = Vec::new();
        for i in 0..members {
            let data = dir.join(format!("etcd-{i}"));
            let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))
                .unwrap_or_else(|e| panic!("cannot create the etcd log: {e}"));
            let client = format!("http://127.0.0.1:{}", client_ports[i]);
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start etcd (apt-get install etcd-server): {e}"));
            children.push(child);
        }
        for (port, child) in client_ports.iter().zip(children.iter_mut()) {
            wait_for_port(*port, "etcd", child);
        }
        Self {
            children,
            endpoints: client_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            _own_dir: None,
        }
    }

    /// Kills one member (SIGKILL).
    pub fn kill_member(&mut self, index: usize) {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A moto server: DynamoDB and S3 on one endpoint.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    pub address: SocketAddr,
    _own_dir: Option<tempfile::TempDir>,
}

impl Moto {
    /// A server whose log lives in a temporary directory of its own.
    pub fn start_in_temp_dir() -> Self {
        let dir = temp_dir("moto");
        let mut moto = Self::start(dir.path());
        moto._own_dir = Some(dir);
        moto
    }

    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let log =
            std::fs::File::create(dir.join("moto.log")).unwrap_or_else(|e| panic!("cannot create the moto log: {e}"));
        // moto's own `moto_server` serves requests on many threads and then does not make a
        // conditional write atomic (two writers can both pass `version = :v`). Real DynamoDB
        // and S3 do; serving one request at a time gives the tests the same guarantee.
        let program = format!(
            "import os\n\
             os.environ['MOTO_PORT'] = '{port}'\n\
             from werkzeug.serving import run_simple\n\
             from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n\
             run_simple('127.0.0.1', {port}, DomainDispatcherApplication(create_backend_app), threaded=False)\n"
        );
        let mut child = Command::new("python3")
            .args(["-c", &program])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto (pip install 'moto[server]'): {e}"));
        wait_for_port(port, "moto", &mut child);
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _own_dir: None,
        }
    }

    fn boto(&self, script: &str) {
        let program = format!(
            "import boto3\n\
             kw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
             {script}\n",
            self.endpoint
        );
        let output = Command::new("python3")
            .args(["-c", &program])
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        assert!(
            output.status.success(),
            "boto3 set-up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Creates a DynamoDB table with the `pk` string hash key.
    pub fn create_table(&self, table: &str) {
        self.boto(&format!(
            "boto3.client('dynamodb', **kw).create_table(TableName='{table}', \
             AttributeDefinitions=[{{'AttributeName': 'pk', 'AttributeType': 'S'}}], \
             KeySchema=[{{'AttributeName': 'pk', 'KeyType': 'HASH'}}], BillingMode='PAY_PER_REQUEST')"
        ));
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.boto(&format!("boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"));
    }

    /// `[metadata-client]` environment overrides for this server's DynamoDB.
    pub fn dynamodb_env(&self, table: &str) -> Vec<(String, String)> {
        self.aws_env(&[
            ("RESTATE_METADATA_CLIENT__TYPE", "dynamo-db"),
            ("RESTATE_METADATA_CLIENT__TABLE", table),
        ])
    }

    /// `[metadata-client]` environment overrides for this server's S3.
    pub fn s3_env(&self, path: &str) -> Vec<(String, String)> {
        self.aws_env(&[
            ("RESTATE_METADATA_CLIENT__TYPE", "object-store"),
            ("RESTATE_METADATA_CLIENT__PATH", path),
            ("RESTATE_METADATA_CLIENT__AWS_ALLOW_HTTP", "true"),
        ])
    }

    /// `store` plus this server's endpoint and the test credentials.
    fn aws_env(&self, store: &[(&str, &str)]) -> Vec<(String, String)> {
        store
            .iter()
            .copied()
            .chain([
                ("RESTATE_METADATA_CLIENT__AWS_ENDPOINT_URL", self.endpoint.as_str()),
                ("RESTATE_METADATA_CLIENT__AWS_REGION", "us-east-1"),
                ("RESTATE_METADATA_CLIENT__AWS_ACCESS_KEY_ID", "test"),
                ("RESTATE_METADATA_CLIENT__AWS_SECRET_ACCESS_KEY", "test"),
            ])
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An example SDK service of `examples/` (installed by `scripts/deps.sh test`) on a free
/// port; killed on drop.
pub struct SdkService {
    child: Option<Child>,
    launch: Launch,
    /// `http://127.0.0.1:port`.
    pub uri: String,
}

/// How to start (and restart) a service process.
struct Launch {
    program: std::path::PathBuf,
    args: Vec<String>,
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    /// The address it listens on (`HOST` for the scripts that report their port).
    host: String,
    what: &'static str,
    /// The process binds `PORT=0` and prints `listening on 127.0.0.1:<port>`: no other process
    /// can hold the port it gets (a stray server from an earlier run would answer for a port
    /// that was only free-checked).
    reports_port: bool,
}

impl Launch {
    /// Starts the process; for one that reports its port, remembers the port it got.
    fn spawn_reporting(&mut self) -> Child {
        use std::io::BufRead;
        if !self.reports_port {
            return self.spawn();
        }
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOST", &self.host)
            .env(
                "PORT",
                if self.port == 0 {
                    "0".to_owned()
                } else {
                    self.port.to_string()
                },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.what));
        let Some(stdout) = child.stdout.take() else {
            panic!("{} has no stdout", self.what)
        };
        let mut lines = std::io::BufReader::new(stdout).lines();
        let listening = format!("listening on {}:", self.host);
        let port = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(port) = line
                        .strip_prefix(listening.as_str())
                        .and_then(|p| p.trim().parse::<u16>().ok())
                    {
                        break port;
                    }
                }
                _ => panic!("{} exited before saying which port it listens on", self.what),
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.port = port;
        child
    }

    fn spawn(&self) -> Child {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.what));
        wait_for_port(self.port, self.what, &mut child);
        child
    }
}

impl SdkService {
    fn examples() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    fn node_script(script: &str, env: Vec<(String, String)>, what: &'static str) -> Self {
        Self::node_script_on("127.0.0.1", script, env, what)
    }

    fn node_script_on(host: &str, script: &str, env: Vec<(String, String)>, what: &'static str) -> Self {
        let dir = Self::examples().join("typescript");
        assert!(
            dir.join("node_modules/@restatedev/restate-sdk").exists(),
            "the TypeScript SDK is not installed in {}: run scripts/deps.sh test",
            dir.display()
        );
        Self::launch(Launch {
            program: "node".into(),
            args: vec![script.into()],
            dir,
            env,
            port: 0,
            host: host.to_owned(),
            what,
            reports_port: true,
        })
    }

    /// `examples/typescript/service.js` under Node (h2c only).
    pub fn typescript() -> Self {
        Self::node_script("service.js", Vec::new(), "the TypeScript example service")
    }

    /// `examples/typescript/service.js` listening on `host` (an address of this machine that
    /// containers can reach).
    pub fn typescript_on(host: &str) -> Self {
        Self::node_script_on(host, "service.js", Vec::new(), "the TypeScript example service")
    }

    /// `examples/typescript/scenarios.js`: the test scenarios; `ctx.run` side effects append
    /// lines to `side_effects`.
    pub fn typescript_scenarios(side_effects: &Path) -> Self {
        let env = vec![("SIDE_EFFECT_FILE".into(), side_effects.display().to_string())];
        Self::node_script("scenarios.js", env, "the TypeScript scenario service")
    }

    /// `examples/typescript/conformance.js`: the services of the ported SDK conformance
    /// scenarios (all named `Conf*`).
    pub fn typescript_conformance() -> Self {
        Self::node_script("conformance.js", Vec::new(), "the TypeScript conformance services")
    }

    fn hypercorn(module: &str, env: Vec<(String, String)>, what: &'static str) -> Self {
        let dir = Self::examples().join("python");
        let hypercorn = dir.join(".venv/bin/hypercorn");
        assert!(
            hypercorn.exists(),
            "the Python SDK is not installed in {}: run scripts/deps.sh test",
            dir.display()
        );
        let port = free_port();
        Self::launch(Launch {
            program: hypercorn,
            args: vec![module.into(), "--bind".into(), format!("127.0.0.1:{port}")],
            dir,
            env,
            port,
            host: "127.0.0.1".to_owned(),
            what,
            reports_port: false,
        })
    }

    /// `examples/python/service.py` under hypercorn (h2c and HTTP/1.1).
    pub fn python() -> Self {
        Self::hypercorn("service:app", Vec::new(), "the Python example service")
    }

    /// `examples/python/scenarios.py` under hypercorn: a workflow and an awakeable besides
    /// Greeter and Counter; `ctx.run` side effects append lines to `side_effects`.
    pub fn python_scenarios(side_effects: &Path) -> Self {
        let env = vec![("SIDE_EFFECT_FILE".into(), side_effects.display().to_string())];
        Self::hypercorn("scenarios:app", env, "the Python scenario service")
    }

    /// A service binary (e.g. the Rust SDK test service) listening on `PORT`, with `env`.
    pub fn binary(program: &Path, env: &[(&str, &str)], what: &'static str) -> Self {
        let port = free_port();
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        env.push(("PORT".into(), port.to_string()));
        Self::launch(Launch {
            program: program.to_path_buf(),
            args: Vec::new(),
            dir: std::env::temp_dir(),
            env,
            port,
            host: "127.0.0.1".to_owned(),
            what,
            reports_port: false,
        })
    }

    fn launch(mut launch: Launch) -> Self {
        let child = launch.spawn_reporting();
        Self {
            uri: format!("http://{}:{}", launch.host, launch.port),
            child: Some(child),
            launch,
        }
    }

    /// Kills the process (the deployment is down until [`Self::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        // The same port again: the registered deployment's address must not change.
        self.child = Some(self.launch.spawn_reporting());
    }
}

impl Drop for SdkService {
    fn drop(&mut self) {
        self.kill();
    }
}
