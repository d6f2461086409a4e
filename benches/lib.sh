# Shared by the benchmark scripts: release binaries, a temp dir cleaned on exit, and
# 3-node restate-rs / 3-member etcd clusters on loopback with free ports.
# Source it from a script that has `set -euo pipefail` and runs from the repository root.

target_dir="${CARGO_TARGET_DIR:-target}"
# BENCH_PROFILE=debug measures the debug binaries (built by the tests) instead.
bin="$target_dir/${BENCH_PROFILE:-release}"
if [ ! -x "$bin/restate" ] || [ ! -x "$bin/restate-bench" ] || [ ! -x "$bin/restatectl" ]; then
  if [ "${BENCH_PROFILE:-release}" = release ]; then
    cargo build --release --locked --bin restate --bin restatectl --bin restate-bench
  else
    cargo build --locked --bin restate --bin restatectl --bin restate-bench
  fi
fi

work=$(mktemp -d /tmp/restate-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Starts 3 restate-rs nodes with every role and provisions them; extra `NAME=value`
# arguments are passed to every node's environment. Sets `addresses`, `address_list`,
# `admin_addresses` and `node_pids`; each call starts a new cluster in its own directory.
clusters_started=0
start_restate_cluster() {
  local fabric=() i n admin_port
  clusters_started=$((clusters_started + 1))
  addresses=()
  admin_addresses=()
  node_pids=()
  for i in 1 2 3; do
    fabric+=("$(free_port)")
    addresses+=("http://127.0.0.1:${fabric[-1]}/")
  done
  address_list=$(IFS=,; echo "${addresses[*]}")
  for i in 0 1 2; do
    n=$((i + 1))
    admin_port=$(free_port)
    admin_addresses+=("http://127.0.0.1:$admin_port/")
    env "$@" RESTATE_NODE_NAME="node-$n" RESTATE_CLUSTER_NAME=bench-cluster RESTATE_BASE_DIR="$work/restate-$clusters_started" \
      RESTATE_BIND_ADDRESS="127.0.0.1:${fabric[$i]}" RESTATE_ADVERTISED_ADDRESS="${addresses[$i]}" \
      RESTATE_ADMIN__BIND_ADDRESS="127.0.0.1:$admin_port" RESTATE_INGRESS__BIND_ADDRESS="127.0.0.1:$(free_port)" \
      RESTATE_AUTO_PROVISION=false RESTATE_METADATA_CLIENT__ADDRESSES="[$address_list]" RESTATE_LOG_FILTER=warn \
      "$bin/restate" > "$work/node-$n.log" 2>&1 &
    pids+=($!); node_pids+=($!); disown "$!"
  done
  sleep 1
  "$bin/restatectl" -s "${addresses[0]}" provision --yes > /dev/null
  local a
  for a in "${addresses[@]}"; do
    for _ in $(seq 100); do curl -fs "${a}health" | grep -q '"ALIVE"' && break; sleep 0.1; done
  done
}

# Starts a 3-member etcd cluster. Sets `etcd_list` (client endpoints, comma separated).
start_etcd_cluster() {
  command -v etcd >/dev/null || { echo "etcd is not installed: apt-get install etcd-server" >&2; exit 1; }
  local client_urls=() initial=() peer=() i c p
  for i in 1 2 3; do
    c=$(free_port); p=$(free_port)
    client_urls+=("http://127.0.0.1:$c"); peer+=("http://127.0.0.1:$p")
    initial+=("e$i=${peer[-1]}")
  done
  local initial_cluster
  initial_cluster=$(IFS=,; echo "${initial[*]}")
  for i in 0 1 2; do
    etcd --name "e$((i + 1))" --data-dir "$work/etcd-$((i + 1))" \
      --listen-client-urls "${client_urls[$i]}" --advertise-client-urls "${client_urls[$i]}" \
      --listen-peer-urls "${peer[$i]}" --initial-advertise-peer-urls "${peer[$i]}" \
      --initial-cluster "$initial_cluster" --initial-cluster-state new --log-level error \
      > "$work/etcd-$((i + 1)).log" 2>&1 &
    pids+=($!); disown "$!"
  done
  etcd_list=$(IFS=,; echo "${client_urls[*]}")
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$etcd_list" endpoint health >/dev/null 2>&1 && break; sleep 0.1
  done
}

etcd_version() { etcd --version | head -n 1 | awk '{print $3}'; }
