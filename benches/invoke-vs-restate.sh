#!/usr/bin/env bash
# Calls an SDK service's handler through the ingress of restate-rs and of the reference Restate
# server (npm @restatedev/restate-server), one after the other on this machine: sequential calls,
# then CONCURRENCY workers; prints calls/s, latency, server CPU per call and server RSS, with the
# ratios restate-rs / reference, and the vCPU time the hypervisor stole during each run. Each
# server gets a fresh data dir and a fresh service process.
#
#   benches/invoke-vs-restate.sh
#
# Environment (all optional):
#   DURATION=10s         length of the sequential run and of the concurrent run
#   CONCURRENCY=32       workers in the concurrent run
#   WARMUP=5s            concurrent calls made before measuring (not counted)
#   BODY='"Sam"'         request body (JSON)
#   HTTP2=0              1: the bench talks h2c to the ingress instead of HTTP/1.1
#   INGRESS_PORT=8080 ADMIN_PORT=9070 FABRIC_PORT=5122 SERVICE_PORT=9080
#                        first port tried for each listener (the next free one is used)
#   SDKS="typescript rust python"  the SDK services to compare with (each a full round)
#   REFERENCE_VERSION=1.7.12
#   SERVER_ENV, OURS_ENV, REFERENCE_ENV   extra NAME=value settings for both servers / one of them
#
# Needs: node and npm, curl, python3, and release binaries (built here if missing). The reference
# server is installed with npm into ${XDG_CACHE_HOME:-~/.cache}/restate-rs/reference/.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${DURATION:-10s}"
concurrency="${CONCURRENCY:-32}"
warmup="${WARMUP:-5s}"
body="${BODY:-\"Sam\"}"
http2=()
if [ "${HTTP2:-0}" = 1 ]; then http2=(--http2); fi
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"

for tool in node npm curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

source benches/lib.sh
source benches/servers.sh
# A restate-bench built before the `invoke` subcommand existed.
if ! "$bin/restate-bench" invoke --help >/dev/null 2>&1; then
  cargo build --release --locked --bin restate-bench
fi

invoke() { # url concurrency duration [extra restate-bench flags]: the report on stderr, the JSON line on stdout
  "$bin/restate-bench" invoke --url "$1" --concurrency "$2" --duration "$3" --body "$body" "${http2[@]}" "${@:4}" \
    | tee >(cat >&2) | tail -n 1
}

