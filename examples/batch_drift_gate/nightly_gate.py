"""A nightly batch-scoring job that publishes tonight's scores only when its inputs did not drift.

    python examples/batch_drift_gate/nightly_gate.py REFERENCE.csv TONIGHT.csv --publish-dir scores/

It runs ``aiwatch drift REFERENCE TONIGHT`` and follows its exit code:

- 0 (no drift): score the batch and publish the scores;
- 1 (drift): hold the scores back and exit 1 so the scheduler marks the run and someone looks at the drift report;
- 2 (nothing tested or error: no rows, none of the reference columns, unreadable file, ...): exit 2 without
  publishing.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

NO_DRIFT, DRIFT, ERROR = 0, 1, 2


def drift_check(reference: Path, current: Path) -> int:
    """``aiwatch drift``'s exit code (its report goes to this job's output).

    ``--rule any``: a gate holds the batch back when any single feature drifted, not only when half of them did
    (Evidently's dataset rule, aiwatch's default).
    """
    command = [sys.executable, "-m", "aiwatch", "drift", str(reference), str(current), "--rule", "any"]
    return subprocess.run(command).returncode


def score(current: Path, out: Path) -> int:
    """The batch model: here a stand-in that scores each row from its basket value."""
    with open(current, newline="") as f, open(out, "w", newline="") as g:
        writer = csv.writer(g)
        writer.writerow(["row", "score"])
        rows = 0
        for rows, record in enumerate(csv.DictReader(f), start=1):
            writer.writerow([rows, round(min(float(record["basket_value"]) / 200.0, 1.0), 4)])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="publish tonight's scores only if the inputs did not drift")
    parser.add_argument("reference", type=Path)
    parser.add_argument("current", type=Path)
    parser.add_argument("--publish-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    code = drift_check(args.reference, args.current)
    if code == NO_DRIFT:
        args.publish_dir.mkdir(parents=True, exist_ok=True)
        rows = score(args.current, args.publish_dir / "scores.csv")
        print(f"gate: no drift; published {rows} scores to {args.publish_dir / 'scores.csv'}")
        return 0
    if code == DRIFT:
        print("gate: input drift detected; scores held back (see the drift report above)", file=sys.stderr)
        return DRIFT
    print(f"gate: the drift check failed (exit {code}); nothing published", file=sys.stderr)
    return ERROR


if __name__ == "__main__":
    sys.exit(main())
