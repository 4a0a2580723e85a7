"""The sources diagnose reads a window from: each answers every row of :data:`~aiwatch.diagnose.window.READS` for
``[start, end]`` (unix seconds) and returns a :class:`~aiwatch.diagnose.window.WindowTotals`.

- :func:`prometheus_totals`: Prometheus' HTTP API, one instant query per read at ``time=end`` (``increase``,
  ``avg_over_time``, ``max_over_time`` over the window, summed by the read's labels), sent a few at a time;
- :func:`scrape_totals`: the console's embedded :class:`~aiwatch.console.scrape.ScrapeSource`, from its history;
- :func:`totals_from_snapshots`: two ``/metrics`` snapshots in :mod:`aiwatch.scrape`'s shape, taken at ``start``
  and ``end`` (the demo's per-stage ``before`` and ``after``).

Anything with a ``window_totals(start, end)`` method and a ``description`` is a :class:`WindowSource`: the
console's two data sources are, and :class:`PrometheusWindows` is the one ``aiwatch diagnose --prometheus`` uses.

    >>> before = {"aiwatch_request_duration_seconds_count": {(("service", "gw"), ("status", "200")): 10.0}}
    >>> after = {"aiwatch_request_duration_seconds_count": {(("service", "gw"), ("status", "200")): 70.0}}
    >>> totals_from_snapshots(before, after, 0.0, 60.0).of("requests")
    {('gw',): 60.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

from aiwatch.console.pool import DaemonPool
from aiwatch.console.source import NAME_LABELS, duration
from aiwatch.diagnose.report import DiagnoseError
from aiwatch.diagnose.timeargs import format_time
from aiwatch.diagnose.window import READS, Key, Read, WindowTotals, subquery_step
from aiwatch.httpconfig import HTTPConfig
from aiwatch.promapi import PrometheusAPI
from aiwatch.promql import DEFAULT_AGGREGATION_LABELS, by, matchers_of, matches, scoped, series
from aiwatch.scrape import LabelKey, Samples, restart_group, restart_members, without_le
from aiwatch.status import ERROR_STATUS_RE, is_error_status

if TYPE_CHECKING:
    from aiwatch.console.scrape import ScrapeSource

#: How many of a window's queries are in flight at once (Prometheus evaluates them in parallel).
PARALLEL_QUERIES = 8


class WindowSource(Protocol):
    """Something diagnose can read windows from."""

    description: str

    def window_totals(self, start: float, end: float) -> WindowTotals:
        """The answers to every read for ``[start, end]``."""
        ...  # pragma: no cover - a protocol

    # and, optionally, ``now() -> float``: now on the clock of the source's times (Prometheus' own), where a
    # diagnosis of now ends its windows; without it, this machine's clock


def aggregate(read: Read, samples: Iterable[tuple[Mapping[str, str], float]]) -> dict[Key, float]:
    """``sum by`` (``avg by`` for a ``mean`` read, ``max by`` for a ``max`` or ``last`` read, ``min by`` for a
    ``gone`` one: a replica with one series present is present) the read's labels, keeping only error statuses when
    the read asks for them: what the PromQL of :func:`read_promql` does, for sources that hold raw series. NaN and
    infinite values are left out, as :mod:`aiwatch.promapi` leaves them out of Prometheus' answers (an endpoint that
    is not aiwatch's may export them; one would make every sum it enters NaN or infinite)."""
    out: dict[Key, float] = {}
    counted: dict[Key, int] = {}
    for labels, value in samples:
        if not math.isfinite(value):
            continue
        if read.errors_only and not is_error_status(labels.get("status", "")):
            continue
        key = tuple(labels.get(label, "") for label in read.by)
        if read.kind in ("max", "last"):
            out[key] = max(out[key], value) if key in out else value
        elif read.kind == "gone":
            out[key] = min(out[key], value) if key in out else value
        else:
            out[key] = out.get(key, 0.0) + value
            counted[key] = counted.get(key, 0) + 1
    if read.kind == "mean":
        return {key: total / counted[key] for key, total in out.items()}
    return out


# --- Prometheus ---------------------------------------------------------------------------------------------------


