#!/usr/bin/env bash
# Large fan-outs on one node of restate-rs and of the reference Restate server (npm
# @restatedev/restate-server), one after the other on this machine, with the same TypeScript
# service (examples/typescript/conformance.js). For each N, a handler sends N one-way calls
# without waiting (ConfProxy/fanOut):
#   spread  N calls to N keys of a virtual object: N outbox messages, N invocations;
#   hot     N calls to one key: all wait in that key's inbox and run one after another.
# Prints the time from the fan-out request until the last call ran, per N, the ratio of the
# largest N to the smallest (work that is linear in N gives the ratio of the Ns), and peak RSS.
#
#   benches/scale.sh
#
# Environment (all optional): COUNTS="5000 50000" SERVERS="ours reference" REFERENCE_VERSION=1.7.12
# Needs: node and npm, curl, python3, and release binaries (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

counts="${COUNTS:-5000 50000}"
servers="${SERVERS:-ours reference}"
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"

source benches/lib.sh
source benches/servers.sh

sql() { # admin port, query: the first column of the first row
  curl -fsS "http://127.0.0.1:$1/query" -H 'accept: application/json' --json "{\"query\": \"$2\"}" \
    | python3 -c 'import json,sys; rows=json.load(sys.stdin)["rows"]; print(list(rows[0].values())[0] if rows else 0)'
}

# Waits until `check` prints `expected`; prints the seconds since `started`.
until_done() { # started expected timeout_s command...
  local started=$1 expected=$2 timeout=$3 now seen=""
  shift 3
  while :; do
    seen=$("$@" 2>/dev/null || true)
    now=$(date +%s.%N)
    if [ "$seen" = "$expected" ]; then
      python3 -c "print(f'{$now - $started:.1f}')"
      return 0
    fi
    if python3 -c "import sys; sys.exit(0 if $now - $started > $timeout else 1)"; then
      echo "timeout (saw $seen, expected $expected)"
      return 0
    fi
    sleep 0.5
  done
}

measure() { # label launcher
  local label=$1 launcher=$2 out="$work/$1" service_port admin ingress fabric pid service_pid n started
  mkdir -p "$out"
  echo "== $label ==" >&2
  service_port=$(pick_port 9080)
  (cd examples/typescript && PORT=$service_port exec node conformance.js) > "$out/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid"); disown "$service_pid"
  wait_for 30 "the service" port_open "$service_port"
  admin=$(pick_port 9070); ingress=$(pick_port 8080); fabric=$(pick_port 5122)
  "$launcher" "$out/data" "$admin" "$ingress" "$fabric" "$out/server.log"
  pid=$!; pids+=("$pid"); disown "$pid"
  wait_for 60 "$label health" bash -c "curl -fs http://127.0.0.1:$admin/health && curl -fs http://127.0.0.1:$ingress/restate/health"
  for _ in $(seq 30); do
    curl -fsS -X POST "http://127.0.0.1:$admin/deployments" --json "{\"uri\":\"http://127.0.0.1:$service_port\"}" >/dev/null 2>&1 && break
    sleep 1
  done
  wait_for 20 "a first call" curl -fs -X POST "http://127.0.0.1:$ingress/ConfUtils/echo" --json '"x"'
  status_kb "$pid" VmHWM > "$out/rss_start_kb"
  sample_rss "$pid" "$out/rss_peak_kb" &
  local sampler=$!; pids+=("$sampler"); disown "$sampler"
  for n in $counts; do
    echo "-- spread $n" >&2
    started=$(date +%s.%N)
    curl -fsS -m 900 "http://127.0.0.1:$ingress/ConfProxy/fanOut" \
      --json "{\"prefix\": \"spread$n\", \"count\": $n, \"keys\": $n}" > /dev/null
    until_done "$started" "$n" 1800 sql "$admin" \
      "SELECT count(*) FROM state WHERE service_name = 'ConfCounter' AND service_key LIKE 'spread$n-%'" \
      > "$out/spread-$n"
    echo "-- hot $n" >&2
    started=$(date +%s.%N)
    curl -fsS -m 900 "http://127.0.0.1:$ingress/ConfProxy/fanOut" \
      --json "{\"prefix\": \"hot$n\", \"count\": $n, \"keys\": 1}" > /dev/null
    until_done "$started" "$n" 3600 curl -fsS -X POST "http://127.0.0.1:$ingress/ConfCounter/hot$n-0/get" \
      > "$out/hot-$n"
  done
  kill "$sampler" 2>/dev/null || true
  alive "$pid" || { echo "$label exited during the run" >&2; tail -n 30 "$out/server.log" >&2; exit 1; }
  stop "$pid"
  stop "$service_pid"
}

for server in $servers; do
  case "$server" in
    ours) measure restate-rs start_ours ;;
    reference) measure reference start_reference ;;
    *) echo "unknown server '$server' (ours, reference)" >&2; exit 2 ;;
  esac
done

python3 - "$work" "$counts" "$servers" "$ref_version" <<'PY'
import os, sys
work, counts, servers, ref_version = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
labels = {"ours": "restate-rs", "reference": f"Restate {ref_version}"}
dirs = {"ours": "restate-rs", "reference": "reference"}
def read(server, name):
    try:
        return open(os.path.join(work, dirs[server], name)).read().strip()
    except OSError:
        return "?"
print(f"| fan-out | N | " + " | ".join(labels[s] for s in servers) + " |")
print("|---|---|" + "---|" * len(servers))
for kind in ("spread", "hot"):
    for n in counts:
        print(f"| {kind} | {n} | " + " | ".join(read(s, f"{kind}-{n}") + " s" for s in servers) + " |")
    for s in servers:
        try:
            first, last = float(read(s, f"{kind}-{counts[0]}")), float(read(s, f"{kind}-{counts[-1]}"))
            print(f"{labels[s]}: {kind} N={counts[-1]} / N={counts[0]} = {last / first:.1f}x "
                  f"(linear: {int(counts[-1]) / int(counts[0]):.0f}x)")
        except ValueError:
            pass
for s in servers:
    peak = read(s, "rss_peak_kb")
    print(f"{labels[s]}: peak RSS {int(peak) // 1024 if peak.isdigit() else peak} MiB")
PY
