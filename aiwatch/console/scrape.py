"""The console's embedded data source: scrape ``/metrics`` endpoints directly, no Prometheus needed.

A background thread starts a scrape of every endpoint each ``interval`` seconds, at once on a small pool (with
:mod:`aiwatch.scrape`, the one reader of ``/metrics``), into a bounded in-memory history (at most ``history`` seconds,
as a ring buffer per endpoint), and the panel questions are answered from it, on the metrics named in
:mod:`aiwatch.console.queries` and with the same math as its PromQL: per-second rates over a window (counter resets
handled), sums by label, ratios, and quantiles from histogram buckets
(:func:`~aiwatch.console.source.histogram_quantile`). Each scrape is stamped when it began, so a
slow endpoint neither delays nor skews the others; an endpoint still answering its last scrape is not asked again
until it has answered (or its timeout ended it).

    >>> src = ScrapeSource(["http://127.0.0.1:8000/metrics"], interval=5, history=1800)  # doctest: +SKIP
    >>> src.throughput(60)  # doctest: +SKIP
    >>> src.close()  # doctest: +SKIP

Differences from Prometheus worth knowing: rates are computed between the first and last scrape inside the window
(no extrapolation to the window's edges), a series new in the window counts from 0 and a histogram's series restart
together (:func:`_grown`; PromQL's ``rate()`` drops a new series' first value and resets each series alone), except
in :meth:`ScrapeSource.loop_stalls`, which reads what an alert reads and so takes PromQL's rule for new series; and
there are no alert rules, so :meth:`ScrapeSource.alerts` raises
:class:`~aiwatch.console.source.NotSupported`.
"""

from __future__ import annotations

import bisect
import http.client
import math
import threading
import urllib.error
import urllib.parse
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING

from aiwatch import clock
from aiwatch.amounts import period
from aiwatch.console import queries as Q
from aiwatch.console.pool import DaemonPool
from aiwatch.console.source import (
    AUTOSCALING_SIGNALS,
    NETWORK_CLAMPED,
    OVERHEAD_CLAMPED,
    QUANTILES,
    UNCLOSED,
    UNMEASURED,
    AlertRow,
    BinRow,
    DataSource,
    DriftRow,
    GpuTable,
    GpuUtilization,
    LoopStall,
    MissingRow,
    NotSupported,
    QualityRow,
    RecoveryRow,
    Series,
    Signal,
    TargetHealth,
    TracedRequest,
    drift_rows,
    extremes,
    gpu_rows,
    gpu_table,
    histogram_quantile,
    loop_stuck_seconds,
    missing_rows,
    one_reference_bins,
    quality_rows,
    quantile_overflows,
    recovery_rows,
    worst_first,
)
from aiwatch.drift.promql import FEATURE_INVALID, FEATURE_MISSING, REFERENCE_MISSING_RATIO
from aiwatch.flags import flag
from aiwatch.httpconfig import HTTPConfig, TooLarge, refuse_credentials
from aiwatch.promapi import bucket_bound
from aiwatch.promql import Metric
from aiwatch.scrape import LabelKey, fetch_metrics_dated, parse_metrics, restart_group, without_le
from aiwatch.scrape import Samples as Scraped
from aiwatch.status import is_error_status
from aiwatch.traffic import REALTIME

#: How far back the wall clock must be set between two readings for the history to be moved back with it
#: (:meth:`ScrapeSource._stamp`): more than the two readings' own jitter.
CLOCK_STEP_SECONDS = 1.0

if TYPE_CHECKING:
    from aiwatch.diagnose.window import WindowTotals

Samples = list[tuple[dict[str, str], float]]
"""Labelled values, the result of one PromQL-like step (``instance`` added)."""

_NO_SLOTS: frozenset[int] = frozenset()

Child = tuple[str, LabelKey]
"""One child of a histogram: its name and labels without ``le``, shared by its ``_bucket``, ``_sum`` and ``_count``."""


#: The sample names the scrape source keeps: every metric it reads (:mod:`aiwatch.console.queries`, and the reads of
#: ``aiwatch diagnose``) is aiwatch's own.
READ_PREFIX = "aiwatch_"


class SeriesIndex:
    """Every series one endpoint exposed within the history, each given a slot: a snapshot then stores only a
    compact array of values by slot (NaN where the series was absent), so the history costs 8 bytes per series per
    scrape instead of a dict of label tuples. A slot is not reused while the index lives; when more of its series
    are absent from the whole history than present in it (a profile reloaded, a model version deployed: series
    under a new ``reference`` or ``model_version`` replace the old ones), the target's history is moved to a new,
    compact index (:meth:`compacted`). Only aiwatch's series (:data:`READ_PREFIX`) get a slot: the console reads no
    other, and another library's series on the same endpoint (a label that churns: a session, a request id) would
    grow every scrape's array."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, LabelKey], int] = {}
        self.by_name: dict[str, list[tuple[LabelKey, int]]] = {}
        self.children: list[tuple[int, Child]] = []  # the slots of histogram samples, with their child
        self.last = array("d")  # each slot's value at the last scrape that had it (NaN before)
        self.nans = _NO_SLOTS  # the NaN slots of the last scrape, shared by the snapshots while they stay the same
        self.scrapes = 0  # the scrapes packed
        self.seen = array("q")  # each slot's last scrape (its number in ``scrapes``) that had its series

    def pack(self, data: Scraped) -> tuple[array[float], frozenset[int]]:
        """The values of one scrape by slot (NaN where a series was absent), and the slots whose series the endpoint
        exported as NaN: a gauge may hold it, and PromQL's ``changes()`` counts a change to and from it. The set is
        the previous scrape's object when the slots are the same (the usual case), so the history keeps one set, not
        one a scrape (a frozenset of 300 slots is about 8 KiB, as much as the values of 1000 series)."""
        data = {name: series for name, series in data.items() if name.startswith(READ_PREFIX)}
        for name, series in data.items():
            for key in series:
                if (name, key) not in self.slots:
                    self._add(name, key)
        self.scrapes += 1
        scrape, seen = self.scrapes, self.seen
        seen.extend(array("q", [0]) * (len(self.slots) - len(seen)))
        values = array("d", [math.nan]) * len(self.slots)
        nans: list[int] = []
        for name, series in data.items():
            for key, value in series.items():
                slot = self.slots[(name, key)]
                values[slot] = value
                seen[slot] = scrape
                if value != value:  # NaN
                    nans.append(slot)
        if len(nans) != len(self.nans) or not self.nans.issuperset(nans):  # the slots are distinct
            self.nans = frozenset(nans) if nans else _NO_SLOTS
        return values, self.nans

    def restarts(self, values: array[float]) -> frozenset[Child]:
        """The histogram children of which a ``_bucket``, ``_sum`` or ``_count`` series went down since the last
        scrape that had it: they restart together, so that is a restart of all three (a ``_sum`` that grew past its
        value before the restart does not show it); a :data:`~aiwatch.scrape.RESTART_COMPANIONS` counter going down
        restarts its histogram's child too. ``values`` (from :meth:`pack`) become the last ones."""
        last = self.last
        last.extend(array("d", [math.nan]) * (len(values) - len(last)))
        out: set[Child] = set()
        for slot, child in self.children:
            value = values[slot]
            if not math.isnan(value):
                if value < last[slot]:  # False while last is NaN
                    out.add(child)
                last[slot] = value
        return frozenset(out)

    def _add(self, name: str, key: LabelKey) -> int:
        slot = len(self.slots)
        self.slots[(name, key)] = slot
        self.by_name.setdefault(name, []).append((key, slot))
        base = restart_group(name)
        if base is not None:
            self.children.append((slot, (base, without_le(key))))
        return slot

    def gone(self, since: int) -> int:
        """How many slots no scrape from the ``since``-th on had."""
        return sum(1 for scrape in self.seen if scrape < since)

    def compacted(self, since: int) -> tuple[SeriesIndex, array[int]]:
        """A new index of the slots a scrape from the ``since``-th on had, in their order, with their last values,
        and the old slot of each new one. This index is left as it is: the snapshots that hold it stay whole."""
        new = SeriesIndex()
        kept = array("q")
        for (name, key), slot in self.slots.items():
            if self.seen[slot] >= since:
                new._add(name, key)
                kept.append(slot)
        new.last = array("d", (self.last[slot] if slot < len(self.last) else math.nan for slot in kept))
        new.seen = array("q", (self.seen[slot] for slot in kept))
        new.scrapes = self.scrapes
        return new, kept