# Runs the whole measurement for one server and one SDK service; figures go to $work/$label/.
# Arguments: label, server launcher function, service launch command (run with PORT set), handler path.
measure() {
  local label=$1 launcher=$2 service_cmd=$3 handler=$4
  local out="$work/$label" service_port admin ingress fabric service_pid pid url written stolen
  mkdir -p "$out"
  echo "== $label ==" >&2

  service_port=$(pick_port "${SERVICE_PORT:-9080}")
  PORT=$service_port bash -c "exec $service_cmd" > "$out/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid"); disown "$service_pid"
  wait_for 30 "the service on port $service_port" port_open "$service_port" || { cat "$out/service.log" >&2; exit 1; }

  admin=$(pick_port "${ADMIN_PORT:-9070}")
  ingress=$(pick_port "${INGRESS_PORT:-8080}")
  fabric=$(pick_port "${FABRIC_PORT:-5122}")
  "$launcher" "$out/data" "$admin" "$ingress" "$fabric" "$out/server.log"
  pid=$!; pids+=("$pid"); disown "$pid"
  if ! wait_for 60 "$label admin and ingress health" \
    bash -c "curl -fs http://127.0.0.1:$admin/health && curl -fs http://127.0.0.1:$ingress/restate/health"; then
    tail -n 30 "$out/server.log" >&2; exit 1
  fi
  curl -fs "http://127.0.0.1:$admin/version" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("version",""))' \
    > "$out/version" 2>/dev/null || echo "?" > "$out/version"

  local registered=""
  for _ in $(seq 30); do
    if curl -fsS -X POST "http://127.0.0.1:$admin/deployments" --json "{\"uri\":\"http://127.0.0.1:$service_port\"}" \
      > "$out/registration.json" 2> "$out/registration.err"; then
      registered=1; break
    fi
    sleep 1
  done
  [ -n "$registered" ] || { echo "$label: registration failed: $(cat "$out/registration.err")" >&2; tail -n 30 "$out/server.log" >&2; exit 1; }
  url="http://127.0.0.1:$ingress/$handler"
  # The schema reaches the ingress a little after registration.
  wait_for 20 "a first successful call to $url" curl -fs -X POST "$url" --json "$body" \
    || echo "$label: no call succeeded yet, measuring anyway (the errors are in the report)" >&2

  sleep 2
  status_kb "$pid" VmRSS > "$out/rss_idle_kb"

  echo "-- warm-up: $warmup, $concurrency workers" >&2
  invoke "$url" "$concurrency" 0s --warmup "$warmup" > /dev/null 2>&1 || true

  echo "-- sequential: $duration, 1 worker" >&2
  local before after sampler
  before=$(cpu_ticks "$pid"); written=$(disk_written "$pid"); stolen=$(steal_ticks)
  invoke "$url" 1 "$duration" > "$out/sequential.json"
  after=$(cpu_ticks "$pid")
  echo $(($(steal_ticks) - stolen)) > "$out/sequential_steal_ticks"
  echo $((after - before)) > "$out/sequential_cpu_ticks"
  echo $(($(disk_written "$pid") - written)) > "$out/sequential_disk_bytes"

  echo "-- concurrent: $duration, $concurrency workers" >&2
  status_kb "$pid" VmRSS > "$out/rss_peak_kb"
  sample_rss "$pid" "$out/rss_peak_kb" &
  sampler=$!; pids+=("$sampler"); disown "$sampler"
  before=$(cpu_ticks "$pid"); written=$(disk_written "$pid"); stolen=$(steal_ticks)
  invoke "$url" "$concurrency" "$duration" > "$out/concurrent.json"
  after=$(cpu_ticks "$pid")
  echo $(($(steal_ticks) - stolen)) > "$out/concurrent_steal_ticks"
  echo $(($(disk_written "$pid") - written)) > "$out/concurrent_disk_bytes"
  kill "$sampler" 2>/dev/null || true
  echo $((after - before)) > "$out/concurrent_cpu_ticks"
  status_kb "$pid" VmRSS > "$out/rss_after_kb"
  status_kb "$pid" VmHWM > "$out/rss_hwm_kb"
  alive "$pid" || { echo "$label exited during the run" >&2; tail -n 30 "$out/server.log" >&2; exit 1; }

  stop "$pid"
  stop "$service_pid"
}

