#!/usr/bin/env bash
# Chaos run: a 3-node restate-rs cluster on this machine under random faults (kill -9 and
# restart, SIGSTOP/SIGCONT pauses, network partitions of one node through nftables and
# cgroups, trims just below the tail) while `restate-bench log --verify` appends through
# every node, compare-and-swap clients write metadata keys through every admin API, and
# clients add to counter objects through every ingress while workflows complete.
# Prints the verdict: acknowledged/lost/duplicated records, whether the metadata history is
# linearizable, the acknowledged and unknown-outcome adds (each counter is checked to hold
# them), and how long the cluster took to serve again after the faults stopped.
#
#   benches/chaos.sh [--duration 10m] [--seed N] [--release]
#
# Partitions need root and nftables (`apt-get install nftables`); without them the run
# says so and uses the other faults. CI runs the same test for 45 s.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10m
seed=""
profile=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --release) profile=(--release); shift ;;
    *) echo "unknown argument: $1 (use --duration 10m, --seed N, --release)" >&2; exit 2 ;;
  esac
done
case "$duration" in
  *[0-9]s|*[0-9]m|*[0-9]) ;;
  *) echo "--duration $duration: expected seconds or minutes, e.g. 90s or 10m" >&2; exit 2 ;;
esac
if [ "$(id -u)" -eq 0 ] && ! command -v nft >/dev/null; then
  apt-get install -y -qq --no-install-recommends nftables >/dev/null || true
fi

cargo build "${profile[@]}" --locked --bins
export RESTATE_CHAOS_DURATION="$duration"
[ -n "$seed" ] && export RESTATE_CHAOS_SEED="$seed"
# The test prints its summary (JSON) as the last line of its output.
cargo nextest run "${profile[@]}" --locked --profile chaos -p restate-cluster-tests --no-capture \
  -E 'test(chaos_keeps_acknowledged_records)' 2>&1 | tee /tmp/restate-chaos.out
grep -E '^\{"' /tmp/restate-chaos.out | tail -n 1
