#!/usr/bin/env bash
# Disk use of a single restate-rs node under a steady load, with automatic log trimming
# (`[worker] durability-mode` default on one node, `replica-set-only`) and without it
# (`durability-mode = "none"`), one after the other on this machine. Each round runs
# Greeter/greet of the TypeScript example service with CONCURRENCY workers for DURATION, waits
# for the flush and trim checks (5 s each), then prints the bytes of the node's directory, its
# log-server store and its partition store. Completed invocations are not kept
# (`default-journal-retention = 0s`, cleaned every 10 s), so what stays on disk is the log and what
# trimming leaves.
#
#   benches/trim-disk.sh
#
# Environment (all optional): ROUNDS=6 DURATION=20s CONCURRENCY=16, MODES="trimming no-trimming",
# OURS_ENV (extra NAME=value),
# BENCH_PROFILE=release (or debug, to measure the debug binaries without a release build).
# Needs: node and npm, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-6}"
duration="${DURATION:-20s}"
concurrency="${CONCURRENCY:-16}"
body='"Sam"'

for tool in node npm curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"
source benches/lib.sh
source benches/servers.sh
[ -d examples/typescript/node_modules ] || (cd examples/typescript && npm ci --silent)

bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo 0; }

measure() { # label, extra NAME=value settings
  local label=$1 settings=$2 out="$work/$1" service_port admin ingress fabric pid service_pid
  mkdir -p "$out"
  service_port=$(pick_port 9080)
  PORT=$service_port node examples/typescript/service.js > "$out/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid"); disown "$service_pid"
  wait_for 30 "the service" port_open "$service_port"
  admin=$(pick_port 9070); ingress=$(pick_port 8080); fabric=$(pick_port 5122)
  OURS_ENV="RESTATE_DEFAULT_JOURNAL_RETENTION=0s RESTATE_WORKER__CLEANUP_INTERVAL=10s $settings ${OURS_ENV:-}" \
    start_ours "$out/data" "$admin" "$ingress" "$fabric" "$out/server.log"
  pid=$!; pids+=("$pid"); disown "$pid"
  wait_for 60 "the node" bash -c "curl -fs http://127.0.0.1:$admin/health && curl -fs http://127.0.0.1:$ingress/restate/health"
  wait_for 30 "the registration" curl -fsS -X POST "http://127.0.0.1:$admin/deployments" \
    --json "{\"uri\":\"http://127.0.0.1:$service_port\"}" -o /dev/null
  local url="http://127.0.0.1:$ingress/Greeter/greet"
  wait_for 20 "a first call" curl -fs -X POST "$url" --json "$body" -o /dev/null
  local node_dir="$out/data/node-1"
  printf '%s\n' "== $label ==" "round  calls  node-dir-bytes  log-store-bytes  partition-store-bytes" | tee -a "$work/report"
  for round in $(seq "$rounds"); do
    calls=$("$bin/restate-bench" invoke --url "$url" --concurrency "$concurrency" --duration "$duration" --body "$body" 2>/dev/null \
      | tail -n 1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["ops_per_sec"] * d["seconds"]))' || echo "?")
    sleep 12
    printf '%5s  %5s  %14s  %15s  %21s\n' "$round" "$calls" "$(bytes "$node_dir")" "$(bytes "$node_dir/log-store")" \
      "$(bytes "$node_dir/db")" | tee -a "$work/report"
  done
  stop "$pid"; stop "$service_pid"
}

for mode in ${MODES:-trimming no-trimming}; do
  case "$mode" in
    trimming) measure trimming "RESTATE_WORKER__TRIM_DELAY_INTERVAL=0s" ;;
    no-trimming) measure no-trimming "RESTATE_WORKER__DURABILITY_MODE=none" ;;
    *) echo "unknown mode $mode (trimming, no-trimming)" >&2; exit 2 ;;
  esac
done
echo
cat "$work/report"
