#!/usr/bin/env bash
# Runs the same metadata workload against a 3-node restate-rs cluster and a 3-member etcd
# cluster on this machine, one after the other in one run, and prints the ratios.
#
#   benches/metadata-vs-etcd.sh [--duration 10s] [--clients 16]
#
# Needs: etcd (Debian `etcd-server`), and release binaries (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10s
clients=16
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (use --duration D --clients N)" >&2; exit 2 ;;
  esac
done

source benches/lib.sh
start_restate_cluster ${BENCH_NODE_ENV:-}
start_etcd_cluster

echo "== restate-rs (3 nodes) =="
ours=$("$bin/restate-bench" metadata --store replicated --cluster-name bench-cluster \
  --address "$address_list" --duration "$duration" --clients "$clients" | tee >(cat >&2) | tail -n 1)
echo "== etcd $(etcd_version) (3 members) =="
theirs=$("$bin/restate-bench" metadata --store etcd \
  --address "$etcd_list" --duration "$duration" --clients "$clients" | tee >(cat >&2) | tail -n 1)

python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print()
print(f"ratio restate-rs / etcd ({ours['clients']} clients, same machine, same run):")
print(f"  throughput (all ops): {ours['ops_per_sec'] / theirs['ops_per_sec']:.2f}x")
for op in ours["ops"]:
    o, t = ours["ops"][op], theirs["ops"][op]
    print(f"  {op:10} ops/s {o['ops_per_sec'] / t['ops_per_sec']:.2f}x   p50 {o['p50_ms']:.2f} vs {t['p50_ms']:.2f} ms"
          f"   p99 {o['p99_ms']:.2f} vs {t['p99_ms']:.2f} ms")
PY
