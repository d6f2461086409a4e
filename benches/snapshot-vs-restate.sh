#!/usr/bin/env bash
# A partition with STATE_MIB of state, snapshotted into S3 (moto on loopback) and restored, on
# restate-rs and on the reference Restate server (npm @restatedev/restate-server and
# @restatedev/restatectl), one after the other on this machine. For each server: one virtual
# object key (so one partition) gets STATE_MIB values of 1 MiB of random text through the
# TypeScript example service plus a large-state object (`examples/typescript/blob.js`, `Blob/big/fill`); then
#   create  — the time of `restatectl snapshots create` (every partition; the big one dominates);
#   restore — the node is stopped, its partition store deleted, and started again: the time from
#             the start until `Blob/big/count` answers with every value (the node restored the
#             partition from the snapshot and serves it).
# Completed invocations are not kept (`default-journal-retention = 0s`) on both servers, so the
# partition holds the state only.
#
#   benches/snapshot-vs-restate.sh
#
# Environment (all optional): STATE_MIB=1024, SERVERS="ours reference", REFERENCE_VERSION=1.7.12,
# BENCH_PROFILE=release. Needs node and npm, curl, python3 with moto[server] and boto3.
set -euo pipefail
cd "$(dirname "$0")/.."

state_mib="${STATE_MIB:-1024}"
per_call=4
ref_version="${REFERENCE_VERSION:-1.7.12}"
ref_dir="${XDG_CACHE_HOME:-$HOME/.cache}/restate-rs/reference/restate-$ref_version"

for tool in node npm curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
source benches/lib.sh
source benches/servers.sh

ref_ctl=$(find "$ref_dir/node_modules" -type f -name restatectl -path '*restatectl-*' -print -quit 2>/dev/null || true)
if [ -z "$ref_ctl" ]; then
  npm install --prefix "$ref_dir" --no-audit --no-fund --loglevel=error "@restatedev/restatectl@$ref_version" >&2
  ref_ctl=$(find "$ref_dir/node_modules" -type f -name restatectl -path '*restatectl-*' -print -quit)
fi
[ -x "$ref_ctl" ] || chmod +x "$ref_ctl"

# moto, one request at a time (as the tests run it), on a free port.
moto_port=$(pick_port 5500)
python3 -c "
import os
os.environ['MOTO_PORT'] = '$moto_port'
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple('127.0.0.1', $moto_port, DomainDispatcherApplication(create_backend_app), threaded=False)
" > "$work/moto.log" 2>&1 &
moto_pid=$!; pids+=("$moto_pid"); disown "$moto_pid"
wait_for 30 "moto" port_open "$moto_port"
python3 -c "
import boto3
boto3.client('s3', endpoint_url='http://127.0.0.1:$moto_port', region_name='us-east-1',
             aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='snapshots')
"

now_ms() { date +%s%3N; }

