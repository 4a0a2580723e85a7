"""The console's production data source: Prometheus' HTTP API (instant and range queries, alerts, targets).

    >>> src = PrometheusSource("http://127.0.0.1:9090")  # doctest: +SKIP
    >>> src.latency_quantiles(60)  # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

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
    SourceSlow,
    SourceUnavailable,
    TargetHealth,
    bin_rows,
    drift_rows,
    duration,
    finite,
    gpu_rows,
)

T = TypeVar("T")


class PrometheusSource(DataSource):
    """Answers the panel questions with PromQL against ``url``.

    - ``span``: seconds of history drawn by the over-time panels (ending now).
    - ``points``: about how many points each over-time panel gets (the range query step is ``span / points``).
    - ``timeout``: seconds one HTTP call may take in all (also sent as the query's own ``timeout``, so Prometheus
      stops working on it); a question not answered in time raises :class:`SourceSlow` naming the query and the
      time, and the other panels still draw.
    - ``max_bytes``: the largest answer read; a larger one is a :class:`SourceError`.

    Whatever Prometheus (or whatever answers at ``url``) sends back, a question returns its answer or raises a
    :class:`SourceError`: garbage, JSON of the wrong shape, NaN and infinite values, oversized answers included.
    """

    def __init__(self, url: str, *, span: float = 900.0, points: int = 120, timeout: float = 5.0,
                 max_bytes: int = 32 * 2**20) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Prometheus URL must look like http://host:9090, got {url!r}")
        if not span > 0 or points < 2 or not 0 < timeout < math.inf or max_bytes < 1:
            raise ValueError(f"span and timeout must be > 0, points >= 2 and max_bytes >= 1, got span={span} "
                             f"points={points} timeout={timeout} max_bytes={max_bytes}")
        self.url = url.rstrip("/")
        self.span = span
        self.points = points
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.description = f"Prometheus at {self.url}"

    # --- HTTP ---------------------------------------------------------------------------------------------
    def _api(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``data`` object of Prometheus' answer to ``path``; :class:`SourceError` (or a subclass) otherwise."""
        query = (params or {}).get("query")
        if query is not None:
            params = {**(params or {}), "timeout": f"{self.timeout:g}s"}
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        started = time.monotonic()
        what = f"{path} (query: {_short(query)})" if query is not None else path
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                raw = self._read(resp, started, what)
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, path, what, started) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._slow(what, started) from exc
            raise SourceUnavailable(f"Prometheus at {self.url} is unreachable: {exc.reason}") from exc
        except TimeoutError as exc:  # socket.timeout: connected, but no answer in time
            raise self._slow(what, started) from exc
        except OSError as exc:
            raise SourceUnavailable(f"Prometheus at {self.url} is unreachable: {exc}") from exc
        except http.client.HTTPException as exc:
            raise SourceError(f"{self.url}{path} sent a broken HTTP answer ({type(exc).__name__})") from exc
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise SourceError(f"{self.url}{path} did not answer with JSON; is it a Prometheus server?") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise SourceError(f"Prometheus query failed: {_short(error if isinstance(error, str) else body)}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise SourceError(f"Prometheus answered {path} without a data object")
        return data

    def _read(self, resp: Any, started: float, what: str) -> bytes:
        """The body, read in chunks against the deadline (a server dripping bytes cannot hold a panel forever)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() - started > self.timeout:
                raise self._slow(what, started)
            chunk = resp.read(min(1 << 16, self.max_bytes + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise SourceError(f"Prometheus' answer to {what} is larger than {self.max_bytes} bytes")

    def _slow(self, what: str, started: float) -> SourceSlow:
        return SourceSlow(f"Prometheus at {self.url} is slow: {what} was not answered within {self.timeout:g} s "
                          f"(gave up after {time.monotonic() - started:.1f} s)")

    def _http_error(self, exc: urllib.error.HTTPError, path: str, what: str, started: float) -> SourceError:
        try:
            answer = json.loads(exc.read(1 << 16))
        except (ValueError, OSError, RecursionError, http.client.HTTPException):
            answer = None
        detail = answer.get("error", "") if isinstance(answer, dict) else ""
        if isinstance(answer, dict) and answer.get("errorType") == "timeout":
            return self._slow(what, started)
        return SourceError(f"Prometheus answered {exc.code} to {path}: {_short(detail or exc.reason)}")

    def instant(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``(labels, value)`` per series, NaN and infinite values dropped."""
        data = self._api("/api/v1/query", {"query": promql})
        out: list[tuple[dict[str, str], float]] = []
        for item in _results(data, "vector", promql):
            value = finite(_sample(item.get("value"), promql)[1])
            if value is not None:
                out.append((_labels(item.get("metric"), promql), value))
        return out

    def range(self, promql: str, extra: dict[str, str] | None = None) -> list[Series]:
        """A range query over the last ``span`` seconds; ``extra`` labels are added to every series."""
        end = time.time()
        step = max(self.span / self.points, 1.0)
        data = self._api("/api/v1/query_range", {"query": promql, "start": f"{end - self.span:.3f}",
                                                 "end": f"{end:.3f}", "step": f"{step:.3f}"})
        out: list[Series] = []
        for item in _results(data, "matrix", promql):
            values = item.get("values")
            if not isinstance(values, list):
                raise SourceError(f"Prometheus' answer to {_short(promql)} has a series without values")
            points = [_sample(v, promql) for v in values]
            points = [(t, v) for t, v in points if finite(v) is not None and _PLAUSIBLE_TIME[0] <= t
                      < _PLAUSIBLE_TIME[1]]
            if points:
                out.append(Series({**_labels(item.get("metric"), promql), **(extra or {})}, points))
        return out

    # --- the panel questions ------------------------------------------------------------------------------
    def health(self) -> list[TargetHealth]:
        data = self._api("/api/v1/targets", {"state": "active"})
        targets = data.get("activeTargets", [])
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            raise SourceError("Prometheus' list of targets has an unexpected shape")
        return [TargetHealth(_text(t.get("scrapeUrl")), t.get("health") == "up", _text(t.get("lastError")))
                for t in targets]

    def _all(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The answers of several queries, asked at once: a question takes as long as its slowest query (each
        bounded by ``timeout``), not their sum."""
        if len(calls) < 2:
            return [call() for call in calls]
        with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="aiwatch-prometheus") as pool:
            futures = [pool.submit(call) for call in calls]
            return [f.result() for f in futures]

    def _ranges(self, queries: Sequence[tuple[str, dict[str, str]]]) -> list[Series]:
        answers = self._all([partial(self.range, q, extra) for q, extra in queries])
        return [s for answer in answers for s in answer]

    def latency_quantiles(self, window: float) -> list[Series]:
        w = duration(window)
        return self._ranges([(Q.latency_quantile(q, w), {"quantile": name}) for name, q in QUANTILES])

    def phase_split(self, window: float) -> list[Series]:
        return self.range(Q.phase_split(duration(window)))

    def throughput(self, window: float) -> list[Series]:
        return self.range(Q.throughput(duration(window)))

    def error_ratio(self, window: float) -> list[Series]:
        return self.range(Q.error_ratio(duration(window)))

    def network_time(self, window: float) -> list[Series]:
        w = duration(window)
        return self._ranges([(Q.network_quantile(q, w), {"quantile": name}) for name, q in QUANTILES[:2]])

    def gpu_table(self) -> list[GpuRow]:
        rows: dict[str, dict[str, Any]] = {}
        answers = self._all([partial(self.instant, Q.gpu_gauge(m)) for _, m in Q.GPU_GAUGES])
        for (field_name, _), answer in zip(Q.GPU_GAUGES, answers, strict=True):
            for labels, value in answer:
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
        answers = self._all([partial(self.instant, Q.drift_gauge(m)) for _, m in Q.DRIFT_GAUGES])
        for (key, _), answer in zip(Q.DRIFT_GAUGES, answers, strict=True):
            for labels, value in answer:
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
        reference, live = self._all([lambda: self.instant(Q.feature_reference(model, feature)),
                                     lambda: self.instant(Q.feature_live(model, feature, duration(window)))])
        return bin_rows({lb.get("bin", ""): v for lb, v in reference}, {lb.get("bin", ""): v for lb, v in live})

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
        answers = self._all([partial(self.instant, q) for q in Q.autoscaling(duration(window))])
        return [Signal(name, result[0][1] if result else None, unit, help_text)
                for (name, unit, help_text), result in zip(AUTOSCALING_SIGNALS, answers, strict=True)]


#: Sample timestamps outside these Unix seconds are dropped (a chart cannot place year 10^300).
_PLAUSIBLE_TIME = (0.0, 1e11)


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _results(data: dict[str, Any], kind: str, promql: str) -> list[dict[str, Any]]:
    """The result list of a query answer of ``kind`` (vector / matrix); SourceError for any other shape."""
    if data.get("resultType") != kind:
        raise SourceError(f"Prometheus answered {_short(promql)} with a {_short(data.get('resultType'))} result, "
                          f"not a {kind}")
    result = data.get("result")
    if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
        raise SourceError(f"Prometheus' answer to {_short(promql)} has an unexpected shape")
    return result


def _labels(value: object, promql: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SourceError(f"Prometheus' answer to {_short(promql)} has labels that are not strings")
    return dict(value)


def _sample(value: object, promql: str) -> tuple[float, float]:
    """``[unix seconds, "value"]`` as two floats (the value may be NaN or infinite; callers drop those)."""
    try:
        if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str) \
                or isinstance(value[0], bool):
            raise ValueError
        t, v = float(value[0]), float(value[1])
    except (ValueError, TypeError, OverflowError):
        raise SourceError(f"Prometheus' answer to {_short(promql)} holds a sample that is not [time, \"value\"]: "
                          f"{_short(value, 80)}") from None
    if not math.isfinite(t):
        raise SourceError(f"Prometheus' answer to {_short(promql)} holds a sample time that is not finite")
    return t, v


SEVERITY_ORDER = {"critical": 0, "page": 0, "error": 1, "warning": 2, "ticket": 3, "info": 4}


def sort_alerts(rows: list[AlertRow]) -> list[AlertRow]:
    """Firing before pending, then by severity (critical first), then by name."""
    return sorted(rows, key=lambda a: (a.state != "firing", SEVERITY_ORDER.get(a.severity, 5), a.name))
