#!/usr/bin/env bash
# The whole test suite from a fresh machine: system packages, a venv with every extra, ruff, mypy, pytest; then a
# subset of the tests on the lowest allowed dependency versions (scripts/test-lowest.sh).
# Extra arguments replace the two pytest runs by one with those arguments (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
scripts/setup-venv.sh dev
venv="${AIWATCH_VENV:-.venv}"
export PATH="$PWD/$venv/bin:$PATH"
lint_dirs=(); for d in aiwatch tests bench examples scripts; do [ -e "$d" ] && lint_dirs+=("$d"); done
echo "== ruff"; ruff check "${lint_dirs[@]}"
echo "== mypy"; mypy aiwatch
if [ "$#" -gt 0 ]; then
  echo "== pytest $*"; python -m pytest -q -ra --durations=20 "$@"
else
  # The suite's time budget is ~10 min on 2 cores, so two runs (each prints its 15 slowest tests). First everything
  # but the `alone` tests on every core (pytest-xdist; tests/conftest.py keeps a module's tests, and the console's
  # and diagnose's shared stacks, on one worker). Then the `alone` tests one at a time: they assert on what a demo's
  # load does to its latency, which a test running beside them on the same cores would change. Both run even when
  # the first fails, so that one run shows every failure.
  # A hung test fails on its own after pyproject's per-test `timeout`; `timeout` here bounds what that cannot see
  # (a worker that hangs between tests or on its way out), so a run always ends well inside CI's 90 minutes.
  failed=0
  echo "== pytest, every core: all but the 'alone' tests"
  timeout -k 30 1800 python -m pytest -q -ra --durations=15 -n auto --dist loadgroup -m "not alone" || failed=1
  echo "== pytest, one at a time: the 'alone' tests"
  timeout -k 30 1500 python -m pytest -q -ra --durations=15 -m alone || failed=1
  [ "$failed" -eq 0 ]
fi
echo "== lowest versions"; scripts/test-lowest.sh
