#!/usr/bin/env bash
# Installs what building (`scripts/deps.sh build`) or building and testing (`scripts/deps.sh
# test`) needs on a Debian machine, skipping whatever is already there:
#   build: protoc + google/protobuf/*.proto (our protos and etcd-client's), libclang (RocksDB bindings)
#   test:  also etcd (the etcd provider tests), nftables (partitions in the chaos test), psql,
#          moto (DynamoDB/S3 tests, from PyPI), the TypeScript SDK of examples/typescript (npm),
#          the restate CLI of tests/cli (npm), the Python SDK of examples/python (PyPI, in its
#          own venv), cargo-nextest, and for the Compose tests podman, podman-compose, runc,
#          iptables, debootstrap (a base image without a registry) and docker-compose (v1, to
#          check the Compose files against Docker's schema), and for the web UI tests chromium and
#          the reference server of tests/web-ui (npm; the origin of the UI files they mirror)
# Run from the repository root (scripts/run.sh and scripts/test.sh do).
# Needs root (or sudo) for apt-get when a package is missing.
set -euo pipefail

what="${1:-build}"
case "$what" in
  build|test) ;;
  *) echo "usage: scripts/deps.sh build|test" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

packages=(protobuf-compiler libprotobuf-dev libclang-dev clang)
if [ "$what" = test ]; then
  packages+=(etcd-server etcd-client nftables)
  packages+=(podman podman-compose runc iptables debootstrap docker-compose containernetworking-plugins
    golang-github-containernetworking-plugin-dnsname)
  # The web UI tests load the real UI in headless Chromium.
  packages+=(chromium)
  # psql, for the PostgreSQL endpoint of the query engine.
  command -v psql >/dev/null || packages+=(postgresql-client)
fi
missing=()
for package in "${packages[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "missing packages (${missing[*]}) and not root: install them with apt-get" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$what" = test ]; then
  if ! python3 -c 'import moto.server' 2>/dev/null; then
    echo "installing moto[server] (PyPI)" >&2
    python3 -m pip install -q 'moto[server]==5.2.1'
  fi
  # The example TypeScript service (the SDK tests run it).
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are missing: install Node.js 20 (e.g. apt-get install nodejs npm)" >&2
    exit 1
  fi
  if [ ! -d examples/typescript/node_modules/@restatedev/restate-sdk ]; then
    echo "installing the TypeScript SDK for examples/typescript (npm)" >&2
    npm ci --prefix examples/typescript --no-audit --no-fund --loglevel=error
  fi
  # The real `restate` CLI (tests/cluster/cli.rs drives it against our node).
  if [ ! -x tests/cli/node_modules/.bin/restate ]; then
    echo "installing the restate CLI for tests/cli (npm)" >&2
    npm ci --prefix tests/cli --no-audit --no-fund --loglevel=error
  fi
  # The reference server, only as the origin of the web UI files the UI tests mirror.
  if ! ls tests/web-ui/node_modules/@restatedev/restate-server-linux-*/bin/restate-server >/dev/null 2>&1; then
    echo "installing the reference server for tests/web-ui (npm)" >&2
    npm ci --prefix tests/web-ui --no-audit --no-fund --loglevel=error
  fi
  # The example Python service (the SDK tests run it), in a venv of its own.
  if ! examples/python/.venv/bin/python -c 'import restate, hypercorn' 2>/dev/null; then
    echo "installing the Python SDK and hypercorn for examples/python (PyPI)" >&2
    python3 -m venv examples/python/.venv
    examples/python/.venv/bin/pip install -q -r examples/python/requirements.txt
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest (crates.io)" >&2
    cargo install --locked cargo-nextest
  fi
fi
