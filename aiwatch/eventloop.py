"""Event loop delay: how late the asyncio loop a server runs on runs a callback that was due.

A request to an asyncio server waits in the socket until the loop gets to it, and a response the calling side's loop
reads late waits the same way: a caller counts both as *network* time (its time minus the server's reported time).
A loop that is starved (CPU-bound work on it, a saturated machine) shows here instead:
``aiwatch_event_loop_delay_seconds{service}``.

One :class:`LoopSampler` per running event loop, started by the first request an asyncio integration (the ASGI
middleware, the grpc.aio server interceptor) serves on it: a chain of ``loop.call_at`` callbacks, each due
``interval`` seconds after the previous one ran, records how late it ran (``loop.time()`` when it ran minus when it
was due), and adds the wall time since the previous sample ran (from the sampler's start for the first) to
``aiwatch_event_loop_sampled_seconds_total{service}``: the seconds of the loop's life it watched, so that the
delays' sum over it is the share of the time the loop stood still, also for a scrape target that merges several
processes' loops (prometheus_client's multiprocess mode). Each sample, and the sampler's start, also sets
``aiwatch_event_loop_last_sample_timestamp_seconds{service}`` to the wall clock (``time.time()``, which Prometheus'
``time()`` compares it with; the delays use ``loop.time()``): a merged target serves the stalest live process's, so
one process whose loop is blocked for good shows there while the others keep the merged counter growing. And it
sets ``aiwatch_event_loop_stalled_ratio{service}`` to the share of the last :data:`SHARE_WINDOW` seconds its loop stood
still (its delays over the time watched, in :data:`SHARE_BUCKETS` buckets of loop time): a merged target serves the
largest live process's, where the counters' ratio is the mean over the processes. Several loops of one process
recording for one service (threads each running asyncio, sharing an app) set the same two gauges: the timestamp is
the least recently sampled running loop's (a loop blocked for good is running, inside the callback that blocks it,
and shows while the others sample; a loop kept between calls and not running is left out), the share the largest
loop's. A timer
callback, not a task: a closed loop drops it
(nothing pending, nothing to cancel), and it never keeps ``run_until_complete``, ``asyncio.run`` or a server's
shutdown waiting; the sampler of a loop closed is retired when the loop is collected, or, still referenced, at the
next scrape or the start of another loop's sampler (:func:`retire_closed`). The interval is
``$AIWATCH_EVENT_LOOP_INTERVAL`` (``off`` turns the sampler off), as the recorder
that started the sampler read it: a loop has one sampler, and a later recorder asking it for another interval gets
the first one (a warning says so, once per loop). The sampler holds its targets weakly: the metrics of a recorder
that is gone (a reloaded app, a middleware rebuilt) are not kept alive by it, and it stops when none is left.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from aiwatch.amounts import period
from aiwatch.deferred import at_scrape
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

#: The seconds of loop time ``aiwatch_event_loop_stalled_ratio`` covers (``latency.window``'s default in the rules),
#: counted in this many buckets: it covers the last 270 to 300 s (less after a longer stall), in constant memory
#: whatever the interval.
SHARE_WINDOW = 300.0
SHARE_BUCKETS = 10

_log = logging.getLogger("aiwatch")

#: The rules config's default ``latency.loop_stuck_window`` (2m), in seconds: AiwatchEventLoopDelayHigh takes a
#: replica whose sampler took no sample over it for a loop stuck. An interval as long leaves healthy loops without a
#: sample over some of those windows.
DEFAULT_STUCK_WINDOW = 120.0
_long_intervals_warned: set[float] = set()


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
    if interval > DEFAULT_STUCK_WINDOW / 2 and interval not in _long_intervals_warned:
        # "1000" meant as milliseconds: every healthy replica paged as a stuck loop, with nothing said
        _long_intervals_warned.add(interval)
        _log.warning("aiwatch: %s is %g seconds (seconds, not milliseconds): AiwatchEventLoopDelayHigh and the "
                     "console's loop table take a loop that took no sample over the rules' latency.loop_stuck_window "
                     "(2m by default) for stuck, so healthy loops will read as stuck (the alert fires once samples "
                     "are more than its 10m 'for' apart). Lower it (the default is %s), or set loop_stuck_window to "
                     "at least 2 scrape intervals plus it", EVENT_LOOP_INTERVAL.name, interval,
                     EVENT_LOOP_INTERVAL.default)
    return interval


class LoopSampler:
    """Measures one event loop's delay every ``interval`` seconds into the histogram children of its targets, and the
    time it watched the loop into their counter children.

    Runs only on its loop's thread: it is started from a request on the loop, and its callbacks run there. A failure
    is counted (``aiwatch_instrumentation_errors_total{component="event_loop"}``), never raised into the loop; one in
    scheduling the next sample ends the sampler. Its targets are held weakly: one whose histogram child, or every
    metrics that asked for it, is gone is dropped, and the sampler stops when it has none left."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        #: weak: the loop's entry in the samplers' table holds its sampler, which must not hold the loop alive. A loop
        #: closed drops the pending sample, so no sample finds it gone: its collection retires the targets
        self.loop = weakref.ref(loop, self._loop_gone)
        self.interval = interval
        #: the children each sample is recorded into (histogram, counter, gauges): one per service and registry.
        #: Weak: a loop lives as long as its process, and the recorders made on it (a reloaded app, a middleware rebuilt
        #: per mount, tests) come and go; held, each kept its registry alive and was observed into
        self._targets: tuple[_Target, ...] = ()
        self.running = False
        #: whether a recorder asking for another interval was logged (once per loop: :func:`watch`)
        self.warned = False
        self._due = 0.0
        #: ``loop.time()`` when the previous sample ran (when the sampler started, before the first)
        self._ran = 0.0
        self._share = _Share()
        #: the wall clock at the last sample (at the start, before the first) and the share it found, which the
        #: samplers of other loops setting the same gauges read (:meth:`_oldest`, :meth:`_largest`)
        self.stamped: float | None = None
        self.stalled: float | None = None

    @property
    def targets(self) -> tuple[tuple[Metrics, Any, Any], ...]:
        """The (metrics, histogram child, counter child) triples still alive, one per histogram child."""
        return tuple(found for found in (target.resolve() for target in self._targets) if found is not None)

    def add(self, metrics: Metrics, child: Any, sampled: Any, stamp: Any = None, share: Any = None) -> None:
        """Record into ``child`` (a histogram child of ``aiwatch_event_loop_delay_seconds``) and ``sampled`` (the
        same service's child of ``aiwatch_event_loop_sampled_seconds_total``), both of ``metrics``, set ``stamp``
        (its child of ``aiwatch_event_loop_last_sample_timestamp_seconds``, if given) to the wall clock at once and
        at each sample, and ``share`` (its child of ``aiwatch_event_loop_stalled_ratio``, if given) to the share of
        the last :data:`SHARE_WINDOW` seconds the loop stood still at each sample."""
        live = self._live()
        for target in live:
            if target.child() is child:
                target.own(metrics)
                if stamp is not None and target.stamp() is None:
                    target.stamp = weakref.ref(stamp)
                if share is not None and target.share() is None:
                    target.share = weakref.ref(share)
                break
        else:
            live = (*live, _Target(metrics, child, sampled, stamp, share))
        self._targets = live
        if stamp is not None:
            # at once, not at the first sample: a child is made at 0, which the rules read as no value; set now, a
            # loop blocked from its first request on shows its age from here
            try:
                wall = time.time()
                if self.stamped is None:
                    self.stamped = wall
                stamp.set(self._oldest(stamp, wall))
            except Exception as exc:
                record_error(COMPONENT, exc, metrics)

    def _others(self, gauge: Any, kind: str) -> list[LoopSampler]:
        """The samplers of the process's other open loops that set ``gauge`` (their targets' ``kind``: ``stamp`` or
        ``share``): two loops recording through one recorder (two threads each running asyncio, sharing an app) set
        the same service's gauges."""
        if len(_samplers) < 2:  # the common case: one loop
            return []
        with _lock:
            samplers = list(_samplers.values())
        found = []
        for sampler in samplers:
            if sampler is self or not sampler.running:
                continue
            loop = sampler.loop()
            # closed (not retired yet: retire_closed), or not running: a loop kept between calls
            # (run_until_complete) is idle, not stuck; a blocked loop is running, inside the callback that blocks it
            if loop is None or loop.is_closed() or not loop.is_running():
                continue
            if any(getattr(target, kind)() is gauge for target in sampler._targets):
                found.append(sampler)
        return found

    def _oldest(self, stamp: Any, stamped: float) -> float:
        """The last sample's time of the loop that sampled least recently, of this one (at ``stamped``) and the others
        setting ``stamp``: each sampler set its own, so a loop blocked for good read as sampled while another loop
        sampled (2.5 s blocked read 0.006 s old), and the rules' stuck loop was never seen."""
        for other in self._others(stamp, "stamp"):
            if other.stamped is not None:
                stamped = min(stamped, other.stamped)
        return stamped

    def _largest(self, share: Any, stalled: float) -> float:
        """The largest share of this loop's (``stalled``) and the others' setting ``share``: each sampler set its own,
        and the gauge flipped between them (0.02 and 0.8 read by turns)."""
        for other in self._others(share, "share"):
            if other.stalled is not None:
                stalled = max(stalled, other.stalled)
        return stalled

    def _live(self) -> tuple[_Target, ...]:
        return tuple(target for target in self._targets if target.resolve() is not None)

    def start(self) -> None:
        self.running = True
        self._schedule(starting=True)

    def stop(self, live: tuple[_Target, ...] = ()) -> None:
        """Take no more samples: the pending one does nothing, and the targets' gauges read as removed
        (:meth:`_Target.retire`) unless one of the ``live`` targets (another sampler's) still sets them. (Its timer
        handle is not kept to cancel it: the handle holds the loop, and the samplers' table holds the sampler.)"""
        self.running = False
        for target in self._targets:
            target.retire(live)

    def _loop_gone(self, _: object) -> None:
        """The loop was collected: no more samples, and its targets retired. A collection runs this inside whatever
        lock its thread holds then (a gauge's own, setting it), so the gauges are set later, by the next call or
        scrape of their metrics (:mod:`aiwatch.deferred`)."""
        if not self.running:
            return
        self.running = False
        for target in self._targets:
            found = target.resolve()
            if found is not None:
                found[0].deferred.append(functools.partial(target.retire, ()))

    def _schedule(self, starting: bool = False) -> None:
        loop = self.loop()
        if loop is None:  # collected: nothing left to sample
            self.stop()
            return
        try:
            now = loop.time()
            if starting:  # the first sample's watched time counts from here
                self._ran = now
            self._due = now + self.interval
            # an empty context: by default a callback runs in a copy of the scheduling one, which the chain passed on
            # from the request that started the sampler (its timeline, its span) for the loop's life
            loop.call_at(self._due, self._sample, context=contextvars.Context())
        except Exception as exc:
            self._record_error(exc)
            self.stop()

    def _sample(self) -> None:
        loop = self.loop()
        if loop is None or not self.running:
            return
        now = loop.time()
        # a timer runs when its due time is within the clock's resolution: a few microseconds early reads 0
        delay = max(0.0, now - self._due)
        # the interval, this sample's delay and the previous one's recording and scheduling: the sums telescope to
        # the time from the sampler's start to its last sample, so their rate is the number of loops watched
        watched = max(0.0, now - self._ran)
        self._ran = now
        # the wall clock, for the timestamp Prometheus' time() reads it against (loop.time() is monotonic, of no epoch)
        stamped = time.time()
        self.stamped = stamped
        try:
            stalled = self.stalled = self._share.add(now, watched, delay)
        except Exception as exc:  # the other series are still recorded
            stalled = None
            self._record_error(exc)
        gone = False
        for target in self._targets:
            found = target.resolve()
            if found is None:
                gone = True
                continue
            metrics, child, sampled = found
            try:
                # the time watched first: a scrape between the two reads the share low, never above 100%
                sampled.inc(watched)
                child.observe(delay)
                stamp = target.stamp()
                if stamp is not None:
                    stamp.set(self._oldest(stamp, stamped))
                share = target.share()
                if share is not None and stalled is not None:
                    share.set(self._largest(share, stalled))
            except Exception as exc:
                record_error(COMPONENT, exc, metrics)
        if gone:
            live = self._live()
            for target in self._targets:
                if target not in live:
                    target.retire(live)
            self._targets = live
            if not self._targets:  # every recorder on the loop is gone: the next one to watch it starts another
                self.stop()
        if self.running:
            self._schedule()

    def _record_error(self, exc: BaseException) -> None:
        for metrics, _, _ in self.targets or ((None, None, None),):
            record_error(COMPONENT, exc, metrics)


