#!/usr/bin/env bash
# Creates .venv (or $AIWATCH_VENV) and installs aiwatch with the given extras (default: dev = everything).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
venv="${AIWATCH_VENV:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[$extras]"
echo "venv ready: $venv (aiwatch[$extras])"
