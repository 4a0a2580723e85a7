#!/usr/bin/env bash
# The same gate for cron or a CI step: publish tonight's scores only if `aiwatch drift` finds no drift.
#   examples/batch_drift_gate/gate.sh reference.csv tonight.csv scores/
set -uo pipefail
reference="$1" current="$2" publish_dir="$3"
aiwatch drift "$reference" "$current" --rule any
case $? in
  0) mkdir -p "$publish_dir" && cp "$current" "$publish_dir/" && echo "gate: no drift, published" ;;
  1) echo "gate: drift detected, scores held back" >&2; exit 1 ;;
  *) echo "gate: drift check failed" >&2; exit 2 ;;
esac
