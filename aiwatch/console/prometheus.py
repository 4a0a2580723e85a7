"""The console's production data source: Prometheus' HTTP API (instant and range queries, alerts, targets).

    >>> src = PrometheusSource("http://127.0.0.1:9090")  # doctest: +SKIP
    >>> src.latency_quantiles(60)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aiwatch import clock, promapi
from aiwatch.amounts import period
from aiwatch.console import queries as Q
from aiwatch.console.pool import DaemonPool
from aiwatch.console.queries import MatcherText, PanelQueries
from aiwatch.console.source import (
    AUTOSCALING_SIGNALS,
    EVERY_GPU_UP_TO,
    GPU_ATTENTION,
    GPU_EXTREMES,
    NETWORK_CLAMPED,
    OVERHEAD_CLAMPED,
    QUANTILES,
    RECOVERY_SEEN_SPAN,
    RECOVERY_SEEN_STEP,
    UNCLOSED,
    UNMEASURED,
    AlertRow,
    BinRow,
    DataSource,
    DriftRow,
    GpuRow,
    GpuTable,
    GpuUtilization,
    LoopStall,
    MissingRow,
    QualityRow,
    RecoveryRow,
    Series,
    Signal,
    SourceError,
    SourceSlow,
    SourceUnavailable,
    TargetHealth,
    TracedRequest,
    attention_first,
    drift_rows,
    duration,
    histogram_quantile,
    loop_stuck_window,
    missing_rows,
    natural_key,
    one_reference_bins,
    quality_rows,
    quantile_overflows,
    recovery_rows,
    slowest_first,
    tell_scopes_apart,
    worst_first,
)
from aiwatch.httpconfig import HTTPConfig
from aiwatch.promapi import PrometheusAPI, PrometheusError, PrometheusSlow, PrometheusUnavailable
from aiwatch.promql import eq, quantile_parts

if TYPE_CHECKING:
    from aiwatch.diagnose.window import WindowTotals

T = TypeVar("T")

RangeAnswer = list[tuple[dict[str, str], list[tuple[float, float]]]]
Buckets = dict[tuple[frozenset[tuple[str, str]], float], list[tuple[float, float]]]
"""Buckets of a histogram's rates over time: ``(upper bound, count)`` per (label set without ``le``, time)."""


