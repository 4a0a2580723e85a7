"""``python -m aiwatch.demo.matrix [--json PATH] [--scenario NAME ...]``: run the matrix and print its table."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from aiwatch.demo import scenarios
from aiwatch.demo.matrix.cells import MatrixOptions
from aiwatch.demo.matrix.run import run_matrix
from aiwatch.demo.matrix.table import format_table
from aiwatch.demo.processes import DemoFailed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aiwatch.demo.matrix [--json PATH]``: run the matrix and print its table."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m aiwatch.demo.matrix",
                                     description="Run the root-cause matrix and print its table.")
    parser.add_argument("--json", metavar="PATH", help="also write every cell's result as JSON")
    parser.add_argument("--scenario", action="append", choices=list(scenarios.FAULTS),
                        help="only these scenarios (repeatable; default: all)")
    args = parser.parse_args(argv)
    options = MatrixOptions(scenarios=tuple(args.scenario) if args.scenario else scenarios.FAULTS)
    try:
        result = run_matrix(options, say=lambda line: print(line, flush=True))
    except DemoFailed as exc:
        print(f"root-cause matrix: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return 0 if all(c.passed for c in result.cells) else 1


if __name__ == "__main__":
    sys.exit(main())