@dataclass(frozen=True)
class Snapshot:
    """One scrape of one endpoint (``ok`` False, with ``error``, when it failed; ``restarts``: the histogram
    children that restarted since the endpoint's previous scrape, :meth:`SeriesIndex.restarts`)."""

    ts: float
    ok: bool
    values: array[float] = field(default_factory=lambda: array("d"))
    index: SeriesIndex | None = None
    error: str = ""
    restarts: frozenset[Child] = frozenset()
    nans: frozenset[int] = frozenset()
    """The slots whose series the endpoint exported as NaN (:meth:`SeriesIndex.pack`)."""
    scrape: int = 0
    """Its number in its index's scrapes (:attr:`SeriesIndex.scrapes`); 0 for a failed one."""

    def series(self, name: str, *, nan: bool = False) -> Iterator[tuple[LabelKey, float]]:
        """``(sorted label items, value)`` of every sample named ``name`` in this scrape; ``nan``: with those the
        endpoint exported as NaN, which are left out otherwise (a NaN slot is a series absent from the scrape)."""
        if self.index is None:
            return
        values, nans = self.values, self.nans if nan else _NO_SLOTS
        for key, slot in list(self.index.by_name.get(name, ())):
            if slot < len(values) and (not math.isnan(values[slot]) or slot in nans):
                yield key, values[slot]

    def has(self, name: str) -> bool:
        return next(self.series(name), None) is not None


#: The fewest slots absent from a target's whole history that make :meth:`_Target.append` compact its index.
MIN_GONE_TO_COMPACT = 1024


class _Target:
    def __init__(self, url: str, maxlen: int) -> None:
        self.url = url
        self.snapshots: deque[Snapshot] = deque(maxlen=maxlen)
        self.index = SeriesIndex()
        self.busy = False  # a scrape of it is under way (guarded by the source's lock)
        #: its host's clock minus the history's, from the Date of its latest answer with one (None before)
        self.clock_offset: float | None = None

    def append(self, snapshot: Snapshot) -> None:
        """Add ``snapshot`` to the history (the oldest leaves it when full), then move the history to a compact
        index when more of its index's slots are absent from the whole history than present, and at least
        :data:`MIN_GONE_TO_COMPACT`: without it the index, and the array of every scrape, grew for good with the
        series that come and go (a profile reloaded each minute, 400 series each: +250 MiB in 8 hours)."""
        self.snapshots.append(snapshot)
        if not snapshot.ok:
            return
        index = self.index
        since = next((s.scrape for s in self.snapshots if s.index is index), index.scrapes)
        gone = index.gone(since)
        if gone < MIN_GONE_TO_COMPACT or gone <= len(index.slots) - gone:
            return
        new, kept = index.compacted(since)
        nans: dict[int, frozenset[int]] = {}  # a set shared by snapshots stays shared
        where = {old: slot for slot, old in enumerate(kept)}
        moved = []
        for s in self.snapshots:
            if s.index is index:
                values = array("d", (s.values[old] if old < len(s.values) else math.nan for old in kept))
                found = nans.get(id(s.nans))
                if found is None:
                    found = nans[id(s.nans)] = frozenset(where[old] for old in s.nans if old in where) or _NO_SLOTS
                s = replace(s, values=values, index=new, nans=found)
            moved.append(s)
        self.snapshots.clear()
        self.snapshots.extend(moved)
        new.nans = self.snapshots[-1].nans
        self.index = new


def _in_window(snaps: list[Snapshot], t: float, window: float) -> list[Snapshot]:
    """The scrapes of one endpoint in ``(t - window, t]``, good and failed."""
    times = [s.ts for s in snaps]
    return snaps[bisect.bisect_right(times, t - window):bisect.bisect_right(times, t)]


def _good_in(snaps: list[Snapshot], t: float, window: float) -> list[Snapshot]:
    """The good scrapes of one endpoint in ``(t - window, t]``."""
    return [s for s in _in_window(snaps, t, window) if s.ok]


def _still_there(grown: dict[LabelKey, tuple[float, float]], service: str, last: float) -> bool:
    """Whether a series of ``service`` in ``grown`` (:func:`_grown`) was in the scrape at ``last``."""
    return any(dict(key).get("service", "") == service and until == last for key, (_, until) in grown.items())


def _changes(values: Sequence[float]) -> int:
    """PromQL's ``changes()`` of a series' samples in time order (Prometheus' ``funcChanges``): how many consecutive
    two differ, where two NaN do not, and a NaN and a number do (5, NaN, 5 changed twice)."""
    return sum(1 for a, b in pairwise(values) if a != b and not (math.isnan(a) and math.isnan(b)))


def _unchanged_services(good: Sequence[Snapshot]) -> set[str]:
    """The services of one endpoint with a last-sample timestamp series that is in two or more of the good scrapes
    ``good`` (in time order) and in the latest of them, never changed (:func:`_changes`: a NaN the endpoint
    exported between equal values is two changes), and reads neither 0 (made, not set), NaN nor infinite (every
    sampler stopped): PromQL's ``changes(..) == 0 and .. > 0 < +Inf and count_over_time(..) >= 2``, whose instant
    selector has no sample of a series gone from the latest scrape (Prometheus marks it stale)."""
    if not good:
        return set()
    seen: dict[LabelKey, list[float]] = {}
    for snap in good:
        for key, value in snap.series(Q.LOOP_LAST_SAMPLE.name, nan=True):
            seen.setdefault(key, []).append(value)
    latest = {key for key, _ in good[-1].series(Q.LOOP_LAST_SAMPLE.name, nan=True)}
    return {dict(key).get("service", "") for key, values in seen.items()
            if key in latest and len(values) >= 2 and _changes(values) == 0 and 0 < values[-1] < math.inf}


