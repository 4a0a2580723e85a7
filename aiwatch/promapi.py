"""A small client of Prometheus' HTTP API, the one every reader of Prometheus uses (the console's
:class:`~aiwatch.console.prometheus.PrometheusSource` and ``aiwatch diagnose``).

It knows the API's envelope (``{"status": "success", "data": ...}``) and turns every way a call can fail into one
of three errors with a message meant for a person: :class:`PrometheusUnavailable` when nothing answers,
:class:`PrometheusSlow` when Prometheus is reachable but did not answer in time (the message names the query and the
time), :class:`PrometheusError` when something answered but not with a usable result (an HTTP error with
Prometheus' ``error`` text, a body that is not JSON, a failed query, an answer of the wrong shape or too large).

Whatever answers at the URL, a call returns a usable answer or raises one of these: garbage, JSON of the wrong
shape, NaN and infinite values, answers larger than ``max_bytes`` and servers that drip bytes included.

A successful answer may carry ``warnings``: Prometheus' own when a remote-read store failed, Thanos' and Mimir's
for a partial response (a store or an ingester did not answer). The data is then incomplete, so every warning is
kept (:meth:`PrometheusAPI.warnings_since`) for the caller to show next to what it computed.

Authentication, a tenant, extra headers and TLS (a CA bundle, a client certificate) are an
:class:`~aiwatch.httpconfig.HTTPConfig`, given once here for every caller: a Prometheus behind an authenticating
proxy, Thanos, or a multi-tenant Mimir (``HTTPConfig(tenant="team-a")`` sends ``X-Scope-OrgID``).

    >>> api = PrometheusAPI("http://127.0.0.1:9090")  # doctest: +SKIP
    >>> api.query("sum(up)", time=1700000000)  # doctest: +SKIP
    [({}, 3.0)]
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
import threading
import urllib.error
import urllib.parse
from typing import Any

from aiwatch import clock
from aiwatch.amounts import period
from aiwatch.httpconfig import CredentialsError, HTTPConfig, TooLarge, read_body, refuse_credentials

Sample = tuple[dict[str, str], float]
"""One series of an instant vector: its labels and its value."""

Points = list[tuple[float, float]]
Exemplar = tuple[dict[str, str], float, float]
"""An exemplar: its labels (``trace_id``), the value observed and when (unix seconds)."""

#: Sample timestamps outside these Unix seconds are dropped (a chart cannot place year 10^300).
PLAUSIBLE_TIME = (0.0, 1e11)

#: Distinct answer warnings kept (the most recent), and the characters kept of each.
MAX_WARNINGS = 16
WARNING_CHARS = 300


class PrometheusError(Exception):
    """Prometheus answered, but not with a usable result; the message says what it answered."""


class PrometheusUnavailable(PrometheusError):
    """Nothing answered at the URL (connection refused, DNS, a refused connection)."""


class PrometheusSlow(PrometheusError):
    """Prometheus is reachable but did not answer in time; the message names the query and the time."""


class PrometheusAPI:
    """Prometheus' HTTP API at ``url`` (``http://host:9090``).

    - ``timeout``: seconds one call may take in all, reading the answer included (also sent as the query's own
      ``timeout``, so that Prometheus stops working on it);
    - ``max_bytes``: the largest answer read;
    - ``http``: headers, credentials and TLS (:class:`~aiwatch.httpconfig.HTTPConfig`).

    Credentials go in ``http``, never in the URL (``http://user:secret@host`` is refused: messages print the URL).
    """

    def __init__(self, url: str, *, timeout: float = 5.0, max_bytes: int = 32 * 2**20,
                 http: HTTPConfig | None = None) -> None:
        refuse_credentials(url, "the Prometheus URL")  # first: the other messages print the URL
        try:
            parsed = urllib.parse.urlparse(url)
        except ValueError:  # an unclosed [IPv6 address
            parsed = urllib.parse.urlparse("")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"Prometheus URL must look like http://host:9090, got {url!r}")
        if parsed.query or parsed.fragment or url.endswith(("?", "#")):
            # the API's paths are appended to the URL: they would land in its query, never reaching the API
            raise ValueError(f"Prometheus URL must have no query or fragment (the API's paths are appended to it), "
                             f"got {url!r}")
        try:
            parsed.port  # noqa: B018 - a port that is not a number from 0 to 65535 raises
        except ValueError as exc:
            raise ValueError(f"Prometheus URL {url!r}: {exc}") from None
        timeout = period(timeout, "timeout")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        #: Prometheus' clock minus this machine's, from the ``Date`` of its latest answer (whole seconds: to within
        #: half a second); ``None`` before one
        self.clock_offset: float | None = None
        self.http = http or HTTPConfig()
        self._warnings: dict[str, float] = {}  # warning -> when it was last answered (clock.monotonic())
        self._warnings_lock = threading.Lock()

    # --- transport ------------------------------------------------------------------------------------------
    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` (``/api/v1/...``) and return the ``data`` object of a successful answer."""
        data = self._data(path, params)
        if not isinstance(data, dict):
            raise PrometheusError(f"Prometheus answered {path} without a data object")
        return data

    def _data(self, path: str, params: dict[str, str] | None) -> Any:
        """GET ``path`` and return the ``data`` of a successful answer, whatever its JSON type."""
        query = (params or {}).get("query")
        if query is not None:
            # whole milliseconds: Prometheus refuses a fraction ("2.5s") or an exponent ("1e+09s") in a duration
            params = {**(params or {}), "timeout": f"{math.ceil(self.timeout * 1000)}ms"}
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        started = clock.monotonic()
        what = f"{path} (query: {short(query)})" if query is not None else path
        try:
            with self.http.open(url, self.timeout) as resp:
                self._read_clock(resp)
                raw = self._read(resp, started, what)
        except CredentialsError as exc:
            raise PrometheusError(f"cannot ask Prometheus at {self.url}: {exc}") from exc
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, path, what, started) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._slow(what, started) from exc
            if isinstance(exc.reason, ssl.SSLError):
                raise self._tls(exc.reason) from exc
            raise PrometheusUnavailable(f"Prometheus at {self.url} is unreachable: {exc.reason}") from exc
        except TimeoutError as exc:  # socket.timeout: connected, but no answer in time
            raise self._slow(what, started) from exc
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate shows on the first read
            raise self._tls(exc) from exc
        except OSError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} is unreachable: {exc}") from exc
        except http.client.HTTPException as exc:
            raise PrometheusError(f"{self.url}{path} sent a broken HTTP answer ({type(exc).__name__})") from exc
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise PrometheusError(f"{self.url}{path} did not answer with JSON; is it a Prometheus server?") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(f"Prometheus query failed: {short(error if isinstance(error, str) else body)}")
        data = body.get("data")
        warnings = body.get("warnings")
        if isinstance(warnings, list) and warnings:
            self._keep_warnings(warnings)
        return data

    def _read_clock(self, resp: Any) -> None:
        """Keep :attr:`clock_offset` from the answer's ``Date`` (sent with its headers, just read); an answer without
        one, or with one that is no date (a proxy's), leaves it as it was."""
        offset = clock.answer_offset(resp)
        if offset is not None:
            self.clock_offset = offset

    def warnings_since(self, since: float) -> list[str]:
        """The distinct warnings (a remote-read store that failed, a partial response) that successful answers
        carried at or after ``since`` (a :func:`aiwatch.clock.monotonic` reading: a wall clock stepped back during the
        questions dated them before it), oldest first: what they said is incomplete."""
        with self._warnings_lock:
            return [text for text, when in self._warnings.items() if when >= since]

    def _keep_warnings(self, warnings: list[Any]) -> None:
        now = clock.monotonic()
        with self._warnings_lock:
            for warning in warnings[:MAX_WARNINGS]:
                text = short(warning if isinstance(warning, str) else repr(warning), WARNING_CHARS)
                self._warnings.pop(text, None)  # re-inserted last: the dict stays ordered by time
                self._warnings[text] = now
            while len(self._warnings) > MAX_WARNINGS:
                del self._warnings[next(iter(self._warnings))]

    def _read(self, resp: Any, started: float, what: str, limit: int | None = None) -> bytes:
        """The body (at most ``limit`` bytes, default ``max_bytes``), read in chunks against the deadline (a server
        dripping bytes cannot hold a caller forever)."""
        limit = self.max_bytes if limit is None else limit
        try:
            return read_body(resp, started, self.timeout, limit, f"Prometheus at {self.url}")
        except TimeoutError:
            raise self._slow(what, started) from None
        except TooLarge:
            raise PrometheusError(f"Prometheus' answer to {what} is larger than {limit} bytes") from None

    def _tls(self, exc: ssl.SSLError) -> PrometheusError:
        return PrometheusError(f"TLS with Prometheus at {self.url} failed: {exc.reason or exc} (the CA file must "
                               "hold the CA of its certificate; a client certificate may be required)")

    def _slow(self, what: str, started: float) -> PrometheusSlow:
        return PrometheusSlow(f"Prometheus at {self.url} is slow: {what} was not answered within {self.timeout:g} s "
                              f"(gave up after {clock.monotonic() - started:.1f} s)")

    def _http_error(self, exc: urllib.error.HTTPError, path: str, what: str, started: float) -> PrometheusError:
        try:  # the error text, if the body comes in time: the status alone is the answer otherwise
            answer = json.loads(self._read(exc, started, what, 1 << 16))
        except (PrometheusError, ValueError, OSError, RecursionError, http.client.HTTPException):
            answer = None
        detail = answer.get("error", "") if isinstance(answer, dict) else ""
        if isinstance(answer, dict) and answer.get("errorType") == "timeout":
            return self._slow(what, started)
        hint = _AUTH_HINTS.get(exc.code, "")
        return PrometheusError(f"Prometheus answered {exc.code} to {path}: {short(detail or exc.reason)}{hint}")

    # --- queries --------------------------------------------------------------------------------------------
    def query(self, promql: str, time: float | None = None) -> list[Sample]:
        """An instant query (at ``time``, unix seconds, default now): ``(labels, value)`` per series of the
        resulting vector, NaN and infinite values dropped. A scalar answer is one sample without labels."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{time:.3f}"
        data = self.get("/api/v1/query", params)
        if data.get("resultType") == "scalar":
            items: list[dict[str, Any]] = [{"metric": {}, "value": data.get("result")}]
        else:
            items = results(data, "vector", promql)
        out: list[Sample] = []
        for item in items:
            value = sample(item.get("value"), promql)[1]
            if math.isfinite(value):
                out.append((labels(item.get("metric"), promql), value))
        return out

    def server_time(self) -> float:
        """Now on Prometheus' clock (unix seconds): ``time()`` evaluated at its own now. Where a window ends now, it
        ends there: Prometheus has no samples after it, however far ahead this machine's clock runs."""
        found = self.query("time()")
        if len(found) != 1:
            raise PrometheusError(f"Prometheus at {self.url} answered time() without one number")
        return found[0][1]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[tuple[dict[str, str], Points]]:
        """A range query: ``(labels, [(unix seconds, value), ...])`` per series, NaN, infinite values and
        implausible times dropped; series left without points are left out."""
        data = self.get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                "step": f"{step:.3f}"})
        out: list[tuple[dict[str, str], Points]] = []
        for item in results(data, "matrix", promql):
            values = item.get("values")
            if not isinstance(values, list):
                raise PrometheusError(f"Prometheus' answer to {short(promql)} has a series without values")
            points = [sample(v, promql) for v in values]
            points = [(t, v) for t, v in points if math.isfinite(v) and PLAUSIBLE_TIME[0] <= t < PLAUSIBLE_TIME[1]]
            if points:
                out.append((labels(item.get("metric"), promql), points))
        return out


    def query_exemplars(self, promql: str, start: float, end: float) -> list[tuple[dict[str, str], list[Exemplar]]]:
        """The exemplars of the series ``promql`` reads, kept between ``start`` and ``end`` (unix seconds): per
        series, its labels and ``(labels, value, unix seconds)`` per exemplar; NaN, infinite values and implausible
        times dropped, series left without exemplars left out. A Prometheus without exemplar storage answers
        none."""
        data = self._data("/api/v1/query_exemplars", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        if data is None:  # Prometheus answers null for a query whose series kept none
            return []
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise PrometheusError(f"Prometheus' exemplars of {short(promql)} have an unexpected shape")
        out: list[tuple[dict[str, str], list[Exemplar]]] = []
        for item in data:
            found = item.get("exemplars")
            if not isinstance(found, list) or not all(isinstance(e, dict) for e in found):
                raise PrometheusError(f"Prometheus' exemplars of {short(promql)} have a series without a list of "
                                      "exemplars")
            kept: list[Exemplar] = []
            for exemplar in found:
                t, v = sample([exemplar.get("timestamp"), exemplar.get("value")], promql)
                if math.isfinite(v) and PLAUSIBLE_TIME[0] <= t < PLAUSIBLE_TIME[1]:
                    kept.append((labels(exemplar.get("labels"), promql), v, t))
            if kept:
                out.append((labels(item.get("seriesLabels"), promql), kept))
        return out


_AUTH_HINTS = {
    401: " (it wants credentials: a bearer token file, basic auth, or a client certificate)",
    403: " (the credentials or the tenant given are not allowed to read it)",
}


def short(value: object, limit: int = 300) -> str:
    """``value`` as text for a message, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def results(data: dict[str, Any], kind: str, promql: str) -> list[dict[str, Any]]:
    """The result list of a query answer of ``kind`` (vector / matrix); PrometheusError for any other shape."""
    if data.get("resultType") != kind:
        raise PrometheusError(f"Prometheus answered {short(promql)} with a {short(data.get('resultType'))} result, "
                              f"not a {kind}")
    result = data.get("result")
    if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
        raise PrometheusError(f"Prometheus' answer to {short(promql)} has an unexpected shape")
    return result


def labels(value: object, what: str) -> dict[str, str]:
    """A label set of an answer to ``what``; PrometheusError unless every name and value is a string."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PrometheusError(f"Prometheus' answer to {short(what)} has labels that are not strings")
    return dict(value)


def bucket_bound(le: str) -> float | None:
    """A histogram bucket's upper bound from its ``le`` label, ``None`` for one that is no number (or NaN): an
    exporter that is not aiwatch's, or a hostile source. Readers leave such a bucket out.

        >>> bucket_bound("0.25"), bucket_bound("+Inf"), bucket_bound("x"), bucket_bound("NaN")
        (0.25, inf, None, None)
    """
    try:
        bound = float(le)
    except ValueError:
        return None
    return None if math.isnan(bound) else bound


def sample(value: object, promql: str) -> tuple[float, float]:
    """``[unix seconds, "value"]`` as two floats (the value may be NaN or infinite; callers drop those)."""
    try:
        if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str) \
                or isinstance(value[0], bool):
            raise ValueError
        t, v = float(value[0]), float(value[1])
    except (ValueError, TypeError, OverflowError):
        raise PrometheusError(f"Prometheus' answer to {short(promql)} holds a sample that is not "
                              f"[time, \"value\"]: {short(value, 80)}") from None
    if not math.isfinite(t):
        raise PrometheusError(f"Prometheus' answer to {short(promql)} holds a sample time that is not finite")
    return t, v
