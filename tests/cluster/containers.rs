//! The Compose cluster of `docker/compose.yaml`, run the way the README tells a user to, with
//! podman-compose and the image `scripts/containers.sh image` builds (MinIO replaced by moto,
//! `docker/compose.moto.yaml`, since no registry can be reached here): three nodes come up
//! configured by environment variables alone, node 1 provisions, a service running on the host
//! is registered and called through every node's published port, a killed node does not stop
//! the others, it comes back, snapshots are taken, and `down`/`up` keeps the data.
//!
//! Uses the fixed host ports of the Compose file (8080/9070/5122, 28080/…, 38080/…), so
//! `scripts/test.sh` runs it on its own after the other tests. Every container, network and
//! volume it made is removed at the end, whatever happened.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use serde_json::{Value, json};

use crate::invocations::Client;

/// The Compose files of the 3-node cluster here (MinIO replaced by moto).
const CLUSTER: [&str; 2] = ["docker/compose.yaml", "docker/compose.moto.yaml"];
const SINGLE: [&str; 1] = ["docker/compose.single.yaml"];
/// Host ports of restate-1..3: (ingress, admin, fabric).
const PORTS: [(u16, u16, u16); 3] = [(8080, 9070, 5122), (28080, 29070, 25122), (38080, 39070, 35122)];
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long calls through the surviving nodes may keep failing after a kill.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

fn image() -> String {
    std::env::var("IMAGE").unwrap_or_else(|_| "localhost/restate-rs:latest".into())
}

fn s3_image() -> String {
    std::env::var("S3_IMAGE").unwrap_or_else(|_| "localhost/restate-rs-moto:latest".into())
}

/// One Compose project; `down` and its volumes and network removed on drop.
struct Compose {
    project: &'static str,
    files: &'static [&'static str],
    host_gateway: String,
}

impl Compose {
    /// A project of `files`, started from nothing (leftovers of an earlier run removed).
    fn new(project: &'static str, files: &'static [&'static str]) -> Self {
        for wanted in [image(), s3_image()] {
            let present = Command::new("podman").args(["image", "exists", &wanted]).status();
            assert!(
                matches!(present, Ok(status) if status.success()),
                "image {wanted} is missing: build it with `scripts/containers.sh image` and `scripts/containers.sh s3-image`"
            );
        }
        let compose = Self {
            project,
            files,
            host_gateway: host_address(),
        };
        compose.remove_all();
        compose
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command.arg("300").arg("podman-compose").args(["-p", self.project]);
        for file in self.files {
            command.args(["-f", file]);
        }
        command
            .args(args)
            .current_dir(restate_cluster_tests::repository_root())
            .env("IMAGE", image())
            .env("S3_IMAGE", s3_image())
            .env("HOST_GATEWAY", &self.host_gateway);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman-compose (scripts/deps.sh test installs it): {e}"));
        assert!(
            output.status.success(),
            "podman-compose {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `exec -T <service> <command…>`, which must succeed; its standard output.
    fn exec(&self, service: &str, command: &[&str]) -> String {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(command);
        String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// The containers of the project, stopped or running.
    fn containers(&self) -> String {
        podman(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.podman.compose.project={}", self.project),
        ])
    }

    /// Removes everything of the project: containers, volumes, network.
    fn remove_all(&self) {
        let _ = self.command(&["down", "-t", "5"]).output();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "podman ps -aq --filter label=io.podman.compose.project={0} | xargs -r podman rm -f; \
                 podman volume ls -q --filter label=io.podman.compose.project={0} | xargs -r podman volume rm -f; \
                 podman network rm -f {0}_default",
                self.project
            ))
            .output();
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in ["restate", "restate-1", "restate-2", "restate-3"] {
                if let Ok(logs) = Command::new("podman").args(["logs", &self.container(service)]).output() {
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&logs.stdout),
                        String::from_utf8_lossy(&logs.stderr)
                    );
                    if text.is_empty() {
                        continue;
                    }
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("--- {service} (last lines)");
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
        self.remove_all();
    }
}

/// An IPv4 address of this machine that containers reach through their bridge's gateway
/// (not loopback, not a container bridge).
fn host_address() -> String {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let interface = fields.get(1)?;
            let address = fields.get(3)?.split('/').next()?;
            let bridge = ["cni-", "podman", "veth", "docker", "br-"]
                .iter()
                .any(|prefix| interface.starts_with(prefix));
            (!bridge).then(|| address.to_owned())
        })
        .next()
        .unwrap_or_else(|| panic!("this machine has no global IPv4 address for containers to reach: {text}"))
}