def read_promql(read: Read, seconds: float, match: str = "", scope: Sequence[str] = ()) -> str:
    """The instant query answering ``read`` for the window of ``seconds`` ending at the query's time, over the
    series ``match`` selects, kept apart by the ``scope`` labels.

    >>> print(read_promql(READS[3], 300))
    sum by (service) (increase(aiwatch_request_duration_seconds_count{status=~"5..|UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS"}[300s]))
    """  # noqa: E501
    selected = series(read.metric, *([matches("status", ERROR_STATUS_RE)] if read.errors_only else []), match)
    w, labels = duration(seconds), scoped(scope, read.by)
    if read.kind == "increase":
        return by("sum", labels, f"increase({selected}[{w}])")
    if read.kind in ("avg", "mean"):
        return by("sum" if read.kind == "avg" else "avg", labels, f"avg_over_time({selected}[{w}])")
    if read.kind == "last":
        return by("max", labels, f"last_over_time({selected}[{w}])")
    if read.kind == "gone":
        # the latest sample's time of each series, from a subquery of timestamp() (each step's instant selector
        # has the latest sample before it, none after Prometheus marked the series stale): exact where a step
        # falls between the last sample and its stale marker, else to within the step (subquery_step); the labels
        # with a series present at the end (the query's time) read 0. A step's lookback (5 minutes) reaches before
        # the window's start: the series are those `last` reads (`and last_over_time`: one last seen before the
        # window is left out, one last seen in it is kept), and an age the lookback took from before the window
        # (no step fell between its last sample and its stale marker) is capped at the window
        step = duration(subquery_step(seconds))
        present = by("count", labels, selected)
        bound = format(round(seconds * 1000) / 1000, ".15g")  # the window as `w` has it, whole milliseconds
        last = by("min", labels, f"clamp_max(time() - max_over_time(timestamp({selected})[{w}:{step}]), {bound})"
                                 f" and last_over_time({selected}[{w}])")
        return f"({last} unless {present}) or 0 * {present}"
    return by("max", labels, f"max_over_time({selected}[{w}])")


def prometheus_totals(api: PrometheusAPI, start: float, end: float, *, match: str = "",
                      scope: Sequence[str] = DEFAULT_AGGREGATION_LABELS) -> WindowTotals:
    """Every read for ``[start, end]`` from Prometheus (the series ``match`` selects): one instant query per read
    at ``time=end``, at most :data:`PARALLEL_QUERIES` at a time, and one counting the request counts' resets
    (:func:`_resets`, a restart in the window). A window that starts before the data starts where
    the data does (:func:`_covered_from`): its rates are per second of the part with data. Raises
    :class:`~aiwatch.promapi.PrometheusError` (or its subclass ``PrometheusUnavailable``) when Prometheus fails,
    :class:`DiagnoseError` for a window shorter than two scrape intervals, and ``ValueError`` when a service,
    model, queue or cache is found in more than one ``scope`` (two clusters): its parts are never added across
    them."""
    if end <= start:
        raise ValueError(f"a window must end after it starts, got [{start}, {end}]")

    def answer(read: Read) -> list[tuple[dict[str, str], float]]:
        return api.query(read_promql(read, end - start, match, scope), time=end)

    # daemon threads: a query that hangs does not hold up the process' exit until its timeout
    pool = DaemonPool(PARALLEL_QUERIES, "aiwatch-diagnose")
    try:
        covered = pool.submit(partial(_covered_from, api, start, end, match))
        reset = pool.submit(partial(_resets, api, start, end, match))
        asked = [pool.submit(partial(answer, read)) for read in READS]
        answers = [future.result() for future in asked]
        covered_from, resets = covered.result(), reset.result()
    finally:
        pool.shutdown()
    if not answers[0]:
        _two_samples_or_none(api, start, end, match)
    _one_scope_each([labels for found in answers for labels, _ in found], scope)
    # a window that starts before the data is the part the data covers: rates are per second of that; the `gone`
    # read's step is the window asked's
    return WindowTotals(covered_from, end, {read.key: aggregate(read, found)
                                           for read, found in zip(READS, answers, strict=True)}, resets,
                        subquery_step(end - start))


def _resets(api: PrometheusAPI, start: float, end: float, match: str) -> dict[str, float]:
    """Per service, how many times a request count series went down (a restart) in ``[start, end]``.
    ``increase()`` handles a reset per series: a histogram's ``_sum`` already above its old value after a restart is
    undercounted, and the diagnosis says so for the services it reads. The request counts stand for every
    histogram: a restarted service's went down too."""
    counted = by("sum", ("service",), f"resets({series(READS[0].metric, match)}[{duration(end - start)}])")
    return {labels.get("service", ""): value for labels, value in api.query(counted, time=end)}


