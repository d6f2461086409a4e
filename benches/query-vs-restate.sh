#!/usr/bin/env bash
# Introspection over many retained invocations, restate-rs vs the reference Restate server
# (npm @restatedev/restate-server), one after the other on this machine. Each server gets a fresh
# data dir and the TypeScript example service; INVOCATIONS calls to Greeter/greet (completed and
# retained, as both servers keep them for a day) plus a few Counter adds are made, then:
#   - `restate invocations list` (the real CLI: two SQL queries, one scanning every invocation),
#   - `SELECT ... FROM sys_invocation WHERE id = '<id>'` (a key lookup),
#   - `SELECT key, value FROM state WHERE service_name = 'Counter' AND service_key = '<k>'`,
#   - `SELECT count(*) FROM sys_invocation_status` (a full scan),
# each timed as the median of RUNS runs; printed with the ratios restate-rs / reference.
#
#   benches/query-vs-restate.sh
#
# Environment (all optional): INVOCATIONS=100000 RUNS=5 CONCURRENCY=32 REFERENCE_VERSION=1.7.12
#   SERVER_ENV, OURS_ENV, REFERENCE_ENV   extra NAME=value settings for both servers / one of them
# Needs: node and npm, curl, python3, release binaries (built here if missing) and the restate CLI
# (tests/cli, installed by scripts/deps.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."

invocations="${INVOCATIONS:-100000}"
runs="${RUNS:-5}"
concurrency="${CONCURRENCY:-32}"
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"
cli=tests/cli/node_modules/.bin/restate

for tool in node npm curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ -x "$cli" ] || npm ci --prefix tests/cli --no-audit --no-fund --loglevel=error >&2

source benches/lib.sh
source benches/servers.sh

sql() { # admin port, query: the JSON rows
  curl -fsS "http://127.0.0.1:$1/query" -H 'accept: application/json' --json "$(body "$2")"
}
body() { python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1]}))' "$1"; }
# Only curl is timed: the request body is encoded beforehand.
post() { curl -fsS "http://127.0.0.1:$1/query" -H 'accept: application/json' --json "@$2"; }
count() { sql "$1" "SELECT count(*) AS n FROM sys_invocation_status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'; }
# Median wall time in ms of running a command RUNS times.
median_ms() {
  local times=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "$@" > /dev/null
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

measure() { # label, launcher
  local label=$1 launcher=$2 out="$work/$1" service_port admin ingress fabric service_pid pid
  mkdir -p "$out"
  echo "== $label ==" >&2
  service_port=$(pick_port 9080)
  PORT=$service_port bash -c "exec node examples/typescript/service.js" > "$out/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid"); disown "$service_pid"
  wait_for 30 "the service on port $service_port" port_open "$service_port"
  admin=$(pick_port 9070); ingress=$(pick_port 8080); fabric=$(pick_port 5122)
  "$launcher" "$out/data" "$admin" "$ingress" "$fabric" "$out/server.log"
  pid=$!; pids+=("$pid"); disown "$pid"
  wait_for 60 "$label health" bash -c "curl -fs http://127.0.0.1:$admin/health && curl -fs http://127.0.0.1:$ingress/restate/health"
  for _ in $(seq 30); do
    curl -fsS -X POST "http://127.0.0.1:$admin/deployments" --json "{\"uri\":\"http://127.0.0.1:$service_port\"}" > /dev/null 2>&1 && break
    sleep 1
  done
  wait_for 20 "a first call" curl -fs -X POST "http://127.0.0.1:$ingress/Greeter/greet" --json '"Sam"'
  for key in $(seq 20); do
    curl -fs -X POST "http://127.0.0.1:$ingress/Counter/key-$key/add" --json 1 > /dev/null
  done
  echo "-- making $invocations invocations" >&2
  while [ "$(count "$admin")" -lt "$invocations" ]; do
    "$bin/restate-bench" invoke --url "http://127.0.0.1:$ingress/Greeter/greet" --concurrency "$concurrency" \
      --duration 10s --body '"Sam"' > /dev/null 2>&1
  done
  count "$admin" > "$out/invocations"
  local id
  id=$(sql "$admin" "SELECT id FROM sys_invocation_status WHERE target_service_name = 'Counter' LIMIT 1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["id"])')
  echo "-- measuring" >&2
  export RESTATE_ADMIN_URL="http://127.0.0.1:$admin"
  median_ms "$cli" invocations list > "$out/cli_list_ms"
  body "SELECT id, target, status, created_at FROM sys_invocation WHERE id = '$id'" > "$out/by_id.json"
  body "SELECT key, value FROM state WHERE service_name = 'Counter' AND service_key = 'key-7'" > "$out/state_key.json"
  body "SELECT count(*) FROM sys_invocation_status" > "$out/count.json"
  median_ms post "$admin" "$out/by_id.json" > "$out/by_id_ms"
  median_ms post "$admin" "$out/state_key.json" > "$out/state_key_ms"
  median_ms post "$admin" "$out/count.json" > "$out/count_ms"
  status_kb "$pid" VmRSS > "$out/rss_kb"
  stop "$pid"
  stop "$service_pid"
}

measure restate-rs start_ours
measure reference start_reference
python3 - "$work/restate-rs" "$work/reference" "$runs" "$ref_version" <<'PY'
import os, sys
ours, ref, runs, ref_version = sys.argv[1:5]
read = lambda d, n: int(open(os.path.join(d, n)).read().strip() or 0)
rows = [
    ("invocations retained", "invocations"),
    ("`restate invocations list`, ms", "cli_list_ms"),
    ("sys_invocation WHERE id = …, ms", "by_id_ms"),
    ("state WHERE service_key = …, ms", "state_key_ms"),
    ("count(*) sys_invocation_status, ms", "count_ms"),
    ("RSS after, MiB", "rss_kb"),
]
print(f"\nmedian of {runs} runs; restate-rs / restate {ref_version} on the same machine, one after the other:")
print(f"| {'':36} | {'restate-rs':>10} | {'reference':>10} | {'ratio':>6} |")
print(f"|{'-'*38}|{'-'*12}|{'-'*12}|{'-'*8}|")
for name, key in rows:
    o, r = read(ours, key), read(ref, key)
    if key == "rss_kb":
        o, r = round(o / 1024), round(r / 1024)
    ratio = f"{o / r:.2f}x" if r and key != "invocations" else ""
    print(f"| {name:36} | {o:>10} | {r:>10} | {ratio:>6} |")
PY