class _Target:
    """A histogram child a sampler observes into, the counter child it adds the watched time to, and the metrics
    that asked for them, all held weakly. Several may share the children (in multiprocess mode every ``Metrics`` of a
    process holds the same metric objects): the target lives while its children and any of them do, and a failure
    is counted in the first one alive."""

    __slots__ = ("child", "owners", "sampled", "share", "stamp")

    def __init__(self, metrics: Metrics, child: Any, sampled: Any, stamp: Any = None, share: Any = None) -> None:
        self.child = weakref.ref(child)
        self.sampled = weakref.ref(sampled)
        #: the gauge children of the last sample's time and of the recent share (none: a caller that gave none)
        self.stamp: Callable[[], Any] = _none if stamp is None else weakref.ref(stamp)
        self.share: Callable[[], Any] = _none if share is None else weakref.ref(share)
        self.owners: tuple[weakref.ref[Metrics], ...] = (weakref.ref(metrics),)

    def own(self, metrics: Metrics) -> None:
        owners = tuple(ref for ref in self.owners if ref() is not None)
        if all(ref() is not metrics for ref in owners):
            owners = (*owners, weakref.ref(metrics))
        self.owners = owners

    def retire(self, live: tuple[_Target, ...]) -> None:
        """No sampler records into this target any more: set its timestamp to +Inf (its removed value, which
        ``livemin`` passes over) and its share to 0, unless one of the ``live`` targets still sets them. Left at their
        last values, they froze: in multiprocess mode the gauge children are the process's and outlive the recorder
        that dropped them (an app rebuilt, a loop closed), and an idle worker's timestamp aged as if its loop hung."""
        stamp, share = self.stamp(), self.share()
        try:
            if stamp is not None and all(other.stamp() is not stamp for other in live):
                stamp.set(math.inf)
            if share is not None and all(other.share() is not share for other in live):
                share.set(0.0)
        except Exception as exc:
            found = self.resolve()
            record_error(COMPONENT, exc, found[0] if found is not None else None)

    def resolve(self) -> tuple[Metrics, Any, Any] | None:
        child, sampled = self.child(), self.sampled()
        if child is None or sampled is None:
            return None
        for ref in self.owners:
            metrics = ref()
            if metrics is not None:
                return metrics, child, sampled
        return None