def _covered_from(api: PrometheusAPI, start: float, end: float, match: str) -> float:
    """Where the request series' data in ``[start, end]`` begins: ``start`` when a series has a sample at (or
    within one step, :func:`~aiwatch.diagnose.window.subquery_step`, after) it, else the first sample in the window
    (the service was deployed, or first scraped, inside it); ``start`` when the window holds none."""
    step = subquery_step(end - start)
    selected = series(READS[0].metric, match)
    found = api.query(f"min(min_over_time(timestamp({selected})[{duration(end - start)}:{duration(step)}]))",
                      time=end)
    first = found[0][1] if found else start
    return first if start + step < first < end else start


def _two_samples_or_none(api: PrometheusAPI, start: float, end: float, match: str) -> None:
    """Raise :class:`DiagnoseError` when the window holds request series, but never two samples of one: shorter
    than two scrape intervals, where ``increase()`` answers nothing and the window would look like one without
    traffic (or without aiwatch)."""
    metric = READS[0].metric
    found = api.query(f"max(count_over_time({series(metric, match)}[{duration(end - start)}]))", time=end)
    if found and found[0][1] < 2:
        raise DiagnoseError(f"the window from {format_time(start)} to {format_time(end)} ({end - start:g} s long) "
                            f"holds at most one sample of each series of {metric}: Prometheus counts an increase "
                            "from two, so make the windows longer than two scrape intervals")


def _one_scope_each(found: Iterable[Mapping[str, str]], scope: Sequence[str]) -> None:
    places: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for labels in found:
        for name in NAME_LABELS:
            if name in labels:
                places.setdefault((name, labels[name]), set()).add(tuple(labels.get(s, "") for s in scope))
    for (name, value), seen in sorted(places.items(), key=lambda kv: (NAME_LABELS.index(kv[0][0]), kv[0][1])):
        if len(seen) > 1:
            where = "; ".join(", ".join(f"{s}={v!r}" for s, v in zip(scope, place, strict=True) if v) or "none"
                              for place in sorted(seen))
            raise ValueError(f"{name} {value!r} is in {len(seen)} places ({where}): diagnose one at a time, "
                             f"narrowed with --match (e.g. --match '{scope[0]}=\"...\"')")


class PrometheusWindows:
    """A :class:`WindowSource` reading Prometheus at ``url`` (``timeout`` seconds per query; ``http``: headers,
    credentials, a tenant and TLS, :class:`~aiwatch.httpconfig.HTTPConfig`); ``match``: matchers selecting the
    series to read (one cluster of several); ``scope``: the labels whose places are never added together."""

    def __init__(self, url: str, *, timeout: float = 10.0, http: HTTPConfig | None = None, match: str = "",
                 scope: Sequence[str] = DEFAULT_AGGREGATION_LABELS) -> None:
        matchers_of([match])  # ValueError now for text that is no matchers
        self.api = PrometheusAPI(url, timeout=timeout, http=http)
        self.match, self.scope = match, tuple(scope)
        self.description = f"Prometheus at {self.api.url}" + (f" ({match})" if match else "")

    def now(self) -> float:
        """Now on Prometheus' clock, where the windows of a diagnosis of now end (:func:`~aiwatch.diagnose.run.
        diagnose`)."""
        return self.api.server_time()

    def window_totals(self, start: float, end: float) -> WindowTotals:
        return prometheus_totals(self.api, start, end, match=self.match, scope=self.scope)


# --- the console's embedded scrape source -------------------------------------------------------------------------


def scrape_totals(source: ScrapeSource, start: float, end: float) -> WindowTotals:
    """Every read for ``[start, end]`` from a :class:`~aiwatch.console.scrape.ScrapeSource`'s history: counters'
    increase between its scrapes (resets handled, see :meth:`~aiwatch.console.scrape.ScrapeSource.increase`),
    gauges' average or maximum over the scrapes in the window. The window's span is that of the scrapes the
    increase is counted between (:meth:`~aiwatch.console.scrape.ScrapeSource.counted_span`: from the last scrape at
    or before ``start``, or the first after it when the history starts later, to the last at or before ``end``), so
    rates are per second of what was counted. Raises :class:`DiagnoseError` when the history holds no good scrape in
    the window (it keeps ``history`` seconds), or not two to count between (a window between two scrapes)."""
    if end <= start:
        raise ValueError(f"a window must end after it starts, got [{start}, {end}]")
    covered = source.covered_from(start, end)
    if covered is None or covered >= end:
        raise DiagnoseError(f"the embedded scraper has no good scrape between {format_time(start)} and "
                            f"{format_time(end)} (it keeps {source.history:g} s of history, scraping every "
                            f"{source.interval:g} s): use shorter windows, or wait for more scrapes")
    span = source.counted_span(start, end)
    if span is None:
        raise DiagnoseError(f"the embedded scraper has fewer than two good scrapes to count the window from "
                            f"{format_time(start)} to {format_time(end)} between (scraping every "
                            f"{source.interval:g} s): use windows longer than the scrape interval")
    values: dict[str, dict[Key, float]] = {}
    for read in READS:
        if read.kind == "increase":
            samples = source.increase(read.metric, start, end)
        else:
            samples = source.over_time(read.metric, start, end, "avg" if read.kind == "mean" else read.kind)
        values[read.key] = aggregate(read, samples)
    return WindowTotals(*span, values, gone_step=0.0)  # each scrape's own time


