#!/usr/bin/env python3
"""Resource-signal overheads, each as a ratio against a baseline measured in the same run.

    python bench/signals_bench.py            # full
    python bench/signals_bench.py --quick    # a few seconds

1. MicroBatcher: per-item cost of ``await batcher.submit(x)`` from concurrent tasks (batches of 32) against calling
   the same async model function directly on the same batches.
2. A scrape (``generate_latest``) of a registry holding aiwatch's metrics plus the GPU collector over a snapshot of
   8 simulated GPUs (the stand-in pynvml of the tests; a scrape never calls NVML, so the snapshot is what costs),
   against the same registry without the collector.
3. instrument_queue: put+get on a ``queue.Queue`` against the bare queue.
4. Feature cache: ``instrument_mapping(dict).get`` against ``dict.get``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from queue import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.metrics import Metrics
from aiwatch.signals.batcher import MicroBatcher
from aiwatch.signals.cache import instrument_mapping
from aiwatch.signals.gpu import GpuCollector
from aiwatch.signals.queues import instrument_queue
from tests.signals.fake_pynvml import FakeMig, FakeNVML

CLOCK = time.process_time  # CPU time: every case runs on one thread, and a loaded machine inflates wall time


def best(fn: object, rounds: int) -> float:
    """Median seconds of ``rounds`` calls of ``fn()``."""
    times = []
    for _ in range(rounds):
        t0 = CLOCK()
        fn()  # type: ignore[operator]
        times.append(CLOCK() - t0)
    return statistics.median(times)


async def model(items: list[int]) -> list[int]:
    return [x + 1 for x in items]


def bench_batcher(n: int, rounds: int, batch: int = 32) -> tuple[float, float, float]:
    metrics = Metrics(CollectorRegistry())
    chunks = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]

    async def direct() -> None:
        for chunk in chunks:
            await model(chunk)

    async def batched() -> None:
        async with MicroBatcher(model, max_batch_size=batch, max_wait_seconds=0.001, metrics=metrics) as b:
            await asyncio.gather(*(b.submit(i) for i in range(n)))

    async def tasks_only() -> None:
        async def caller(i: int) -> int:
            return i

        await asyncio.gather(*(caller(i) for i in range(n)))

    t_direct = best(lambda: asyncio.run(direct()), rounds)
    t_batched = best(lambda: asyncio.run(batched()), rounds)
    t_tasks = best(lambda: asyncio.run(tasks_only()), rounds)
    return t_direct / n, t_batched / n, t_tasks / n


def bench_scrape(rounds: int, scrapes: int) -> tuple[float, float, int, int]:
    def registry_with_traffic() -> CollectorRegistry:
        reg = CollectorRegistry()
        m = Metrics(reg)
        for route in ("/predict", "/health", "/batch"):
            for status in ("200", "500"):
                m.request_duration.labels("svc", route, "POST", status, "realtime").observe(0.05)
        for phase in ("queue", "features", "inference", "overhead"):
            m.phase_duration.labels("svc", "ranker", "v1", phase).observe(0.01)
        return reg

    bare = registry_with_traffic()
    with_gpu = registry_with_traffic()
    nvml = FakeNVML.with_gpus(8)
    nvml.gpus[7].mig_mode = 1
    nvml.gpus[7].migs = [FakeMig(i, 0, f"MIG-{i}", "MIG 1g.10gb") for i in range(1, 4)]
    collector = GpuCollector(nvml=nvml, registry=with_gpu, metrics=Metrics(CollectorRegistry()), start=False)
    collector.poller.poll_once()
    t_bare = best(lambda: [generate_latest(bare) for _ in range(scrapes)], rounds) / scrapes
    t_gpu = best(lambda: [generate_latest(with_gpu) for _ in range(scrapes)], rounds) / scrapes
    return t_bare, t_gpu, len(generate_latest(bare)), len(generate_latest(with_gpu))


def bench_queue(n: int, rounds: int) -> tuple[float, float]:
    bare: Queue[int] = Queue()
    inst: Queue[int] = instrument_queue(Queue(), "bench", metrics=Metrics(CollectorRegistry()))

    def run(q: Queue[int]) -> None:
        for i in range(n):
            q.put(i)
            q.get()

    return best(lambda: run(bare), rounds) / n, best(lambda: run(inst), rounds) / n


def bench_cache(n: int, rounds: int) -> tuple[float, float]:
    d = {i: i for i in range(0, 1000, 2)}
    wrapped = instrument_mapping(dict(d), cache="bench", phase=None, metrics=Metrics(CollectorRegistry()))
    keys = [i % 1000 for i in range(n)]

    def run(m: object) -> None:
        get = m.get  # type: ignore[attr-defined]
        for k in keys:
            get(k)

    return best(lambda: run(d), rounds) / n, best(lambda: run(wrapped), rounds) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--wall", action="store_true", help="measure wall-clock time instead of CPU time")
    args = parser.parse_args()
    if args.wall:
        global CLOCK
        CLOCK = time.perf_counter
    n, rounds, scrapes = (3_200, 3, 50) if args.quick else (32_000, 7, 300)

    print(f"resource-signals bench ({'quick' if args.quick else 'full'}; medians of {rounds} rounds; "
          f"{'wall' if CLOCK is time.perf_counter else 'CPU'} time)\n")
    direct, batched, tasks = bench_batcher(n, rounds)
    print(f"batcher, {n} items in batches of 32 from concurrent tasks:")
    print(f"  model fn called directly on the batches: {direct * 1e6:8.2f} us/item")
    print(f"  MicroBatcher.submit (tasks + futures + metrics + phases): {batched * 1e6:8.2f} us/item "
          f"-> overhead {(batched - direct) * 1e6:.2f} us/item ({batched / direct:.1f}x the direct call)")
    print(f"  for scale: one asyncio task per caller and nothing else: {tasks * 1e6:8.2f} us/item")
    bare, gpu, bare_bytes, gpu_bytes = bench_scrape(rounds, scrapes)
    print("\nscrape (generate_latest) of aiwatch's metrics:")
    print(f"  without the GPU collector: {bare * 1e6:8.1f} us ({bare_bytes} bytes)")
    print(f"  with 8 simulated GPUs (+3 MIG devices): {gpu * 1e6:8.1f} us ({gpu_bytes} bytes) "
          f"-> +{(gpu - bare) * 1e6:.1f} us per scrape ({gpu / bare:.2f}x)")
    qb, qi = bench_queue(n, rounds)
    print(f"\nqueue.Queue put+get: bare {qb * 1e6:.2f} us, instrumented {qi * 1e6:.2f} us "
          f"-> +{(qi - qb) * 1e6:.2f} us per item ({qi / qb:.2f}x)")
    cb, ci = bench_cache(n, rounds)
    print(f"mapping get: dict.get {cb * 1e6:.3f} us, instrument_mapping {ci * 1e6:.3f} us "
          f"-> +{(ci - cb) * 1e6:.2f} us per lookup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