def _none() -> None:
    return None


class _Share:
    """The share of the last :data:`SHARE_WINDOW` seconds of loop time a loop stood still: its samples' delays over
    the time they watched, summed in :data:`SHARE_BUCKETS` buckets by the loop time they ran at (a stall counts in
    the bucket of the sample that ends it, as the counters' rate counts it at the scrape after it)."""

    __slots__ = ("buckets", "delay", "watched")

    def __init__(self) -> None:
        #: [start, watched, delay] per bucket, oldest first
        self.buckets: collections.deque[list[float]] = collections.deque()
        #: the buckets' totals: added to at each sample, summed anew when a bucket starts or leaves (every 30 s or
        #: so), so no rounding error builds up from subtracting the buckets that leave
        self.watched = 0.0
        self.delay = 0.0

    def add(self, now: float, watched: float, delay: float) -> float | None:
        """Count a sample that ran at ``now``; the share over the window, ``None`` before any time was watched."""
        width = SHARE_WINDOW / SHARE_BUCKETS
        buckets = self.buckets
        changed = not buckets or now >= buckets[-1][0] + width
        if changed:
            buckets.append([now, watched, delay])
        else:
            last = buckets[-1]
            last[1] += watched
            last[2] += delay
            self.watched += watched
            self.delay += delay
        while buckets[0][0] < now - SHARE_WINDOW:  # never the newest: it started at most ``width`` ago
            buckets.popleft()
            changed = True
        if changed:
            self.watched = sum(bucket[1] for bucket in buckets)
            self.delay = sum(bucket[2] for bucket in buckets)
        total = self.watched
        return min(1.0, self.delay / total) if total > 0 else None


