#!/usr/bin/env bash
# Builds the restate-rs container image from the release binaries built on this machine (no
# second Rust build inside a container), with docker where an engine answers, else podman
# (installed and configured when missing, Debian).
#
#   scripts/containers.sh image      builds $IMAGE (default localhost/restate-rs:latest)
#   scripts/containers.sh base       the runtime base image, $RUNTIME_IMAGE (see below)
#   scripts/containers.sh s3-image   $S3_IMAGE (default localhost/restate-rs-moto:latest): an
#                                    S3-compatible store (moto) for docker/compose.moto.yaml,
#                                    where MinIO cannot be pulled; kept when it exists (FORCE=1
#                                    rebuilds it)
#   scripts/containers.sh engine     prints the engine it uses (docker or podman)
#
# RUNTIME_IMAGE: the image the runtime stage starts from. Unset, it is
# docker.io/library/debian:bookworm-slim when a registry answers, else
# localhost/restate-rs-base:bookworm, made once with debootstrap (Debian bookworm, minbase,
# plus ca-certificates, curl and jq): bookworm's glibc is the one the binaries were built against.
# PROFILE=debug builds the image from the debug binaries instead (quicker to build, larger).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/restate-rs:latest}"
S3_IMAGE="${S3_IMAGE:-localhost/restate-rs-moto:latest}"
LOCAL_BASE=localhost/restate-rs-base:bookworm
REGISTRY_BASE=docker.io/library/debian:bookworm-slim
PROFILE="${PROFILE:-release}"
MOTO_VERSION=5.2.1

say() { echo "containers.sh: $*" >&2; }
die() { say "$*"; exit 1; }

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null && sudo="sudo"
fi

apt_install() {
  [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ] || die "missing $*: install them with apt-get (needs root)"
  command -v apt-get >/dev/null || die "missing $*: install them with your package manager"
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# docker when its engine answers (`docker --version` alone is only the client), else podman.
engine() {
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    echo docker
    return
  fi
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v podman-compose >/dev/null || missing+=(podman-compose)
  # runc: crun fails on some hosts' cgroups; iptables: bridge networks; the rest: rootless use.
  command -v runc >/dev/null || missing+=(runc)
  command -v iptables >/dev/null || missing+=(iptables)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}" containernetworking-plugins \
    golang-github-containernetworking-plugin-dnsname slirp4netns uidmap fuse-overlayfs
  configure_podman_runtime
  echo podman
}

# Podman's default OCI runtime (crun) cannot create containers under some cgroup setups; runc
# can. Switch to runc only when the default fails, and say so.
configure_podman_runtime() {
  local conf=/etc/containers/containers.conf.d/restate-rs-runtime.conf
  [ -e "$conf" ] && return
  [ "$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null)" = runc ] && return
  local probe
  probe="$(podman images -q --filter reference="$LOCAL_BASE" 2>/dev/null | head -1)"
  [ -n "$probe" ] || probe="$(podman images -q 2>/dev/null | head -1)"
  if [ -n "$probe" ] && podman run --rm "$probe" true >/dev/null 2>&1; then
    return
  fi
  say "using runc as podman's runtime ($conf): the default one failed or there was no image to try it on"
  $sudo mkdir -p "$(dirname "$conf")"
  printf '[engine]\nruntime = "runc"\n' | $sudo tee "$conf" >/dev/null
}

image_exists() { "$1" image inspect "$2" >/dev/null 2>&1; }

# Debian bookworm minbase with ca-certificates, curl and jq, imported as $LOCAL_BASE.
debootstrap_base() {
  local engine="$1" extra="$2" name="$3"
  command -v debootstrap >/dev/null || apt_install debootstrap
  local root
  root="$(mktemp -d /tmp/restate-rs-rootfs.XXXXXX)"
  say "making $name with debootstrap (Debian bookworm, about a minute)"
  local mirror
  mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
  $sudo debootstrap --variant=minbase --include="ca-certificates,curl,jq${extra:+,$extra}" \
    bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  $sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale
  $sudo tar -C "$root" -c . | "$engine" import -q - "$name" >/dev/null
  $sudo rm -rf "$root"
}

