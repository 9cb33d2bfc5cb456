#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv.
# Idempotent: a second run only checks that everything is installed.
# torch is pinned to the CPU build through constraints/cpu.txt; set TORCHWICK_CONSTRAINTS to
# another file (or to an empty value) to install a CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CONSTRAINTS=${TORCHWICK_CONSTRAINTS-constraints/cpu.txt}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_args=(-q --disable-pip-version-check)
if [ -n "$CONSTRAINTS" ]; then pip_args+=(-c "$CONSTRAINTS"); fi
.venv/bin/python -m pip install "${pip_args[@]}" --upgrade pip >/dev/null
.venv/bin/python -m pip install "${pip_args[@]}" -e '.[dev]'