#: The sampler of each event loop (not keeping the loop alive: a collected loop's entry goes with it).
_samplers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopSampler] = weakref.WeakKeyDictionary()
_lock = threading.RLock()  # reentrant: a sampler started under it reads the others (LoopSampler._others)


def _renew_lock() -> None:
    global _lock
    _lock = threading.RLock()


at_fork_in_child(_renew_lock)


def retire_closed() -> None:
    """Stop the samplers of the loops closed but still referenced (by a runner, a test fixture, an app that keeps
    its loop), and drop them from the table: a closed loop drops the pending sample, so no sample runs again to find
    it closed, and the collection that retires a loop's sampler never comes. Their timestamp aged and their share
    stood at its last value, as a loop hung for good would show, and the table grew by one sampler a loop. Run at
    every scrape and when a sampler starts; the gauges another running sampler sets are left to it. Never raises."""
    try:
        with _lock:
            running = [(loop, sampler) for loop, sampler in list(_samplers.items()) if sampler.running]
            closed = [sampler for loop, sampler in running if _is_closed(loop, sampler)]
            for loop, sampler in running:
                if sampler in closed:
                    del _samplers[loop]
        if not closed:
            return
        live = tuple(target for _, sampler in running if sampler not in closed for target in sampler._live())
        for sampler in closed:
            sampler.stop(live)
    except Exception as exc:
        record_error(COMPONENT, exc, None)