# Prints the runtime base image, making the local one when no registry answers.
base() {
  local engine="$1"
  if [ -n "${RUNTIME_IMAGE:-}" ]; then
    echo "$RUNTIME_IMAGE"
    return
  fi
  if image_exists "$engine" "$REGISTRY_BASE"; then
    echo "$REGISTRY_BASE"
    return
  fi
  if image_exists "$engine" "$LOCAL_BASE"; then
    echo "$LOCAL_BASE"
    return
  fi
  if timeout 60 "$engine" pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then
    echo "$REGISTRY_BASE"
    return
  fi
  say "no registry answers for $REGISTRY_BASE"
  debootstrap_base "$engine" "" "$LOCAL_BASE"
  echo "$LOCAL_BASE"
}

build_args() {
  local engine="$1"
  # podman writes OCI images by default, which drop HEALTHCHECK.
  [ "$engine" = podman ] && echo "--format=docker"
  return 0
}

image() {
  local engine="$1" base_image
  base_image="$(base "$engine")"
  local flag=--release
  [ "$PROFILE" = release ] || flag=""
  say "building the $PROFILE binaries"
  scripts/deps.sh build
  cargo build $flag --locked --bin restate --bin restatectl
  local target="${CARGO_TARGET_DIR:-target}"
  local context
  context="$(mktemp -d /tmp/restate-rs-image.XXXXXX)"
  cp "$target/$PROFILE/restate" "$target/$PROFILE/restatectl" "$context/"
  # Symbol tables are a quarter of the node binary.
  if command -v strip >/dev/null; then strip "$context/restate" "$context/restatectl"; fi
  say "building $IMAGE on $base_image with $engine"
  # shellcheck disable=SC2046
  "$engine" build $(build_args "$engine") -q --target prebuilt --build-arg "RUNTIME_IMAGE=$base_image" \
    -f docker/Dockerfile -t "$IMAGE" "$context" >/dev/null
  rm -rf "$context"
  say "built $IMAGE"
}

# moto (S3) on Python 3.11, from the wheels pip downloads on this machine: the build itself
# needs no network.
s3_image() {
  local engine="$1" python_base=localhost/restate-rs-python:bookworm
  if [ -z "${FORCE:-}" ] && image_exists "$engine" "$S3_IMAGE"; then
    say "$S3_IMAGE exists"
    return
  fi
  image_exists "$engine" "$python_base" || debootstrap_base "$engine" python3-venv "$python_base"
  local context
  context="$(mktemp -d /tmp/restate-rs-moto.XXXXXX)"
  say "downloading moto[server]==$MOTO_VERSION (PyPI)"
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --implementation cp \
    -d "$context/wheels" "moto[server]==$MOTO_VERSION"
  cp docker/moto/serve.py "$context/"
  cat > "$context/Containerfile" <<EOF
FROM $python_base
COPY wheels /wheels
RUN python3 -m venv /opt/moto && /opt/moto/bin/pip install -q --no-index --find-links /wheels 'moto[server]==$MOTO_VERSION' && rm -rf /wheels
COPY serve.py /opt/moto/serve.py
EXPOSE 9000
ENTRYPOINT ["/opt/moto/bin/python", "/opt/moto/serve.py"]
EOF
  # shellcheck disable=SC2046
  "$engine" build $(build_args "$engine") -q -f "$context/Containerfile" -t "$S3_IMAGE" "$context" >/dev/null
  rm -rf "$context"
  say "built $S3_IMAGE"
}

case "${1:-}" in
  engine) engine ;;
  base) base "$(engine)" ;;
  image) image "$(engine)" ;;
  s3-image) s3_image "$(engine)" ;;
  *) die "usage: scripts/containers.sh image|base|s3-image|engine" ;;
esac
