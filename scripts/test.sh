#!/usr/bin/env bash
# The whole test suite from a fresh machine: system packages, a venv with every extra, ruff, mypy, pytest; then a
# subset of the tests on the lowest allowed dependency versions (scripts/test-lowest.sh).
# Extra arguments go to the first pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
scripts/setup-venv.sh dev
venv="${AIWATCH_VENV:-.venv}"
export PATH="$PWD/$venv/bin:$PATH"
lint_dirs=(); for d in aiwatch tests bench examples scripts; do [ -e "$d" ] && lint_dirs+=("$d"); done
echo "== ruff"; ruff check "${lint_dirs[@]}"
echo "== mypy"; mypy aiwatch
echo "== pytest"; python -m pytest -q -ra --durations=20 "$@"  # the 20 slowest: the suite's time budget is ~10 min
echo "== lowest versions"; scripts/test-lowest.sh