at_scrape(retire_closed)


def _is_closed(loop: asyncio.AbstractEventLoop, sampler: LoopSampler) -> bool:
    try:
        return loop.is_closed()
    except Exception as exc:  # a loop that cannot tell is left running, as before
        sampler._record_error(exc)
        return False


def sampler_for(loop: asyncio.AbstractEventLoop) -> LoopSampler | None:
    """The sampler running on ``loop``, if any."""
    return _samplers.get(loop)


def watch(loop: asyncio.AbstractEventLoop, interval: float, metrics: Metrics, child: Any, sampled: Any,
          stamp: Any = None, share: Any = None) -> None:
    """Have ``loop``'s sampler observe its delay into ``child`` (a histogram child of ``metrics``) and add the time it
    watched the loop to ``sampled`` (a counter child of ``metrics``), and set ``stamp`` (a gauge child of
    ``metrics``, if given) to the wall clock at once and at each sample, and ``share`` (a gauge child of ``metrics``,
    if given) to the share of the last :data:`SHARE_WINDOW` seconds the loop stood still, all held weakly, starting
    the sampler (every ``interval`` seconds) if the loop has none running. A loop has one sampler: asked for another
    interval than the running one's, it keeps its own, and a warning naming both is logged (once per loop). Call it
    on the loop's thread. Never raises."""
    try:
        if _samplers.get(loop) is None:
            retire_closed()
        with _lock:
            sampler = _samplers.get(loop)
            if sampler is None or not sampler.running:
                started = _samplers[loop] = LoopSampler(loop, interval)
                started.warned = sampler is not None and sampler.warned
                started.add(metrics, child, sampled, stamp, share)
                started.start()
                return
            if interval != sampler.interval and not sampler.warned:
                sampler.warned = True
                _log.warning("aiwatch: this event loop's delay is already sampled every %g s; a recorder asking for "
                             "every %g s (AIWATCH_EVENT_LOOP_INTERVAL when it was made, or its loop_interval) shares "
                             "that sampler: a loop has one, at the interval of the first recorder to watch it",
                             sampler.interval, interval)
            sampler.add(metrics, child, sampled, stamp, share)
    except Exception as exc:
        record_error(COMPONENT, exc, metrics)
