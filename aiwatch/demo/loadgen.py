"""The staged load generator: open-loop Poisson arrivals at each stage's rate, bounded in flight, loopback only.

Requests that would exceed ``max_in_flight`` are not sent and are counted as dropped, so an overloaded service can
never make the generator pile up unbounded work.

A stage with ``batch_workers`` also runs a batch client beside the real-time traffic: that many workers, each sending
its next request (with ``aiwatch-traffic-class: batch``) as soon as the last one is answered, as a backfill job's
worker pool does. Closed-loop, so it is bounded by its workers and takes whatever capacity the service has left.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiwatch.demo import data
from aiwatch.demo.scenarios import SCENARIOS, Scenario
from aiwatch.traffic import BATCH
from aiwatch.traffic import HEADER as TRAFFIC_CLASS_HEADER


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    rps: float
    #: the inputs come from the shifted (sale) distribution, basket values shifted ``shift`` times the sale's
    sale: bool = False
    shift: float = 1.0
    new_user_share: float = 0.05
    #: the scenario's fault is switched on for this stage
    fault: bool = False
    #: a tighter bound on requests in flight than the run's (the flash sale's, with a severity)
    max_in_flight: int | None = None
    #: workers of a batch client sending beside the real-time traffic (0: none)
    batch_workers: int = 0


#: Share of ``--duration`` per stage: normal, the scenario's middle stage, recovery.
STAGE_SHARES = (0.35, 0.35, 0.30)


def plan(duration: float, normal_rps: float, sale_factor: float = 10.0, scenario: Scenario | None = None,
         sale_in_flight: int | None = None) -> list[Stage]:
    """Normal traffic, the scenario's middle stage, recovery. The default scenario is the flash sale
    (``sale_factor`` x the rate, shifted features, many new users); ``sale_in_flight`` bounds its requests in
    flight."""
    if duration <= 0 or normal_rps <= 0:
        raise ValueError(f"duration and rate must be > 0, got {duration}, {normal_rps}")
    scenario = scenario or SCENARIOS["flash-sale"]
    factor = sale_factor if scenario.name == "flash-sale" else scenario.rate_factor
    first, middle, last = (duration * share for share in STAGE_SHARES)
    return [
        Stage("normal", first, normal_rps),
        Stage(scenario.stage, middle, normal_rps * factor, sale=scenario.shifted_inputs, shift=scenario.shift,
              new_user_share=scenario.new_user_share, fault=True,
              max_in_flight=sale_in_flight if scenario.name == "flash-sale" else None,
              batch_workers=scenario.batch_workers),
        Stage("recovery", last, normal_rps),
    ]


def warmup(duration: float, normal_rps: float, factor: float = 3.0) -> Stage:
    """A short stage before the first cycle (``factor`` x the normal rate, returning users) that fills the feature
    cache, so the normal stage shows a warm cache's hit ratio and the sale's new users visibly lower it. It is not
    part of any stage's numbers."""
    if duration <= 0 or normal_rps <= 0:
        raise ValueError(f"duration and rate must be > 0, got {duration}, {normal_rps}")
    return Stage("warm-up", min(max(0.15 * duration, 3.0), 10.0), normal_rps * factor)


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    #: the batch client's requests answered and failed (the fields above are the real-time traffic's)
    batch_ok: int = 0
    batch_failed: int = 0
    #: why real-time requests failed: ``"HTTP 503"``, or the client's exception (``"ReadTimeout"``), with counts
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1


#: Requests are drawn this many at a time, as the stage goes: the generator's memory does not grow with the stage's
#: rate x duration (drawn up front, ``--rps 1e6`` took gigabytes before the first request).
BLOCK = 4096


@dataclass(frozen=True)
class _Block:
    """The next ``len(gaps)`` requests of a stage: their features, user ids and the gaps before each."""
    features: dict[str, np.ndarray]
    users: np.ndarray
    gaps: np.ndarray

    def body(self, i: int) -> dict[str, Any]:
        return {"user_id": int(self.users[i]), **{k: float(v[i]) for k, v in self.features.items()}}


def _blocks(stage: Stage, rng: np.random.Generator) -> Iterator[_Block]:
    """``stage``'s requests, a block at a time. A stage that fits one block (1.5 x its expected arrivals + 10, as
    when the whole stage was drawn up front) draws exactly that, so its seed gives the requests it always gave."""
    expected = stage.rps * stage.seconds * 1.5
    size = BLOCK if expected >= BLOCK else min(BLOCK, max(1, math.ceil(expected) + 10))
    while True:
        features = data.live_features(rng, size, stage.sale, stage.shift)
        users = data.user_ids(rng, size, stage.new_user_share)
        yield _Block(features, users, rng.exponential(1.0 / stage.rps, size))


async def run_stage(client: Any, url: str, stage: Stage, rng: np.random.Generator,
                    max_in_flight: int = 64) -> LoadResult:
    """Send ``stage``'s traffic to ``url`` (POST JSON) with ``client`` (an ``httpx.AsyncClient``)."""
    if stage.max_in_flight is not None:
        max_in_flight = min(max_in_flight, stage.max_in_flight)
    blocks = _blocks(stage, rng)
    block = next(blocks)  # drawn before the batch workers' seeds, in the order the whole stage used to be
    result = LoadResult()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(body: dict[str, Any]) -> None:
        try:
            resp = await client.post(url, json=body)
            if resp.status_code == 200:
                result.ok += 1
            else:
                result.fail(f"HTTP {resp.status_code}")
        except Exception as exc:
            result.fail(type(exc).__name__)

    start = time.monotonic()
    next_at = start
    i = 0
    batch = [asyncio.create_task(_batch_worker(client, url, start + stage.seconds, int(rng.integers(2**32)), result))
             for _ in range(stage.batch_workers)]
    try:
        while True:
            if i == len(block.gaps):
                block, i = next(blocks), 0
            next_at += block.gaps[i]
            if next_at - start >= stage.seconds:
                break
            delay = next_at - time.monotonic()
            # Behind schedule, the arrival is sent at once, but only after one turn of the loop: without it the
            # overdue arrivals were all created in one go, nothing in flight could finish, and the rest were dropped.
            await asyncio.sleep(max(delay, 0.0))
            if len(in_flight) >= max_in_flight:
                result.dropped += 1
            else:
                task = asyncio.create_task(one(block.body(i)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                result.sent += 1
            i += 1
        remaining = stage.seconds - (time.monotonic() - start)
        if remaining > 0:
            await asyncio.sleep(remaining)
        if in_flight or batch:
            await asyncio.wait(set(in_flight) | set(batch), timeout=30)
    finally:
        for task in [*in_flight, *batch]:
            task.cancel()
    return result


async def _batch_worker(client: Any, url: str, until: float, seed: int, result: LoadResult) -> None:
    """One worker of the batch client: returning users' requests, one after the other, until ``until``."""
    rng = np.random.default_rng(seed)
    headers = {TRAFFIC_CLASS_HEADER: BATCH}
    while time.monotonic() < until:
        feats = data.live_features(rng, 1, False)
        body = {"user_id": int(data.user_ids(rng, 1, 0.0)[0]), **{k: float(v[0]) for k, v in feats.items()}}
        try:
            resp = await client.post(url, json=body, headers=headers)
            ok = resp.status_code == 200
        except Exception:
            ok = False
        if ok:
            result.batch_ok += 1
        else:
            result.batch_failed += 1
            await asyncio.sleep(0.05)  # a failing service is not hammered in a tight loop
