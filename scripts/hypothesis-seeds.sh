#!/usr/bin/env bash
# The property-based tests (every test module that imports Hypothesis) under more seeds than one CI run draws: CI
# draws new examples each run, so a rare failing draw fails some later stop's CI; this finds it first. Not part of
# CI (about a minute per seed on 2 cores).
#   scripts/hypothesis-seeds.sh                   # 10 seeds, every such module, in .venv
#   scripts/hypothesis-seeds.sh 30 tests/drift    # 30 seeds, the modules under tests/drift only
#   AIWATCH_VENV=.venv-lowest scripts/hypothesis-seeds.sh 10 tests/drift tests/feedback
#                                                 # on the lowest allowed versions (scripts/test-lowest.sh makes it)
# A failure prints Hypothesis' falsifying example; rerun it with the seed printed before it
# (pytest --hypothesis-seed=SEED PATH). Exits 1 when any seed failed.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-10}"
shift || true
paths=("${@:-tests}")
python="${AIWATCH_VENV:-.venv}/bin/python"
mapfile -t modules < <(grep -rlE --include='test_*.py' '^(from|import) hypothesis' "${paths[@]}" | sort)
if [ "${#modules[@]}" -eq 0 ]; then
  echo "no test module under ${paths[*]} imports Hypothesis" >&2
  exit 2
fi
echo "${#modules[@]} modules, $seeds seeds, $("$python" -c 'import sys; print(sys.prefix)')"
failed=0
for _ in $(seq 1 "$seeds"); do
  seed=$((RANDOM * 32768 + RANDOM))
  echo "== seed $seed"
  "$python" -m pytest -q -p no:cacheprovider -n auto --dist loadgroup -m "not alone" --hypothesis-seed="$seed" \
      "${modules[@]}" || failed=1
done
exit "$failed"
