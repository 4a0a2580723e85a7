"""What aiwatch's HTTP span costs is made of: the tracing pair of ``http_bench.py`` with one part of the span's work
switched off at a time.

Each ablation runs in its own process (a part is switched off by replacing one function of aiwatch, for the whole
process), with ``bare``, ``one-span``, ``aiwatch`` (metrics only), ``aiwatch+tracing`` and ``otel-asgi-server``
interleaved exactly as in ``http_bench.py``; the figures are CPU µs added over the bare app, median over rounds.
The ablated variants are *not* aiwatch: they drop what the span must carry. They say how far each part of the span
is from the 0.5x target, nothing else.

- ``none``: aiwatch as shipped;
- ``no-exemplar``: no trace id taken, so no exemplars on the histograms;
- ``no-activate``: the span not made current while the app runs (the app's spans would not be its children);
- ``no-describe``: nothing set at the end (``http.route``, ``http.response.status_code``, the ``{method} {route}``
  name, the error status);
- ``no-start-attributes``: none of the conventions' attributes at the start (``http.request.method``, ``url.*``,
  ``server.*``, ``network.protocol.version``);
- ``all``: all four off: aiwatch's metrics plus a span that carries nothing.

    python bench/http_tracing_ablation.py             # 21 rounds x 1000 requests per ablation
    python bench/http_tracing_ablation.py --rounds 5  # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ABLATIONS = ("none", "no-exemplar", "no-activate", "no-describe", "no-start-attributes", "all")
NAMES = ["bare", "one-span", "aiwatch", "aiwatch+tracing", "otel-asgi-server"]


def switch_off(ablation: str) -> None:
    """Replace the functions that do the ablated part of the span's work, in this process."""
    import aiwatch.middleware._common as common
    import aiwatch.middleware.asgi as asgi
    import aiwatch.timing as timing

    def nothing(*args: Any) -> None:
        return None

    def no_attributes(*args: Any) -> dict[str, Any]:
        return {}

    off = set(ABLATIONS[1:-1]) if ablation == "all" else {ablation}
    if "no-exemplar" in off:
        timing._take_trace_id = nothing  # type: ignore[assignment]
    if "no-activate" in off:
        common.activate_counted = nothing  # type: ignore[assignment,attr-defined]
    if "no-describe" in off:
        asgi.AiwatchMiddleware._describe = nothing  # type: ignore[assignment,method-assign]
    if "no-start-attributes" in off:
        asgi.http_server_attributes = no_attributes  # type: ignore[assignment,attr-defined]


def measure(ablation: str, rounds: int, n: int) -> dict[str, float]:
    """CPU µs added per request over the bare app, per variant, with ``ablation`` switched off."""
    sys.path.insert(0, str(ROOT))
    switch_off(ablation)
    from bench import http_bench

    results = asyncio.run(http_bench.bench(rounds, n, NAMES))
    return {name: statistics.median(a - b for a, b in zip(results[name], results["bare"], strict=True)) * 1e6
            for name in NAMES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--one", choices=ABLATIONS, help=argparse.SUPPRESS)  # a child process: one ablation
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.rounds, args.requests)))
        return 0
    print(f"{args.rounds} rounds x {args.requests} requests per variant and ablation; CPU µs added over the bare "
          f"app (median over rounds); load {os.getloadavg()[0]:.1f}")
    print(f"{'ablation':<21}{'one-span':>9}{'aiwatch':>9}{'+tracing':>9}{'span part':>10}{'otel':>8}{'ratio':>8}")
    for ablation in ABLATIONS:
        out = subprocess.run([sys.executable, __file__, "--one", ablation, "--rounds", str(args.rounds),
                              "--requests", str(args.requests)], check=True, capture_output=True, text=True)
        added = json.loads(out.stdout.strip().splitlines()[-1])
        traced, otel = added["aiwatch+tracing"], added["otel-asgi-server"]
        print(f"{ablation:<21}{added['one-span']:>9.1f}{added['aiwatch']:>9.1f}{traced:>9.1f}"
              f"{traced - added['aiwatch']:>10.1f}{otel:>8.1f}{traced / otel:>8.3f}")
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