# --- two /metrics snapshots ---------------------------------------------------------------------------------------


def totals_from_snapshots(before: Samples, after: Samples, start: float, end: float) -> WindowTotals:
    """Every read for the window between two scrapes of the same endpoints (``before`` taken at ``start``,
    ``after`` at ``end``, in :mod:`aiwatch.scrape`'s shape; merged endpoints told apart by an ``instance`` label):

    - counters: ``after - before`` per series; a series absent before counts from 0, one that went down (a
      restart) counts from 0 again. A histogram's ``_bucket``, ``_sum`` and ``_count`` series of one label set
      restart together: when one of them went down, all of them count from 0 (a ``_sum`` that grew past its value
      before the restart would otherwise count only the difference); so does the loop sampler's watched time with
      the loop delay histogram of its labels (:data:`~aiwatch.scrape.RESTART_COMPANIONS`);
    - gauges read as an average (``avg``): the average of the two snapshots' values, per series;
    - gauges read as a maximum (``max``: states such as ``aiwatch_drift_detected``) or as their latest value
      (``last``): the value at ``end``, per series (the value at ``start`` only for a series gone by ``end``,
      which a ``gone`` read gives ``end - start``, and 0 for one present at ``end``).
      With two snapshots there is no peak to take, and the value at ``start`` is the state the previous window
      left: a feature that drifted in the window before and is back to normal by ``end`` is not reported for this
      one.
    """
    if end <= start:
        raise ValueError(f"a window must end after it starts, got [{start}, {end}]")
    reset = _reset_histograms(before, after)
    values: dict[str, dict[Key, float]] = {}
    for read in READS:
        old, new = before.get(read.metric, {}), after.get(read.metric, {})
        if read.kind == "increase":
            grown = {key: value - old.get(key, 0.0)
                     if value >= old.get(key, 0.0) and _histogram_child(read.metric, key) not in reset else value
                     for key, value in new.items()}
        elif read.kind == "gone":  # present at end: 0; only at start: its value is the one at start
            grown = {key: 0.0 if key in new else end - start for key in set(old) | set(new)}
        else:
            grown = {}
            for key in set(old) | set(new):
                seen = [v for v in (old.get(key), new.get(key)) if v is not None and not math.isnan(v)]
                if seen:
                    grown[key] = sum(seen) / len(seen) if read.kind in ("avg", "mean") else seen[-1]
        values[read.key] = aggregate(read, ((dict(key), value) for key, value in grown.items()))
    return WindowTotals(start, end, values, gone_step=0.0)  # the snapshots' own times


def _histogram_child(name: str, key: LabelKey) -> tuple[str, LabelKey] | None:
    """The histogram and label set (without ``le``) a sample restarts with (:func:`~aiwatch.scrape.restart_group`);
    ``None`` for a sample of no histogram."""
    histogram = restart_group(name)
    return None if histogram is None else (histogram, without_le(key))


def _reset_histograms(before: Samples, after: Samples) -> set[tuple[str, LabelKey]]:
    """The histograms' label sets that restarted between ``before`` and ``after``: one of their series, or of their
    companion counters (:func:`~aiwatch.scrape.restart_members`), went down."""
    reset: set[tuple[str, LabelKey]] = set()
    groups = {g for read in READS if read.kind == "increase" and (g := restart_group(read.metric)) is not None}
    for histogram in groups:
        for name in restart_members(histogram):
            old = before.get(name, {})
            reset.update((histogram, without_le(key))
                         for key, value in after.get(name, {}).items() if key in old and value < old[key])
    return reset
