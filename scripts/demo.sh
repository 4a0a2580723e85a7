#!/usr/bin/env bash
# The main job from a fresh machine: a venv with aiwatch and the demo's dependencies (pip only: the demo needs no
# system package; Redis is optional, via --redis URL with AIWATCH_EXTRAS=demo,console,grpc,rules,redis), then
# `aiwatch demo` with the given arguments.
#   scripts/demo.sh                          # the flash-sale demo with the console, until Ctrl-C
#   scripts/demo.sh --headless --duration 60 # one cycle, then the per-stage summary
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh "${AIWATCH_EXTRAS:-demo,console,grpc,rules}"  # rules: the demo renders aiwatch's alert rules for its Prometheus
venv="${AIWATCH_VENV:-.venv}"
exec "$venv/bin/aiwatch" demo "$@"
