#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on the GPU machine, which has no network: run this
# HERE (a development machine with the package registry), then carry the folders named below
# to the device machine (the device tool's `carry`). Both land in .gpucarry/ (git-ignored).
#
#   .gpucarry/tw/  wheels (CPython 3.12, manylinux x86_64) of torchwick's dependencies that the
#                  GPU machine's image lacks or has in other versions, and pytest-asyncio.
#                  About 15 MB. Needed by part `tw` (the default).
#   .gpucarry/ts/  TorchServe 0.12 for part `ts`: its Python packages from $TORCHSERVE_VENV
#                  (default /work/tsvenv, built by benchmarks/torchserve_env.sh) without the
#                  45 MB frontend jar, the jar's contents (natives for other platforms left
#                  out) as jar.tar.xz, and a Java 17 runtime cut down with jlink, as jre.tar.xz.
#                  About 48 MB. The image has no Java.
#
# The two parts stay under the tool's 64 MiB per call only when carried separately.
# Usage: scripts/gpu_carry.sh [tw|ts|all]      (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
venv=${TORCHSERVE_VENV:-/work/tsvenv}
mkdir -p .gpucarry

# Pinned to the versions this checkout is developed and tested with.
TW_WHEELS=(
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing_extensions==4.16.0 fastapi==0.165.0 starlette==1.10.0 anyio==4.16.0
  uvicorn==0.54.0 httptools==0.9.0 python-multipart==0.0.34
  grpcio==1.85.3 grpcio-health-checking==1.81.1 grpcio-reflection==1.81.1
  protobuf==6.33.6 googleapis-common-protos==1.76.0
  cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
  msgpack==1.2.4 prometheus_client==0.26.0 pytest-asyncio==1.5.0
  opentelemetry-api==1.45.2 annotated-doc==0.0.7
)

if [[ $part == tw || $part == all ]]; then
  rm -rf .gpucarry/tw && mkdir -p .gpucarry/tw
  platforms=()
  for n in 17 27 28 31 34 35 38 39; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    "${platforms[@]}" -d .gpucarry/tw "${TW_WHEELS[@]}"
  echo "tw: $(ls .gpucarry/tw | wc -l) wheels, $(du -sh .gpucarry/tw | cut -f1)"
fi

if [[ $part == ts || $part == all ]]; then
  site=$(ls -d "$venv"/lib/python3*/site-packages)
  rm -rf .gpucarry/ts && mkdir -p .gpucarry/ts
  # The Python side of TorchServe and the archiver (pure Python), the jar excluded.
  tar -C "$site" --exclude='ts/frontend/model-server.jar' --exclude='__pycache__' -cJf \
    .gpucarry/ts/ts-site.tar.xz ts model_archiver enum_compat-0.0.3.dist-info \
    torchserve-0.12.0.dist-info torch_model_archiver-0.12.0.dist-info
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  mkdir "$scratch/jar"
  (cd "$scratch/jar" && unzip -q "$site/ts/frontend/model-server.jar" &&
    rm -rf META-INF/native/*windows* META-INF/native/*osx* META-INF/native/*aarch* \
      META-INF/native/*macos* META-INF/native/*kqueue*)
  tar -C "$scratch/jar" -cf - . | xz -9 -T2 >.gpucarry/ts/jar.tar.xz
  jlink --add-modules java.base,java.logging,java.management,java.naming,java.sql,java.xml,java.desktop,jdk.unsupported,java.net.http,jdk.crypto.ec,java.security.jgss,java.instrument,jdk.management,java.scripting,java.compiler,jdk.zipfs,java.prefs,java.rmi \
    --strip-debug --no-header-files --no-man-pages --compress=2 --output "$scratch/jre"
  tar -C "$scratch" -cJf .gpucarry/ts/jre.tar.xz jre
  echo "ts: $(du -sh .gpucarry/ts | cut -f1)"
fi