measure() { # label, launcher, restatectl command (with its address flag)
  local label=$1 launcher=$2 ctl=$3 out="$work/$1" service_port admin ingress fabric pid service_pid
  mkdir -p "$out"
  echo "== $label ==" >&2
  service_port=$(pick_port 9080)
  PORT=$service_port node examples/typescript/blob.js > "$out/service.log" 2>&1 &
  service_pid=$!; pids+=("$service_pid"); disown "$service_pid"
  wait_for 30 "the service" port_open "$service_port"
  admin=$(pick_port 9070); ingress=$(pick_port 8080); fabric=$(pick_port 5122)
  ctl=${ctl//FABRIC/$fabric}
  local settings="RESTATE_DEFAULT_JOURNAL_RETENTION=0s RESTATE_WORKER__SNAPSHOTS__DESTINATION=s3://snapshots/$label \
RESTATE_WORKER__SNAPSHOTS__AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port RESTATE_WORKER__SNAPSHOTS__AWS_ALLOW_HTTP=true \
RESTATE_WORKER__SNAPSHOTS__AWS_REGION=us-east-1 RESTATE_WORKER__SNAPSHOTS__AWS_ACCESS_KEY_ID=test \
RESTATE_WORKER__SNAPSHOTS__AWS_SECRET_ACCESS_KEY=test"
  SERVER_ENV="$settings" "$launcher" "$out/data" "$admin" "$ingress" "$fabric" "$out/server.log"
  pid=$!; pids+=("$pid"); disown "$pid"
  wait_for 60 "$label" bash -c "curl -fs http://127.0.0.1:$admin/health && curl -fs http://127.0.0.1:$ingress/restate/health"
  wait_for 30 "the registration" curl -fsS -X POST "http://127.0.0.1:$admin/deployments" \
    --json "{\"uri\":\"http://127.0.0.1:$service_port\"}" -o /dev/null
  local count_url="http://127.0.0.1:$ingress/Blob/big/count"
  wait_for 20 "a first call" curl -fs -X POST "$count_url" --json 'null' -o /dev/null

  local started calls=$((state_mib / per_call)) count
  started=$(now_ms)
  for _ in $(seq "$calls"); do
    curl -fsS -X POST "http://127.0.0.1:$ingress/Blob/big/fill" --json "{\"values\":$per_call,\"kib\":1024}" -o /dev/null
  done
  echo "load: $((calls * per_call)) MiB in $(( $(now_ms) - started )) ms" >&2
  sleep 10

  started=$(now_ms)
  $ctl snapshots create > "$out/create.txt" 2>&1 || { cat "$out/create.txt" >&2; exit 1; }
  echo $(( $(now_ms) - started )) > "$out/create_ms"
  cat "$out/create.txt" >&2

  stop "$pid"
  du -sb "$out/data/node-1/db" | cut -f1 > "$out/store_bytes"
  rm -rf "$out/data/node-1/db"
  started=$(now_ms)
  SERVER_ENV="$settings" "$launcher" "$out/data" "$admin" "$ingress" "$fabric" "$out/server-restart.log"
  pid=$!; pids+=("$pid"); disown "$pid"
  local want=$((calls * per_call))
  wait_for 600 "$label to serve the restored partition" \
    bash -c "[ \"\$(curl -fs -X POST $count_url --json null)\" = $want ]" \
    || { tail -n 30 "$out/server-restart.log" >&2; exit 1; }
  echo $(( $(now_ms) - started )) > "$out/restore_ms"
  stop "$pid"; stop "$service_pid"
  echo "$label: store $(cat "$out/store_bytes") bytes, create $(cat "$out/create_ms") ms, restore+serve $(cat "$out/restore_ms") ms" >&2
}

for server in ${SERVERS:-ours reference}; do
  case "$server" in
    ours) measure restate-rs start_ours "$bin/restatectl -s http://127.0.0.1:FABRIC" ;;
    reference) measure reference start_reference "$ref_ctl --address http://127.0.0.1:FABRIC" ;;
    *) echo "unknown server $server (ours, reference)" >&2; exit 2 ;;
  esac
done

printf '\n%-12s %16s %12s %22s\n' server store-bytes create-ms restore-and-serve-ms
for label in restate-rs reference; do
  [ -f "$work/$label/restore_ms" ] || continue
  printf '%-12s %16s %12s %22s\n' "$label" "$(cat "$work/$label/store_bytes")" "$(cat "$work/$label/create_ms")" \
    "$(cat "$work/$label/restore_ms")"
done
if [ -f "$work/restate-rs/restore_ms" ] && [ -f "$work/reference/restore_ms" ]; then
  python3 -c "
ours_c, ref_c = $(cat "$work/restate-rs/create_ms"), $(cat "$work/reference/create_ms")
ours_r, ref_r = $(cat "$work/restate-rs/restore_ms"), $(cat "$work/reference/restore_ms")
print(f'ratios restate-rs / reference: create {ours_c / ref_c:.2f}x, restore and serve {ours_r / ref_r:.2f}x')"
fi
