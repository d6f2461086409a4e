#!/usr/bin/env bash
# Where the server's time goes per call: `Greeter/greet` of an SDK service through the ingress,
# profiled two ways on this machine.
#
#   benches/profile-invoke.sh
#
# 1. perf (restate-rs only): `perf record` samples the node (cpu-clock, no call graphs) while
#    CONCURRENCY workers call; prints CPU microseconds per call by component (RocksDB, h2/hyper,
#    tokio, the kernel, the allocator, our crates…) and the top symbols.
# 2. callgrind (restate-rs and the reference, one after the other): both servers run under
#    `valgrind --tool=callgrind` with instrumentation off until the service is registered; then an
#    idle window and a window of sequential calls are counted. Instructions per call (the call
#    window minus the idle rate over the same time) do not depend on how busy the machine is, so the
#    ratio is the steadiest CPU figure we have. Prints the top functions per call for ours.
#
# Environment (all optional):
#   MODES="perf callgrind"   which profiles to take
#   SDK=rust                 rust (the workspace's restate-sdk test service) or typescript
#   DURATION=10s             the perf load; CONCURRENCY=32 workers
#   CALLGRIND_DURATION=20s   the window of sequential calls under callgrind (and the idle window)
#   CALLGRIND_SERVERS="restate-rs reference"   the servers profiled under callgrind
#   OURS_ENV="NAME=value …"  extra settings for our node (e.g. LD_PRELOAD of another allocator)
#   TOP=20                   rows printed per table
#   KEEP=1                   keep the work dir (perf.data, callgrind.out.*) and print its path
#
# Needs: perf, valgrind (callgrind_control, callgrind_annotate), node and npm, curl, python3, and
# release binaries (built here if missing; they carry symbols).
set -euo pipefail
cd "$(dirname "$0")/.."

modes="${MODES:-perf callgrind}"
sdk="${SDK:-rust}"
duration="${DURATION:-10s}"
concurrency="${CONCURRENCY:-32}"
cg_duration="${CALLGRIND_DURATION:-20s}"
top="${TOP:-20}"
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"

for tool in perf valgrind callgrind_control callgrind_annotate node npm curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
source benches/lib.sh
source benches/servers.sh
if [ "${KEEP:-0}" = 1 ]; then trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; echo "kept $work" >&2' EXIT; fi

case "$sdk" in
  rust)
    if [ ! -x "$bin/restate-sdk-test-service" ]; then cargo build --release --locked -p restate-sdk-test-service >&2; fi
    service_cmd="$bin/restate-sdk-test-service"
    ;;
  typescript) service_cmd="node examples/typescript/service.js" ;;
  *) echo "unknown SDK '$sdk' (rust, typescript)" >&2; exit 1 ;;
esac

# Starts the service and a server (launcher $2, optionally under the command prefix in $wrap),
# registers the service; sets url, server_pid, service_pid. $1: label.
wrap=()
start_pair() {
  local label=$1 launcher=$2 out="$work/$1" service_port admin ingress fabric
  mkdir -p "$out"
  service_port=$(pick_port 9080)
  PORT=$service_port bash -c "exec $service_cmd" > "$out/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid"); disown "$service_pid"
  wait_for 30 "the service on port $service_port" port_open "$service_port"
  admin=$(pick_port 9070); ingress=$(pick_port 8080); fabric=$(pick_port 5122)
  bin_saved=$bin ref_saved=$ref_bin
  if [ ${#wrap[@]} -gt 0 ]; then
    # The launchers exec "$bin/restate" / "$ref_bin"; run them through the wrapper instead.
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${wrap[*]}" "$bin/restate" > "$out/restate"
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${wrap[*]}" "$ref_bin" > "$out/restate-server"
    chmod +x "$out/restate" "$out/restate-server"
    bin=$out ref_bin=$out/restate-server
  fi
  "$launcher" "$out/data" "$admin" "$ingress" "$fabric" "$out/server.log"
  server_pid=$!; pids+=("$server_pid"); disown "$server_pid"
  bin=$bin_saved ref_bin=$ref_saved
  wait_for 300 "$label health" bash -c "curl -fs http://127.0.0.1:$admin/health && curl -fs http://127.0.0.1:$ingress/restate/health" \
    || { tail -n 30 "$out/server.log" >&2; exit 1; }
  wait_for 120 "$label registration" curl -fsS -X POST "http://127.0.0.1:$admin/deployments" --json "{\"uri\":\"http://127.0.0.1:$service_port\"}"
  url="http://127.0.0.1:$ingress/Greeter/greet"
  wait_for 120 "a first call to $url" curl -fs -X POST "$url" --json '"Sam"'
}

calls_of() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["ops"]["invoke"]["count"])' "$1"; }

