"""The PromQL of every console panel, shared by :class:`~aiwatch.console.prometheus.PrometheusSource` and the
Grafana dashboard (``scripts/build_dashboard.py`` renders ``dashboards/aiwatch.json`` from these functions).

``w`` is a PromQL duration (``"1m"``, or ``"$__rate_interval"`` in Grafana); ``svc`` / ``mdl`` are optional label
matchers (``'service=~"$service"'`` or an :class:`aiwatch.promql.Matcher`) that narrow service- and model-labelled
metrics. Selectors, quoting and metric names come from :mod:`aiwatch.promql`; the metric constants below are also
the names :class:`~aiwatch.console.scrape.ScrapeSource` reads.

    >>> throughput("1m")
    'sum by (service) (rate(aiwatch_request_duration_seconds_count[1m]))'
"""

from __future__ import annotations

from typing import TypeAlias

from aiwatch.console.source import ERROR_STATUS_RE
from aiwatch.drift.promql import live_share_expr, reference_share_expr
from aiwatch.promql import Matcher, by, eq, histogram_quantile, matches, metric, one_of, rate, selector, series

REQUESTS = metric("aiwatch_request_duration_seconds")
PHASES = metric("aiwatch_phase_duration_seconds")
NETWORK = metric("aiwatch_network_duration_seconds")
IN_FLIGHT = metric("aiwatch_requests_in_flight")
QUEUE_DEPTH = metric("aiwatch_queue_depth")
QUEUE_WAIT = metric("aiwatch_queue_wait_seconds")
BATCH_SIZE = metric("aiwatch_batch_size")
CACHE_REQUESTS = metric("aiwatch_feature_cache_requests_total")
GPU_NVML_UP = metric("aiwatch_gpu_nvml_up")
GPU_UTILIZATION = metric("aiwatch_gpu_utilization_ratio")
DRIFT_SCORE = metric("aiwatch_drift_score")
DRIFT_PVALUE = metric("aiwatch_drift_pvalue")
DRIFT_DETECTED = metric("aiwatch_drift_detected")
FEATURE_BINS = metric("aiwatch_feature_bin_total")
MODEL_QUALITY = metric("aiwatch_model_quality")
MODEL_QUALITY_OBJECTIVE = metric("aiwatch_model_quality_objective")
MODEL_QUALITY_LABELLED = metric("aiwatch_model_quality_labelled")
REFERENCE_RATIO = metric("aiwatch_feature_reference_ratio")

REPLICA_GAUGES = (IN_FLIGHT, QUEUE_DEPTH, GPU_NVML_UP)
"""The serving gauges whose exporters count as replicas."""

# factored as aiwatch_(a|b|c): the committed dashboard's text
REPLICAS = by("count", (), by("count", ("instance",), selector(matches(
    "__name__", "aiwatch_(" + "|".join(m.name.removeprefix("aiwatch_") for m in REPLICA_GAUGES) + ")"))))
"""How many replicas (scrape instances) export aiwatch's serving gauges."""

GPU_GAUGES: tuple[tuple[str, str], ...] = (
    ("up", metric("aiwatch_gpu_up").name),
    ("utilization", GPU_UTILIZATION.name),
    ("memory_used_bytes", metric("aiwatch_gpu_memory_used_bytes").name),
    ("memory_total_bytes", metric("aiwatch_gpu_memory_total_bytes").name),
    ("power_watts", metric("aiwatch_gpu_power_watts").name),
    ("temperature_celsius", metric("aiwatch_gpu_temperature_celsius").name),
)
"""(GpuRow field, metric) of the GPU table."""

DRIFT_GAUGES: tuple[tuple[str, str], ...] = (
    ("score", DRIFT_SCORE.name), ("pvalue", DRIFT_PVALUE.name), ("detected", DRIFT_DETECTED.name))
"""(DriftRow field, metric) of the drift table."""

MatcherText: TypeAlias = Matcher | str


def latency_quantile(q: float, w: str, svc: MatcherText = "") -> str:
    """Request latency quantile per ``service`` (a gateway's and its backend's requests never share a histogram)."""
    return histogram_quantile(q, REQUESTS, w, ("service",), svc)