def _grown(good: Sequence[Snapshot], name: str, *, promql: bool = False) -> dict[LabelKey, tuple[float, float]]:
    """How much each series ``name`` grew over the good scrapes ``good`` of one endpoint (in time order, at least
    one), with the time of the last of them that had it. Resets handled: a value going down, or its histogram's
    ``_bucket``, ``_sum`` or ``_count`` sibling going down (:attr:`Snapshot.restarts`; a
    :data:`~aiwatch.scrape.RESTART_COMPANIONS` counter and its histogram are siblings), counts the value whole. A series
    absent from the first scrape, which was good, was created since: it counts from 0 there, so a new error status
    or route is counted in full (PromQL's ``rate()`` and ``increase()`` drop a new series' first value).

    ``promql``: PromQL's rule instead, for a view that must read what an alert reads: a series counts from its
    first value wherever it first appears, and one seen in fewer than two of the scrapes has no growth (is left
    out), as ``increase()`` has no result from one sample."""
    # [grown, last value, its time, samples seen]
    state = {key: [0.0, value, good[0].ts, 1] for key, value in good[0].series(name)}
    base = restart_group(name)
    for snap in good[1:]:
        ts, restarted = snap.ts, snap.restarts if base is not None else frozenset()
        for key, value in snap.series(name):
            found = state.get(key)
            if found is None:  # created since the first scrape, which was good and did not have it
                state[key] = [0.0 if promql else value, value, ts, 1]
                continue
            if value < found[1] or (restarted and (base, without_le(key)) in restarted):
                found[0] += value
            else:
                found[0] += value - found[1]
            found[1], found[2], found[3] = value, ts, found[3] + 1
    return {key: (grown, until) for key, (grown, _, until, seen) in state.items() if seen >= 2 or not promql}


