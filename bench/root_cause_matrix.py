"""The root-cause matrix, run and printed as the table published in docs/diagnose.md and bench/RESULTS.md.

    PYTHONPATH=. python bench/root_cause_matrix.py                 # every scenario at +50 and +200 ms (~2 min)
    PYTHONPATH=. python bench/root_cause_matrix.py --runs 3        # three runs, one table each, and the totals
    PYTHONPATH=. python bench/root_cause_matrix.py --json out.json
    PYTHONPATH=. python bench/root_cause_matrix.py --runs 3 --brief   # what docs/diagnose.md and RESULTS.md show

Needs Prometheus and Alertmanager (Debian: ``prometheus``, ``prometheus-alertmanager``). The matrix itself is
:mod:`aiwatch.demo.matrix` (``tests/demo/test_root_cause_matrix.py`` asserts it); this script adds the machine's
load and the versions, and totals over several runs. Exit code 0 when every cell of every run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def versions() -> str:
    from importlib.metadata import version

    from aiwatch.demo import alerting

    found = alerting.find_binaries()
    prom = "-"
    if found:
        out = subprocess.run([found[0], "--version"], capture_output=True, text=True).stdout
        prom = out.split()[2] if len(out.split()) > 2 else out.strip()
    return (f"Python {platform.python_version()}, grpcio {version('grpcio')}, FastAPI {version('fastapi')}, "
            f"Prometheus {prom}, {os.cpu_count()} CPUs")


def main() -> int:
    from aiwatch.demo import matrix

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="every run's cells as JSON")
    parser.add_argument("--brief", action="store_true", help="alerts in a few characters, as docs/diagnose.md shows")
    args = parser.parse_args()
    print(f"root-cause matrix: {versions()}", flush=True)
    runs: list[dict[str, Any]] = []
    cells = attributed = false = passed = 0
    for i in range(args.runs):
        load_before = os.getloadavg()[0]
        started = time.strftime("%H:%M UTC", time.gmtime())
        result = matrix.run_matrix(say=lambda line: print(line, flush=True))
        print(f"\n== run {i + 1} ({started}, load average {load_before:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after)\n\n{matrix.format_table(result, args.brief)}\n", flush=True)
        runs.append(result.as_dict())
        cells += len(result.cells)
        attributed += sum(c.attributed for c in result.cells)
        false += sum(c.falsely_attributed for c in result.cells)
        passed += sum(c.passed for c in result.cells)
    if args.runs > 1:
        print(f"== {args.runs} runs: AC@1 {attributed}/{cells} = {attributed / cells:.0%}, false attributions "
              f"{false}/{cells} = {false / cells:.0%}, {passed}/{cells} cells passed every check")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
    return 0 if passed == cells else 1


if __name__ == "__main__":
    sys.exit(main())
