#!/usr/bin/env bash
# Builds the CPU image from docker/Dockerfile and runs the container tests against it
# (tests/deploy/test_container.py): predict with a token, the Open Inference Protocol over
# REST (tritonclient.http, JSON and binary) and gRPC (tritonclient.grpc ModelInfer), TorchServe's
# gRPC Predictions, register from the mounted store, scrape /metrics, SIGTERM during a request
# in flight, exit 0.
#
# Usage: bash docker/test.sh            (from anywhere; needs podman + runc, or ENGINE=docker)
#
# Environment:
#   ENGINE        podman (default) or docker
#   IMAGE         tag to build (default localhost/torchwick:cpu-test)
#   BASE_IMAGE    base for the build. Default with podman: localhost/torchwick-base:bookworm,
#                 made here with debootstrap (Debian 12 + python3) when it does not exist,
#                 because no image registry may be reachable. With docker: python:3.11-slim-bookworm.
#   SKIP_BUILD=1  test an image built before
#
# A local torch wheel (pip's find-links, e.g. /opt/wheels) is copied to docker/wheels/ and
# pinned with TORCH_SPEC, so the build does not download torch. Without one the Dockerfile's
# default (the CPU wheel index) is used.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
IMAGE=${IMAGE:-localhost/torchwick:cpu-test}
PYTHON=${PYTHON:-.venv/bin/python}
started=$(date +%s)

need() { command -v "$1" >/dev/null || { echo "docker/test.sh: $1 is not installed ($2)" >&2; exit 2; }; }
need "$ENGINE" "Debian: apt-get install -y podman runc debootstrap"
[ -x "$PYTHON" ] || { echo "docker/test.sh: $PYTHON missing; run scripts/setup.sh" >&2; exit 2; }

build_flags=()
if [ "$ENGINE" = podman ]; then
  need runc "apt-get install -y runc"
  # This project's machines run podman inside a container: no ulimit changes, chroot builds.
  if [ -z "${CONTAINERS_CONF:-}" ]; then
    conf_dir=$(mktemp -d)
    trap 'rm -rf "$conf_dir"' EXIT
    printf '[containers]\ndefault_ulimits = []\n' > "$conf_dir/containers.conf"
    export CONTAINERS_CONF="$conf_dir/containers.conf"
  fi
  # docker format keeps HEALTHCHECK (the OCI image format has no field for it).
  build_flags+=(--isolation=chroot --format docker)
  BASE_IMAGE=${BASE_IMAGE:-localhost/torchwick-base:bookworm}
else
  BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
fi

make_base_image() {
  need debootstrap "apt-get install -y debootstrap"
  echo "== making $BASE_IMAGE with debootstrap (Debian 12, python3)"
  local rootfs
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # Trust what the host trusts (a TLS-inspecting proxy's CA, for example) during the build.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  tar -C "$rootfs" -c . | "$ENGINE" import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
find_links=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
torch_version=$(sed -n 's/^torch==//p' constraints/cpu.txt)
rm -f docker/wheels/*.whl
for dir in $find_links; do
  wheel=$(ls "$dir"/torch-"$torch_version"*-cp311-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    cp "$wheel" docker/wheels/
    version=$(basename "$wheel" | cut -d- -f2)
    build_args+=(--build-arg "TORCH_SPEC=torch==$version" --build-arg "TORCH_INDEX_URL=")
    echo "== torch from the local wheel $(basename "$wheel")"
    break
  fi
done
build_args+=(--build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
build_args+=(--build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ "$ENGINE" = podman ] && ! podman image exists "$BASE_IMAGE"; then
    make_base_image
  fi
  echo "== building $IMAGE from $BASE_IMAGE"
  build_start=$(date +%s)
  "$ENGINE" build "${build_flags[@]}" "${build_args[@]}" -f docker/Dockerfile -t "$IMAGE" .
  echo "== build took $(( $(date +%s) - build_start )) s"
fi
rm -f docker/wheels/*.whl

echo "== running the container tests against $IMAGE"
test_start=$(date +%s)
TORCHWICK_CONTAINER_IMAGE=$IMAGE TORCHWICK_CONTAINER_ENGINE=$ENGINE \
  "$PYTHON" -m pytest -q -p no:cacheprovider -m container tests/deploy -rs
echo "== container tests took $(( $(date +%s) - test_start )) s; all of docker/test.sh" \
  "$(( $(date +%s) - started )) s"
