"""The staged load generator: open-loop Poisson arrivals at each stage's rate, bounded in flight, loopback only.

Requests that would exceed ``max_in_flight`` are not sent and are counted as dropped, so an overloaded service can
never make the generator pile up unbounded work.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiwatch.demo import data


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    rps: float
    sale: bool = False
    new_user_share: float = 0.05


#: Share of ``--duration`` per stage.
STAGE_SHARES = {"normal": 0.35, "flash sale": 0.35, "recovery": 0.30}


def plan(duration: float, normal_rps: float, sale_factor: float = 10.0) -> list[Stage]:
    """Normal traffic, a flash sale (``sale_factor`` x the rate, shifted features, many new users), recovery."""
    if duration <= 0 or normal_rps <= 0:
        raise ValueError(f"duration and rate must be > 0, got {duration}, {normal_rps}")
    return [
        Stage("normal", duration * STAGE_SHARES["normal"], normal_rps),
        Stage("flash sale", duration * STAGE_SHARES["flash sale"], normal_rps * sale_factor, sale=True,
              new_user_share=0.5),
        Stage("recovery", duration * STAGE_SHARES["recovery"], normal_rps),
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


async def run_stage(client: Any, url: str, stage: Stage, rng: np.random.Generator,
                    max_in_flight: int = 64) -> LoadResult:
    """Send ``stage``'s traffic to ``url`` (POST JSON) with ``client`` (an ``httpx.AsyncClient``)."""
    n = max(1, math.ceil(stage.rps * stage.seconds * 1.5) + 10)
    feats = data.live_features(rng, n, stage.sale)
    users = data.user_ids(rng, n, stage.new_user_share)
    gaps = rng.exponential(1.0 / stage.rps, n)
    result = LoadResult()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        body = {"user_id": int(users[i]), **{k: float(v[i]) for k, v in feats.items()}}
        try:
            resp = await client.post(url, json=body)
            if resp.status_code == 200:
                result.ok += 1
            else:
                result.failed += 1
        except Exception:
            result.failed += 1

    start = time.monotonic()
    next_at = start
    i = 0
    try:
        while i < n:
            next_at += gaps[i]
            if next_at - start >= stage.seconds:
                break
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                result.dropped += 1
            else:
                task = asyncio.create_task(one(i))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                result.sent += 1
            i += 1
        remaining = stage.seconds - (time.monotonic() - start)
        if remaining > 0:
            await asyncio.sleep(remaining)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=30)
    finally:
        for task in list(in_flight):
            task.cancel()
    return result
