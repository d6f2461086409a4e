#!/usr/bin/env bash
# How long compare-and-swap writers of the replicated metadata store wait when the Raft
# leader's node is killed with SIGKILL, on a 3-node restate-rs cluster on this machine. The
# writer goes through a node that is not the leader (admin API `/metadata/{key}`) and reports
# the longest gap between two acknowledged writes, over several runs. The reference is etcd's
# own election timeout (1 s by default) and the same run's write latency before the kill.
#
#   benches/metadata-failover.sh [--runs 3]
#
# Needs release binaries (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (use --runs N)" >&2; exit 2 ;;
  esac
done

source benches/lib.sh

writer='
import http.client, sys, time, urllib.parse
url = urllib.parse.urlparse(sys.argv[1]); until = time.time() + float(sys.argv[2])
version, acks, before = 0, [], []
def put(expected):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    c.request("PUT", "/metadata/failover-probe", body=b"x", headers={"if-match": str(expected) if expected else "does-not-exist", "etag": str(expected + 1)})
    r = c.getresponse(); r.read(); c.close(); return r.status
def current():
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    c.request("GET", "/metadata/failover-probe"); r = c.getresponse(); r.read(); c.close()
    return int(r.getheader("etag", "0").strip("\"")) if r.status == 200 else 0
while time.time() < until:
    start = time.time()
    try:
        status = put(version)
    except Exception:
        time.sleep(0.005); continue
    if status in (200, 201, 204):
        version += 1; acks.append(time.time()); before.append(time.time() - start)
    elif status == 412:
        try: version = current()
        except Exception: pass
    else:
        time.sleep(0.005)
gaps = [b - a for a, b in zip(acks, acks[1:])]
before.sort()
print("%.0f %.1f %d" % (max(gaps) * 1000, before[len(before) // 2] * 1000, len(acks)))
'

for run in $(seq "$runs"); do
  start_restate_cluster
  leader=$("$bin/restatectl" -s "$address_list" metadata-server list-servers --json \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); l=[x["leader"] for x in s if x.get("leader")][0]; print([x["address"] for x in s if x["node"]==l][0])')
  victim=0; for i in 0 1 2; do [ "${addresses[$i]}" = "$leader" ] && victim=$i; done
  through=$(( (victim + 1) % 3 ))
  python3 -c "$writer" "${admin_addresses[$through]}" 6 > "$work/writer.out" &
  w=$!
  sleep 2
  kill -9 "${node_pids[$victim]}"
  wait "$w"
  read -r gap p50 acks < "$work/writer.out"
  echo "run $run: killed the metadata leader (node-$((victim + 1))), writing through node-$((through + 1)): longest wait $gap ms (write p50 before: $p50 ms, $acks writes)"
  for pid in "${node_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
done