class PrometheusSource(DataSource):
    """Answers the panel questions with PromQL against ``url``.

    - ``span``: seconds of history drawn by the over-time panels (ending now).
    - ``points``: about how many points each over-time panel gets (the range query step is ``span / points``).
    - ``timeout``: seconds one HTTP call may take in all (also sent as the query's own ``timeout``, so Prometheus
      stops working on it); a question not answered in time raises :class:`SourceSlow` naming the query and the
      time, and the other panels still draw.
    - ``max_bytes``: the largest answer read; a larger one is a :class:`SourceError`.
    - ``http``: headers, credentials, a tenant and TLS (:class:`~aiwatch.httpconfig.HTTPConfig`).
    - ``queries``: the panels' PromQL (:class:`~aiwatch.console.queries.PanelQueries`): the aggregation labels kept
      apart (default ``cluster``, ``namespace``), matchers on every query (one cluster of several), the GPU source.
      A name found in several scopes (the same service in two clusters) is shown with its scope: ``api (eu)``;
      the Drift view's questions about one model (:meth:`feature_distribution`, :meth:`drift_over_time`) take the
      name the latest :meth:`drift_table` showed and ask about that model's series in its own scope.

    Whatever Prometheus (or whatever answers at ``url``) sends back, a question returns its answer or raises a
    :class:`SourceError`: garbage, JSON of the wrong shape, NaN and infinite values, oversized answers included.
    """

    def __init__(self, url: str, *, span: float = 900.0, points: int = 120, timeout: float = 5.0,
                 max_bytes: int = 32 * 2**20, http: HTTPConfig | None = None,
                 queries: PanelQueries | None = None) -> None:
        span = period(span, "span")
        if points < 2:
            raise ValueError(f"points must be >= 2, got {points}")
        self.api = PrometheusAPI(url, timeout=timeout, max_bytes=max_bytes, http=http)
        self.url = self.api.url
        self.span = span
        self.points = points
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.q = queries or PanelQueries()
        self.description = f"Prometheus at {self.url}" + (f" ({self.q.match})" if self.q.match else "")
        # the latest drift table's models shown with their scope: "m (eu)" -> ("m", ("eu", ""))
        self._drift_models: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._targets: list[dict[str, Any]] = []
        self._targets_read = False

    # --- HTTP (through the one Prometheus client, its errors as the console's) -------------------------------
    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except PrometheusUnavailable as exc:
            raise SourceUnavailable(str(exc)) from exc
        except PrometheusSlow as exc:
            raise SourceSlow(str(exc)) from exc
        except PrometheusError as exc:
            raise SourceError(str(exc)) from exc

    def _api(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``data`` object of Prometheus' answer to ``path``; :class:`SourceError` (or a subclass) otherwise."""
        return self._call(lambda: self.api.get(path, params))

    def instant(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``(labels, value)`` per series, NaN and infinite values dropped."""
        answer = self._instant(promql)
        names = tell_scopes_apart([labels for labels, _ in answer], self.q.scope)
        return [(labels, value) for labels, (_, value) in zip(names, answer, strict=True)]

    def _instant(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        return self._call(lambda: self.api.query(promql, at))

    def _range(self, promql: str, end: float | None = None) -> RangeAnswer:
        end = self.now() if end is None else end
        step = max(self.span / self.points, 1.0)
        return self._call(lambda: self.api.query_range(promql, end - self.span, end, step))

    def range(self, promql: str, extra: dict[str, str] | None = None) -> list[Series]:
        """A range query over the last ``span`` seconds; ``extra`` labels are added to every series."""
        return self._named(self._range(promql), extra)

    def _named(self, answer: list[tuple[dict[str, str], list[tuple[float, float]]]], extra: dict[str, str] | None,
               lower_bounds: Sequence[frozenset[float]] = ()) -> list[Series]:
        """A range answer as series, names told apart by scope, ``extra`` labels added; ``lower_bounds`` are the
        times of each series' points that are only lower bounds (none when not given)."""
        names = tell_scopes_apart([found for found, _ in answer], self.q.scope)
        bounds = list(lower_bounds) or [frozenset()] * len(answer)
        return [Series({**found, **(extra or {})}, points, lower_bounds=bound)
                for found, (_, points), bound in zip(names, answer, bounds, strict=True)]

    def _quantiles(self, queries: Sequence[tuple[str, dict[str, str]]]) -> list[Series]:
        """Over-time answers of ``histogram_quantile`` expressions (with their ``extra`` labels) and of any other
        expressions, asked at once. A histogram is aggregated once, however many of its quantiles are asked: one
        range query of its bucket rates (``sum by (..., le) (rate(..._bucket[w]))``), each quantile computed from
        them as PromQL does (:func:`~aiwatch.console.source.histogram_quantile`, the same numbers), and a point whose
        quantile's rank lies in the ``+Inf`` bucket marked as only a lower bound (:attr:`Series.lower_bounds`).
        Asking Prometheus for each quantile instead aggregates the same buckets once more per quantile: the
        Latency view's p50, p95 and p99 read 4 times the samples (29.4M at 500 replicas, 23.2M of them its bucket
        scans)."""
        end = self.now()  # one end for all
        parts = [quantile_parts(q) for q, _ in queries]
        exprs = sorted({part[1] for part in parts if part is not None})
        others = [q for (q, _), part in zip(queries, parts, strict=True) if part is None]
        calls: list[Callable[[], object]] = [partial(self._bucket_ranges, e, end) for e in exprs]
        answers = self._all(calls + [partial(self._range, q, end) for q in others])
        buckets = dict(zip(exprs, cast(list[Buckets], answers[:len(exprs)]), strict=True))
        ranges = iter(cast(list[RangeAnswer], answers[len(exprs):]))
        out = []
        for (_, extra), part in zip(queries, parts, strict=True):
            if part is None:
                out += self._named(next(ranges), extra)
                continue
            q, found = part[0], buckets[part[1]]
            points: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
            bounds: dict[frozenset[tuple[str, str]], set[float]] = {}
            for (key, t), counts in sorted(found.items(), key=lambda kv: kv[0][1]):
                value = histogram_quantile(q, counts)
                if value is None or not math.isfinite(value):  # PromQL's NaN: the console drops those points
                    continue
                points.setdefault(key, []).append((t, value))
                if quantile_overflows(q, counts):
                    bounds.setdefault(key, set()).add(t)
            keys = sorted(points, key=sorted)
            out += self._named([(dict(key), points[key]) for key in keys], extra,
                               [frozenset(bounds.get(key, ())) for key in keys])
        return out

    def _bucket_ranges(self, expr: str, end: float) -> Buckets:
        """The ``(upper bound, count)`` buckets per label set (``le`` left out) and time of bucket rates ``expr``
        over the span ending at ``end``; a bucket whose ``le`` is no number (or NaN) is left out."""
        grouped: Buckets = {}
        for labels, points in self._range(expr, end):
            bound = promapi.bucket_bound(labels.get("le", ""))
            if bound is None:
                continue
            key = _key(labels)
            for t, value in points:
                grouped.setdefault((key, t), []).append((bound, value))
        return grouped

    def _buckets(self, expr: str, at: float | None) -> dict[frozenset[tuple[str, str]], list[tuple[float, float]]]:
        """The ``(upper bound, count)`` buckets per label set (``le`` left out) of bucket rates ``expr`` at ``at``;
        a bucket whose ``le`` is no number (or NaN) is left out."""
        grouped: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
        for labels, value in self._instant(expr, at):
            bound = promapi.bucket_bound(labels.get("le", ""))
            if bound is None:
                continue
            grouped.setdefault(_key(labels), []).append((bound, value))
        return grouped

    def now(self) -> float:
        """Now on Prometheus' clock, which the questions of now are asked at: this machine's clock plus the offset the
        ``Date`` of Prometheus' latest answer showed (:attr:`~aiwatch.promapi.PrometheusAPI.clock_offset`), where it
        is :data:`aiwatch.clock.OFFSET_SECONDS` or more (the header has whole seconds). With this machine's clock
        ahead, the over-time panels' last points were asked where Prometheus had no samples yet (a request rate
        falling to a quarter at the end of every chart) and, past the window, every service read as stopped."""
        return clock.wall() + clock.correction(self.api.clock_offset)

    def window_totals(self, start: float, end: float) -> WindowTotals:
        from aiwatch.diagnose.sources import prometheus_totals

        return self._call(lambda: prometheus_totals(self.api, start, end, match=self.q.match, scope=self.q.scope))

    def latest_point_age(self) -> float:
        # a range query's last point is at its end, or a step before it (the end rounded to the millisecond)
        return max(self.span / self.points, 1.0) + 1.0

    def answer_warnings(self, since: float) -> list[str]:
        return self.api.warnings_since(since)

    # --- the panel questions ------------------------------------------------------------------------------
    def health(self) -> list[TargetHealth]:
        data = self._api("/api/v1/targets", {"state": "active"})
        targets = data.get("activeTargets", [])
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            raise SourceError("Prometheus' list of targets has an unexpected shape")
        self._targets, self._targets_read = targets, True
        return [TargetHealth(_text(t.get("scrapeUrl")), t.get("health") == "up", _text(t.get("lastError")))
                for t in self._selected(targets)]

    def _selected(self, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The ``targets`` whose series ``match`` selects, as the panels' (all of them without ``match``): those
        whose labels are all on one of the ``up`` series it selects. Prometheus matches them itself, so a regex means
        what it means in the panels' queries; through Thanos or Mimir the series may carry more labels (external
        ones) than the target. A target not scraped yet has no ``up`` series: it is left out until its first
        scrape."""
        if not self.q.match:
            return targets
        selected = [frozenset(labels.items()) for labels, _ in self._instant(self.q.selected_targets())]
        return [t for t in targets if (own := _label_set(t)) is not None and any(own <= s for s in selected)]

    def scrape_interval(self, service: str | None = None) -> float | None:
        """The shortest ``scrapeInterval`` of the active targets that export aiwatch's series (``match`` applied),
        as of the latest :meth:`health` (asked here when it has not answered yet): a Prometheus that scrapes some
        other job every 5 s and the services every minute has them compared every minute. With ``service`` (its
        name as the panels show it, scope included), of the targets exporting that service's series; of all
        aiwatch's when none does. Of every target when Prometheus names none that exports them (no series yet, or
        their ``job`` / ``instance`` relabelled); None when Prometheus does not say (before 2.30, or no targets)."""
        if not self._targets_read:
            try:
                self.health()
            except SourceError:
                return None
        if len({_interval(t) for t in self._targets} - {None}) < 2:  # nothing to tell apart: no query
            return targets_interval(self._targets, None)
        try:
            exporting = (service is not None and self._exporting(service)) or self._exporting(None)
        except SourceError:
            return targets_interval(self._targets, None)
        return targets_interval(self._targets, exporting)

    def _exporting(self, service: str | None) -> set[tuple[str, str]]:
        """The ``(job, instance)`` of the targets exporting aiwatch's series, of ``service``'s only when given."""
        if service is None:
            return {(labels.get("job", ""), labels.get("instance", ""))
                    for labels, _ in self._instant(self.q.exporters())}
        found = [labels for labels, _ in self._instant(self.q.service_exporters())]
        shown = tell_scopes_apart(found, self.q.scope)  # "api (eu)", as the panels name it
        return {(labels.get("job", ""), labels.get("instance", "")) for labels, name in zip(found, shown, strict=True)
                if name.get("service") == service}

    def _all(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The answers of several queries, asked at once: a question takes as long as its slowest query (each
        bounded by ``timeout``), not their sum. On daemon threads: a query that hangs does not hold up the process'
        exit until its timeout."""
        if len(calls) < 2:
            return [call() for call in calls]
        pool = DaemonPool(len(calls), "aiwatch-prometheus")
        try:
            futures = [pool.submit(call) for call in calls]
            return [f.result() for f in futures]
        finally:
            pool.shutdown()

    def latency_quantiles(self, window: float) -> list[Series]:
        w = duration(window)
        return self._quantiles([(self.q.latency_quantile(q, w), {"quantile": name}) for name, q in QUANTILES])

    def slowest_traces(self, window: float) -> list[TracedRequest]:
        # the exemplars of the series the p99 panel reads: Prometheus keeps those its exemplar storage holds
        # (--enable-feature=exemplar-storage); one without it answers none
        end = self.now()
        promql = self.q.latency_quantile(0.99, duration(window))
        answer = self._call(lambda: self.api.query_exemplars(promql, end - window, end))
        names = tell_scopes_apart([found for found, _ in answer], self.q.scope)
        return slowest_first(TracedRequest(name.get("service", ""), value, at, found["trace_id"])
                             for name, (_, exemplars) in zip(names, answer, strict=True)
                             for found, value, at in exemplars if found.get("trace_id"))

    def phase_split(self, window: float) -> list[Series]:
        return self.range(self.q.phase_split(duration(window)))

    def throughput(self, window: float) -> list[Series]:
        return self.range(self.q.throughput(duration(window)))

    def error_ratio(self, window: float) -> list[Series]:
        return self.range(self.q.error_ratio(duration(window)))

    def network_time(self, window: float) -> list[Series]:
        w = duration(window)
        return self._quantiles([(self.q.network_quantile(q, w), {"quantile": name}) for name, q in QUANTILES[:2]])

    def link_throughput(self, window: float) -> list[Series]:
        return self.range(self.q.link_throughput(duration(window)))

    def measurement_caveats(self, window: float) -> list[Series]:
        w, end = duration(window), self.now()
        queries = ((NETWORK_CLAMPED, self.q.network_clamped_share(w)), (UNMEASURED, self.q.unmeasured_share(w)),
                   (OVERHEAD_CLAMPED, self.q.overhead_clamped_share(w)), (UNCLOSED, self.q.unclosed_share(w)))
        answers = self._all([partial(self._range, query, end) for _, query in queries])
        return [s for (caveat, _), answer in zip(queries, answers, strict=True)
                for s in self._named(answer, {"caveat": caveat})]

    def loop_delay(self, window: float) -> list[Series]:
        w = duration(window)
        return self._quantiles([(self.q.loop_delay_quantile(0.99, w), {"stat": "p99"}),
                                (self.q.loop_delay_mean(w), {"stat": "mean"})])

    def background_phases(self, window: float) -> list[Series]:
        w = duration(window)
        return self._quantiles([(self.q.background_phase_quantile(0.99, w), {"stat": "p99"}),
                                (self.q.background_phase_mean(w), {"stat": "mean"})])

    def loop_stalls(self, window: float) -> list[LoopStall]:
        w, at = duration(window), self.now()
        shares, unwatched, worst, unchanged = self._all([
            partial(self._instant, self.q.loop_stalled_ratio(w), at),
            partial(self._instant, self.q.loop_unwatched(w), at),
            partial(self._instant, self.q.loop_worst_stalled(), at),
            partial(self._instant, self.q.loop_sample_unchanged(loop_stuck_window()), at)])
        found = [(labels, value, False) for labels, value in shares] + [(labels, 1.0, True) for labels, _ in unwatched]
        # the worst worker's gauges join the rows of the replicas that have a share or are stuck: the same labels
        worst_of = {frozenset(labels.items()): value for labels, value in worst}
        stuck_worker = {frozenset(labels.items()) for labels, _ in unchanged}
        names = tell_scopes_apart([labels for labels, _, _ in found], self.q.scope)
        return worst_first(LoopStall(n.get("service", ""), n.get("instance", ""), value, stuck, n.get("job", ""),
                                     worst_of.get(frozenset(labels.items())),
                                     frozenset(labels.items()) in stuck_worker)
                           for n, (labels, value, stuck) in zip(names, found, strict=True))

    def _quantile_ranges(self, query: Callable[[float, str], str], window: float) -> list[Series]:
        w = duration(window)
        return self._quantiles([(query(q, w), {"quantile": name}) for name, q in QUANTILES[:2]])

    def latency_by_class(self, window: float) -> list[Series]:
        return self._quantile_ranges(self.q.latency_by_class, window)

    def throughput_by_class(self, window: float) -> list[Series]:
        return self.range(self.q.throughput_by_class(duration(window)))

    def first_chunk(self, window: float) -> list[Series]:
        return self._quantile_ranges(self.q.first_chunk_quantile, window)

    def first_token(self, window: float) -> list[Series]:
        return self._quantile_ranges(self.q.first_token_quantile, window)

    def per_output_token(self, window: float) -> list[Series]:
        return self._quantile_ranges(self.q.per_output_token_quantile, window)

    def token_rate(self, window: float) -> list[Series]:
        return self.range(self.q.token_rate(duration(window)))

    def degraded_share(self, window: float) -> list[Series]:
        return self.range(self.q.degraded_share(duration(window)))

    def version_latency(self, window: float) -> list[Series]:
        return self._quantile_ranges(self.q.version_latency, window)

    def version_error_ratio(self, window: float) -> list[Series]:
        return self.range(self.q.version_error_ratio(duration(window)))

    def gpu_table(self) -> GpuTable:
        """Every GPU of a small fleet; of a larger one those needing attention first (chosen by Prometheus, at
        most ``5 x`` :data:`GPU_EXTREMES`) and the fleet's summary: an answer of the same size however many GPUs
        (every GPU of 500 hosts x 8 was 6 answers of 4 000 series, 2.2 MB)."""
        fleet, chosen = self._all([partial(self._instant, self.q.gpu_table_fleet()),
                                   partial(self._instant, self.q.gpu_attention(GPU_EXTREMES))])
        summary: dict[str, dict[str, float]] = {}
        for labels, value in fleet:
            summary.setdefault(labels.get("reading", ""), {})[labels.get("stat", "")] = value
        counts = summary.pop("", {})
        total = int(counts.get("count", 0))
        if total <= EVERY_GPU_UP_TO:
            rows = self._gpu_rows()
            return GpuTable(rows, len(rows))
        reasons: dict[tuple[str, str], list[str]] = {}
        for labels, _ in chosen:
            reasons.setdefault((labels.get("gpu", ""), labels.get("uuid", "")), []).append(labels.get("attention", ""))
        # the matcher picks the chosen GPUs' UUIDs: another GPU with one of them (another index) is not chosen
        urgency = {reason: i for i, (reason, _, _) in enumerate(GPU_ATTENTION)}
        rows = [replace(row, attention=tuple(sorted(reasons[row.gpu, row.uuid], key=lambda r: urgency.get(r, 99))))
                for row in self._gpu_rows(self.q.gpus_of(sorted({uuid for _, uuid in reasons})))
                if (row.gpu, row.uuid) in reasons]
        return GpuTable(attention_first(rows), total, summary, int(counts.get("down", 0)))

    def _gpu_rows(self, *matchers: MatcherText) -> list[GpuRow]:
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        answers = self._all([partial(self.instant, self.q.gpu_gauge(field, *matchers)) for field, _ in Q.GPU_GAUGES])
        for (field_name, _), answer in zip(Q.GPU_GAUGES, answers, strict=True):
            for labels, value in answer:
                # a GPU is its UUID: GPU 0 of every host is another one
                key = (labels.get("gpu", ""), labels.get("uuid", ""))
                row = rows.setdefault(key, {"gpu": key[0], "name": labels.get("name", ""), "uuid": key[1]})
                row[field_name] = value
        return [GpuRow(**row) for _, row in sorted(rows.items(), key=lambda kv: (natural_key(kv[0][0]), kv[0][1]))]

    def gpu_utilization(self) -> GpuUtilization:
        """Every GPU of a small fleet; of a larger one its busiest and idlest (ranked by Prometheus, ``topk`` /
        ``bottomk`` of their mean over the span) and the fleet's min / median / max: an answer of the same size
        however many GPUs (every GPU of 500 hosts x 8 was 4 000 series, 11.3 MB; past about 1 480 hosts the answer
        passed ``max_bytes`` and the chart was an error)."""
        end, span = self.now(), duration(self.span)
        count, ranked = self._all([partial(self._instant, self.q.gpu_count(span), end),
                                   partial(self._instant, self.q.gpu_extremes(GPU_EXTREMES, span), end)])
        total = int(count[0][1]) if count else 0
        if total <= EVERY_GPU_UP_TO:
            gpus = self._named(self._range(self.q.per_gpu("utilization"), end), None)
            return GpuUtilization(gpus, len(gpus))
        rank = {_key({k: v for k, v in labels.items() if k != "rank"}): labels.get("rank", "") for labels, _ in ranked}
        chosen = self.q.gpus_of(sorted({labels.get("uuid", "") for labels, _ in ranked}))
        found, fleet = self._all([partial(self._range, self.q.per_gpu("utilization", chosen), end),
                                  partial(self._range, self.q.gpu_fleet("utilization"), end)])
        # the matcher picks the chosen GPUs' UUIDs: a GPU of another scope with one of them is not one of the chosen
        gpus = self._named([({**labels, "rank": rank[_key(labels)]}, points) for labels, points in found
                            if _key(labels) in rank], None)
        order = {"busiest": 0, "idlest": 1}
        gpus.sort(key=lambda s: (order.get(s.labels["rank"], 2),
                                 -sum(v for _, v in s.points) / max(len(s.points), 1)))
        return GpuUtilization(gpus, total, self._named(fleet, None))

    def queue_depth(self) -> list[Series]:
        return self.range(self.q.queue_depth())

    def in_flight(self) -> list[Series]:
        return self.range(self.q.in_flight())

    def batch_size(self, window: float) -> list[Series]:
        return self.range(self.q.batch_size(duration(window)))

    def cache_hit_ratio(self, window: float) -> list[Series]:
        return self.range(self.q.cache_hit_ratio(duration(window)))

    def prediction_log(self, window: float) -> list[Series]:
        return self.range(self.q.prediction_log_records(duration(window)))

    def prediction_log_recovery(self) -> list[RecoveryRow]:
        """The rows' times are when Prometheus first saw each latest count, on its clock: the gauge's value is the
        time on the app host's clock, and one two hours behind Prometheus' showed a journal torn minutes before as
        counted two hours ago (the yellow banner) while AiwatchPredictionLogRecoveryIncomplete, which times its window
        by when Prometheus saw the value change, fired. A value Prometheus held all through
        :data:`~aiwatch.console.source.RECOVERY_SEEN_SPAN` keeps the app's time, at most the span's start."""
        files, records, last, seen = self._all([
            partial(self.instant, self.q.prediction_log_recovery_files()),
            partial(self.instant, self.q.prediction_log_recovered_records()),
            partial(self.instant, self.q.prediction_log_recovery_last()),
            partial(self.instant, self.q.prediction_log_recovery_seen())])
        stamps = {(lb.get("log", ""), lb.get("result", "")): v for lb, v in last}
        held_all_span = self.now() - RECOVERY_SEEN_SPAN + 2 * RECOVERY_SEEN_STEP
        for labels, first in seen:
            key = (labels.get("log", ""), labels.get("result", ""))
            if key in stamps:
                stamps[key] = first if first > held_all_span else min(stamps[key], first)
        return recovery_rows({(lb.get("log", ""), lb.get("result", "")): v for lb, v in files},
                             {lb.get("log", ""): v for lb, v in records}, stamps)

    def instrumentation_errors(self, window: float) -> list[Series]:
        return self.range(self.q.instrumentation_errors(duration(window)))

    def label_overflow(self, window: float) -> list[Series]:
        return self.range(self.q.label_overflow(duration(window)))

    def _place(self, labels: dict[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(s, "") for s in self.q.scope)

    def drift_table(self) -> list[DriftRow]:
        found: dict[tuple[str, str, str], dict[str, float]] = {}
        answers = self._all([partial(self._instant, self.q.drift_gauge(m)) for _, m in Q.DRIFT_GAUGES])
        raw = [labels for answer in answers for labels, _ in answer]
        # all three gauges named together, so that a model is shown alike in each
        names = iter(tell_scopes_apart(raw, self.q.scope))
        models: dict[str, tuple[str, tuple[str, ...]]] = {}
        for (key, _), answer in zip(Q.DRIFT_GAUGES, answers, strict=True):
            for labels, value in answer:
                shown = next(names)
                models[shown.get("model", "")] = (labels.get("model", ""), self._place(labels))
                ident = (shown.get("model", ""), shown.get("feature", ""), shown.get("test", ""))
                found.setdefault(ident, {})[key] = value
        self._drift_models = models
        return drift_rows(found)

    def _drift_model(self, shown: str) -> tuple[str, tuple[str, ...] | None]:
        """The model and scope a name of the latest drift table stands for (no scope for a name it did not show)."""
        return self._drift_models.get(shown, (shown, None))

    def model_quality(self) -> list[QualityRow]:
        values, objectives, labelled = self._all([
            partial(self.instant, self.q.quality_gauge(Q.MODEL_QUALITY.name)),
            partial(self.instant, self.q.quality_gauge(Q.MODEL_QUALITY_OBJECTIVE.name)),
            partial(self.instant, self.q.quality_gauge(Q.MODEL_QUALITY_LABELLED.name, ("model",)))])

        def keyed(answer: Any) -> dict[tuple[str, str], float]:
            return {(lb.get("model", ""), lb.get("metric", "")): v for lb, v in answer}

        return quality_rows(keyed(values), keyed(objectives), {lb.get("model", ""): v for lb, v in labelled})

    def drift_over_time(self, features: Sequence[tuple[str, str]]) -> list[Series]:
        if not features:
            return []
        wanted: dict[tuple[str, str], list[tuple[str, tuple[str, ...] | None]]] = {}
        for shown, feature in dict.fromkeys(features):
            model, place = self._drift_model(shown)
            wanted.setdefault((model, feature), []).append((shown, place))
        answer = self._range(self.q.drift_scores_of(sorted({m for m, _ in wanted}), sorted({f for _, f in wanted})))
        out = []
        for labels, points in answer:
            for shown, place in wanted.get((labels.get("model", ""), labels.get("feature", "")), []):
                if place is None or place == self._place(labels):
                    out.append(Series({**labels, "model": shown}, points))
        return out

    def feature_distribution(self, model: str, feature: str, window: float) -> list[BinRow]:
        name, place = self._drift_model(model)
        where = [eq("model", name), eq("feature", feature)]
        if place is not None:  # a label the series lack is empty, as eq matches it
            where += [eq(label, value) for label, value in zip(self.q.scope, place, strict=True)]
        reference, live, values = self._all([
            lambda: self.instant(self.q.reference_share_for(*where)),
            lambda: self.instant(self.q.live_share_for(duration(window), *where)),
            lambda: self.instant(self.q.live_values_for(duration(window), *where))])
        return one_reference_bins(reference, live, {lb.get("reference", ""): v for lb, v in values})

    def feature_missing(self, window: float) -> list[MissingRow]:
        w = duration(window)
        answers = self._all([partial(self._instant, self.q.missing_share(w)),
                             partial(self._instant, self.q.reference_missing_share()),
                             partial(self._instant, self.q.missing_counted(w))])
        # the three named together, so that a feature is shown alike in each
        names = iter(tell_scopes_apart([labels for answer in answers for labels, _ in answer], self.q.scope))
        keyed = []
        for answer in answers:
            keyed.append({(shown.get("model", ""), shown.get("feature", ""), shown.get("reference", "")): value
                          for shown, (_, value) in [(next(names), found) for found in answer]})
        return missing_rows(*keyed)

    def alerts(self) -> list[AlertRow]:
        data = self._api("/api/v1/alerts")
        found = data.get("alerts", [])
        if not isinstance(found, list) or not all(isinstance(a, dict) for a in found):
            raise SourceError("Prometheus' list of alerts has an unexpected shape")
        rows = []
        for alert in found:
            labels = _labels(alert.get("labels", {}), "/api/v1/alerts")
            notes = _labels(alert.get("annotations", {}), "/api/v1/alerts")
            rows.append(AlertRow(
                name=labels.get("alertname", ""), state=_text(alert.get("state")),
                severity=labels.get("severity", ""), summary=notes.get("summary", notes.get("description", "")),
                runbook_url=notes.get("runbook_url", notes.get("runbook", "")),
                active_at=_text(alert.get("activeAt")), labels=labels))
        return sort_alerts(rows)

    def autoscaling_signals(self, window: float) -> list[Signal]:
        at = self.now()  # one time for every query: a quantile's buckets are read when it was
        queries = self.q.autoscaling(duration(window))
        answers = self._all([partial(self._instant, q, at) for q in queries])
        signals = []
        for (name, unit, help_text), query, result in zip(AUTOSCALING_SIGNALS, queries, answers, strict=True):
            if len(result) > 1:  # one value per cluster / namespace: the busiest is the one to act on
                help_text += (f" The largest of {len(result)} ({', '.join(self.q.scope)}); narrow the console to "
                              "one with --match.")
            busiest = max(result, key=lambda found: found[1], default=None)
            signals.append(Signal(name, None if busiest is None else busiest[1], unit, help_text,
                                  busiest is not None and self._overflows(query, busiest[0], at)))
        return signals

    def _overflows(self, query: str, labels: dict[str, str], at: float) -> bool:
        """Whether the value of ``query`` (a ``histogram_quantile`` expression; False for another) for the series
        ``labels`` at ``at`` is only a lower bound: the quantile's rank lies in the ``+Inf`` bucket."""
        part = quantile_parts(query)
        return part is not None and quantile_overflows(part[0], self._buckets(part[1], at).get(_key(labels), ()))


def targets_interval(targets: Sequence[dict[str, Any]], exporting: Collection[tuple[str, str]] | None) -> float | None:
    """The shortest ``scrapeInterval`` (a Prometheus duration such as ``15s``) of the ``targets`` (the
    ``activeTargets`` of ``/api/v1/targets``) whose ``job`` and ``instance`` labels are one of ``exporting``; of every
    target when ``exporting`` is None or names none of them. None when no target says its interval."""
    mine = [t for t in targets if _job_instance(t) in (exporting or ())]
    seconds = [s for t in (mine or targets) if (s := _interval(t)) is not None]
    return min(seconds) if seconds else None


def _job_instance(target: dict[str, Any]) -> tuple[str, str] | None:
    labels = target.get("labels")
    if not isinstance(labels, dict):
        return None
    return _text(labels.get("job")), _text(labels.get("instance"))


def _label_set(target: dict[str, Any]) -> frozenset[tuple[str, str]] | None:
    """A target's labels; None when they are not names and values."""
    labels = target.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        return None
    return frozenset(labels.items())


def _interval(target: dict[str, Any]) -> float | None:
    """A target's ``scrapeInterval`` in seconds; None when it has none (or none Prometheus' duration syntax reads)."""
    from aiwatch.rules.config import duration_ns

    text = target.get("scrapeInterval")
    if not isinstance(text, str):
        return None
    ns = duration_ns(text)
    return ns / 1e9 if ns else None


def _key(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """A series' labels without ``le``: a quantile's series and its buckets' share them."""
    return frozenset((k, v) for k, v in labels.items() if k != "le")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _labels(value: object, what: str) -> dict[str, str]:
    try:
        return promapi.labels(value, what)
    except PrometheusError as exc:
        raise SourceError(str(exc)) from exc


SEVERITY_ORDER = {"critical": 0, "page": 0, "error": 1, "warning": 2, "ticket": 3, "info": 4}


def sort_alerts(rows: list[AlertRow]) -> list[AlertRow]:
    """Firing before pending, then by severity (critical first), then by name."""
    return sorted(rows, key=lambda a: (a.state != "firing", SEVERITY_ORDER.get(a.severity, 5), a.name))
