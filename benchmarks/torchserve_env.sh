#!/usr/bin/env bash
# Build (once) a virtual environment holding real TorchServe 0.12.0 and torch-model-archiver
# 0.12.0, used by the interop checks and side-by-side benchmarks. It lives outside the repository
# so that neither pytest nor ruff ever walks into it.
#
# Usage: benchmarks/torchserve_env.sh            (venv at /work/tsvenv)
#        TORCHSERVE_VENV=/some/dir benchmarks/torchserve_env.sh
#
# Idempotent: an existing venv is reused, and pip skips what is already installed. Exits non-zero
# when the finished venv cannot import TorchServe and the archiver.
set -euo pipefail

VENV="${TORCHSERVE_VENV:-/work/tsvenv}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi

# torch 2.13.0 resolves to the CPU wheel from the local wheel directory (see ENVIRONMENT.md);
# TorchServe's wheel forgets pyyaml, so it is named here explicitly.
"$VENV/bin/pip" install --quiet \
    torch==2.13.0 torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml numpy

"$VENV/bin/python" -c 'import ts, model_archiver; print("torchserve venv ready:", ts.__file__)'
test -x "$VENV/bin/torchserve"
test -x "$VENV/bin/torch-model-archiver"