# One SDK service against both servers, then the comparison table.
# Arguments: SDK name, service launch command (listens on $PORT), handler path.
compare_sdk() {
  local sdk=$1 service_cmd=$2 handler=$3
  measure "restate-rs-$sdk" start_ours "$service_cmd" "$handler"
  measure "reference-$sdk" start_reference "$service_cmd" "$handler"
  python3 - "$work/restate-rs-$sdk" "$work/reference-$sdk" "$sdk" "$handler" "$clk_tck" "$ref_version" <<'PY'
import json, os, sys
ours_dir, ref_dir, sdk, handler, clk_tck, ref_version = sys.argv[1:7]
clk_tck = int(clk_tck)

def load(d):
    read = lambda name: open(os.path.join(d, name)).read().strip()
    number = lambda name: int(read(name) or 0)
    figures = {"version": read("version")}
    for run in ("sequential", "concurrent"):
        j = json.loads(read(f"{run}.json"))
        op = j["ops"]["invoke"]
        calls = op["count"]
        cpu_ms = number(f"{run}_cpu_ticks") * 1000.0 / clk_tck
        figures[run] = {
            "workers": j["concurrency"], "calls": calls, "calls_per_sec": op["ops_per_sec"],
            "p50_ms": op["p50_ms"], "p99_ms": op["p99_ms"], "p999_ms": op["p999_ms"],
            "errors": op["errors"], "error_samples": j.get("error_samples", []),
            "cpu_ms_per_call": cpu_ms / calls if calls else None,
            "disk_kb_per_call": number(f"{run}_disk_bytes") / 1024 / calls if calls else None,
            "steal_ms": number(f"{run}_steal_ticks") * 1000.0 / clk_tck,
        }
    for key in ("rss_idle_kb", "rss_peak_kb", "rss_after_kb", "rss_hwm_kb"):
        figures[key.replace("_kb", "_mib")] = round(number(key) / 1024, 1)
    return figures

ours, ref = load(ours_dir), load(ref_dir)
seq, con = ours["sequential"]["workers"], ours["concurrent"]["workers"]
rows = [
    (f"calls/s, {seq} worker", "sequential", "calls_per_sec"),
    (f"p50 ms, {seq} worker", "sequential", "p50_ms"),
    (f"p99 ms, {seq} worker", "sequential", "p99_ms"),
    (f"errors, {seq} worker", "sequential", "errors"),
    (f"CPU ms/call, {seq} worker", "sequential", "cpu_ms_per_call"),
    (f"disk KiB written/call, {seq} w.", "sequential", "disk_kb_per_call"),
    (f"host steal ms (all vCPUs), {seq} w.", "sequential", "steal_ms"),
    (f"calls/s, {con} workers", "concurrent", "calls_per_sec"),
    (f"p50 ms, {con} workers", "concurrent", "p50_ms"),
    (f"p99 ms, {con} workers", "concurrent", "p99_ms"),
    (f"errors, {con} workers", "concurrent", "errors"),
    (f"CPU ms/call, {con} workers", "concurrent", "cpu_ms_per_call"),
    (f"disk KiB written/call, {con} w.", "concurrent", "disk_kb_per_call"),
    (f"host steal ms (all vCPUs), {con} w.", "concurrent", "steal_ms"),
    ("RSS MiB, idle", None, "rss_idle_mib"),
    ("RSS MiB, peak under load", None, "rss_peak_mib"),
    ("RSS MiB, after load", None, "rss_after_mib"),
    ("RSS MiB, high-water mark", None, "rss_hwm_mib"),
]
def value(figures, run, key):
    return (figures[run] if run else figures)[key]
def show(v):
    if v is None: return "-"
    if not isinstance(v, float): return str(v)
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}"
ref_name = f"restate {ref['version'] or ref_version}"
print()
print(f"POST /{handler} via the {sdk} SDK service; restate-rs / reference on the same machine, one after the other:")
print(f"| {'':32} | {'restate-rs':>12} | {ref_name:>16} | {'ratio':>7} |")
print(f"|{'-' * 34}|{'-' * 14}|{'-' * 18}|{'-' * 9}|")
for name, run, key in rows:
    o, r = value(ours, run, key), value(ref, run, key)
    ratio = f"{o / r:.2f}x" if isinstance(o, (int, float)) and isinstance(r, (int, float)) and r and key != "errors" else ""
    print(f"| {name:32} | {show(o):>12} | {show(r):>16} | {ratio:>7} |")
for label, figures in (("restate-rs", ours), (ref_name, ref)):
    for run in ("sequential", "concurrent"):
        for message in figures[run]["error_samples"][:3]:
            print(f"{label} {run} error: {message}")
print(json.dumps({"sdk": sdk, "handler": handler, "restate_rs": ours, "reference": ref}))
PY
}

for sdk in ${SDKS:-typescript rust python}; do
  case "$sdk" in
    typescript) compare_sdk typescript "node examples/typescript/service.js" "Greeter/greet" ;;
    rust)
      # The Rust SDK test service of the workspace (restate-sdk 0.13), built like the servers.
      if [ ! -x "$bin/restate-sdk-test-service" ]; then
        cargo build --release --locked -p restate-sdk-test-service >&2
      fi
      compare_sdk rust "$bin/restate-sdk-test-service" "Greeter/greet"
      ;;
    python)
      # The Python SDK service of examples/python on hypercorn (h2c), in the venv scripts/deps.sh makes.
      if ! examples/python/.venv/bin/python -c 'import restate, hypercorn' 2>/dev/null; then
        python3 -m venv examples/python/.venv >&2
        examples/python/.venv/bin/pip install -q -r examples/python/requirements.txt >&2
      fi
      compare_sdk python "env PYTHONPATH=examples/python examples/python/.venv/bin/hypercorn service:app --bind 127.0.0.1:\$PORT" "Greeter/greet"
      ;;
    *) echo "unknown SDK '$sdk' in SDKS (typescript, rust, python)" >&2; exit 1 ;;
  esac
done
