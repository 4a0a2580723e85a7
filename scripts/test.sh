#!/usr/bin/env bash
# The whole test suite from a fresh machine: system packages, a venv with every extra, ruff, mypy, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
scripts/setup-venv.sh dev
venv="${AIWATCH_VENV:-.venv}"
export PATH="$PWD/$venv/bin:$PATH"
lint_dirs=(); for d in aiwatch tests bench examples scripts; do [ -e "$d" ] && lint_dirs+=("$d"); done
echo "== ruff"; ruff check "${lint_dirs[@]}"
echo "== mypy"; mypy aiwatch
echo "== pytest"; python -m pytest -q -ra "$@"
