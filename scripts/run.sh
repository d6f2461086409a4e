#!/usr/bin/env bash
# Installs what the build needs if it is missing, builds the release binaries and starts one
# node with every role (data under ./restate-data). Arguments go to `restate`, e.g.
#   scripts/run.sh --config-file config/single-node.toml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
exec cargo run --release --locked --bin restate -- "$@"
