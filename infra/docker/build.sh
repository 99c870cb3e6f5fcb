#!/usr/bin/env bash
# Builds the CPU component image (infra/docker/Dockerfile) with whichever engine this machine has.
#
#   infra/docker/build.sh                 # tags ghcr.io/inspectflow/inspectflow:0.1.0 (COMPONENT_IMAGE)
#   IMAGE=registry.example.com/team/inspectflow:0.1.0 infra/docker/build.sh
#
# Docker builds on the official Python image. Podman does too when a registry answers; when none does, the
# same Debian release and Python minor are bootstrapped locally first (debootstrap, ~2.5 min, once) and
# imported as localhost/bookworm-python:3.11. BASE=official|local forces one. The build's pip uses this
# machine's CA bundle and, when PIP_FIND_LINKS names a folder, the wheels in it (a CPU torch wheel, say).
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-$(sed -n 's/^COMPONENT_IMAGE = "\(.*\)"$/\1/p' components/__init__.py)}
OFFICIAL_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' infra/docker/Dockerfile)
LOCAL_BASE=localhost/bookworm-python:3.11
BASE=${BASE:-auto}
# The commit the image is built from, and whether the tree had changes on top of it (the runs' lineage).
build_args=(--build-arg "GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
git diff --quiet HEAD 2>/dev/null || build_args+=(--build-arg GIT_DIRTY=true)

say() { echo "build.sh: $*" >&2; }

# The Debian mirror this machine's apt uses, for debootstrap.
debian_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print ($1 == "deb") ? $2 : $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

build_local_base() {
  command -v debootstrap >/dev/null || { say "debootstrap is needed to build the local base (apt-get install debootstrap)"; exit 1; }
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  say "no registry: bootstrapping Debian bookworm with Python 3.11 into $root"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$(debian_mirror)" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # The environment the official image sets; an imported file system has none.
  tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$LOCAL_BASE" >/dev/null
}

if docker info >/dev/null 2>&1; then
  engine=(docker build)
  [ "$BASE" = local ] && { say "BASE=local needs podman"; exit 1; }
elif command -v podman >/dev/null; then
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/src/inspectflow/runner/containers.conf}
  engine=(podman build --network host --layers --volume /etc/ssl/certs:/etc/ssl/certs:ro)
  build_args+=(--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
  if [ "$BASE" = auto ]; then
    if podman image exists "$OFFICIAL_BASE" || timeout 60 podman pull -q "docker.io/library/$OFFICIAL_BASE" >/dev/null 2>&1; then
      BASE=official
    else
      BASE=local
    fi
  fi
  if [ "$BASE" = local ]; then
    podman image exists "$LOCAL_BASE" || build_local_base
    build_args+=(--build-arg "PYTHON_IMAGE=$LOCAL_BASE")
  fi
  if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
    engine+=(--volume "$PIP_FIND_LINKS:/find-links:ro")
    build_args+=(--build-arg PIP_FIND_LINKS=/find-links)
    # A CPU torch wheel there replaces the CPU index (which a closed network cannot reach).
    compgen -G "$PIP_FIND_LINKS/torch-*+cpu-*.whl" >/dev/null && build_args+=(--build-arg TORCH_INDEX_URL=)
  fi
else
  say "neither a Docker engine nor podman is here"
  exit 1
fi

say "building $IMAGE with ${engine[0]} (base: ${BASE/auto/official})"
"${engine[@]}" "${build_args[@]}" -f infra/docker/Dockerfile -t "$IMAGE" .
size=$("${engine[0]}" image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE: $((size / 1000000)) MB"