if [[ " $modes " == *" perf "* ]]; then
  echo "== perf: restate-rs, $concurrency workers, $duration ==" >&2
  wrap=()
  start_pair perf start_ours
  "$bin/restate-bench" invoke --url "$url" --concurrency "$concurrency" --duration 0s --warmup 3s > /dev/null 2>&1
  "$bin/restate-bench" invoke --url "$url" --concurrency "$concurrency" --duration "$duration" > "$work/perf/bench.json" 2>/dev/null &
  bench=$!
  sleep 0.5
  frequency=999
  perf record -q -F "$frequency" -p "$server_pid" -o "$work/perf/perf.data" -- sleep "$(python3 -c "import sys; print(max(1.0, float(sys.argv[1].rstrip('s')) - 1.5))" "$duration")" 2>/dev/null
  wait "$bench"
  stop "$server_pid"; stop "$service_pid"
  calls=$(calls_of "$work/perf/bench.json")
  perf report -i "$work/perf/perf.data" --stdio --no-children --sort dso,sym --percent-limit 0 -F overhead,sample,dso,sym 2>/dev/null \
    > "$work/perf/report.txt"
  python3 - "$work/perf/report.txt" "$calls" "$frequency" "$duration" "$top" <<'PY'
import re, sys
path, calls, frequency, duration, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rows = []
for line in open(path):
    m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
    if m:
        rows.append((int(m.group(2)), m.group(3), m.group(4), m.group(5).strip()))
samples = sum(r[0] for r in rows)
seconds = float(duration.rstrip("s"))
# The sampled window is shorter than the bench run; scale calls to it by samples' wall time.
# Per-call cost = sampled CPU time / calls made in the sampled window (calls/s × window).
window = max(1.0, seconds - 1.5)
calls_in_window = calls / seconds * window
us_per_sample = 1e6 / frequency
def component(dso, kind, sym):
    if kind == "k": return "kernel (syscalls, TCP on loopback, scheduling)"
    if "rocksdb" in sym or sym.startswith("_ZN7rocksdb"): return "RocksDB"
    if re.search(r"\b(malloc|free|realloc|calloc|_int_malloc|_int_free|cfree|memalign|arena_|tcache)", sym): return "allocator (glibc malloc)"
    if re.search(r"mem(cpy|move|set|cmp)|__memcpy|__memmove|__memset|strlen", sym): return "memcpy/memset"
    for name, pattern in (("h2", r"\bh2::"), ("hyper / hyper-util", r"\bhyper(_util)?::"), ("tokio", r"\btokio::"),
                          ("prost (protobuf)", r"\bprost::"), ("serde / serde_json", r"\bserde(_json)?::"),
                          ("tracing", r"\btracing(_core|_subscriber)?::"), ("bytes", r"\bbytes::"),
                          ("http", r"\bhttp(_body)?(_util)?::"), ("futures", r"\bfutures(_util|_core)?::"),
                          ("tonic", r"\btonic::"), ("hashing", r"hashbrown|siphash|SipHasher|ahash|xxh")):
        if re.search(pattern, sym): return name
    m = re.search(r"\b(restate_[a-z_]+)::", sym)
    if m: return m.group(1)
    if dso.startswith("libc") or "libc.so" in dso: return "libc (other)"
    return "other (std, core, unresolved)"
by_component = {}
for s, dso, kind, sym in rows:
    c = component(dso, kind, sym)
    by_component[c] = by_component.get(c, 0) + s
print(f"\nperf: {calls} calls in {duration} ({calls / seconds:.0f}/s); {samples} samples at {frequency} Hz in the sampled {window:.1f} s;"
      f" server CPU per call {samples * us_per_sample / calls_in_window:.0f} µs")
print(f"| {'component':48} | {'µs/call':>8} | {'share':>6} |")
print(f"|{'-'*50}|{'-'*10}|{'-'*8}|")
for c, s in sorted(by_component.items(), key=lambda kv: -kv[1])[:top]:
    print(f"| {c:48} | {s * us_per_sample / calls_in_window:8.1f} | {100 * s / samples:5.1f}% |")
print(f"\ntop {top} symbols:")
print(f"| {'symbol':90} | {'µs/call':>8} | {'share':>6} |")
print(f"|{'-'*92}|{'-'*10}|{'-'*8}|")
for s, dso, kind, sym in sorted(rows, key=lambda r: -r[0])[:top]:
    name = (sym if kind != "k" else f"[kernel] {sym}")[:90]
    print(f"| {name:90} | {s * us_per_sample / calls_in_window:8.1f} | {100 * s / samples:5.1f}% |")
PY
fi

