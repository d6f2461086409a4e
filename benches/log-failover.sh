#!/usr/bin/env bash
# How long writers of a replicated log wait for an acknowledgement when a node is killed
# with SIGKILL mid-run, on a 3-node restate-rs cluster (replication 2) on this machine:
#   1. the node running the log's sequencer (appends go through another node),
#   2. a log-server of the log's nodeset that is not its sequencer.
# The reference is the append latency of the same run before the kill (p50), and etcd's
# leader-failover figure from its own configuration (election timeout 1 s).
#
#   benches/log-failover.sh [--concurrency 4]
#
# Needs release binaries (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

concurrency=4
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) concurrency="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (use --concurrency N)" >&2; exit 2 ;;
  esac
done

source benches/lib.sh

# $1: index of the node that creates the log (and so runs its sequencer), $2: index of the
# node the writers append through, $3: index of the node to kill, $4: label.
scenario() {
  start_restate_cluster RESTATE_DEFAULT_REPLICATION=2 RESTATE_BIFROST__DEFAULT_PROVIDER=replicated
  "$bin/restate-bench" log --address "${addresses[$1]}" --log-id 1007 --duration 0s --concurrency 1 > /dev/null
  "$bin/restate-bench" log --address "${addresses[$2]}" --log-id 1007 --duration 6s \
    --concurrency "$concurrency" > "$work/bench.out" &
  local bench=$!
  sleep 2
  kill -9 "${node_pids[$3]}"
  wait "$bench"
  echo "== $4 =="
  grep -E "records/s|^\| append" "$work/bench.out"
  for pid in "${node_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

scenario 0 1 0 "kill -9 of the sequencer's node (N1) while writing through N2"
scenario 0 1 2 "kill -9 of a log-server (N3) while writing through N2 (sequencer N1)"