class ScrapeSource(DataSource):
    """Scrapes ``endpoints`` (full ``/metrics`` URLs) every ``interval`` seconds, keeping ``history`` seconds.

    - ``points``: at most this many points per over-time panel.
    - ``timeout``: seconds per scrape (default: ``min(interval, 5)``).
    - ``max_bytes``: the largest answer read from an endpoint; a larger one is a failed scrape.
    - ``start``: start the background thread now (tests may call :meth:`scrape_once` themselves instead).
    - ``http``: headers, credentials and TLS for the endpoints (:class:`~aiwatch.httpconfig.HTTPConfig`).
    """

    def __init__(self, endpoints: Sequence[str], interval: float = 5.0, history: float = 1800.0, *,
                 points: int = 120, timeout: float | None = None, start: bool = True,
                 http: HTTPConfig | None = None, max_bytes: int = 32 * 2**20) -> None:
        if not endpoints:
            raise ValueError("ScrapeSource needs at least one /metrics endpoint URL")
        for url in endpoints:
            refuse_credentials(url, "the /metrics URL")  # its URL is on the page, in every failed scrape's message
            try:
                parsed = urllib.parse.urlparse(url)
                parsed.port  # noqa: B018 - a port that is not a number from 0 to 65535 raises
            except ValueError:
                parsed = urllib.parse.urlparse("")
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"endpoint must be a URL like http://127.0.0.1:8000/metrics, got {url!r}")
        self.interval = period(interval, "interval")
        self.history = period(history, "history")
        if self.history < self.interval:
            raise ValueError(f"need history >= interval, got interval={interval} history={history}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise ValueError(f"max_bytes must be an int >= 1, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.points = points
        self.http = http or HTTPConfig()
        self.timeout = timeout if timeout is not None else min(self.interval, 5.0)
        # the loop table's stuck check reads the alert's range (loop_stuck_seconds) whatever the history: kept
        # shorter, a worker frozen for less than the range would read as frozen over all of it
        maxlen = math.ceil(max(self.history, loop_stuck_seconds()) / self.interval) + 1
        self._targets = [_Target(url, maxlen) for url in dict.fromkeys(endpoints)]
        self._instances = instance_names([t.url for t in self._targets])
        self._lock = threading.Lock()
        self._read: tuple[float, float] | None = None  # the wall clock's and the monotonic one's last reading
        self._moved = 0.0  # how many seconds the history was moved back, in all, for the wall clock's steps back
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: DaemonPool | None = None
        self.description = "scraping " + ", ".join(t.url for t in self._targets)
        if flag(start, "start"):
            self.start()

    def scrape_interval(self, service: str | None = None) -> float:
        return self.interval  # one for every endpoint

    def latest_point_age(self) -> float | None:
        """While the scraping thread runs, the latest scrape began at most an interval ago, or two and a timeout
        when one ran long; without it (results :meth:`record`-ed from elsewhere) the history's time is its own."""
        running = self._thread is not None and self._thread.is_alive()
        return 2 * self.interval + self.timeout if running else None

    # --- scraping -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background scraping thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="aiwatch-console-scrape", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:  # a scrape still under way ends at its timeout, on its daemon thread
            pool.shutdown()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = clock.monotonic()
            self._start_scrapes()
            self._stop.wait(max(0.0, self.interval - (clock.monotonic() - began)))

    def scrape_once(self) -> None:
        """Scrape every endpoint once, at once, and append the results to the history (an endpoint whose scrape is
        already under way is not asked again)."""
        wait(self._start_scrapes())

    def _start_scrapes(self) -> list[Future[None]]:
        """Start a scrape of each endpoint not still answering its last one, on the pool."""
        started = []
        with self._lock:
            if self._pool is None:
                self._pool = DaemonPool(min(len(self._targets), 8), "aiwatch-console-scrape")
            for target in self._targets:
                if not target.busy:
                    # busy once submitted; the scrape cannot end before this block does: it records its result
                    # under this lock
                    future = self._pool.submit(partial(self._scrape_into, target, self._pool))
                    target.busy = True
                    future.add_done_callback(partial(self._done, target))  # run, failed or cancelled by close()
                    started.append(future)
        return started

    def _done(self, target: _Target, _: Future[None]) -> None:
        with self._lock:
            target.busy = False

    def _scrape_into(self, target: _Target, pool: DaemonPool) -> None:
        now, moved = self._stamp()
        offset: float | None = None
        try:
            ts, data, error, offset = self._scrape(target.url, now)
        except Exception as exc:  # not lost in its future: the endpoint shows as down with it
            ts, data, error = now, None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._pool is not pool:  # closed while it ran: close() does not wait for it, and drops its result
                return
            ts -= self._moved - moved  # read before a step back the history was moved for while it ran
            if offset is not None:
                target.clock_offset = offset
            if not target.snapshots or ts >= target.snapshots[-1].ts:  # record() may have added a later one
                target.append(self._snapshot(target, ts, data, error))

    @staticmethod
    def _snapshot(target: _Target, ts: float, data: Scraped | None, error: str) -> Snapshot:
        if data is None:
            return Snapshot(ts, False, error=error)
        values, nans = target.index.pack(data)
        return Snapshot(ts, True, values, target.index, restarts=target.index.restarts(values), nans=nans,
                        scrape=target.index.scrapes)

    def record(self, url: str, text: str | None, ts: float | None = None, error: str = "") -> None:
        """Add one scrape result fetched elsewhere: ``text`` in Prometheus text format, or ``None`` for a failed
        scrape (with ``error``). ``url`` must be one of the endpoints; ``ts`` defaults to now and must not go back.
        """
        target = next((t for t in self._targets if t.url == url), None)
        if target is None:
            raise ValueError(f"{url!r} is not one of this source's endpoints")
        ts = self.now() if ts is None else ts
        data = parse_metrics(text) if text is not None else None
        with self._lock:
            if target.snapshots and ts < target.snapshots[-1].ts:
                raise ValueError(f"scrape time {ts} is older than the latest one of {url}")
            target.append(self._snapshot(target, ts, data, error))

    def _scrape(self, url: str, now: float | None = None) -> tuple[float, Scraped | None, str, float | None]:
        """``(time, parsed samples or None, error, the endpoint's clock offset or None)`` of one scrape begun at that
        time (default now)."""
        now = self.now() if now is None else now
        try:
            data, offset = fetch_metrics_dated(url, self.timeout, http=self.http, max_bytes=self.max_bytes)
            return now, data, "", offset
        except urllib.error.HTTPError as exc:
            return now, None, f"HTTP {exc.code} {exc.reason}", None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return now, None, str(getattr(exc, "reason", exc)), None
        except http.client.HTTPException as exc:  # not OSError: it would end the scraping thread
            return now, None, f"broken HTTP answer ({type(exc).__name__})", None
        except TooLarge as exc:
            return now, None, str(exc), None
        except ValueError as exc:  # the parser's errors
            return now, None, f"not Prometheus text exposition: {exc}", None

    def now(self) -> float:
        """Now on the clock of the history's times: the wall clock, the history moved back with it when it was set
        back (:meth:`_stamp`)."""
        return self._stamp()[0]

    def _stamp(self) -> tuple[float, float]:
        """``(now, seconds the history was moved back so far)``: now on the wall clock, the history's clock. When the
        wall clock was set back since its last reading (an NTP step, a VM's resume, a container's clock set right) by
        more than :data:`CLOCK_STEP_SECONDS`, the history is moved back as much first, the time between its scrapes
        kept (read on the monotonic clock): else every scrape until the clock reached the latest one's time again was
        dropped as older than it, and the console showed that scrape for as long as the step (an endpoint that went
        down as up, the rates of then as now)."""
        with self._lock:
            wall, steady = clock.wall(), clock.monotonic()
            if self._read is not None:
                back = self._read[0] + (steady - self._read[1]) - wall
                if back > CLOCK_STEP_SECONDS:
                    self._moved += back
                    for target in self._targets:
                        moved = [replace(s, ts=s.ts - back) for s in target.snapshots]
                        target.snapshots.clear()
                        target.snapshots.extend(moved)
            self._read = (wall, steady)
            return wall, self._moved

    def _copy(self) -> list[tuple[str, list[Snapshot]]]:
        with self._lock:
            return [(t.url, list(t.snapshots)) for t in self._targets]

    # --- evaluation (the PromQL functions the panels need) -------------------------------------------------
    def _labels(self, key: LabelKey, url: str) -> dict[str, str]:
        """A sample's labels with its endpoint's ``instance``, named as Prometheus names the target
        (:func:`instance_names`), so that both sources label a replica alike."""
        return {**dict(key), "instance": self._instances.get(url, url)}

    @staticmethod
    def _at(snaps: list[Snapshot], t: float) -> Snapshot | None:
        index = bisect.bisect_right([s.ts for s in snaps], t) - 1
        return snaps[index] if index >= 0 else None

    def _gauge(self, data: list[tuple[str, list[Snapshot]]], name: str, t: float) -> Samples:
        out: Samples = []
        for url, snaps in data:
            snap = self._at(snaps, t)
            if snap is not None and snap.ok:
                out.extend((self._labels(key, url), v) for key, v in snap.series(name))
        return out

    def _rate(self, data: list[tuple[str, list[Snapshot]]], name: str, t: float, window: float) -> Samples:
        """Per-second rate of counter samples ``name`` over ``(t - window, t]`` per endpoint: each series' growth
        (:func:`_grown`) over the good scrapes in the window, from the first of them to the last that had it."""
        out: Samples = []
        for url, snaps in data:
            good = _good_in(snaps, t, window)
            if len(good) < 2:
                continue
            since = good[0].ts
            out.extend((self._labels(key, url), grown / (until - since))
                       for key, (grown, until) in _grown(good, name).items() if until > since)
        return out

    # --- windows (what ``aiwatch diagnose`` reads) ------------------------------------------------------------
    def increase(self, name: str, start: float, end: float) -> Samples:
        """How much each counter sample ``name`` grew between ``start`` and ``end``, per endpoint (``instance``
        added), resets handled (a histogram's ``_bucket``, ``_sum`` and ``_count`` of one label set reset together:
        one of them going down is enough). Counted from the last good scrape at or before ``start`` to the last
        good scrape at or before ``end``; without a scrape before ``start``, from the first one in the window. A
        series absent from that first scrape was created since, so it counts from 0: a new error status or route in
        the window is counted in full. No extrapolation: it is what the scrapes saw."""
        out: Samples = []
        for url, snaps in self._copy():
            good = [s for s in snaps if s.ok and s.ts <= end]
            times = [s.ts for s in good]
            first = bisect.bisect_right(times, start) - 1
            window = good[max(first, 0):]
            if len(window) < 2:
                continue
            out.extend((self._labels(key, url), grown) for key, (grown, _) in _grown(window, name).items())
        return out

    def over_time(self, name: str, start: float, end: float, how: str = "avg") -> Samples:
        """Each gauge sample ``name``'s average (``how="avg"``), maximum (``"max"``) or latest value (``"last"``)
        over the good scrapes in ``[start, end]``, per endpoint (``instance`` added): PromQL's ``avg_over_time`` /
        ``max_over_time`` / ``last_over_time``. ``"gone"``: for a series not in the endpoint's last scrape at or
        before ``end`` (a failed one has none, as Prometheus marks a failed target's series stale), how many seconds
        before ``end`` the last good scrape in the window that had it was; 0 for one in it."""
        if how not in ("avg", "max", "last", "gone"):
            raise ValueError(f"how must be 'avg', 'max', 'last' or 'gone', got {how!r}")
        out: Samples = []
        for url, snaps in self._copy():
            seen: dict[LabelKey, list[float]] = {}
            when: dict[LabelKey, float] = {}
            for snap in snaps:
                if snap.ok and start <= snap.ts <= end:
                    for key, value in snap.series(name, nan=True):  # an exported NaN is a series present
                        when[key] = snap.ts
                        if not math.isnan(value):
                            seen.setdefault(key, []).append(value)
            if how == "gone":
                latest = max((s.ts for s in snaps if s.ts <= end), default=None)
                out += [(self._labels(key, url), 0.0 if ts == latest else end - ts) for key, ts in when.items()]
                continue
            for key, values in seen.items():
                value = sum(values) / len(values) if how == "avg" else max(values) if how == "max" else values[-1]
                out.append((self._labels(key, url), value))
        return out

    def covered_from(self, start: float, end: float) -> float | None:
        """Where the history's coverage of ``[start, end]`` begins: ``start`` when an endpoint has a good scrape at
        or before it, else the first good scrape in the window; ``None`` without a good scrape in the window."""
        good = [s.ts for _, snaps in self._copy() for s in snaps if s.ok and s.ts <= end]
        if any(t <= start for t in good):
            return start
        inside = [t for t in good if t >= start]
        return min(inside) if inside else None

    def counted_span(self, start: float, end: float) -> tuple[float, float] | None:
        """The scrapes :meth:`increase` counts ``[start, end]`` between: from the earliest of the endpoints' first
        counted scrape (the last good one at or before ``start``, else the first in the window) to the latest of
        their last good scrape at or before ``end``; ``None`` when no endpoint has two of them."""
        spans = []
        for _, snaps in self._copy():
            times = [s.ts for s in snaps if s.ok and s.ts <= end]
            counted = times[max(bisect.bisect_right(times, start) - 1, 0):]
            if len(counted) >= 2:
                spans.append((counted[0], counted[-1]))
        return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None

    def window_totals(self, start: float, end: float) -> WindowTotals:
        from aiwatch.diagnose.sources import scrape_totals

        return scrape_totals(self, start, end)

    def _times(self, data: list[tuple[str, list[Snapshot]]]) -> list[float]:
        stamps = sorted({s.ts for _, snaps in data for s in snaps})
        if len(stamps) > self.points:
            step = len(stamps) / self.points
            stamps = [stamps[min(len(stamps) - 1, round((i + 1) * step) - 1)] for i in range(self.points)]
        return stamps

    def _range(self, fn: Callable[[list[tuple[str, list[Snapshot]]], float], Samples]) -> list[Series]:
        """``fn``'s answers over time as series."""
        return self._bounded_range(lambda data, t: [(labels, value, False) for labels, value in fn(data, t)])

    def _bounded_range(self, fn: Callable[[list[tuple[str, list[Snapshot]]], float], list[Quantile]],
                       ) -> list[Series]:
        """``fn``'s answers over time as series, each value with whether it is only a lower bound then
        (:attr:`Series.lower_bounds`)."""
        data = self._copy()
        series: dict[LabelKey, list[tuple[float, float]]] = {}
        bounded: dict[LabelKey, set[float]] = {}
        for t in self._times(data):
            for labels, value, at_least in fn(data, t):
                if not (math.isnan(value) or math.isinf(value)):
                    key = tuple(sorted(labels.items()))
                    series.setdefault(key, []).append((t, value))
                    if at_least:
                        bounded.setdefault(key, set()).add(t)
        return [Series(dict(key), points, lower_bounds=frozenset(bounded.get(key, ())))
                for key, points in series.items()]

    def _now(self, fn: Callable[[list[tuple[str, list[Snapshot]]], float], Samples]) -> Samples:
        t = self.now()
        return fn(self._copy(), t)

    # --- the panel questions ------------------------------------------------------------------------------
    def health(self) -> list[TargetHealth]:
        out = []
        for url, snaps in self._copy():
            if not snaps:
                out.append(TargetHealth(url, False, "not scraped yet"))
            else:
                out.append(TargetHealth(url, snaps[-1].ok, snaps[-1].error))
        return out

    def latency_quantiles(self, window: float) -> list[Series]:
        return self._quantile_range(Q.REQUESTS.bucket, ("service",), window, quantiles=QUANTILES)

    def phase_split(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            requests = sum_by(self._rate(data, Q.REQUESTS.count, t, window), ("service",))
            phases = sum_by(self._rate(data, Q.PHASES.sum, t, window), ("service", "phase"))
            return [({"service": svc, "phase": phase}, v / requests[(svc,)])
                    for (svc, phase), v in phases.items() if requests.get((svc,), 0.0) > 0]
        return self._range(fn)

    def throughput(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            rates = sum_by(self._rate(data, Q.REQUESTS.count, t, window), ("service",))
            return [({"service": k[0]}, v) for k, v in rates.items()]
        return self._range(fn)

    def error_ratio(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            rates = self._rate(data, Q.REQUESTS.count, t, window)
            total = sum_by(rates, ("service",))
            errors = sum_by([(lb, v) for lb, v in rates if is_error_status(lb.get("status", ""))], ("service",))
            return [({"service": k[0]}, errors.get(k, 0.0) / v) for k, v in total.items() if v > 0]
        return self._range(fn)

    def network_time(self, window: float) -> list[Series]:
        return self._quantile_range(Q.NETWORK.bucket, ("service", "peer"), window)

    def link_throughput(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            moved = sum_by(self._rate(data, Q.CLIENT_BYTES.name, t, window), ("service", "peer"))
            network = sum_by(self._rate(data, Q.NETWORK.sum, t, window), ("service", "peer"))
            return [({"service": svc, "peer": peer}, v / network[(svc, peer)])
                    for (svc, peer), v in moved.items() if network.get((svc, peer), 0.0) > 0]
        return self._range(fn)

    def measurement_caveats(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            calls = sum_by(self._rate(data, Q.NETWORK.count, t, window), ("service", "peer"))
            clamped = sum_by(self._rate(data, Q.NETWORK_CLAMPED.name, t, window), ("service", "peer"))
            out: Samples = [({"caveat": NETWORK_CLAMPED, "service": svc, "peer": peer}, v / calls[(svc, peer)])
                            for (svc, peer), v in clamped.items() if calls.get((svc, peer), 0.0) > 0]
            made = sum_by(self._rate(data, Q.CLIENT_REQUESTS.count, t, window), ("service", "peer"))
            out += [({"caveat": UNMEASURED, "service": svc, "peer": peer}, max(0.0, 1.0 - calls[(svc, peer)] / v))
                    for (svc, peer), v in made.items() if v > 0 and (svc, peer) in calls]
            requests = sum_by(self._rate(data, Q.REQUESTS.count, t, window), ("service",))
            for caveat, counter in ((OVERHEAD_CLAMPED, Q.OVERHEAD_CLAMPED), (UNCLOSED, Q.UNCLOSED_RESPONSES)):
                counted = sum_by(self._rate(data, counter.name, t, window), ("service",))
                out += [({"caveat": caveat, "service": k[0]}, v / requests[k])
                        for k, v in counted.items() if requests.get(k, 0.0) > 0]
            return out
        return self._range(fn)

    def loop_delay(self, window: float) -> list[Series]:
        return self._p99_and_mean(Q.LOOP_DELAY, ("service",), window)

    def background_phases(self, window: float) -> list[Series]:
        return self._p99_and_mean(Q.BACKGROUND_PHASES, ("service", "phase"), window)

    def _p99_and_mean(self, histogram: Metric, by: tuple[str, ...], window: float) -> list[Series]:
        """A histogram's p99 and mean over the window by ``by``, as ``stat`` ``p99`` and ``mean``."""
        def answers(data: list[tuple[str, list[Snapshot]]], t: float) -> list[Quantile]:
            p99 = _quantiles(self._rate(data, histogram.bucket, t, window), by, (("p99", 0.99),))
            sums = sum_by(self._rate(data, histogram.sum, t, window), by)
            counts = sum_by(self._rate(data, histogram.count, t, window), by)
            mean = [({**dict(zip(by, k, strict=True)), "stat": "mean"}, sums.get(k, 0.0) / c, False)
                    for k, c in counts.items() if c > 0]
            return [({**{label: labels[label] for label in by}, "stat": "p99"}, value, at_least)
                    for labels, value, at_least in p99] + mean

        return self._bounded_range(answers)

    def loop_stalls(self, window: float) -> list[LoopStall]:
        """Per endpoint and ``service``: the growth of the delays' ``_sum`` over that of the time watched, between
        the good scrapes in the window (:func:`_grown`, restarts handled), on PromQL's rule, as the alert reads it: a
        series counts from its first value in the window, and one seen in only one scrape has no growth yet (a
        replica that started in the window is not charged its startup, and is read from its second scrape). A
        service whose time watched did not grow while the endpoint's latest scrape in the window succeeded and
        still had its counter is stuck: its loop took no sample the whole window (a loop that serves ``/metrics``
        itself fails its scrape instead, and shows as down). A growth that is not a finite number (a counter at
        infinity) gives an unknown share, NaN (:func:`~aiwatch.console.source.worst_first` puts it last). Not with
        fewer than two good scrapes in the window.

        The worst worker's share (:attr:`LoopStall.worst`) is the largest ``aiwatch_event_loop_stalled_ratio`` of
        the service in the latest good scrape; the service is :attr:`LoopStall.worker_stuck` when the latest scrape
        succeeded and a series of its ``aiwatch_event_loop_last_sample_timestamp_seconds`` was in two good scrapes
        or more of the last :func:`~aiwatch.console.source.loop_stuck_window` (not the window: the alert's range)
        and in the latest, never changed, and is neither 0 nor infinite (as :meth:`PanelQueries.
        loop_sample_unchanged` reads it)."""
        t, out = self.now(), []
        for url, snaps in self._copy():
            scraped = _in_window(snaps, t, window)
            good = [s for s in scraped if s.ok]
            if len(good) < 2:
                continue
            watched = _grown(good, Q.LOOP_SAMPLED.name, promql=True)
            late = sum_by([(dict(key), grown)
                           for key, (grown, _) in _grown(good, Q.LOOP_DELAY.sum, promql=True).items()],
                          ("service",))
            worst = max_by([(dict(key), v) for key, v in good[-1].series(Q.LOOP_STALLED.name)], ("service",))
            recent = _in_window(snaps, t, loop_stuck_seconds())
            unchanged = _unchanged_services([s for s in recent if s.ok]) if recent and recent[-1].ok else set()
            instance = self._instances.get(url, url)
            found: list[tuple[str, float, bool]] = []  # (service, share, stuck)
            for (service,), grown in sum_by([(dict(k), g) for k, (g, _) in watched.items()], ("service",)).items():
                if not math.isfinite(grown):
                    found.append((service, math.nan, False))
                elif grown > 0:
                    if (service,) in late:  # as PromQL's division: no share without the delays' _sum
                        share = late[(service,)] / grown
                        found.append((service, share if math.isfinite(share) else math.nan, False))
                elif scraped[-1].ok and good[-1].ts > good[0].ts and _still_there(watched, service, good[-1].ts):
                    found.append((service, 1.0, True))
            out += [LoopStall(service, instance, share, stuck, worst=worst.get((service,)),
                              worker_stuck=service in unchanged) for service, share, stuck in found]
        return worst_first(out)

    def _quantile_range(self, bucket: str, by: tuple[str, ...], window: float,
                        keep: Callable[[dict[str, str]], bool] | None = None,
                        quantiles: Sequence[tuple[str, float]] = QUANTILES[:2]) -> list[Series]:
        def answers(data: list[tuple[str, list[Snapshot]]], t: float) -> list[Quantile]:
            rates = self._rate(data, bucket, t, window)
            return _quantiles([r for r in rates if keep is None or keep(r[0])], by, quantiles)

        return self._bounded_range(answers)

    def _rate_by(self, name: str, by: tuple[str, ...], window: float,
                 keep: Callable[[dict[str, str]], bool] | None = None) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            rates = [r for r in self._rate(data, name, t, window) if keep is None or keep(r[0])]
            return [(dict(zip(by, k, strict=True)), v) for k, v in sum_by(rates, by).items()]
        return self._range(fn)

    def latency_by_class(self, window: float) -> list[Series]:
        return self._quantile_range(Q.REQUESTS.bucket, ("service", "traffic_class"), window)

    def throughput_by_class(self, window: float) -> list[Series]:
        return self._rate_by(Q.REQUESTS.count, ("service", "traffic_class"), window)

    def first_chunk(self, window: float) -> list[Series]:
        return self._quantile_range(Q.TIME_TO_FIRST_CHUNK.bucket, ("service", "route"), window)

    def first_token(self, window: float) -> list[Series]:
        return self._quantile_range(Q.TIME_TO_FIRST_TOKEN.bucket, ("service", "model", "traffic_class"), window)

    def per_output_token(self, window: float) -> list[Series]:
        return self._quantile_range(Q.TIME_PER_OUTPUT_TOKEN.bucket, ("service", "model", "traffic_class"), window)

    def token_rate(self, window: float) -> list[Series]:
        return self._rate_by(Q.TOKEN_USAGE.sum, ("service", "model", "token_type"), window)

    def degraded_share(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            requests = sum_by(self._rate(data, Q.REQUESTS.count, t, window), ("service",))
            degraded = sum_by(self._rate(data, Q.DEGRADED.name, t, window), ("service", "model", "reason"))
            return [({"service": svc, "model": model, "reason": reason}, v / requests[(svc,)])
                    for (svc, model, reason), v in degraded.items() if requests.get((svc,), 0.0) > 0]
        return self._range(fn)

    def version_latency(self, window: float) -> list[Series]:
        return self._quantile_range(Q.PHASES.bucket, ("service", "model", "model_version"), window,
                                    lambda lb: lb.get("phase") == "inference" and lb.get("model_version", "") != "")

    def version_error_ratio(self, window: float) -> list[Series]:
        by = ("service", "model", "model_version")

        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            total = sum_by([(lb, v) for lb, v in self._rate(data, Q.PHASES.count, t, window)
                            if lb.get("phase") == "overhead" and lb.get("model_version", "") != ""], by)
            errors = sum_by(self._rate(data, Q.VERSION_ERRORS.name, t, window), by)
            return [(dict(zip(by, k, strict=True)), errors.get(k, 0.0) / v) for k, v in total.items() if v > 0]
        return self._range(fn)

    def gpu_table(self) -> GpuTable:
        t = self.now()
        data = self._copy()
        rows: dict[tuple[str, str], dict[str, object]] = {}
        for field_name, metric in Q.GPU_GAUGES:
            for key, value in max_by(self._gauge(data, metric, t), ("gpu", "name", "uuid")).items():
                # a GPU is its UUID: GPU 0 of every target's host is another one
                row = rows.setdefault((key[0], key[2]), {"name": key[1], "uuid": key[2]})
                row[field_name] = value
        return gpu_table(gpu_rows(rows))

    def gpu_utilization(self) -> GpuUtilization:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            found = max_by(self._gauge(data, Q.GPU_UTILIZATION.name, t), ("gpu", "uuid"))
            return [({"gpu": k[0], "uuid": k[1]}, v) for k, v in found.items()]
        return extremes(self._range(fn))

    def _gauge_sum(self, name: str, by: str) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            return [({by: k[0]}, v) for k, v in sum_by(self._gauge(data, name, t), (by,)).items()]
        return self._range(fn)

    def queue_depth(self) -> list[Series]:
        return self._gauge_sum(Q.QUEUE_DEPTH.name, "queue")

    def in_flight(self) -> list[Series]:
        return self._gauge_sum(Q.IN_FLIGHT.name, "service")

    def batch_size(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            sums = sum_by(self._rate(data, Q.BATCH_SIZE.sum, t, window), ("model",))
            counts = sum_by(self._rate(data, Q.BATCH_SIZE.count, t, window), ("model",))
            return [({"model": k[0]}, sums.get(k, 0.0) / c) for k, c in counts.items() if c > 0]
        return self._range(fn)

    def cache_hit_ratio(self, window: float) -> list[Series]:
        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            rates = self._rate(data, Q.CACHE_REQUESTS.name, t, window)
            total = sum_by(rates, ("cache",))
            hits = sum_by([(lb, v) for lb, v in rates if lb.get("result") == "hit"], ("cache",))
            return [({"cache": k[0]}, hits.get(k, 0.0) / v) for k, v in total.items() if v > 0]
        return self._range(fn)

    def prediction_log(self, window: float) -> list[Series]:
        return self._rate_by(Q.PREDICTION_LOG_RECORDS.name, ("log", "result"), window,
                             lambda lb: lb.get("result") != Q.SAMPLED_OUT)

    def prediction_log_recovery(self) -> list[RecoveryRow]:
        t = self.now()
        data = self._copy()
        files = sum_by(self._gauge(data, Q.PREDICTION_LOG_RECOVERY_FILES.name, t), ("log", "result"))
        records = sum_by(self._gauge(data, Q.PREDICTION_LOG_RECOVERED_RECORDS.name, t), ("log",))
        # stamped on each app host's clock: moved onto the history's by the offset its answers' Date showed (an app
        # host two hours behind showed a journal torn a minute ago as two hours old, past the alert's window)
        stamps: Samples = []
        for target, (url, snaps) in zip(self._targets, data, strict=True):
            moved = clock.correction(target.clock_offset)
            stamps.extend((labels, stamp - moved)
                          for labels, stamp in self._gauge([(url, snaps)], Q.PREDICTION_LOG_RECOVERY_LAST.name, t))
        last = max_by(stamps, ("log", "result"))
        return recovery_rows({(k[0], k[1]): v for k, v in files.items()}, {k[0]: v for k, v in records.items()},
                             {(k[0], k[1]): v for k, v in last.items()})

    def instrumentation_errors(self, window: float) -> list[Series]:
        return self._rate_by(Q.INSTRUMENTATION_ERRORS.name, ("instance", "component"), window)

    def label_overflow(self, window: float) -> list[Series]:
        return self._rate_by(Q.LABEL_OVERFLOW.name, ("label",), window)

    def drift_table(self) -> list[DriftRow]:
        t = self.now()
        data = self._copy()
        found: dict[tuple[str, str, str], dict[str, float]] = {}
        for key, metric in Q.DRIFT_GAUGES:
            for ident, value in max_by(self._gauge(data, metric, t), ("model", "feature", "test")).items():
                found.setdefault((ident[0], ident[1], ident[2]), {})[key] = value
        return drift_rows(found)

    def model_quality(self) -> list[QualityRow]:
        t = self.now()
        data = self._copy()

        def keyed(name: str) -> dict[tuple[str, str], float]:
            return {(k[0], k[1]): v for k, v in max_by(self._gauge(data, name, t), ("model", "metric")).items()}

        labelled = {k[0]: v for k, v in max_by(self._gauge(data, Q.MODEL_QUALITY_LABELLED.name, t),
                                               ("model",)).items()}
        return quality_rows(keyed(Q.MODEL_QUALITY.name), keyed(Q.MODEL_QUALITY_OBJECTIVE.name), labelled)

    def drift_over_time(self, features: Sequence[tuple[str, str]]) -> list[Series]:
        wanted = set(features)

        def fn(data: list[tuple[str, list[Snapshot]]], t: float) -> Samples:
            samples = [(lb, v) for lb, v in self._gauge(data, Q.DRIFT_SCORE.name, t)
                       if (lb.get("model", ""), lb.get("feature", "")) in wanted]
            by = ("model", "feature", "test")
            return [(dict(zip(by, k, strict=True)), v) for k, v in max_by(samples, by).items()]
        return self._range(fn) if wanted else []

    def feature_distribution(self, model: str, feature: str, window: float) -> list[BinRow]:
        t = self.now()
        data = self._copy()

        def mine(samples: Samples) -> Samples:
            return [(lb, v) for lb, v in samples if lb.get("model") == model and lb.get("feature") == feature]

        by = ("reference", "bin")
        reference = [(dict(zip(by, k, strict=True)), v)
                     for k, v in max_by(mine(self._gauge(data, Q.REFERENCE_RATIO.name, t)), by).items()]
        counts = sum_by(mine(self._rate(data, Q.FEATURE_BINS.name, t, window)), by)
        totals: dict[str, float] = {}
        for (ref, _), c in counts.items():
            totals[ref] = totals.get(ref, 0.0) + c
        live = [({"reference": ref, "bin": b}, c / totals[ref]) for (ref, b), c in counts.items() if totals[ref] > 0]
        return one_reference_bins(reference, live, totals)

    def feature_missing(self, window: float) -> list[MissingRow]:
        t = self.now()
        data = self._copy()
        # each endpoint's counts go to the reference it counts the feature against (its reference ratios'; a ratio
        # removed at a reload reads NaN), as the rule's join does: a rollout's two profiles are never mixed. A ratio
        # without a reference (an older aiwatch's, left in a multiprocess directory) names none where one with it is
        replica = ("instance", "model", "feature")
        refs: dict[tuple[str, ...], str] = {}
        for lb, v in self._gauge(data, Q.REFERENCE_RATIO.name, t):
            key = tuple(lb.get(k, "") for k in replica)
            if v >= 0 and (lb.get("reference") or key not in refs):
                refs[key] = lb.get("reference", "")

        def referenced(samples: Samples) -> Samples:
            return [({**lb, "reference": ref}, v) for lb, v in samples
                    if (ref := refs.get(tuple(lb.get(k, "") for k in replica))) is not None]

        by = ("model", "feature", "reference")
        absent = [(lb, v) for lb, v in self._rate(data, FEATURE_INVALID.name, t, window)
                  if lb.get("reason") == "missing_feature"]
        missing = sum_by(referenced([*self._rate(data, FEATURE_MISSING.name, t, window), *absent]), by)
        values = sum_by(referenced(self._rate(data, Q.FEATURE_BINS.name, t, window)), by)
        # per second: the shares are the same as of the increases, the counts are rates times the window
        totals = {k: missing.get(k, 0.0) + values.get(k, 0.0) for k in set(missing) | set(values)}
        live = {(k[0], k[1], k[2]): missing.get(k, 0.0) / n for k, n in totals.items() if n > 0}
        reference = {(k[0], k[1], k[2]): v
                     for k, v in max_by(referenced(self._gauge(data, REFERENCE_MISSING_RATIO.name, t)), by).items()}
        return missing_rows(live, reference, {(k[0], k[1], k[2]): n * window for k, n in totals.items()})

    def slowest_traces(self, window: float) -> list[TracedRequest]:
        raise NotSupported("The embedded scraper keeps no exemplars (it reads the text format, which carries none): "
                           "start the console with --prometheus URL of a Prometheus run with "
                           "--enable-feature=exemplar-storage to see the slowest traced requests and their trace "
                           "ids.")

    def alerts(self) -> list[AlertRow]:
        raise NotSupported("Alert rules are evaluated by Prometheus: start the console with --prometheus URL to see "
                           "firing and pending alerts. The autoscaling signals below come from the scraped metrics.")

    def autoscaling_signals(self, window: float) -> list[Signal]:
        t = self.now()
        data = self._copy()
        replicas = 0
        for _, snaps in data:
            snap = self._at(snaps, t)
            if snap is not None and snap.ok and any(
                    snap.has(m.name) for m in Q.REPLICA_GAUGES):
                replicas += 1

        def per_replica(samples: Samples) -> float | None:
            return sum(v for _, v in samples) / replicas if samples and replicas else None

        realtime = [(lb, v) for lb, v in self._rate(data, Q.REQUESTS.count, t, window)
                    if lb.get("traffic_class") == REALTIME]
        # replicas up and no real-time request since they started: 0, as the recording rule reads it (once a rate
        # could be read: two good scrapes)
        rated = any(len(_good_in(snaps, t, window)) >= 2 for _, snaps in data)
        queue_wait = _quantiles(self._rate(data, Q.QUEUE_WAIT.bucket, t, window), (), (("p95", 0.95),))
        gpu = self._gauge(data, Q.GPU_UTILIZATION.name, t)
        values = [
            per_replica(self._gauge(data, Q.QUEUE_DEPTH.name, t)),
            per_replica(self._gauge(data, Q.IN_FLIGHT.name, t)),
            per_replica(realtime) if realtime else 0.0 if replicas and rated else None,
            queue_wait[0][1] if queue_wait else None,
            sum(v for _, v in gpu) / len(gpu) if gpu else None,
        ]
        bounded = [False, False, False, bool(queue_wait) and queue_wait[0][2], False]
        return [Signal(name, value, unit, help_text, at_least)
                for (name, unit, help_text), value, at_least in zip(AUTOSCALING_SIGNALS, values, bounded, strict=True)]


def instance_names(urls: Sequence[str]) -> dict[str, str]:
    """Each endpoint URL's ``instance`` as Prometheus names a scrape target by default: its ``host:port`` (any
    credentials in the URL left out), so both sources label a replica alike; the whole URL where two endpoints share
    a ``host:port``.

    >>> instance_names(["http://10.0.0.1:8000/metrics", "http://10.0.0.2:8000/metrics"])
    {'http://10.0.0.1:8000/metrics': '10.0.0.1:8000', 'http://10.0.0.2:8000/metrics': '10.0.0.2:8000'}
    """
    hosts = {url: urllib.parse.urlsplit(url).netloc.rpartition("@")[2] for url in urls}
    shared = {h for h in hosts.values() if list(hosts.values()).count(h) > 1}
    return {url: url if host in shared or not host else host for url, host in hosts.items()}


def sum_by(samples: Iterable[tuple[dict[str, str], float]], by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """PromQL ``sum by (by)``."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples:
        key = tuple(labels.get(b, "") for b in by)
        out[key] = out.get(key, 0.0) + value
    return out


def max_by(samples: Iterable[tuple[dict[str, str], float]], by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """PromQL ``max by (by)``."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples:
        key = tuple(labels.get(b, "") for b in by)
        out[key] = max(out.get(key, -math.inf), value)
    return out


Quantile = tuple[dict[str, str], float, bool]
"""A quantile's labels, value, and whether the value is only a lower bound (:func:`quantile_overflows`)."""


def _quantiles(bucket_rates: Samples, by: tuple[str, ...], quantiles: Iterable[tuple[str, float]]) -> list[Quantile]:
    """``histogram_quantile(q, sum by (by, le) (rate(..._bucket)))`` for each named quantile."""
    grouped: dict[tuple[str, ...], list[tuple[float, float]]] = {}
    for key, value in sum_by(bucket_rates, (*by, "le")).items():
        bound = bucket_bound(key[-1])
        if bound is None:  # an le that is no number (or none): left out, as PromQL's histogram_quantile does
            continue
        grouped.setdefault(key[:-1], []).append((bound, value))
    out: list[Quantile] = []
    for name, q in quantiles:
        for key, buckets in grouped.items():
            found = histogram_quantile(q, buckets)
            if found is not None:
                out.append(({**dict(zip(by, key, strict=True)), "quantile": name}, found,
                            quantile_overflows(q, buckets)))
    return out
