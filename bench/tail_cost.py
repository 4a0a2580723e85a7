"""The cost per request of the slow-request counters (the tail ``aiwatch diagnose`` splits), in CPU instructions:
deterministic, unlike timings on a shared machine.

The same raw ASGI app (one ``inference`` phase per request, no framework) instrumented with ``aiwatch.instrument``
serves N requests in-process, under ``valgrind --tool=callgrind``, with:

- ``none``: the default slow threshold (0.3 s): no request is slow, the counters cost one comparison per request;
- ``all``: a threshold below every request: each request also adds its phases (``inference`` and ``overhead``) to
  ``aiwatch_slow_phase_seconds_total`` and counts in ``aiwatch_slow_requests_total``, the worst case.

Instructions per request = (Ir with N requests - Ir with 0 requests) / N, so start-up and imports cancel out.

    python bench/tail_cost.py                 # needs valgrind; a few minutes
    python bench/tail_cost.py --requests 5000
    mkdir /tmp/before && git archive 5262c48 | tar -x -C /tmp/before   # main before the slow counters
    python bench/tail_cost.py --source /tmp/before --default-only       # it has no slow_threshold option
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/items", "raw_path": b"/items", "query_string": b"", "root_path": "", "headers": [],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
}


def serve(requests: int, slow: str, source: str) -> None:
    """Run ``requests`` requests through the instrumented app (the measured part), with aiwatch from ``source``."""
    sys.path.insert(0, source)
    from prometheus_client import CollectorRegistry

    import aiwatch

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with aiwatch.phase("inference"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    if not aiwatch.__file__ or not aiwatch.__file__.startswith(source):
        raise SystemExit(f"aiwatch came from {aiwatch.__file__}, not {source}")
    options = {"slow_threshold": 1e-9} if slow == "all" else {}
    wrapped = aiwatch.instrument(app, registry=CollectorRegistry(), service="bench", **options)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run() -> None:
        for _ in range(requests):
            await wrapped(dict(SCOPE), receive, send)

    asyncio.run(run())


def instructions(requests: int, slow: str, source: str) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    done = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           __file__, "--serve", str(requests), "--slow", slow, "--source", source],
                          capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per counted run (default 2000)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slow", choices=["none", "all"], default="none", help=argparse.SUPPRESS)
    parser.add_argument("--source", default=str(REPO), help="the checkout whose aiwatch to measure (default: this "
                        "one; e.g. an export of the commit before the slow counters, `git archive 5262c48`)")
    parser.add_argument("--default-only", action="store_true",
                        help="measure only the default threshold (for a checkout without slow counters)")
    args = parser.parse_args(argv)
    source = str(Path(args.source).resolve())
    if args.serve is not None:
        serve(args.serve, args.slow, source)
        return 0
    per_request = {}
    for slow in ("none",) if args.default_only else ("none", "all"):
        per_request[slow] = ((instructions(args.requests, slow, source) - instructions(0, slow, source))
                             / args.requests)
    print(f"aiwatch from {source}")
    print(f"instructions per request, raw ASGI app + aiwatch.instrument, one phase, {args.requests} requests:")
    print(f"  no request slow (default threshold 0.3 s): {per_request['none']:,.0f}")
    if "all" in per_request:
        added = per_request["all"] - per_request["none"]
        print(f"  every request slow (threshold 1e-9 s):     {per_request['all']:,.0f}")
        print(f"  the slow-request counters of a slow request: {added:+,.0f} ({added / per_request['none']:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
