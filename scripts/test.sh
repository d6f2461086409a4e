#!/usr/bin/env bash
# The test command: installs what the tests need if it is missing (scripts/deps.sh test),
# builds the binaries the process tests start, then runs every test (unit tests and the
# multi-process cluster tests in tests/) with nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"
