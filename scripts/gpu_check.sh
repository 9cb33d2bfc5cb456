#!/usr/bin/env bash
# The GPU pipeline's checks, for the device machine (one NVIDIA H200, no network). Run from the
# repository root there, after scripts/gpu_carry.sh has prepared .gpucarry/ HERE. Two parts, one
# device call each (carried together they exceed the tool's 64 MiB):
#
#   part tw (default): the GPU tests (tests/unit/handlers/test_gpu_pipeline.py), the pipeline's
#     CPU-and-GPU tests with a real server and workers, then benchmarks/gpu_benchmark.py for the
#     in-process ceilings and torchwick serial / pipelined / CUDA graphs.
#       device run: carry [".gpucarry/tw"], command "bash scripts/gpu_check.sh tw", timeout 540
#   part ts: the ceilings again and TorchServe 0.12 on the same GPU, same settings.
#       device run: carry [".gpucarry/ts"], command "bash scripts/gpu_check.sh ts", timeout 420
#
# Everything lands in $OUT (the device tool brings it back): tests.log, bench_<part>.txt and
# bench_<part>.json (images/s, p50/p99, ratios to TorchServe and to the overlapped ceiling),
# gpu.txt. Compare bench_tw.json with bench_ts.json through their ceiling rows (both parts
# measure the same ceiling on a fresh machine of the same kind).
#
# Locally (no GPU) `OUT=/tmp/x bash scripts/gpu_check.sh tw` runs the same steps on the CPU with
# the benchmark's --quick sizes: the GPU tests then skip with their reason.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-tw}
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

{ nvidia-smi -L || echo "no nvidia-smi"; } >"$OUT/gpu.txt" 2>&1
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' >>"$OUT/gpu.txt" 2>&1
device=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
# Sized to fit the device time of one session (both parts, machine starts included).
sizes=(--seconds 15 --warmup 4 --ceiling-seconds 8 --workdir /tmp/gpu-bench-work)
if [[ $device == cpu ]]; then sizes=(--quick --workdir /tmp/gpu-bench-work); fi

if [[ $part == tw ]]; then
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "the carried wheels are for CPython 3.12: using $PY's own packages"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  elif compgen -G ".gpucarry/tw/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/tw-site .gpucarry/tw/*.whl || exit 1
    export PYTHONPATH=/tmp/tw-site:$PWD
  else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs -o timeout=120 \
    tests/unit/handlers/test_gpu_pipeline.py tests/unit/handlers/test_batch_stages.py \
    tests/unit/server/workers/test_pipelined_loop.py \
    tests/integration/workers/test_pipeline_served.py 2>&1 | tee "$OUT/tests.log"
  timeout 300 "$PY" benchmarks/gpu_benchmark.py --device "$device" "${sizes[@]}" --cuda-graphs \
    --skip-torchserve --json "$OUT/bench_tw.json" 2>&1 | tee "$OUT/bench_tw.txt"
elif [[ $part == ts ]]; then
  carry=.gpucarry/ts
  for f in ts-site.tar.xz jar.tar.xz jre.tar.xz; do
    [[ -f $carry/$f ]] || { echo "missing $carry/$f: run scripts/gpu_carry.sh ts here first"; exit 1; }
  done
  rm -rf /tmp/ts-site /tmp/ts-jar /tmp/jre /tmp/ts-bin
  mkdir -p /tmp/ts-site /tmp/ts-jar /tmp/ts-bin
  tar -C /tmp/ts-site -xJf "$carry/ts-site.tar.xz"
  tar -C /tmp/ts-jar -xJf "$carry/jar.tar.xz"
  tar -C /tmp -xJf "$carry/jre.tar.xz"
  # The frontend jar again, from its contents (the manifest first, as jar tools write it).
  "$PY" - <<'PYEOF' || exit 1
import os, zipfile
root = "/tmp/ts-jar"
target = "/tmp/ts-site/ts/frontend/model-server.jar"
names = []
for folder, _, files in os.walk(root):
    names += [os.path.relpath(os.path.join(folder, f), root) for f in files]
names.sort(key=lambda n: (n != "META-INF/MANIFEST.MF", n))
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as jar:
    for name in names:
        jar.write(os.path.join(root, name), name)
print("rebuilt", target, len(names), "entries")
PYEOF
  python_path=$(command -v "$PY")
  for tool in torchserve:ts.model_server:start torch-model-archiver:model_archiver.model_packaging:generate_model_archive; do
    IFS=: read -r name module func <<<"$tool"
    printf '#!%s\nimport sys\nfrom %s import %s\nsys.exit(%s())\n' "$python_path" "$module" "$func" "$func" >"/tmp/ts-bin/$name"
    chmod +x "/tmp/ts-bin/$name"
  done
  export JAVA_HOME=/tmp/jre PATH=/tmp/jre/bin:/tmp/ts-bin:$PATH
  export PYTHONPATH=/tmp/ts-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  java -version >>"$OUT/gpu.txt" 2>&1
  timeout 360 "$PY" benchmarks/gpu_benchmark.py --device "$device" "${sizes[@]}" --only-torchserve \
    --torchserve-bin /tmp/ts-bin --json "$OUT/bench_ts.json" 2>&1 | tee "$OUT/bench_ts.txt"
else
  echo "usage: scripts/gpu_check.sh [tw|ts]"; exit 2
fi