def phase_split(w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
    """Mean seconds per request in each phase, per ``service``: each service's phase time divided by that
    service's own request rate. Never summed across services: a caller's phase that calls another service (a
    gateway's ``inference_call``) already holds that service's whole request time."""
    return (f"{by('sum', ('service', 'phase'), rate(PHASES.sum, w, svc, mdl))}"
            f" / on (service) group_left {throughput(w, svc)}")


def throughput(w: str, svc: MatcherText = "") -> str:
    return by("sum", ("service",), rate(REQUESTS.count, w, svc))


def error_ratio(w: str, svc: MatcherText = "") -> str:
    errors = by("sum", ("service",), rate(REQUESTS.count, w, svc, matches("status", ERROR_STATUS_RE)))
    total = throughput(w, svc)
    # "or ... * 0" keeps services without errors at 0 instead of dropping them.
    return f"({errors} or {total} * 0) / {total}"


def network_quantile(q: float, w: str, svc: MatcherText = "") -> str:
    """Network time quantile per calling ``service`` and the ``peer`` it called."""
    return histogram_quantile(q, NETWORK, w, ("service", "peer"), svc)


def gpu_gauge(gauge: str) -> str:
    """The latest value of a GPU gauge per GPU, for the GPU table."""
    return by("max", ("gpu", "name", "uuid"), series(metric(gauge)))


def per_gpu(gauge: str) -> str:
    """A GPU gauge per ``gpu`` index, for the over-time charts."""
    return by("max", ("gpu",), series(metric(gauge)))


def queue_depth() -> str:
    return by("sum", ("queue",), series(QUEUE_DEPTH))


def in_flight(svc: MatcherText = "") -> str:
    return by("sum", ("service",), series(IN_FLIGHT, svc))


def batch_size(w: str, mdl: MatcherText = "") -> str:
    items = by("sum", ("model",), rate(BATCH_SIZE.sum, w, mdl))
    return f"{items} / {by('sum', ('model',), rate(BATCH_SIZE.count, w, mdl))}"


def cache_hit_ratio(w: str) -> str:
    total = by("sum", ("cache",), rate(CACHE_REQUESTS, w))
    hits = by("sum", ("cache",), rate(CACHE_REQUESTS, w, eq("result", "hit")))
    return f"({hits} or {total} * 0) / {total}"


def drift_gauge(gauge: str, mdl: MatcherText = "", extra: MatcherText = "") -> str:
    return by("max", ("model", "feature", "test"), series(metric(gauge), mdl, extra))


def quality_gauge(gauge: str, labels: tuple[str, ...] = ("model", "metric")) -> str:
    """The latest realised-quality gauge (one exporter per model is expected: max over instances)."""
    return by("max", labels, series(metric(gauge)))


def drift_scores_of(models: list[str], features: list[str]) -> str:
    """The drift score of exactly these models' and features' series (literal values, regex-escaped)."""
    return drift_gauge(DRIFT_SCORE.name, one_of("model", models), one_of("feature", features))


def reference_share_for(*matchers: MatcherText) -> str:
    """The reference profile's share per bin of the features the matchers select."""
    return reference_share_expr(selector(*matchers))


def live_share_for(w: str, *matchers: MatcherText) -> str:
    """The live share per bin over ``w`` of the features the matchers select."""
    return live_share_expr(w, selector(*matchers))


def feature_reference(model: str, feature: str) -> str:
    return reference_share_for(eq("model", model), eq("feature", feature))


def feature_live(model: str, feature: str, w: str) -> str:
    return live_share_for(w, eq("model", model), eq("feature", feature))


def autoscaling(w: str) -> list[str]:
    """The PromQL of :data:`~aiwatch.console.source.AUTOSCALING_SIGNALS`, in the same order."""
    return [
        f"{by('sum', (), series(QUEUE_DEPTH))} / {REPLICAS}",
        f"{by('sum', (), series(IN_FLIGHT))} / {REPLICAS}",
        f"{by('sum', (), rate(REQUESTS.count, w))} / {REPLICAS}",
        histogram_quantile(0.95, QUEUE_WAIT, w, ()),
        by("avg", (), series(GPU_UTILIZATION)),
    ]
