#!/usr/bin/env bash
# The tests that start no server (`-m "not slow and not alone"`) on other Python versions, each in its own venv with
# every extra (.venv-py3XX). Not part of CI (about 5 minutes per version on 2 cores); run by hand before claiming a
# version in pyproject's classifiers. Usage: scripts/test-pythons.sh [3.12 3.13 ...] (default: 3.12 3.13); each
# version is taken from pyenv's versions, else from PATH (python3.12). A version that is not found is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${AIWATCH_VENV:-.venv}/bin/uv"
[ -x "$uv" ] || { echo "no uv at $uv: run scripts/setup-venv.sh dev first" >&2; exit 2; }
versions=("$@"); [ "${#versions[@]}" -gt 0 ] || versions=(3.12 3.13)
failed=()
for version in "${versions[@]}"; do
  python=""
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/python "$(command -v "python$version" || true)"; do
    [ -x "$candidate" ] && { python="$candidate"; break; }
  done
  [ -n "$python" ] || { echo "Python $version: not found (pyenv or python$version on PATH)" >&2; exit 2; }
  venv=".venv-py${version//./}"
  echo "== Python $version ($python) in $venv"
  [ -x "$venv/bin/python" ] || "$uv" venv -q -p "$python" "$venv"
  "$uv" pip install -q -p "$venv/bin/python" -e ".[dev]"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -n auto -m "not slow and not alone" || failed+=("$version")
done
[ "${#failed[@]}" -eq 0 ] || { echo "failed on Python ${failed[*]}" >&2; exit 1; }
