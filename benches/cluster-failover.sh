#!/usr/bin/env bash
# Failover of a 3-node cluster (every role on every node, replicated log and metadata,
# replication 2): restate-rs and the reference Restate server (npm @restatedev/restate-server)
# one after the other on this machine, with the same TypeScript SDK service.
#
# 8 workers add to counters (one key each) through the ingresses of the two nodes that stay
# up, while the third gets SIGKILL (then is restarted) or SIGSTOP (then SIGCONT), for each
# node in turn. For each fault it reports the longest time without any successful call (the
# stall) and the calls that failed; then a whole-cluster `kill -9` and restart, timed to the
# first successful call. Before the faults, 32 workers add through all three ingresses for 15 s
# (throughput of the healthy cluster). `--faults ""` measures only that and the restart.
#
#   benches/cluster-failover.sh [--only restate-rs|reference] [--faults "0:KILL 1:STOP"] [--keep DIR]
#
# --keep DIR copies the node logs and the reports there; LOG_FILTER=info makes the logs say more.
# Needs node and npm, curl, python3, and release binaries (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

only=""
keep=""
faults="0:KILL 1:KILL 2:KILL 0:STOP 1:STOP 2:STOP"
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --faults) faults="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (use --only restate-rs|reference, --faults \"0:KILL 1:STOP\", --keep DIR)" >&2; exit 2 ;;
  esac
done
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"
workers=8
for tool in node npm curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
source benches/lib.sh
source benches/servers.sh
if ! "$bin/restate-bench" invoke --help 2>/dev/null | grep -q '{worker}'; then
  cargo build --release --locked --bin restate-bench
fi

# Starts node $2 (0..2) of server $1 (restate-rs or reference) with the ports of this run.
start_node() {
  local server=$1 i=$2 n=$(($2 + 1)) binary provision extra=()
  if [ "$server" = restate-rs ]; then
    binary="$bin/restate"; provision=false
  else
    binary="$ref_bin"; provision=$([ "$i" = 0 ] && echo true || echo false); extra=(RESTATE_LISTEN_MODE=tcp)
  fi
  env RESTATE_NODE_NAME="node-$n" RESTATE_CLUSTER_NAME=bench-failover RESTATE_BASE_DIR="$out/node-$n" \
    RESTATE_ROLES="[metadata-server,admin,worker,log-server,http-ingress]" "${extra[@]}" \
    RESTATE_AUTO_PROVISION="$provision" RESTATE_DEFAULT_REPLICATION=2 RESTATE_BIFROST__DEFAULT_PROVIDER=replicated \
    RESTATE_METADATA_CLIENT__ADDRESSES="[$fabric_list]" \
    RESTATE_BIND_ADDRESS="127.0.0.1:${fabric[$i]}" RESTATE_ADVERTISED_ADDRESS="http://127.0.0.1:${fabric[$i]}/" \
    RESTATE_ADMIN__BIND_ADDRESS="127.0.0.1:${admin[$i]}" RESTATE_INGRESS__BIND_ADDRESS="127.0.0.1:${ingress[$i]}" \
    RESTATE_LOG_FILTER="${LOG_FILTER:-warn}" RESTATE_LOG_DISABLE_ANSI_CODES=true RESTATE_DISABLE_TELEMETRY=true \
    "$binary" >> "$out/node-$n.log" 2>&1 &
  node_pid[$i]=$!; pids+=("$!"); disown "$!"
}

healthy() { curl -fs "http://127.0.0.1:${admin[$1]}/health" >/dev/null && curl -fs "http://127.0.0.1:${ingress[$1]}/restate/health" >/dev/null; }
add() { curl -fs -m 5 -X POST "http://127.0.0.1:${ingress[$1]}/Counter/$2/add" --json 1 >/dev/null; }

