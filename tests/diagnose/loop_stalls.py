"""An exact simulation of the event loop sampler (:mod:`aiwatch.eventloop`) over a loop that stands still in given
blocks, to check :func:`aiwatch.diagnose.loops.expected_wait` against the wait a uniformly random arrival has.

The sampler as it runs: its timer is due ``interval`` after the previous sample ran; a timer due while the loop is
blocked runs when the block ends (plus the sampler's own few microseconds); each sample records how late it ran and
adds the time since the previous one to the watched time. The truth: an arrival at a uniformly random time of the
watched span that lands in a block waits for the rest of it.

    PYTHONPATH=. python -m tests.diagnose.loop_stalls      # the table in docs/diagnose.md
"""

from __future__ import annotations

import bisect
import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiwatch.metrics import EVENT_LOOP_DELAY_BUCKETS

#: how late a timer due on a free loop runs: the loop sleeps in its poll for whole milliseconds (asyncio and uvloop
#: round the timeout up), so up to 1 ms, drawn uniformly
RESOLUTION = 0.001

Blocks = list[tuple[float, float]]


@dataclass(frozen=True)
class Sampled:
    """What the sampler recorded over a run, and the truth."""

    delays: list[float]
    watched: float
    true_wait: float
    interval: float

    @property
    def delay_sum(self) -> float:
        return sum(self.delays)

    def buckets(self) -> list[tuple[float, float]]:
        """The histogram's cumulative buckets, ``+Inf`` included."""
        bounds = [*EVENT_LOOP_DELAY_BUCKETS, float("inf")]
        return [(le, float(sum(1 for d in self.delays if d <= le))) for le in bounds]

    def mean(self) -> float:
        """The old estimate: the mean delay per sample."""
        return self.delay_sum / len(self.delays)

    def estimate(self) -> float:
        """The estimate from the histogram's buckets, the sum and the watched time."""
        from aiwatch.diagnose.loops import expected_wait  # here: the tests run on the code before it too

        found = expected_wait(self.buckets(), self.delay_sum, self.watched)
        assert found is not None
        return found

    def oracle(self) -> float:
        """The same credit per sample from each sample's own delay, not the buckets': the model's error alone."""
        i = (self.watched - self.delay_sum) / len(self.delays)
        short = [d for d in self.delays if d <= i]
        mean = sum(short) / len(short) if short else 0.0
        return (mean * sum(i + d for d in short) + sum(d * (d + i) / 2 for d in self.delays if d > i)) / self.watched


def merged(blocks: Blocks) -> Blocks:
    out: Blocks = []
    for b, e in sorted(blocks):
        if out and b <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((b, e))
    return out


def sample(blocks: Blocks, seconds: float, interval: float = 0.1, seed: int = 0) -> Sampled:
    """Run the sampler from 0 for about ``seconds`` over a loop standing still in ``blocks`` (``(start, end)``)."""
    rng = random.Random(seed)
    blocks = merged(blocks)
    starts = [b for b, _ in blocks]
    delays: list[float] = []
    ran = 0.0
    while ran < seconds:
        due = ran + interval
        k = bisect.bisect_right(starts, due) - 1
        runs = blocks[k][1] if k >= 0 and blocks[k][1] > due else due + rng.uniform(0.0, RESOLUTION)
        delays.append(runs - due)
        ran = runs
    end = ran
    waited = 0.0
    for b, e in blocks:
        if b >= end:
            break
        # arrivals in [b, min(e, end)] wait until e
        top = min(e, end)
        waited += ((e - b) ** 2 - (e - top) ** 2) / 2
    return Sampled(delays, end, waited / end, interval)


def blocks_after_gaps(rng: random.Random, seconds: float, gap: Callable[[], float],
                      length: Callable[[], float]) -> Blocks:
    """Blocks of ``length()`` seconds, each after a gap of ``gap()`` seconds from the previous one's end."""
    out: Blocks = []
    t = gap()
    while t < seconds:
        b = length()
        out.append((t, t + b))
        t += b + gap()
    return out


def patterns(seed: int = 1) -> Iterator[tuple[str, float, Blocks]]:
    """``(what, seconds, blocks)`` for the table."""
    rng = random.Random(seed)

    def prompt(seconds: float) -> Blocks:  # callbacks of 0.1-1 ms, 100 a second at random times
        return blocks_after_gaps(rng, seconds, lambda: rng.expovariate(100.0), lambda: rng.uniform(1e-4, 1e-3))

    yield "prompt: 0.1-1 ms callbacks, 100/s", 600.0, prompt(600.0)
    yield ("70-100 ms blocks after exp. gaps of 100 ms (test_loops_e2e)", 600.0,
           prompt(600.0) + blocks_after_gaps(rng, 600.0, lambda: rng.expovariate(10.0),
                                             lambda: rng.uniform(0.07, 0.1)))
    yield "1 s blocked in every 2 s, periodic", 600.0, [(2.0 * k + 1.0, 2.0 * k + 2.0) for k in range(300)]
    yield ("1 s blocks after gaps of 0.9-1.1 s", 600.0,
           prompt(600.0) + blocks_after_gaps(rng, 600.0, lambda: rng.uniform(0.9, 1.1), lambda: 1.0))
    yield ("300-500 ms blocks after exp. gaps of 2 s", 600.0,
           prompt(600.0) + blocks_after_gaps(rng, 600.0, lambda: rng.expovariate(0.5),
                                             lambda: rng.uniform(0.3, 0.5)))
    yield ("0.375-1.125 s blocks after exp. gaps of 3 s (test_loops_e2e, long)", 1800.0,
           prompt(1800.0) + blocks_after_gaps(rng, 1800.0, lambda: rng.expovariate(1 / 3),
                                              lambda: rng.uniform(0.375, 1.125)))
    yield ("150 ms blocks after exp. gaps of 250 ms", 600.0,
           prompt(600.0) + blocks_after_gaps(rng, 600.0, lambda: rng.expovariate(4.0), lambda: 0.15))
    yield ("2-5 s stalls after exp. gaps of 60 s", 3600.0,
           prompt(3600.0) + blocks_after_gaps(rng, 3600.0, lambda: rng.expovariate(1 / 60),
                                              lambda: rng.uniform(2.0, 5.0)))
    yield ("12 s stalls (+Inf bucket) after exp. gaps of 120 s", 3600.0,
           prompt(3600.0) + blocks_after_gaps(rng, 3600.0, lambda: rng.expovariate(1 / 120), lambda: 12.0))
    yield "100 ms blocked in every 200 ms, periodic (in step)", 600.0, [(0.2 * k + 0.1, 0.2 * k + 0.2)
                                                                         for k in range(3000)]


@functools.lru_cache(maxsize=1)
def sampled_patterns() -> dict[str, Sampled]:
    """Each pattern of :func:`patterns` run through the sampler, by its description."""
    return {what: sample(blocks, seconds) for what, seconds, blocks in patterns()}


def table() -> str:
    rows = ["| blocks | true wait | mean per sample (old) | estimate | estimate from each sample's own delay |",
            "|---|---:|---:|---:|---:|"]
    for what, s in sampled_patterns().items():
        cells = [s.true_wait, s.mean(), s.estimate(), s.oracle()]
        rows.append(f"| {what} | " + " | ".join(f"{v * 1000:.3g} ms" for v in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
