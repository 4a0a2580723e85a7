"""Event loop delay: how late the asyncio loop a server runs on runs a callback that was due.

A request to an asyncio server waits in the socket until the loop gets to it, and a response the calling side's loop
reads late waits the same way: a caller counts both as *network* time (its time minus the server's reported time).
A loop that is starved (CPU-bound work on it, a saturated machine) shows here instead:
``aiwatch_event_loop_delay_seconds{service}``.

One :class:`LoopSampler` per running event loop, started by the first request an asyncio integration (the ASGI
middleware, the grpc.aio server interceptor) serves on it: a chain of ``loop.call_at`` callbacks, each due
``interval`` seconds after the previous one ran, records how late it ran (``loop.time()`` when it ran minus when it
was due). A timer callback, not a task: a closed loop drops it (nothing pending, nothing to cancel), and it never
keeps ``run_until_complete``, ``asyncio.run`` or a server's shutdown waiting. The interval is
``$AIWATCH_EVENT_LOOP_INTERVAL`` (``off`` turns the sampler off).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from aiwatch.amounts import period
from aiwatch.env import EVENT_LOOP_INTERVAL
from aiwatch.forksafe import at_fork_in_child
from aiwatch.metrics import Metrics
from aiwatch.safety import record_error

#: The ``component`` of ``aiwatch_instrumentation_errors_total`` a sampler's failures are counted under.
COMPONENT = "event_loop"
_OFF = "off"
#: The shortest interval: a loop's timers have millisecond resolution (uvloop rounds a delay under 0.5 ms to 0, and
#: asyncio runs a timer due within its clock's resolution at once), so a shorter one never lets the loop block in its
#: poll and the sampler takes a whole core.
MIN_INTERVAL = 0.001


def loop_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two samples of a loop's delay (``$AIWATCH_EVENT_LOOP_INTERVAL``), ``None`` for ``off``. A
    value that is neither ``off`` nor a number of seconds from :data:`MIN_INTERVAL` to 1e9 is a ValueError naming
    the variable.

        >>> loop_interval({}), loop_interval({"AIWATCH_EVENT_LOOP_INTERVAL": "off"})
        (0.1, None)
    """
    if EVENT_LOOP_INTERVAL.text(env).strip().lower() == _OFF:
        return None
    try:
        interval = period(EVENT_LOOP_INTERVAL.seconds(env), EVENT_LOOP_INTERVAL.name)
    except ValueError:
        interval = 0.0
    if interval < MIN_INTERVAL:
        raise ValueError(f"{EVENT_LOOP_INTERVAL.name} must be a number of seconds from {MIN_INTERVAL} (a loop's "
                         f"timers have millisecond resolution) to 1e9, or {_OFF!r} to turn the event loop sampler "
                         f"off, got {EVENT_LOOP_INTERVAL.text(env)!r}")
    return interval


class LoopSampler:
    """Measures one event loop's delay every ``interval`` seconds into the histogram children of its targets.

    Runs only on its loop's thread: it is started from a request on the loop, and its callbacks run there. A failure
    is counted (``aiwatch_instrumentation_errors_total{component="event_loop"}``), never raised into the loop; one in
    scheduling the next sample ends the sampler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        #: weak: the loop's entry in the samplers' table holds its sampler, which must not hold the loop alive
        self.loop = weakref.ref(loop)
        self.interval = interval
        #: (metrics, histogram child) pairs each sample is observed into: one per service and registry on the loop
        self.targets: tuple[tuple[Metrics, Any], ...] = ()
        self.running = False
        self._due = 0.0

    def add(self, metrics: Metrics, child: Any) -> None:
        if all(c is not child for _, c in self.targets):
            self.targets = (*self.targets, (metrics, child))

    def start(self) -> None:
        self.running = True
        self._schedule()

    def stop(self) -> None:
        """Take no more samples: the pending one does nothing. (Its timer handle is not kept to cancel it: the handle
        holds the loop, and the samplers' table holds the sampler.)"""
        self.running = False

    def _schedule(self) -> None:
        loop = self.loop()
        if loop is None:  # collected: nothing left to sample
            self.stop()
            return
        try:
            self._due = loop.time() + self.interval
            loop.call_at(self._due, self._sample)
        except Exception as exc:
            self.running = False
            self._record_error(exc)

    def _sample(self) -> None:
        loop = self.loop()
        if loop is None or not self.running:
            return
        # a timer runs when its due time is within the clock's resolution: a few microseconds early reads 0
        delay = max(0.0, loop.time() - self._due)
        for metrics, child in self.targets:
            try:
                child.observe(delay)
            except Exception as exc:
                record_error(COMPONENT, exc, metrics)
        if self.running:
            self._schedule()

    def _record_error(self, exc: BaseException) -> None:
        for metrics, _ in self.targets or ((None, None),):
            record_error(COMPONENT, exc, metrics)


#: The sampler of each event loop (not keeping the loop alive: a collected loop's entry goes with it).
_samplers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopSampler] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()


at_fork_in_child(_renew_lock)


def sampler_for(loop: asyncio.AbstractEventLoop) -> LoopSampler | None:
    """The sampler running on ``loop``, if any."""
    return _samplers.get(loop)


def watch(loop: asyncio.AbstractEventLoop, interval: float, metrics: Metrics, child: Any) -> None:
    """Have ``loop``'s sampler observe its delay into ``child`` (a histogram child of ``metrics``), starting the
    sampler (every ``interval`` seconds) if the loop has none running. Call it on the loop's thread. Never raises."""
    try:
        with _lock:
            sampler = _samplers.get(loop)
            if sampler is None or not sampler.running:
                sampler = _samplers[loop] = LoopSampler(loop, interval)
                sampler.add(metrics, child)
                sampler.start()
            else:
                sampler.add(metrics, child)
    except Exception as exc:
        record_error(COMPONENT, exc, metrics)