if [[ " $modes " == *" callgrind "* ]]; then
  idle_seconds=$(python3 -c "import sys; print(float(sys.argv[1].rstrip('s')))" "$cg_duration")
  for label in ${CALLGRIND_SERVERS:-restate-rs reference}; do
    echo "== callgrind: $label, sequential calls for $cg_duration ==" >&2
    launcher=start_ours; [ "$label" = reference ] && launcher=start_reference
    wrap=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no "--callgrind-out-file=$work/$label-cg/callgrind.out" --log-file="$work/$label-cg/valgrind.log")
    mkdir -p "$work/$label-cg"
    start_pair "$label-cg" "$launcher"
    # Let start-up work settle (under valgrind everything runs ~50x slower).
    for _ in 1 2 3 4 5; do curl -fs -X POST "$url" --json '"Sam"' > /dev/null; done
    sleep 5
    callgrind_control -i on "$server_pid" > /dev/null
    sleep "$idle_seconds"
    callgrind_control -d idle "$server_pid" > /dev/null
    callgrind_control -z "$server_pid" > /dev/null
    start=$(date +%s.%N)
    "$bin/restate-bench" invoke --url "$url" --concurrency 1 --duration "$cg_duration" --timeout 60s > "$work/$label-cg/bench.json" 2>/dev/null
    end=$(date +%s.%N)
    callgrind_control -d calls "$server_pid" > /dev/null
    callgrind_control -i off "$server_pid" > /dev/null
    stop "$server_pid"; stop "$service_pid"
    calls=$(calls_of "$work/$label-cg/bench.json")
    python3 - "$work/$label-cg" "$calls" "$idle_seconds" "$start" "$end" > "$work/$label-cg/per-call" <<'PY'
import glob, re, sys
d, calls, idle_seconds, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def total(part):
    # The dump callgrind_control made with `-d <part>`: its header names the trigger, and
    # `summary:` holds the instructions counted since the last zeroing.
    for f in glob.glob(f"{d}/callgrind.out*"):
        trigger, summary = None, None
        for line in open(f, errors="replace"):
            if line.startswith("desc: Trigger:"):
                trigger = line.split(":", 2)[2].strip()
            elif line.startswith("summary:"):
                summary = int(line.split()[1])
                break
        if trigger == f"dump {part}" and summary is not None:
            return summary
    raise SystemExit(f"no callgrind dump '{part}' in {d}")
idle, busy = total("idle"), total("calls")
window = end - start
per_call = (busy - idle * window / idle_seconds) / calls
print(f"{calls} {busy} {idle} {window:.2f} {per_call:.0f}")
PY
    read -r calls busy idle window per_call < "$work/$label-cg/per-call"
    echo "$label: $calls calls in ${window}s under callgrind; $busy instructions in the call window, $idle in ${idle_seconds}s idle → $per_call instructions per call" >&2
    echo "$per_call" > "$work/$label-cg/instructions-per-call"
  done
  python3 - "$work" "$top" <<'PY'
import glob, os, re, subprocess, sys
work, top = sys.argv[1], int(sys.argv[2])
ours = float(open(f"{work}/restate-rs-cg/instructions-per-call").read())
calls = int(open(f"{work}/restate-rs-cg/per-call").read().split()[0])
if os.path.exists(f"{work}/reference-cg/instructions-per-call"):
    ref = float(open(f"{work}/reference-cg/instructions-per-call").read())
    print(f"\ncallgrind, sequential Greeter/greet: restate-rs {ours / 1e3:.0f} k instructions per call, reference {ref / 1e3:.0f} k ({ours / ref:.2f}x)")
else:
    print(f"\ncallgrind, sequential Greeter/greet: restate-rs {ours / 1e3:.0f} k instructions per call")
files = [f for f in glob.glob(f"{work}/restate-rs-cg/callgrind.out*") if "Trigger: dump calls" in open(f, errors="replace").read(4096)]
out = subprocess.run(["callgrind_annotate", "--inclusive=no", f"--threshold=100", *files], capture_output=True, text=True).stdout
rows = []
for line in out.splitlines():
    parts = line.strip().split(None, 2)
    if len(parts) >= 2 and parts[0].replace(",", "").isdigit() and ("(" in parts[1] and "%" in parts[1]):
        rows.append((int(parts[0].replace(",", "")), parts[2] if len(parts) > 2 else "?"))
    elif len(parts) >= 2 and parts[0].replace(",", "").isdigit():
        rows.append((int(parts[0].replace(",", "")), line.strip().split(None, 1)[1]))
rows = [r for r in rows if "PROGRAM TOTALS" not in r[1]]
print(f"top {top} functions of restate-rs by own instructions per call (the idle share not taken out):")
print(f"| {'function':100} | {'k instr/call':>12} |")
print(f"|{'-'*102}|{'-'*14}|")
for n, name in sorted(rows, key=lambda r: -r[0])[:top]:
    name = re.sub(r"^\(\s*[\d.]+%\)\s+", "", name)
    name = re.sub(r"\s*\[/[^\]]*\]$", "", name)
    print(f"| {name[:100]:100} | {n / calls / 1e3:12.1f} |")
PY
fi