# One fault: $1 node index, $2 KILL or STOP. Appends a JSON line to $out/faults.jsonl.
fault() {
  local victim=$1 signal=$2 urls=() i bench
  for i in 0 1 2; do
    [ "$i" = "$victim" ] || urls+=(--url "http://127.0.0.1:${ingress[$i]}/Counter/k{worker}/add")
  done
  "$bin/restate-bench" invoke "${urls[@]}" --concurrency "$workers" --duration 12s --body 1 --timeout 60s \
    > "$out/fault-$victim-$signal.txt" 2>&1 &
  bench=$!
  sleep 3
  kill "-$signal" "${node_pid[$victim]}"
  wait "$bench" || true
  python3 - "$out/fault-$victim-$signal.txt" "$victim" "$signal" >> "$out/faults.jsonl" <<'PY'
import json, sys
report = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(json.dumps({"node": int(sys.argv[2]) + 1, "signal": "SIG" + sys.argv[3],
                  "stall_ms": report["longest_stall_ms"], "stall_from_s": report["longest_stall_from_s"],
                  "calls": report["calls"], "errors": report["errors"],
                  "p99_ms": report["ops"]["invoke"]["p99_ms"]}))
PY
  tail -n 1 "$out/faults.jsonl" >&2
  local back
  back=$(date +%s%N)
  if [ "$signal" = KILL ]; then start_node "$server" "$victim"; else kill -CONT "${node_pid[$victim]}"; fi
  wait_for 60 "node $((victim + 1)) to serve again" healthy "$victim"
  if [ "$server" = restate-rs ]; then
    # Rebalance: time from the restart (or SIGCONT) until the node leads its share of the
    # partitions again (at least 6 of 24, a third being 8).
    local rebalanced=""
    for _ in $(seq 240); do
      if leads_share "$victim"; then rebalanced=$((($(date +%s%N) - back) / 1000000)); break; fi
      sleep 0.25
    done
    python3 - "$out/faults.jsonl" "${rebalanced:-null}" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().strip().splitlines()
last = json.loads(lines[-1]); last["rebalance_ms"] = json.loads(sys.argv[2])
lines[-1] = json.dumps(last)
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
    echo "leaders back on node $((victim + 1)) after ${rebalanced:-more than 60000} ms" >&2
  fi
  # Leaders move back to the returning node (restate-rs: 5 s after it starts) before the next fault.
  sleep 12
}

# Whether node $1 (0..2) of restate-rs leads at least 6 partitions, per restatectl.
leads_share() {
  local listing nodes
  nodes=$("$bin/restatectl" -s "http://127.0.0.1:${fabric[0]}/" nodes list --json 2>/dev/null) || return 1
  listing=$("$bin/restatectl" -s "http://127.0.0.1:${fabric[0]}/" partitions list --json 2>/dev/null) || return 1
  python3 - "node-$(($1 + 1))" "$nodes" "$listing" <<'PY'
import json, sys
name, nodes, listing = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ids = {str(n.get("node_id")) for n in nodes if n.get("name") == name}
ids |= {f"N{i}" for i in list(ids) if not str(i).startswith("N")}
led = sum(1 for p in listing if str(p.get("leader")) in ids)
sys.exit(0 if led >= 6 else 1)
PY
}

