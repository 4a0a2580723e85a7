"""The demo's load generator draws a stage's requests lazily, a block at a time: its memory does not grow with the
stage's rate x duration, and a seed still gives the same requests."""

from __future__ import annotations

import asyncio
import math
import time
import tracemalloc
import types

import numpy as np
import pytest

from aiwatch.demo import data, loadgen


class Instant:
    """The HTTP client's place: answers 200 at once and keeps each request's body, in the order they were sent."""

    def __init__(self) -> None:
        self.bodies: list[object] = []

    async def post(self, url: str, json: object) -> object:
        self.bodies.append(json)

        class Ok:
            status_code = 200
        return Ok()


class Forgetful:
    """The HTTP client's place: answers 200 at once and keeps nothing."""

    async def post(self, url: str, json: object) -> object:
        class Ok:
            status_code = 200
        return Ok()


def test_a_stage_of_a_huge_rate_does_not_allocate_its_requests_up_front() -> None:
    """The generator used to draw ``ceil(rps x seconds x 1.5) + 10`` rows of features, user ids and gaps before
    sending anything: ``--rps 1e6`` or a long ``--duration`` took gigabytes. Here a 10 ms stage at 1e7 req/s (100 000
    arrivals, all dropped at a bound of no requests in flight) must stay within a few MB, where the up-front
    rows alone would take ``old_rows x 5 arrays x 8 bytes``."""
    stage = loadgen.Stage("huge", 0.01, 1e7)
    old_rows = math.ceil(stage.rps * stage.seconds * 1.5) + 10
    tracemalloc.start()
    try:
        result = asyncio.run(loadgen.run_stage(Forgetful(), "http://x", stage, np.random.default_rng(1),
                                               max_in_flight=0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.sent + result.dropped > 50_000  # the stage's arrivals were all drawn
    assert peak < 4 * 2**20, (f"peak {peak / 2**20:.1f} MiB: the stage's requests were allocated up front "
                              f"({old_rows} rows, {old_rows * 5 * 8 / 2**20:.1f} MiB of arrays)")


def _bodies(seed: int, stage: loadgen.Stage) -> list[object]:
    client = Instant()
    result = asyncio.run(loadgen.run_stage(client, "http://x", stage, np.random.default_rng(seed),
                                           max_in_flight=10**6))
    assert result.dropped == 0 and result.ok == result.sent == len(client.bodies)
    return client.bodies


def test_a_stage_that_fits_one_block_sends_the_requests_it_always_sent_for_its_seed() -> None:
    """A stage of at most one block (the default demo's stages: the sale is 21 s at ~120 req/s) draws the same rows
    in the same order as when the whole stage was drawn up front, and leaves the generator where it did, so the next
    stage's requests are the same too."""
    stage = loadgen.Stage("sale", 0.5, 200.0, sale=True, shift=1.5, new_user_share=0.3)
    sent = _bodies(5, stage)
    rng = np.random.default_rng(5)
    n = math.ceil(stage.rps * stage.seconds * 1.5) + 10
    feats = data.live_features(rng, n, stage.sale, stage.shift)
    users = data.user_ids(rng, n, stage.new_user_share)
    gaps = rng.exponential(1.0 / stage.rps, n)
    arrivals = int(np.sum(np.cumsum(gaps) < stage.seconds))
    assert len(sent) == arrivals
    assert sent == [{"user_id": int(users[i]), **{k: float(v[i]) for k, v in feats.items()}} for i in range(arrivals)]


def test_a_stage_of_many_blocks_sends_the_same_requests_for_the_same_seed() -> None:
    stage = loadgen.Stage("long", 0.1, 100_000.0)  # ~10 000 arrivals: three blocks
    first = _bodies(11, stage)
    assert len(first) > 2 * loadgen.BLOCK
    assert _bodies(11, stage) == first
    assert _bodies(12, stage) != first


class Starved:
    """The generator's clock: its first reading (the stage's start) is 0, and every later one runs ``behind`` seconds
    ahead of the real clock, as if the event loop had been starved that long right after the start."""

    def __init__(self, behind: float) -> None:
        self.behind = behind
        self.reads = 0
        self.origin = 0.0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads == 1:
            self.origin = time.monotonic()
            return 0.0
        return self.behind + (time.monotonic() - self.origin)


class Counting(Instant):
    """Answers after one turn of the event loop (as a real request needs at least one) and counts the answers only."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = 0

    async def post(self, url: str, json: object) -> object:
        await asyncio.sleep(0)
        self.answered += 1
        return await super().post(url, json)


def test_a_generator_behind_its_schedule_lets_requests_in_flight_finish_before_it_drops_any(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the generator falls behind (its loop was starved), the overdue arrivals are sent at once, but each
    one yields to the event loop, so requests already sent can finish. Before, it created every overdue arrival
    without yielding: nothing in flight could finish, and every arrival past the bound on requests in flight was
    counted as dropped though the service had answered them all at once."""
    monkeypatch.setattr(loadgen, "time", types.SimpleNamespace(monotonic=Starved(behind=0.5)))
    stage = loadgen.Stage("starved", 0.6, 2000.0)  # ~1000 arrivals overdue at the jump, then ~200 on time
    client = Counting()
    result = asyncio.run(loadgen.run_stage(client, "http://x", stage, np.random.default_rng(3), max_in_flight=64))
    assert result.sent > 900
    assert result.dropped == 0, f"{result.dropped} of {result.sent + result.dropped} arrivals dropped"
    assert result.ok == result.sent == client.answered
