#!/usr/bin/env python3
"""Soak: memory (RSS) and latency of aiwatch's long-running parts over many operations, in one process.

    python bench/soak_bench.py            # 1M requests, 10M drift rows, 1M batcher items (about 10 min here)
    python bench/soak_bench.py --quick    # a twentieth of each (under a minute)

1. **Middleware**: 1M requests through ``aiwatch.instrument`` around a raw ASGI app (a phase per request, the
   Server-Timing header on), called in-process by a minimal ASGI driver; 20 routes, 4 statuses and 8 models, so the
   children caches and the label guard are in their steady state. Every 10 % of the run: RSS, the mean CPU time
   per request of that tenth, and the same for a short run of the bare app (the baseline, measured at that point).
2. **DriftMonitor**: 10M rows (5 numerical, 3 categorical features) in batches of 1000 through ``observe_batch``
   plus one row in 100 through ``observe``, an ``evaluate()`` every 10 %, with values drifting slowly; RSS and the
   CPU time per million rows of each tenth.
3. **MicroBatcher**: 1M items submitted by 250 concurrent tasks (batches of up to 32, an async model); RSS and
   CPU time per item of each tenth.

Flat RSS is the goal: a column that keeps growing after the first tenth is a leak to explain. RSS is read from
/proc/self/statm (Linux) after a ``gc.collect()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.metrics import Metrics

CLOCK = time.process_time
CHECKPOINTS = 10


def rss_mib() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def report(title: str, unit: str, rows: list[tuple[int, float, float, str]]) -> None:
    print(f"\n{title}")
    print(f"{'done':>10}  {'RSS MiB':>8}  {unit:>14}  note")
    for done, rss, per, note in rows:
        print(f"{done:>10,}  {rss:>8.1f}  {per:>14.2f}  {note}")
    first, last = rows[0][1], rows[-1][1]
    print(f"RSS after the first tenth {first:.1f} MiB, at the end {last:.1f} MiB: {last - first:+.1f} MiB")


# --- 1. middleware ------------------------------------------------------------------------------------------------
STATUSES = (200, 200, 200, 404, 500)


def make_app() -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        route = scope["path"]
        aiwatch.set_model(f"model-{len(route) % 8}")
        with aiwatch.phase("inference"):
            pass
        await send({"type": "http.response.start", "status": STATUSES[len(route) % len(STATUSES)],
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    return app


def soak_middleware(n: int) -> None:
    registry = CollectorRegistry()
    bare = make_app()
    instrumented = aiwatch.instrument(make_app(), registry=registry, service="soak",
                                      route_resolver=lambda scope: scope["path"])
    paths = [f"/r{i}" + "x" * (i % 7) for i in range(20)]
    scopes = [{"type": "http", "method": "POST", "path": p, "headers": [], "query_string": b"", "root_path": ""}
              for p in paths]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def run(app: Any, count: int) -> float:
        t0 = CLOCK()
        for i in range(count):
            await app(scopes[i % 20], receive, send)
        return CLOCK() - t0

    async def main() -> list[tuple[int, float, float, str]]:
        rows = []
        step = n // CHECKPOINTS
        baseline_n = max(step // 20, 1000)
        for k in range(1, CHECKPOINTS + 1):
            spent = await run(instrumented, step)
            base = await run(bare, baseline_n)
            per, per_bare = spent / step * 1e6, base / baseline_n * 1e6
            rows.append((k * step, rss_mib(), per, f"bare {per_bare:.1f} µs, added {per - per_bare:.1f} µs"))
        return rows

    rows = asyncio.run(main())
    series = sum(len(f.samples) for f in registry.collect())
    report(f"Middleware: {n:,} requests (series in the registry at the end: {series})", "µs/request", rows)


# --- 2. DriftMonitor ----------------------------------------------------------------------------------------------
def soak_drift(n: int) -> None:
    rng = np.random.default_rng(7)
    reference = {**{f"num{i}": rng.normal(size=20_000) for i in range(5)},
                 **{f"cat{i}": rng.choice(["a", "b", "c", "d", "e"], size=20_000) for i in range(3)}}
    profile = ReferenceProfile.build(reference)
    monitor = DriftMonitor(profile, model="soak", registry=CollectorRegistry(), window_size=5000)
    batch = 1000
    step = n // CHECKPOINTS
    rows = []
    done = 0
    for k in range(1, CHECKPOINTS + 1):
        shift = k / CHECKPOINTS  # the inputs drift slowly through the run
        t0, start = CLOCK(), done
        while done < k * step:
            columns = {**{f"num{i}": rng.normal(shift, 1, batch) for i in range(5)},
                       **{f"cat{i}": rng.choice(["a", "b", "c", "d", "f"], size=batch) for i in range(3)}}
            monitor.observe_batch(columns)
            for j in range(0, batch, 100):  # one row in a hundred through the single-row path
                monitor.observe({name: col[j] for name, col in columns.items()})
            done += batch + batch // 100
        report_ = monitor.evaluate()
        spent = CLOCK() - t0
        drifted = sum(1 for r in report_.features.values() if r.drifted)
        rows.append((done, rss_mib(), spent / (done - start) * 1e6, f"{drifted}/{len(report_.features)} drifted"))
    report(f"DriftMonitor: {done:,} rows (99 % through observe_batch, 1 % through observe)", "CPU s/1M rows", rows)


# --- 3. MicroBatcher ----------------------------------------------------------------------------------------------
def soak_batcher(n: int, tasks: int = 250) -> None:
    async def model(items: list[int]) -> list[int]:
        return [x + 1 for x in items]

    async def main() -> list[tuple[int, float, float, str]]:
        rows = []
        step = n // CHECKPOINTS
        async with aiwatch.MicroBatcher(model, max_batch_size=32, max_wait_seconds=0.001, model="soak",
                                        metrics=Metrics(CollectorRegistry())) as batcher:
            for k in range(1, CHECKPOINTS + 1):
                t0 = CLOCK()

                async def caller(count: int) -> None:
                    for i in range(count):
                        assert await batcher.submit(i) == i + 1

                await asyncio.gather(*(caller(step // tasks) for _ in range(tasks)))
                spent = CLOCK() - t0
                rows.append((k * (step // tasks) * tasks, rss_mib(), spent / (step // tasks * tasks) * 1e6, ""))
        return rows

    report(f"MicroBatcher: {n:,} items from {tasks} tasks", "µs/item", asyncio.run(main()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a twentieth of each soak")
    parser.add_argument("--only", choices=["middleware", "drift", "batcher"], help="run one soak")
    args = parser.parse_args()
    scale = 20 if args.quick else 1
    print(f"python {sys.version.split()[0]}, start RSS {rss_mib():.1f} MiB, {'quick' if args.quick else 'full'} run")
    if args.only in (None, "middleware"):
        soak_middleware(1_000_000 // scale)
    if args.only in (None, "drift"):
        soak_drift(10_000_000 // scale)
    if args.only in (None, "batcher"):
        soak_batcher(1_000_000 // scale)


if __name__ == "__main__":
    main()