fn client(node: usize) -> Client {
    let (ingress, admin, _) = PORTS[node];
    Client::for_urls(
        format!("http://127.0.0.1:{ingress}/"),
        format!("http://127.0.0.1:{admin}/"),
    )
}

/// Waits until the node behind the published fabric port says it is ALIVE.
async fn wait_alive(node: usize) {
    let url = format!("http://127.0.0.1:{}/health", PORTS[node].2);
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match reqwest::get(&url).await {
            Ok(response) => {
                let health: Value = response.json().await.unwrap_or(Value::Null);
                if health["status"] == "ALIVE" {
                    return;
                }
                last = health.to_string();
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "restate-{} did not become ALIVE within {START_TIMEOUT:?}: {last}",
        node + 1
    );
}

/// `Counter/compose/add` through `node` under an idempotency key, retried until it answers
/// (a call in flight when a node dies may fail; the key keeps a retry from adding twice).
async fn add(node: usize, key: &str, deadline: Instant) -> u64 {
    let client = client(node);
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.call_keyed("Counter/compose/add", key, json!(1)).await {
            Ok(answer) if answer.status == 200 => {
                return answer
                    .json()
                    .as_u64()
                    .unwrap_or_else(|| panic!("add answered {}", answer.body));
            }
            Ok(answer) => last = format!("{} {}", answer.status, answer.body),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("add `{key}` through restate-{} kept failing: {last}", node + 1);
}

async fn total(node: usize) -> Value {
    let answer = client(node)
        .call("Counter/compose/get", json!(null))
        .await
        .unwrap_or_else(|e| panic!("get through restate-{} failed: {e}", node + 1));
    assert_eq!(answer.status, 200, "get through restate-{}: {}", node + 1, answer.body);
    answer.json()
}

/// Adds `count` through each of `nodes`, keys `<round>-<node>-<i>`.
async fn add_through(round: &str, nodes: &[usize], count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    for &node in nodes {
        for i in 0..count {
            add(node, &format!("{round}-{node}-{i}"), deadline).await;
        }
    }
}

fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman: {e}"));
    assert!(
        output.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Registers `examples/typescript/service.js`, running on the host, through node 1's admin
/// API by the name the containers know the host by.
async fn register_host_service(compose: &Compose) -> SdkService {
    let service = SdkService::typescript_on(&compose.host_gateway);
    let port = service.uri.rsplit(':').next().unwrap_or_default().to_owned();
    let registered = client(0)
        .register(json!({"uri": format!("http://host.docker.internal:{port}")}))
        .await
        .unwrap_or_else(|e| panic!("registering the service failed: {e}"));
    assert!(
        registered["services"].as_array().is_some_and(|s| !s.is_empty()),
        "{registered}"
    );
    service
}

/// The value of the counter through `node`, retried while the node is still starting.
async fn total_when_ready(node: usize) -> Value {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match client(node).call("Counter/compose/get", json!(null)).await {
            Ok(answer) if answer.status == 200 => return answer.json(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("get through restate-{}: {other:?}", node + 1),
        }
    }
}

/// `docker compose config` (the Compose v1 implementation, from Debian) accepts every file:
/// the keys podman-compose ignores are still right for Docker.
#[test]
fn the_compose_files_are_valid_for_docker_compose() {
    for files in [&CLUSTER[..], &CLUSTER[..1], &SINGLE[..]] {
        let mut command = Command::new("docker-compose");
        for file in files {
            command.args(["-f", file]);
        }
        let output = command
            .args(["config", "-q"])
            .current_dir(restate_cluster_tests::repository_root())
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker-compose (scripts/deps.sh test installs it): {e}"));
        assert!(
            output.status.success(),
            "docker-compose {files:?} config: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn a_single_node_compose_serves_a_host_service_and_keeps_its_data() {
    let compose = Compose::new("restate-rs-compose-single-test", &SINGLE);
    compose.run(&["up", "-d"]);
    wait_alive(0).await;
    let _service = register_host_service(&compose).await;
    add_through("single", &[0], 3, START_TIMEOUT).await;
    assert_eq!(total(0).await, json!(3));
    compose.run(&["down"]);
    assert!(compose.containers().is_empty(), "down left containers");
    compose.run(&["up", "-d"]);
    wait_alive(0).await;
    assert_eq!(total_when_ready(0).await, json!(3), "after down/up");
}

#[tokio::test]
async fn a_compose_cluster_serves_through_every_node_survives_a_killed_container_and_keeps_its_data() {
    let compose = Compose::new("restate-rs-compose-test", &CLUSTER);

    // Up: three nodes and the S3 store; node 1 provisions, 2 and 3 join.
    compose.run(&["up", "-d"]);
    for node in 0..3 {
        wait_alive(node).await;
    }
    // (podman-compose echoes its podman command, names included: look for the table rows)
    let status = compose.exec("restate-1", &["restatectl", "status"]);
    for name in ["restate-1", "restate-2", "restate-3"] {
        let alive = status.lines().any(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns.get(1) == Some(&name) && columns.contains(&"ALIVE")
        });
        assert!(alive, "restatectl status does not show {name} ALIVE:\n{status}");
    }

    // A service on the host, registered by the address the containers know the host by.
    let _service = register_host_service(&compose).await;

    // Calls through every node's published port.
    add_through("up", &[0, 1, 2], 5, START_TIMEOUT).await;
    for node in 0..3 {
        assert_eq!(total(node).await, json!(15), "through restate-{}", node + 1);
    }

    // Node 1 killed: nodes 2 and 3 keep serving.
    podman(&["kill", "--signal", "KILL", &compose.container("restate-1")]);
    add_through("killed", &[1, 2], 5, FAILOVER_TIMEOUT).await;
    for node in [1, 2] {
        assert_eq!(total(node).await, json!(25), "through restate-{}", node + 1);
    }

    // Back again: it catches up and serves.
    compose.run(&["up", "-d", "restate-1"]);
    wait_alive(0).await;
    add_through("back", &[0], 5, START_TIMEOUT).await;
    for node in 0..3 {
        assert_eq!(total(node).await, json!(30), "through restate-{}", node + 1);
    }

    // Snapshots of every partition into the S3 store (podman-compose prints its own commands
    // on standard output too: the JSON comes from podman itself).
    compose.exec("restate-1", &["restatectl", "snapshots", "create"]);
    let created = podman(&[
        "exec",
        &compose.container("restate-1"),
        "restatectl",
        "snapshots",
        "list",
        "--json",
    ]);
    let rows: Value = serde_json::from_str(&created).unwrap_or_else(|e| panic!("{e}: {created}"));
    let latest: std::collections::BTreeSet<u64> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["latest"] == true)
        .filter_map(|row| row["partition_id"].as_u64())
        .collect();
    assert_eq!(latest.len(), 24, "{created}");

    // SIGTERM to PID 1 stops each node by itself (exit code 0, not the SIGKILL of the timeout).
    compose.run(&["stop", "restate-1", "restate-2", "restate-3"]);
    for service in ["restate-1", "restate-2", "restate-3"] {
        let code = podman(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            &compose.container(service),
        ]);
        assert_eq!(code, "0", "{service} did not exit cleanly on SIGTERM");
    }

    // Down and up: new containers, the same volumes, the same data.
    compose.run(&["down"]);
    let left = compose.containers();
    assert!(left.is_empty(), "down left containers: {left}");
    compose.run(&["up", "-d"]);
    for node in 0..3 {
        wait_alive(node).await;
    }
    for node in 0..3 {
        assert_eq!(
            total_when_ready(node).await,
            json!(30),
            "through restate-{} after down/up",
            node + 1
        );
    }
    assert_eq!(add(2, "after-restart", Instant::now() + START_TIMEOUT).await, 31);
}
