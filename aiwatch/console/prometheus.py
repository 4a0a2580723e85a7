"""The console's production data source: Prometheus' HTTP API (instant and range queries, alerts, targets).

    >>> src = PrometheusSource("http://127.0.0.1:9090")  # doctest: +SKIP
    >>> src.latency_quantiles(60)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from aiwatch.console import queries as Q
from aiwatch.console.source import (
    AUTOSCALING_SIGNALS,
    QUANTILES,
    AlertRow,
    BinRow,
    DataSource,
    DriftRow,
    GpuRow,
    Series,
    Signal,
    SourceError,
    SourceUnavailable,
    TargetHealth,
    bin_rows,
    drift_rows,
    duration,
    gpu_rows,
)
from aiwatch.promapi import PrometheusAPI, PrometheusError, PrometheusUnavailable

if TYPE_CHECKING:
    from aiwatch.diagnose.window import WindowTotals

T = TypeVar("T")


class PrometheusSource(DataSource):
    """Answers the panel questions with PromQL against ``url``.

    - ``span``: seconds of history drawn by the over-time panels (ending now).
    - ``points``: about how many points each over-time panel gets (the range query step is ``span / points``).
    - ``timeout``: seconds per HTTP call.
    """

    def __init__(self, url: str, *, span: float = 900.0, points: int = 120, timeout: float = 5.0) -> None:
        if span <= 0 or points < 2:
            raise ValueError(f"span must be > 0 and points >= 2, got span={span} points={points}")
        self.api = PrometheusAPI(url, timeout=timeout)
        self.url = self.api.url
        self.span = span
        self.points = points
        self.timeout = timeout
        self.description = f"Prometheus at {self.url}"

    # --- HTTP (through the one Prometheus client, its errors as the console's) -------------------------------
    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except PrometheusUnavailable as exc:
            raise SourceUnavailable(str(exc)) from exc
        except PrometheusError as exc:
            raise SourceError(str(exc)) from exc

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self._call(lambda: self.api.get(path, params))

    def instant(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``(labels, value)`` per series, NaN and infinite values dropped."""
        return self._call(lambda: self.api.query(promql))

    def range(self, promql: str, extra: dict[str, str] | None = None) -> list[Series]:
        """A range query over the last ``span`` seconds; ``extra`` labels are added to every series."""
        end = time.time()
        step = max(self.span / self.points, 1.0)
        result = self._call(lambda: self.api.query_range(promql, end - self.span, end, step))
        out: list[Series] = []
        for item in result:
            points = [(float(t), float(v)) for t, v in item["values"]]
            points = [(t, v) for t, v in points if not (math.isnan(v) or math.isinf(v))]
            if points:
                out.append(Series({**item["metric"], **(extra or {})}, points))
        return out

    def window_totals(self, start: float, end: float) -> WindowTotals:
        from aiwatch.diagnose.sources import prometheus_totals

        return self._call(lambda: prometheus_totals(self.api, start, end))

    # --- the panel questions ------------------------------------------------------------------------------
    def health(self) -> list[TargetHealth]:
        data = self._api("/api/v1/targets", {"state": "active"})
        return [TargetHealth(t.get("scrapeUrl", ""), t.get("health") == "up", t.get("lastError", ""))
                for t in data.get("activeTargets", [])]

    def latency_quantiles(self, window: float) -> list[Series]:
        w = duration(window)
        return [s for name, q in QUANTILES for s in self.range(Q.latency_quantile(q, w), {"quantile": name})]

    def phase_split(self, window: float) -> list[Series]:
        return self.range(Q.phase_split(duration(window)))

    def throughput(self, window: float) -> list[Series]:
        return self.range(Q.throughput(duration(window)))

    def error_ratio(self, window: float) -> list[Series]:
        return self.range(Q.error_ratio(duration(window)))

    def network_time(self, window: float) -> list[Series]:
        w = duration(window)
        return [s for name, q in QUANTILES[:2] for s in self.range(Q.network_quantile(q, w), {"quantile": name})]

    def gpu_table(self) -> list[GpuRow]:
        rows: dict[str, dict[str, Any]] = {}
        for field_name, metric in Q.GPU_GAUGES:
            for labels, value in self.instant(Q.gpu_gauge(metric)):
                row = rows.setdefault(labels.get("gpu", ""), {"name": labels.get("name", ""),
                                                              "uuid": labels.get("uuid", "")})
                row[field_name] = value
        return gpu_rows(rows)

    def gpu_utilization(self) -> list[Series]:
        return self.range(Q.per_gpu(Q.GPU_UTILIZATION.name))

    def queue_depth(self) -> list[Series]:
        return self.range(Q.queue_depth())

    def in_flight(self) -> list[Series]:
        return self.range(Q.in_flight())

    def batch_size(self, window: float) -> list[Series]:
        return self.range(Q.batch_size(duration(window)))

    def cache_hit_ratio(self, window: float) -> list[Series]:
        return self.range(Q.cache_hit_ratio(duration(window)))

    def drift_table(self) -> list[DriftRow]:
        found: dict[tuple[str, str, str], dict[str, float]] = {}
        for key, metric in Q.DRIFT_GAUGES:
            for labels, value in self.instant(Q.drift_gauge(metric)):
                ident = (labels.get("model", ""), labels.get("feature", ""), labels.get("test", ""))
                found.setdefault(ident, {})[key] = value
        return drift_rows(found)

    def drift_over_time(self, features: Sequence[tuple[str, str]]) -> list[Series]:
        if not features:
            return []
        wanted = set(features)
        series = self.range(Q.drift_scores_of(sorted({m for m, _ in features}), sorted({f for _, f in features})))
        return [s for s in series if (s.labels.get("model", ""), s.labels.get("feature", "")) in wanted]

    def feature_distribution(self, model: str, feature: str, window: float) -> list[BinRow]:
        reference = {lb.get("bin", ""): v for lb, v in self.instant(Q.feature_reference(model, feature))}
        live = {lb.get("bin", ""): v for lb, v in self.instant(Q.feature_live(model, feature, duration(window)))}
        return bin_rows(reference, live)

    def alerts(self) -> list[AlertRow]:
        data = self._api("/api/v1/alerts")
        rows = []
        for alert in data.get("alerts", []):
            labels: dict[str, str] = dict(alert.get("labels", {}))
            notes: dict[str, str] = dict(alert.get("annotations", {}))
            rows.append(AlertRow(
                name=labels.get("alertname", ""), state=str(alert.get("state", "")),
                severity=labels.get("severity", ""), summary=notes.get("summary", notes.get("description", "")),
                runbook_url=notes.get("runbook_url", notes.get("runbook", "")),
                active_at=str(alert.get("activeAt", "")), labels=labels))
        return sort_alerts(rows)

    def autoscaling_signals(self, window: float) -> list[Signal]:
        out = []
        for (name, unit, help_text), promql in zip(AUTOSCALING_SIGNALS, Q.autoscaling(duration(window)),
                                                   strict=True):
            result = self.instant(promql)
            out.append(Signal(name, result[0][1] if result else None, unit, help_text))
        return out


SEVERITY_ORDER = {"critical": 0, "page": 0, "error": 1, "warning": 2, "ticket": 3, "info": 4}


def sort_alerts(rows: list[AlertRow]) -> list[AlertRow]:
    """Firing before pending, then by severity (critical first), then by name."""
    return sorted(rows, key=lambda a: (a.state != "firing", SEVERITY_ORDER.get(a.severity, 5), a.name))
