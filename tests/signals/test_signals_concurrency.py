"""Many threads and asyncio tasks at once: every count adds up exactly."""

from __future__ import annotations

import asyncio
import collections
import queue
import threading

from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.metrics import Metrics
from aiwatch.signals.batcher import MicroBatcher
from aiwatch.signals.cache import FeatureCache, instrument_mapping
from aiwatch.signals.gpu import GpuCollector
from aiwatch.signals.queues import instrument_queue
from tests.labels import with_defaults
from tests.signals.fake_pynvml import FakeNVML

THREADS = 8
PER_THREAD = 400


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, with_defaults(name, labels))


def run_threads(target: object, n: int = THREADS) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_thread_queue_under_many_producers_and_consumers(registry: CollectorRegistry, metrics: Metrics) -> None:
    q: queue.Queue[tuple[int, int] | None] = instrument_queue(queue.Queue(maxsize=50), "work", metrics=metrics)
    received: list[tuple[int, int]] = []
    lock = threading.Lock()

    def consume() -> None:
        while (item := q.get()) is not None:
            with lock:
                received.append(item)

    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for c in consumers:
        c.start()
    def produce(i: int) -> None:
        for k in range(PER_THREAD):
            q.put((i, k), timeout=30)

    run_threads(produce)
    for _ in consumers:
        q.put(None)
    for c in consumers:
        c.join()
    assert sorted(received) == [(i, k) for i in range(THREADS) for k in range(PER_THREAD)]
    assert value(registry, "aiwatch_queue_depth", queue="work") == 0.0
    # the 4 sentinels are items too
    assert value(registry, "aiwatch_queue_wait_seconds_count", queue="work") == THREADS * PER_THREAD + 4


async def test_asyncio_queue_under_many_tasks(registry: CollectorRegistry, metrics: Metrics) -> None:
    q: asyncio.Queue[int] = instrument_queue(asyncio.Queue(maxsize=10), "aq", metrics=metrics)
    got: list[int] = []

    async def produce(i: int) -> None:
        for k in range(50):
            await q.put(i * 1000 + k)

    async def consume() -> None:
        while True:
            got.append(await q.get())
            q.task_done()

    consumers = [asyncio.ensure_future(consume()) for _ in range(5)]
    await asyncio.gather(*(produce(i) for i in range(40)))
    await q.join()
    for c in consumers:
        c.cancel()
    assert sorted(got) == sorted(i * 1000 + k for i in range(40) for k in range(50))
    assert value(registry, "aiwatch_queue_depth", queue="aq") == 0.0
    assert value(registry, "aiwatch_queue_wait_seconds_count", queue="aq") == 2000


async def test_batcher_under_many_tasks_and_threads(registry: CollectorRegistry, metrics: Metrics) -> None:
    async def square(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        return [x * x for x in items]

    batcher = MicroBatcher(square, max_batch_size=16, max_wait_seconds=0.0005, model="sq", metrics=metrics)
    loop = asyncio.get_running_loop()
    task_results = asyncio.gather(*(batcher.submit(i) for i in range(600)))

    def from_thread(t: int) -> list[int]:
        futures = [asyncio.run_coroutine_threadsafe(batcher.submit(10_000 + t * 100 + k), loop) for k in range(50)]
        return [f.result(30) for f in futures]

    thread_results = [loop.run_in_executor(None, from_thread, t) for t in range(4)]
    assert await task_results == [i * i for i in range(600)]
    for t, fut in enumerate(thread_results):
        assert await fut == [(10_000 + t * 100 + k) ** 2 for k in range(50)]
    await batcher.aclose()
    assert value(registry, "aiwatch_batch_size_sum", model="sq") == 800
    assert value(registry, "aiwatch_queue_wait_seconds_count", queue="sq") == 800
    assert value(registry, "aiwatch_queue_depth", queue="sq") == 0.0
    batches = value(registry, "aiwatch_batch_size_count", model="sq")
    assert batches is not None and 800 / 16 <= batches <= 800


def test_feature_cache_from_threads_each_running_tasks(registry: CollectorRegistry, metrics: Metrics) -> None:
    store = instrument_mapping({f"k{i}": i for i in range(0, 100, 2)}, cache="shared", metrics=metrics)
    users = FeatureCache("shared", metrics=metrics)

    @users.wrap
    async def remote(key: int) -> int | None:
        await asyncio.sleep(0)
        return key if key % 4 == 0 else None

    def worker(i: int) -> None:
        async def tasks() -> None:
            await asyncio.gather(*(remote(k) for k in range(100)))

        for k in range(PER_THREAD):
            store.get(f"k{k % 100}")
        asyncio.run(tasks())

    run_threads(worker)
    # mapping: keys k0..k99, even ones present -> half hit; remote: multiples of 4 -> a quarter hit
    hits = THREADS * (PER_THREAD // 2 + 25)
    misses = THREADS * (PER_THREAD // 2 + 75)
    assert value(registry, "aiwatch_feature_cache_requests_total", cache="shared", result="hit") == hits
    assert value(registry, "aiwatch_feature_cache_requests_total", cache="shared", result="miss") == misses
    total = sum(value(registry, "aiwatch_feature_cache_lookup_duration_seconds_count", cache="shared",
                      result=r) or 0 for r in ("hit", "miss"))
    assert total == hits + misses


def test_scrapes_from_many_threads_while_the_poller_runs(registry: CollectorRegistry, metrics: Metrics) -> None:
    nvml = FakeNVML.with_gpus(8)
    collector = GpuCollector(nvml=nvml, registry=registry, metrics=metrics, start=False)
    collector.poller.poll_once()
    collector.poller.interval = 0.001
    collector.poller.start()
    seen: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def scrape(i: int) -> None:
        for _ in range(30):
            text = generate_latest(registry).decode()
            ups = sum(1 for line in text.splitlines() if line.startswith("aiwatch_gpu_up{") and line.endswith(" 1.0"))
            with lock:
                seen[ups] += 1

    try:
        run_threads(scrape)
    finally:
        collector.close()
    assert seen == {8: THREADS * 30}  # every scrape saw one whole snapshot
    assert value(registry, "aiwatch_instrumentation_errors_total", component="gpu") == 0
