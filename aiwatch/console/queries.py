"""The PromQL of every console panel, shared by :class:`~aiwatch.console.prometheus.PrometheusSource` and the
Grafana dashboard (``scripts/build_dashboard.py`` renders ``dashboards/aiwatch.json`` from these functions).

``w`` is a PromQL duration (``"1m"``, or ``"$__rate_interval"`` in Grafana); ``svc`` / ``mdl`` are optional label
matchers (``'service=~"$service"'``) that narrow service- and model-labelled metrics.

    >>> throughput("1m")
    'sum by (service) (rate(aiwatch_request_duration_seconds_count[1m]))'
"""

from __future__ import annotations

from aiwatch.console.source import ERROR_STATUS_RE
from aiwatch.drift.promql import live_share_expr, reference_share_expr

REPLICAS = 'count(count by (instance) ({__name__=~"aiwatch_(requests_in_flight|queue_depth|gpu_nvml_up)"}))'
"""How many replicas (scrape instances) export aiwatch's serving gauges."""


def sel(*matchers: str) -> str:
    """``{a, b}`` from the non-empty matchers, or ``""``."""
    found = [m for m in matchers if m]
    return "{" + ", ".join(found) + "}" if found else ""


def latency_quantile(q: float, w: str, svc: str = "") -> str:
    """Request latency quantile per ``service`` (a gateway's and its backend's requests never share a histogram)."""
    return (f"histogram_quantile({q}, sum by (service, le) "
            f"(rate(aiwatch_request_duration_seconds_bucket{sel(svc)}[{w}])))")


def phase_split(w: str, svc: str = "", mdl: str = "") -> str:
    """Mean seconds per request in each phase, per ``service``: each service's phase time divided by that
    service's own request rate. Never summed across services: a caller's phase that calls another service (a
    gateway's ``inference_call``) already holds that service's whole request time."""
    return (f"sum by (service, phase) (rate(aiwatch_phase_duration_seconds_sum{sel(svc, mdl)}[{w}]))"
            f" / on (service) group_left"
            f" sum by (service) (rate(aiwatch_request_duration_seconds_count{sel(svc)}[{w}]))")


def throughput(w: str, svc: str = "") -> str:
    return f"sum by (service) (rate(aiwatch_request_duration_seconds_count{sel(svc)}[{w}]))"


def error_ratio(w: str, svc: str = "") -> str:
    errors = sel(svc, f'status=~"{ERROR_STATUS_RE}"')
    total = throughput(w, svc)
    # "or ... * 0" keeps services without errors at 0 instead of dropping them.
    return (f"(sum by (service) (rate(aiwatch_request_duration_seconds_count{errors}[{w}])) or {total} * 0)"
            f" / {total}")


def network_quantile(q: float, w: str, svc: str = "") -> str:
    """Network time quantile per calling ``service`` and the ``peer`` it called."""
    return (f"histogram_quantile({q}, sum by (service, peer, le) "
            f"(rate(aiwatch_network_duration_seconds_bucket{sel(svc)}[{w}])))")


GPU_GAUGES: tuple[tuple[str, str], ...] = (
    ("up", "aiwatch_gpu_up"),
    ("utilization", "aiwatch_gpu_utilization_ratio"),
    ("memory_used_bytes", "aiwatch_gpu_memory_used_bytes"),
    ("memory_total_bytes", "aiwatch_gpu_memory_total_bytes"),
    ("power_watts", "aiwatch_gpu_power_watts"),
    ("temperature_celsius", "aiwatch_gpu_temperature_celsius"),
)
"""(GpuRow field, metric) of the GPU table."""


def gpu_gauge(metric: str) -> str:
    return f"max by (gpu, name, uuid) ({metric})"


def queue_depth() -> str:
    return "sum by (queue) (aiwatch_queue_depth)"


def in_flight(svc: str = "") -> str:
    return f"sum by (service) (aiwatch_requests_in_flight{sel(svc)})"


def batch_size(w: str, mdl: str = "") -> str:
    return (f"sum by (model) (rate(aiwatch_batch_size_sum{sel(mdl)}[{w}]))"
            f" / sum by (model) (rate(aiwatch_batch_size_count{sel(mdl)}[{w}]))")


def cache_hit_ratio(w: str) -> str:
    total = "sum by (cache) (rate(aiwatch_feature_cache_requests_total[" + w + "]))"
    hits = f'sum by (cache) (rate(aiwatch_feature_cache_requests_total{{result="hit"}}[{w}]))'
    return f"({hits} or {total} * 0) / {total}"


def drift_gauge(metric: str, mdl: str = "", extra: str = "") -> str:
    return f"max by (model, feature, test) ({metric}{sel(mdl, extra)})"


def reference_share_for(*matchers: str) -> str:
    """The reference profile's share per bin of the features the matchers select."""
    return reference_share_expr(sel(*matchers))


def live_share_for(w: str, *matchers: str) -> str:
    """The live share per bin over ``w`` of the features the matchers select."""
    return live_share_expr(w, sel(*matchers))


def feature_reference(model: str, feature: str) -> str:
    return reference_share_for(_eq("model", model), _eq("feature", feature))


def feature_live(model: str, feature: str, w: str) -> str:
    return live_share_for(w, _eq("model", model), _eq("feature", feature))


def autoscaling(w: str) -> list[str]:
    """The PromQL of :data:`~aiwatch.console.source.AUTOSCALING_SIGNALS`, in the same order."""
    return [
        f"sum(aiwatch_queue_depth) / {REPLICAS}",
        f"sum(aiwatch_requests_in_flight) / {REPLICAS}",
        f"sum(rate(aiwatch_request_duration_seconds_count[{w}])) / {REPLICAS}",
        f"histogram_quantile(0.95, sum by (le) (rate(aiwatch_queue_wait_seconds_bucket[{w}])))",
        "avg(aiwatch_gpu_utilization_ratio)",
    ]


def _eq(label: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{label}="{escaped}"'


def regex_alternatives(values: list[str]) -> str:
    """A PromQL regex matching exactly the given values."""
    specials = set(".^$*+?()[]{}|\\")
    return "|".join("".join("\\\\" + c if c in specials else c for c in v).replace('"', '\\"') for v in values)
