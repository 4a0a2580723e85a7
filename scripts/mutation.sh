#!/usr/bin/env bash
# Mutation testing of aiwatch's core: timing (the timeline and RequestRecorder), the checks of the numbers the app
# hands it (amounts), the Content-Length and Server-Timing parsers, the label guard, the recorder factory, the drift
# statistics and counting. Which files are mutated and which tests run against each mutant are in pyproject.toml
# ([tool.mutmut]); mutmut runs only the tests that reach the mutated function. Prints the kill rate per module
# (scripts/mutation_report.py; survivors judged equivalent to the original code are listed, with why, in
# scripts/mutation_equivalent.txt).
#
# Not part of CI: a run from scratch (1717 mutants) is CPU-heavy: 10-20 mutants a minute with one worker on the
# shared 2-core development machine, 1.5-3 hours (bench/RESULTS.md). Results are cached in mutants/: a second
# run checks only the functions that changed (reset a verdict to rerun it after adding tests).
#
#   scripts/mutation.sh                      # everything
#   scripts/mutation.sh "aiwatch.timing*"    # the mutants of one module (mutmut's name patterns)
#   MUTMUT_CHILDREN=2 scripts/mutation.sh    # more workers (default 1: the machine is shared)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AIWATCH_VENV:-.venv}"
[ -x "$venv/bin/mutmut" ] || "$venv/bin/python" -m pip install -q "mutmut>=3.3,<4"
"$venv/bin/mutmut" run --max-children "${MUTMUT_CHILDREN:-1}" "$@" > mutants-run.log 2>&1 || {
    tail -c 2000 mutants-run.log; exit 1; }
"$venv/bin/python" scripts/mutation_report.py --survivors
