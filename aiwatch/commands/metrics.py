"""``aiwatch metrics``: print the metric contract."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("metrics", help="print every metric aiwatch exports (the metric contract)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aiwatch.metrics import CONTRACT

    if args.json:
        print(json.dumps([{"name": s.name, "type": s.kind, "labels": list(s.labels), "unit": s.unit,
                           "help": s.help} for s in CONTRACT], indent=2))
        return 0
    for spec in CONTRACT:
        print(f"{spec.name:<48} {spec.kind:<10} {','.join(spec.labels)}")
    return 0