run_server() {
  server=$1
  out="$work/$server"
  mkdir -p "$out"
  echo "== $server ==" >&2
  fabric=(); admin=(); ingress=(); node_pid=()
  local i
  for i in 0 1 2; do
    # pick_port runs in a subshell here, so each node starts from its own range.
    fabric+=("$(pick_port $((15122 + 100 * i)))"); admin+=("$(pick_port $((19070 + 100 * i)))")
    ingress+=("$(pick_port $((18080 + 100 * i)))")
  done
  fabric_list=$(printf '"http://127.0.0.1:%s/",' "${fabric[@]}"); fabric_list=${fabric_list%,}
  for i in 0 1 2; do start_node "$server" "$i"; done
  if [ "$server" = restate-rs ]; then
    wait_for 30 "the nodes to listen" port_open "${fabric[0]}"
    sleep 1
    "$bin/restatectl" -s "http://127.0.0.1:${fabric[0]}/" provision --yes > /dev/null
  fi
  for i in 0 1 2; do
    wait_for 90 "$server node $((i + 1)) health" healthy "$i" || { tail -n 20 "$out"/node-*.log >&2; exit 1; }
  done

  local service_port
  service_port=$(pick_port 19080)
  (cd examples/typescript && PORT=$service_port exec node service.js) > "$out/service.log" 2>&1 &
  pids+=("$!"); disown "$!"
  wait_for 30 "the service" port_open "$service_port"
  wait_for 60 "the registration" curl -fsS -X POST "http://127.0.0.1:${admin[0]}/deployments" \
    --json "{\"uri\":\"http://127.0.0.1:$service_port\"}"
  for i in 0 1 2; do wait_for 60 "a first call through node $((i + 1))" add "$i" warmup; done
  sleep 5

  echo "-- throughput: 32 workers through all three ingresses" >&2
  local urls=()
  for i in 0 1 2; do urls+=(--url "http://127.0.0.1:${ingress[$i]}/Counter/t{worker}/add"); done
  "$bin/restate-bench" invoke "${urls[@]}" --concurrency 32 --duration 15s --warmup 2s --body 1 --timeout 60s \
    > "$out/throughput.txt" 2>&1 || true
  tail -n 1 "$out/throughput.txt" > "$out/throughput.json"

  : > "$out/faults.jsonl"
  local f
  for f in $faults; do fault "${f%%:*}" "${f##*:}"; done

  echo "-- whole-cluster kill -9 and restart" >&2
  for i in 0 1 2; do kill -9 "${node_pid[$i]}" 2>/dev/null || true; done
  sleep 1
  local started ended
  started=$(date +%s%N)
  for i in 0 1 2; do start_node "$server" "$i"; done
  for _ in $(seq 3000); do add 0 restart && break; sleep 0.02; done
  ended=$(date +%s%N)
  echo $(((ended - started) / 1000000)) > "$out/restart_ms"
  echo "first call after restart: $(cat "$out/restart_ms") ms" >&2
  for i in 0 1 2; do kill -9 "${node_pid[$i]}" 2>/dev/null || true; done
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp -r "$out" "$keep/"; fi
}

[ "$only" = reference ] || run_server restate-rs
[ "$only" = restate-rs ] || run_server reference

python3 - "$work" "$ref_version" <<'PY'
import json, os, sys
work, version = sys.argv[1], sys.argv[2]
def load(server):
    path = os.path.join(work, server, "faults.jsonl")
    if not os.path.exists(path):
        return None
    faults = [json.loads(line) for line in open(path) if line.strip()]
    restart = open(os.path.join(work, server, "restart_ms")).read().strip()
    try:
        report = json.loads(open(os.path.join(work, server, "throughput.json")).read())
        throughput = {"calls_per_s": report["ops_per_sec"], "p99_ms": report["ops"]["invoke"]["p99_ms"],
                      "errors": report["errors"]}
    except (OSError, ValueError, KeyError):
        throughput = None
    return {"faults": faults, "restart_ms": int(restart), "throughput": throughput}
ours, ref = load("restate-rs"), load("reference")
print(f"3 nodes, replication 2, 8 workers adding through the two other nodes; Restate {version} as reference")
print("| fault | restate-rs stall ms (errors) | reference stall ms (errors) |")
print("|---|---|---|")
def tput(r):
    t = r and r["throughput"]
    return f'{t["calls_per_s"]:.0f} calls/s, p99 {t["p99_ms"]:.1f} ms ({t["errors"]})' if t else "-"
print(f"| healthy, 32 workers through all 3 ingresses | {tput(ours)} | {tput(ref)} |")
rows = (ours or ref)["faults"]
for i, row in enumerate(rows):
    def cell(r):
        if not r:
            return "-"
        f = r["faults"][i]
        back = f" leaders back in {f['rebalance_ms']} ms" if f.get("rebalance_ms") is not None else ""
        return f'{f["stall_ms"]} ({f["errors"]}){back}'
    print(f'| {row["signal"]} node {row["node"]} | {cell(ours)} | {cell(ref)} |')
for name, r in (("restate-rs", ours), ("reference", ref)):
    if r:
        worst = {s: max((f["stall_ms"] for f in r["faults"] if f["signal"] == s), default=0) for s in ("SIGKILL", "SIGSTOP")}
        print(f'{name}: worst stall SIGKILL {worst["SIGKILL"]} ms, SIGSTOP {worst["SIGSTOP"]} ms; whole-cluster kill -9 + restart to first call {r["restart_ms"]} ms')
print(json.dumps({"restate_rs": ours, "reference": ref}))
PY
