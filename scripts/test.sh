#!/usr/bin/env bash
# The project's test command: set up .venv, run the static checks, then the whole test suite.
# Extra arguments go to pytest. Exits non-zero when any check fails or when no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1

echo "== ruff"
.venv/bin/ruff check torchwick tests benchmarks examples || exit 1
.venv/bin/ruff format --check torchwick tests benchmarks examples || exit 1
echo "== mypy --strict"
.venv/bin/mypy torchwick || exit 1
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
