"""Read scraped ``/metrics``: fetch an endpoint and parse its exposition into one data shape, :data:`Samples`.

The console's embedded source (:mod:`aiwatch.console.scrape`) and the demo's summary (:mod:`aiwatch.demo.scrape`)
both read endpoints through this module. Parsing is prometheus_client's (:mod:`prometheus_client.parser` for the
Prometheus text format, :mod:`prometheus_client.openmetrics.parser` when the server answered OpenMetrics):

* sample names are as exposed: ``x_bucket`` / ``x_sum`` / ``x_count`` for histograms, ``x_total`` for counters;
* ``_created`` samples (a counter's or histogram's creation time) are dropped: they are not values to add up;
* exemplars and sample timestamps are dropped: a scrape is one instant, stamped by the reader;
* ``NaN`` stays ``NaN`` (a gauge may hold it); ``+Inf`` buckets keep their ``le="+Inf"`` label.

    >>> samples = parse_metrics('# TYPE x_total counter\\nx_total{b="2",a="1"} 3\\nx_created{a="1",b="2"} 1e9\\n')
    >>> samples
    {'x_total': {(('a', '1'), ('b', '2')): 3.0}}
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.openmetrics.parser import text_string_to_metric_families as _openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as _text_families

from aiwatch import clock
from aiwatch.httpconfig import HTTPConfig, read_body

LabelKey = tuple[tuple[str, str], ...]
"""A series' labels as sorted ``(name, value)`` pairs (hashable, one per series)."""

Samples = dict[str, dict[LabelKey, float]]
"""Sample name -> series labels -> value, for one scrape (or several merged, told apart by a label)."""

HISTOGRAM_SAMPLES = ("_bucket", "_sum", "_count")
"""The suffixes of a histogram's sample names: its series of one label set restart together."""


def histogram_of(sample: str) -> str | None:
    """The histogram the sample name ``sample`` belongs to (its name without the suffix); ``None`` for a sample of
    no histogram."""
    return next((sample.removesuffix(s) for s in HISTOGRAM_SAMPLES if sample.endswith(s)), None)


RESTART_COMPANIONS = {"aiwatch_event_loop_sampled_seconds_total": "aiwatch_event_loop_delay_seconds"}
"""Counters that restart with a histogram of the same labels and are read with it: the loop sampler's watched time
is the delay histogram's denominator, so a restart seen on either must count both from 0 (a watched time that grew
past its old value would otherwise count only the difference next to a histogram counted whole)."""


def restart_group(sample: str) -> str | None:
    """The histogram whose series of one label set restart together that the sample name ``sample`` belongs to:
    its own (:func:`histogram_of`), or the one it is a :data:`RESTART_COMPANIONS` counter of; ``None`` otherwise."""
    return histogram_of(sample) or RESTART_COMPANIONS.get(sample)


def restart_members(histogram: str) -> tuple[str, ...]:
    """The sample names of :func:`restart_group` ``histogram``: its ``_bucket``, ``_sum`` and ``_count``, and its
    :data:`RESTART_COMPANIONS`."""
    return (*(histogram + s for s in HISTOGRAM_SAMPLES),
            *(name for name, group in RESTART_COMPANIONS.items() if group == histogram))


def without_le(key: LabelKey) -> LabelKey:
    """A histogram series' labels without ``le``: what its ``_bucket``, ``_sum`` and ``_count`` series share."""
    return tuple(kv for kv in key if kv[0] != "le")


OPENMETRICS = "application/openmetrics-text"
ACCEPT = "text/plain;version=0.0.4"
"""What :func:`fetch_metrics` asks for: the text format, so servers leave out exemplars nobody here reads."""


def parse_metrics(text: str, content_type: str = "", labels: Mapping[str, str] | None = None) -> Samples:
    """The samples of one exposition. ``content_type`` (the response's ``Content-Type``) picks the OpenMetrics
    parser for OpenMetrics (its media type in any case: media types are case-insensitive); ``labels`` are added to
    every series (``instance`` to merge several targets).
    Raises ``ValueError`` for text that is not an exposition."""
    media_type = content_type.partition(";")[0].strip().lower()
    parse = _openmetrics_families if media_type == OPENMETRICS else _text_families
    extra = dict(labels or {})
    out: Samples = {}
    for family in parse(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            series = {**sample.labels, **extra} if extra else sample.labels
            out.setdefault(sample.name, {})[tuple(sorted(series.items()))] = float(sample.value)
    return out


def fetch_metrics(url: str, timeout: float = 5.0, labels: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None, http: HTTPConfig | None = None,
                  max_bytes: int = 32 * 2**20) -> Samples:
    """GET ``url`` (a ``/metrics`` endpoint) and parse it. ``headers`` are added to the request; ``http`` brings
    credentials, a tenant and TLS (:class:`~aiwatch.httpconfig.HTTPConfig`). The body is read against ``timeout``
    (a server dripping bytes is cut off) and up to ``max_bytes``. Errors are urllib's (``HTTPError``,
    ``URLError``, ``OSError``, ``TimeoutError``; :class:`~aiwatch.httpconfig.CredentialsError` for a secret file
    that cannot be read), http.client's ``HTTPException`` for a broken answer, or ``ValueError`` for an answer
    larger than ``max_bytes`` (:class:`~aiwatch.httpconfig.TooLarge`) and the parser's.
    """
    return fetch_metrics_dated(url, timeout, labels, headers, http, max_bytes)[0]


def fetch_metrics_dated(url: str, timeout: float = 5.0, labels: Mapping[str, str] | None = None,
                        headers: Mapping[str, str] | None = None, http: HTTPConfig | None = None,
                        max_bytes: int = 32 * 2**20) -> tuple[Samples, float | None]:
    """:func:`fetch_metrics`, and the endpoint's clock minus this machine's from its answer's ``Date``
    (:func:`aiwatch.clock.answer_offset`; ``None`` without one): the times an app exports are on its host's clock."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    started = clock.monotonic()
    with (http or HTTPConfig()).open(url, timeout, {"Accept": ACCEPT, **(headers or {})}) as resp:
        offset = clock.answer_offset(resp)
        body = read_body(resp, started, timeout, max_bytes, url)
        content_type = resp.headers.get("Content-Type", "")
    return parse_metrics(body.decode("utf-8", errors="replace"), content_type, labels), offset
