#!/usr/bin/env bash
# The test command: installs what the tests need if it is missing (scripts/deps.sh test),
# builds the binaries the process tests start and the container images the Compose tests
# start (scripts/containers.sh, from the release binaries), then runs every test (unit tests
# and the multi-process cluster tests in tests/) with nextest. The Compose tests publish the
# fixed ports of docker/compose*.yaml, so they run on their own after the others.
# With arguments, one nextest run with them, e.g. scripts/test.sh -E 'test(snapshots)'.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo build --workspace --bins --locked
scripts/containers.sh image
scripts/containers.sh s3-image
if [ $# -gt 0 ]; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
fi
compose='test(/^containers::a_/)'
status=0
cargo nextest run --workspace --locked --no-fail-fast -E "not ($compose)" || status=$?
cargo nextest run --locked --no-fail-fast -p restate-cluster-tests -E "$compose" || status=$?
exit $status
