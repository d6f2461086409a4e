#!/usr/bin/env bash
# Appends to one log on a 3-node restate-rs cluster (replicated loglet, replication 2) and
# the same appends as transactions on a 3-member etcd cluster (etcd's own replicated,
# fsynced log) on this machine, one after the other in one run, and prints the ratios.
#
#   benches/log-vs-etcd.sh [--duration 5s] [--concurrency 8] [--batch 1]
#
# Needs: etcd (Debian `etcd-server`), and release binaries (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5s
concurrency=8
batch=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (use --duration D --concurrency N --batch B)" >&2; exit 2 ;;
  esac
done

source benches/lib.sh
start_restate_cluster RESTATE_DEFAULT_REPLICATION=2 RESTATE_BIFROST__DEFAULT_PROVIDER=replicated
start_etcd_cluster

load=(--duration "$duration" --concurrency "$concurrency" --batch "$batch")
echo "== restate-rs Bifrost (3 nodes, replication 2) =="
ours=$("$bin/restate-bench" log --target bifrost --address "${addresses[0]}" "${load[@]}" \
  | tee >(cat >&2) | tail -n 1)
echo "== etcd $(etcd_version) (3 members) =="
theirs=$("$bin/restate-bench" log --target etcd --address "$etcd_list" "${load[@]}" \
  | tee >(cat >&2) | tail -n 1)

python3 - "$ours" "$theirs" "$batch" <<'PY'
import json, sys
ours, theirs, batch = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
o, t = ours["ops"]["append"], theirs["ops"]["append"]
print()
print(f"ratio restate-rs / etcd ({ours['clients']} appenders, {batch} record(s) per append, same machine, same run):")
print(f"  records/s {o['ops_per_sec'] * batch:.0f} vs {t['ops_per_sec'] * batch:.0f} = {o['ops_per_sec'] / t['ops_per_sec']:.2f}x")
print(f"  append p50 {o['p50_ms']:.2f} vs {t['p50_ms']:.2f} ms   p99 {o['p99_ms']:.2f} vs {t['p99_ms']:.2f} ms")
print(f"  errors {o['errors']} vs {t['errors']}")
PY
