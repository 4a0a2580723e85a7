"""A small client of Prometheus' HTTP API, the one every reader of Prometheus uses (the console's
:class:`~aiwatch.console.prometheus.PrometheusSource` and ``aiwatch diagnose``).

It knows the API's envelope (``{"status": "success", "data": ...}``) and turns every way a call can fail into one
of two errors with a message meant for a person: :class:`PrometheusUnavailable` when nothing answers,
:class:`PrometheusError` when something answered but not with a usable result (an HTTP error with Prometheus'
``error`` text, a body that is not JSON, a failed query).

    >>> api = PrometheusAPI("http://127.0.0.1:9090")  # doctest: +SKIP
    >>> api.query("sum(up)", time=1700000000)  # doctest: +SKIP
    [({}, 3.0)]
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

Sample = tuple[dict[str, str], float]
"""One series of an instant vector: its labels and its value."""


class PrometheusError(Exception):
    """Prometheus answered, but not with a usable result; the message says what it answered."""


class PrometheusUnavailable(PrometheusError):
    """Nothing answered at the URL (connection refused, DNS, timeout)."""


class PrometheusAPI:
    """Prometheus' HTTP API at ``url`` (``http://host:9090``); ``timeout`` is seconds per call."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Prometheus URL must look like http://host:9090, got {url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET ``path`` (``/api/v1/...``) and return the ``data`` of a successful answer."""
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", "")
            except (ValueError, OSError, AttributeError):
                detail = ""
            raise PrometheusError(f"Prometheus answered {exc.code} to {path}: {detail or exc.reason}") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusUnavailable(f"Prometheus at {self.url} is unreachable: {reason}") from exc
        except ValueError as exc:
            raise PrometheusError(f"{url} did not answer with JSON; is it a Prometheus server?") from exc
        if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
            detail = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(f"Prometheus query failed: {detail or 'not a Prometheus API answer'}")
        return body["data"]

    def query(self, promql: str, time: float | None = None) -> list[Sample]:
        """An instant query (at ``time``, unix seconds, default now): ``(labels, value)`` per series of the
        resulting vector, NaN and infinite values dropped. A scalar answer is one sample without labels."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{time:.3f}"
        data = self.get("/api/v1/query", params)
        try:
            if data.get("resultType") == "scalar":
                items = [{"metric": {}, "value": data["result"]}]
            else:
                items = data.get("result", [])
            out: list[Sample] = []
            for item in items:
                value = float(item["value"][1])
                if not (math.isnan(value) or math.isinf(value)):
                    out.append(({str(k): str(v) for k, v in item["metric"].items()}, value))
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(f"Prometheus answered {promql!r} with a malformed result: {exc!r}") from exc
        return out

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query: the ``result`` matrix as Prometheus sends it (``metric`` and ``values`` per series)."""
        data = self.get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                "step": f"{step:.3f}"})
        result = data.get("result", []) if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise PrometheusError(f"Prometheus answered {promql!r} with a malformed result")
        return result
