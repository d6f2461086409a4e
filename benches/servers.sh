# Shared by the benchmarks that compare restate-rs with the reference Restate server
# (npm @restatedev/restate-server): installing the reference, free ports, process helpers and
# the two server launchers. Source it after benches/lib.sh, with `ref_version` and `ref_dir` set.

# The reference server: the npm package pulls a platform package holding the binary.
find_reference() {
  find "$ref_dir/node_modules" -type f -name restate-server -path '*restate-server-*' -print -quit 2>/dev/null || true
}
ref_bin=$(find_reference)
if [ -z "$ref_bin" ]; then
  echo "installing @restatedev/restate-server@$ref_version into $ref_dir" >&2
  mkdir -p "$ref_dir"
  npm install --prefix "$ref_dir" --no-audit --no-fund --loglevel=error "@restatedev/restate-server@$ref_version" >&2
  ref_bin=$(find_reference)
fi
[ -n "$ref_bin" ] || { echo "no restate-server binary under $ref_dir/node_modules (platform $(uname -sm))" >&2; exit 1; }
[ -x "$ref_bin" ] || chmod +x "$ref_bin"

if [ ! -d examples/typescript/node_modules ]; then
  (cd examples/typescript && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# First port at or after $1 that is free and not handed out yet in this run.
used_ports=" "
pick_port() {
  local port=$1
  while [[ "$used_ports" == *" $port "* ]] \
    || ! python3 -c 'import socket,sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; do
    port=$((port + 1))
  done
  used_ports+="$port "
  echo "$port"
}

clk_tck=$(getconf CLK_TCK)
# utime + stime of a process, in clock ticks (fields 14 and 15; the name in field 2 may hold spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Bytes the process caused to be written to storage so far (/proc/<pid>/io write_bytes: what
# reached the page cache for files, WAL and flushes alike; sockets do not count).
# Time the hypervisor gave this machine's vCPUs to others while they had work (/proc/stat
# "steal", in clock ticks, all CPUs together): stalls no process on this machine can see.
steal_ticks() { awk '$1 == "cpu" {print $9}' /proc/stat; }
disk_written() { awk '$1 == "write_bytes:" {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
# A /proc/<pid>/status field in kB (VmRSS, VmHWM).
status_kb() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Writes the largest VmRSS seen to $2 until killed.
sample_rss() {
  local max=0 now
  while kill -0 "$1" 2>/dev/null; do
    now=$(status_kb "$1" VmRSS)
    if [ "${now:-0}" -gt "$max" ]; then max=$now; echo "$max" > "$2"; fi
    sleep 0.2
  done
}
wait_for() { # seconds description command...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out after ${seconds}s waiting for $what" >&2
  return 1
}
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
stop() { # pid: SIGTERM, then SIGKILL after 10 s
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
port_open() { (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Server launchers: base dir, admin, ingress and fabric ports, log file. Start in the background.
start_ours() {
  # shellcheck disable=SC2086 # SERVER_ENV and OURS_ENV are lists of NAME=value
  env RESTATE_NODE_NAME=node-1 RESTATE_CLUSTER_NAME=bench-invoke RESTATE_BASE_DIR="$1" \
    RESTATE_ADMIN__BIND_ADDRESS="127.0.0.1:$2" RESTATE_INGRESS__BIND_ADDRESS="127.0.0.1:$3" \
    RESTATE_BIND_ADDRESS="127.0.0.1:$4" RESTATE_ADVERTISED_ADDRESS="http://127.0.0.1:$4/" \
    RESTATE_LOG_FILTER=warn RESTATE_LOG_DISABLE_ANSI_CODES=true RESTATE_DISABLE_TELEMETRY=true \
    ${SERVER_ENV:-} ${OURS_ENV:-} \
    "$bin/restate" > "$5" 2>&1 &
}
start_reference() {
  # shellcheck disable=SC2086
  env RESTATE_NODE_NAME=node-1 RESTATE_CLUSTER_NAME=bench-invoke RESTATE_BASE_DIR="$1" RESTATE_LISTEN_MODE=tcp \
    RESTATE_ADMIN__BIND_ADDRESS="127.0.0.1:$2" RESTATE_INGRESS__BIND_ADDRESS="127.0.0.1:$3" \
    RESTATE_BIND_ADDRESS="127.0.0.1:$4" RESTATE_ADVERTISED_ADDRESS="http://127.0.0.1:$4/" \
    RESTATE_LOG_FILTER=warn RESTATE_LOG_DISABLE_ANSI_CODES=true RESTATE_DISABLE_TELEMETRY=true \
    ${SERVER_ENV:-} ${REFERENCE_ENV:-} \
    "$ref_bin" > "$5" 2>&1 &
}
