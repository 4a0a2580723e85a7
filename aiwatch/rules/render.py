"""Render aiwatch's Prometheus recording and alerting rules from a :class:`~aiwatch.rules.config.RulesConfig`.

    >>> from aiwatch.rules import RulesConfig, render
    >>> files = render(RulesConfig())
    >>> sorted(files)
    ['aiwatch-alerts.rules.yml', 'aiwatch-recording.rules.yml']

Recording rules follow Prometheus' ``level:metric:operation`` naming; their names are defined once below. Every
metric name the rules read is looked up in the contract (:mod:`aiwatch.metrics`) when this module is imported, and
every selector and label value is written by :mod:`aiwatch.promql`, so a value with a quote, a backslash or a newline
selects exactly that value. Config values written into annotations (which Prometheus expands as Go templates) go
through :func:`template_text`, so a ``{{`` in a regex or a URL stays text. Numbers are written exactly
(:func:`aiwatch.promql.number`). The files are written by PyYAML (:mod:`aiwatch.rules.yamlout`). The fleet drift rules
come from :mod:`aiwatch.drift.promql`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.utils import floatToGoString

from aiwatch.drift.promql import (
    ALL_VALUES_RECORD,
    BIN_RATE_RECORD,
    FEATURE,
    FEATURE_BINS,
    FEATURE_INVALID,
    FEATURE_MISSING,
    FLEET_BINS_RECORD,
    JS_RECORD,
    MISSING_VALUES_RECORD,
    PSI_RECORD,
    REFERENCE_MISSING_RATIO,
    REFERENCE_MISSING_RECORD,
    REFERENCE_RATIO,
    REFERENCE_SHARE_RECORD,
    REPLICA_JOIN,
    feature_counts_expr,
    js_of,
    live_bin_rate_expr,
    live_bins_expr,
    psi_of,
    reference_missing_share_expr,
    reference_share_expr,
    summed_bins_expr,
)
from aiwatch.gpuseries import POD_LABELS, GpuSeries
from aiwatch.metrics import SIZE_CAP_COMPONENTS, UNFINISHED_RECOVERY_RESULTS
from aiwatch.promql import (
    alternatives,
    by,
    eq,
    histogram_quantile,
    increase,
    matches,
    metric,
    not_matches,
    number,
    one_of,
    quote,
    rate,
    scoped,
    selector,
    series,
)
from aiwatch.rules.config import BurnAlert, ConfigError, RulesConfig
from aiwatch.rules.yamlout import dump

RECORDING_FILE = "aiwatch-recording.rules.yml"
ALERTING_FILE = "aiwatch-alerts.rules.yml"
QUANTILES = (0.5, 0.9, 0.99)

# the metrics the rules read, from the contract (a name missing from it fails here, at import)
REQUESTS = metric("aiwatch_request_duration_seconds")
PHASES = metric("aiwatch_phase_duration_seconds")
NETWORK = metric("aiwatch_network_duration_seconds")
CLIENT_BYTES = metric("aiwatch_client_bytes_total")
LOOP_DELAY = metric("aiwatch_event_loop_delay_seconds")
LOOP_SAMPLED = metric("aiwatch_event_loop_sampled_seconds_total")
LOOP_LAST_SAMPLE = metric("aiwatch_event_loop_last_sample_timestamp_seconds")
LOOP_STALLED = metric("aiwatch_event_loop_stalled_ratio")
IN_FLIGHT = metric("aiwatch_requests_in_flight")
QUEUE_DEPTH = metric("aiwatch_queue_depth")
GPU_UP = metric("aiwatch_gpu_up")
GPU_NVML_UP = metric("aiwatch_gpu_nvml_up")
CACHE_REQUESTS = metric("aiwatch_feature_cache_requests_total")
DRIFT_SCORE = metric("aiwatch_drift_score")
DRIFT_DETECTED = metric("aiwatch_drift_detected")
INSTRUMENTATION_ERRORS = metric("aiwatch_instrumentation_errors_total")
PREDICTION_LOG_RECORDS = metric("aiwatch_prediction_log_records_total")
#: The prediction log's ``result`` values of the records lost (dropped by a full queue, failed by the sink, or lost by
#: it after they were written), of those written but not in a finished file, kept in a journal until a sink starts on
#: the directory and recovers them (drift checks and label joins do not see them meanwhile), of both (not in storage),
#: and of every record it dealt with: each kept record once (queued or dropped), and a lost or recoverable one again,
#: as it may have been kept before the window (so the share stays <= 1).
LOST_RESULTS = ("dropped", "failed", "lost")
WAITING_RESULTS = ("recoverable",)
UNSTORED_RESULTS = (*LOST_RESULTS, *WAITING_RESULTS)
HANDLED_RESULTS = ("queued", "dropped", "lost", "recoverable")
PREDICTION_LOG_RECOVERY_FILES = metric("aiwatch_prediction_log_recovery_files_total")
PREDICTION_LOG_RECOVERY_LAST = metric("aiwatch_prediction_log_recovery_last_timestamp_seconds")
TIME_TO_FIRST_TOKEN = metric("aiwatch_gen_ai_time_to_first_token_seconds")
DEGRADED = metric("aiwatch_degraded_responses_total")
MODEL_QUALITY = metric("aiwatch_model_quality")
MODEL_QUALITY_OBJECTIVE = metric("aiwatch_model_quality_objective")
MODEL_QUALITY_LABELLED = metric("aiwatch_model_quality_labelled")
#: Realised quality comes from hourly (or slower) windows of delayed labels: 10 min only rides out a missed push.
QUALITY_FOR = "10m"
UP = "up"  # Prometheus' own series per scrape target

# recording rules; a {window} is filled in per window
REQUEST_RATE = "service:aiwatch_requests:rate{window}"
#: streamed responses per second (those with a first token), the volume of the time-to-first-token ratio
TTFT_RATE = "service:aiwatch_gen_ai_ttft:rate{window}"
ERROR_RATIO = "service:aiwatch_request_errors:ratio_rate{window}"
SLOW_RATIO = "service:aiwatch_request_slow:ratio_rate{window}"
PHASE_QUANTILE = "service_model_phase:aiwatch_phase_duration_seconds:p{percent}"
MODEL_P99 = "service_model:aiwatch_model_latency_seconds:p99"
NETWORK_P99 = "service_peer:aiwatch_network_duration_seconds:p99"
#: the same, over the calls of the replicas whose event loop is prompt (what AiwatchNetworkLatencyHigh fires on)
NETWORK_P99_PROMPT = "service_peer:aiwatch_network_duration_seconds:p99_prompt_loops"
LOOP_DELAY_P99 = "service:aiwatch_event_loop_delay_seconds:p99"
REPLICA_LOOP_DELAY_P99 = "instance_service:aiwatch_event_loop_delay_seconds:p99"
LOOP_STALLED_RATIO = "instance_service:aiwatch_event_loop_stalled:ratio_rate{window}"
LOOP_SAMPLED_INCREASE = "instance_service:aiwatch_event_loop_sampled_seconds:increase{window}"
LOOP_SAMPLE_AGE = "instance_service:aiwatch_event_loop_last_sample_age_seconds:max"
LOOP_SAMPLE_UNCHANGED = "instance_service:aiwatch_event_loop_last_sample_unchanged:count{window}"
LOOP_STALLED_WORST = "instance_service:aiwatch_event_loop_stalled_ratio:max"
LINK_THROUGHPUT = "service_peer:aiwatch_client_throughput_bytes_per_second:rate{window}"
NON_MODEL_P99 = "service_phase:aiwatch_non_model_latency_seconds:p99"
OUTSIDE_MODEL = "service:aiwatch_time_outside_model:ratio"
IN_FLIGHT_SUM = "service:aiwatch_requests_in_flight:sum"
SERVICE_REPLICAS = "service:aiwatch_replicas:count"
REQUESTS_PER_REPLICA = "service:aiwatch_requests_per_replica:rate{window}"
QUEUE_DEPTH_SUM = "queue:aiwatch_queue_depth:sum"
QUEUE_REPLICAS = "queue:aiwatch_queue_replicas:count"
QUEUE_PER_REPLICA = "queue:aiwatch_queue_depth:per_replica"
QUEUE_DESIRED_REPLICAS = "queue:aiwatch_desired_replicas:queue_depth"
GPU_UTILIZATION_AVG = "instance_gpu:aiwatch_gpu_utilization_ratio:avg{window}"
GPU_MEMORY_HEADROOM = "instance_gpu:aiwatch_gpu_memory_headroom:ratio"
JOB_GPU_UTILIZATION = "job:aiwatch_gpu_utilization_ratio:avg"
JOB_GPU_REPLICAS = "job:aiwatch_gpu_replicas:count"
GPU_DESIRED_REPLICAS = "job:aiwatch_desired_replicas:gpu"
TTFT_SLOW_RATIO = "service:aiwatch_gen_ai_ttft_slow:ratio_rate{window}"
#: each ratio over its error budget (1 - its objective): what the burn-rate alerts compare with their factors, recorded
#: so that the runbooks' queries follow the rendered objectives instead of writing the defaults' budgets
ERROR_BURN = "service:aiwatch_request_errors:burn_rate{window}"
SLOW_BURN = "service:aiwatch_request_slow:burn_rate{window}"
TTFT_SLOW_BURN = "service:aiwatch_gen_ai_ttft_slow:burn_rate{window}"
#: the errors the availability SLO counts (its traffic classes, its error statuses) per second, per route and status:
#: what the availability runbooks list, recorded so that they follow the config's ``slo.traffic_class`` and
#: ``slo.error_status`` instead of writing the defaults' regexes (routes are bounded by the route label guard, and
#: only error statuses are kept)
ROUTE_ERRORS = "service_route_status:aiwatch_request_errors:rate{window}"
#: the windows the availability pages read it over: the fast burn's short window, the slow burn's day
ROUTE_ERROR_WINDOWS = ("5m", "1d")
DEGRADED_RATIO = "service:aiwatch_degraded:ratio_rate{window}"
CACHE_RATE = "cache:aiwatch_feature_cache_requests:rate{window}"
CACHE_HIT_RATIO = "cache:aiwatch_feature_cache_hit:ratio_rate{window}"

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration (``1h30m`` -> 5400)."""
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", text))


def _pct(value: float) -> str:
    return format(value * 100, ".4g") + "%"


def _decimal(value: float) -> float:
    """``value`` rounded to 12 significant digits: the float arithmetic noise of ``1 - 0.999`` (0.0010000000000000009)
    removed from a number computed from config decimals, so that it is written as the decimal it stands for."""
    return float(format(value, ".12g"))


def _ms(seconds: float) -> str:
    return f"{number(_decimal(seconds * 1000))}ms" if seconds < 1 else f"{number(seconds)}s"


_OPENS_ACTION = re.compile(r"\{(?=\{|$)")


def template_text(value: str) -> str:
    """``value`` as literal text inside an annotation, which Prometheus expands as a Go template: a ``{`` that could
    begin ``{{`` (followed by another, or last, next to the text after it) is written as the action ``{{ "{" }}``.

    >>> template_text('up{job="x"}'), template_text("a{{b")
    ('up{job="x"}', 'a{{ "{" }}{b')
    """
    return _OPENS_ACTION.sub('{{ "{" }}', value)


@dataclass
class Alert:
    """One alerting rule before it is written out."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self, runbook_template: str) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": runbook_annotation(runbook_template, self.name),
            },
        }


def runbook_url(template: str, alert: str) -> str:
    """Where an alert's runbook page lives: the config's ``runbook_url`` with ``{alert}`` replaced by its name.

    >>> runbook_url("http://127.0.0.1:8501/?runbook={alert}", "AiwatchQueueBacklog")
    'http://127.0.0.1:8501/?runbook=AiwatchQueueBacklog'
    """
    return template.replace("{alert}", alert)


def runbook_annotation(template: str, alert: str) -> str:
    """The ``runbook_url`` annotation: :func:`runbook_url` as template text."""
    return template_text(runbook_url(template, alert))


def _scope(cfg: RulesConfig, *labels: str) -> tuple[str, ...]:
    """The config's aggregation labels, then ``labels``: what every ``by`` and ``on`` of the rules keeps."""
    return scoped(cfg.aggregation_labels, labels)


def _same_scope_matchers(cfg: RulesConfig, *labels: str, optional: tuple[str, ...] = ()) -> tuple[str, str]:
    """For an annotation's ``query``: matcher text ``a=%q, b=%q`` over the aggregation labels and ``labels``, and
    the Go template arguments filling it from the alert's labels (``index`` gives "" for a label the alert lacks,
    as it may the aggregation labels and ``optional``, and ``a=""`` matches series without it)."""
    names = _scope(cfg, *labels)
    lenient = {*cfg.aggregation_labels, *optional}
    return (", ".join(f"{n}=%q" for n in names),
            " ".join(f'(index $labels "{n}")' if n in lenient else f"$labels.{n}" for n in names))


def _answer_text(query: str, args: str, shown: str) -> str:
    """Annotation text ``shown`` (which reads the answer as ``.``) of ``query`` (a printf format of the alert's labels
    ``args``, see :func:`_same_scope_matchers`), run when the alert fires; nothing when it answers nothing."""
    return '{{ with query (printf "' + query + '" ' + args + ') }}{{ with . }}' + shown + '{{ end }}{{ end }}'


#: What the event loop's per-replica rules keep: one scrape target (a replica, every loop in it) of one service.
REPLICA_LABELS = ("job", "instance", "service")


def _replica(cfg: RulesConfig) -> tuple[str, ...]:
    return _scope(cfg, *REPLICA_LABELS)


def _calls_of_prompt_loops(cfg: RulesConfig, window: str) -> str:
    """The network histogram's bucket rates, less the replicas (scrape target and service) whose event loop
    AiwatchEventLoopDelayHigh's share, worst worker's share or p99 branch finds starved (not its stuck branches: a
    hung loop records no calls while it hangs)."""
    lat = cfg.latency
    return (f"\n  {rate(NETWORK.bucket, window, cfg.selectors.network)}\n"
            f"  unless on ({', '.join(_replica(cfg))})\n"
            f"  (\n    {LOOP_STALLED_RATIO.format(window=window)} > {number(lat.loop_stalled_ratio)}\n    or\n"
            f"    {LOOP_STALLED_WORST} > {number(lat.loop_stalled_ratio)}\n    or\n"
            f"    {REPLICA_LOOP_DELAY_P99} > {number(lat.loop_delay_p99_seconds)}\n  )\n")


def _record(name: str, expr: str, **labels: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def burn_windows(cfg: RulesConfig) -> list[str]:
    """Every window the burn-rate alerts read, shortest first."""
    windows = {w for alert in (cfg.slo.page, cfg.slo.ticket) for pair in alert.windows for w in (pair.long, pair.short)}
    return sorted(windows, key=duration_seconds)


# --- recording rules ----------------------------------------------------------------------------------------------


def _traffic(cfg: RulesConfig) -> list[Any]:
    """The traffic-class matcher of the SLOs (real-time traffic by default), or none for every class."""
    return [matches("traffic_class", cfg.slo.traffic_class)] if cfg.slo.traffic_class else []


def slo_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    req = cfg.selectors.requests
    cls = _traffic(cfg)
    le = floatToGoString(cfg.slo.latency_threshold_seconds)  # type: ignore[no-untyped-call]
    ttft_le = floatToGoString(cfg.streaming.ttft_threshold_seconds)  # type: ignore[no-untyped-call]
    rules = []
    svc = _scope(cfg, "service")
    for w in burn_windows(cfg):
        total = by("sum", svc, rate(REQUESTS.count, w, req, *cls))
        errors = by("sum", svc, rate(REQUESTS.count, w, req, *cls, matches("status", cfg.slo.error_status)))
        fast = by("sum", svc, rate(REQUESTS.bucket, w, req, *cls, eq("le", le)))
        streams = by("sum", svc, rate(TIME_TO_FIRST_TOKEN.count, w, req, *cls))
        first_fast = by("sum", svc, rate(TIME_TO_FIRST_TOKEN.bucket, w, req, *cls, eq("le", ttft_le)))
        # the ratios after it in the group (same evaluation, same timestamp) read the recorded request rate: each
        # copy of `total` was one more scan of every replica's request counts over the window (3d included)
        recorded = REQUEST_RATE.format(window=w)
        rules += [
            _record(recorded, total),
            # "or 0 * total": a service with traffic and no error series yet has an error ratio of 0, not none
            _record(ERROR_RATIO.format(window=w), f"({errors} or 0 * {recorded})\n/\n{recorded}"),
            _record(SLOW_RATIO.format(window=w), f"1 - (\n  {fast}\n/\n  {recorded}\n)"),
            _record(TTFT_RATE.format(window=w), streams),
            _record(TTFT_SLOW_RATIO.format(window=w), f"1 - (\n  {first_fast}\n/\n  {TTFT_RATE.format(window=w)}\n)"),
        ]
    for burn, ratio, objective in ((ERROR_BURN, ERROR_RATIO, cfg.slo.availability_objective),
                                   (SLOW_BURN, SLOW_RATIO, cfg.slo.latency_objective),
                                   (TTFT_SLOW_BURN, TTFT_SLOW_RATIO, cfg.streaming.ttft_objective)):
        rules += [_record(burn.format(window=w), f"{ratio.format(window=w)} / {number(_decimal(1 - objective))}")
                  for w in burn_windows(cfg)]
    route_status, failed = _scope(cfg, "service", "route", "status"), matches("status", cfg.slo.error_status)
    rules += [_record(ROUTE_ERRORS.format(window=w),
                      by("sum", route_status, rate(REQUESTS.count, w, req, *cls, failed))) for w in ROUTE_ERROR_WINDOWS]
    return rules


def streaming_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    w = cfg.streaming.degraded_window
    req = cfg.selectors.requests
    svc = _scope(cfg, "service")
    total = by("sum", svc, rate(REQUESTS.count, w, req))
    degraded = by("sum", svc, rate(DEGRADED, w, req))
    # every response counts in the denominator, batch ones too: a fallback serves whoever asked
    return [_record(DEGRADED_RATIO.format(window=w), f"({degraded} or 0 * {total})\n/\n{total}")]


def latency_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    lat, req = cfg.latency, cfg.selectors.requests
    w = lat.window
    model = matches("phase", lat.model_phases)
    other = not_matches("phase", lat.model_phases)
    # a phase in which the service called peers that report their own time holds their whole time: the network
    # (AiwatchNetworkLatencyHigh) and the callees' own phases cover it, so it is no non-model phase of the caller
    service_phase = _scope(cfg, "service", "phase")
    calling = f"{by('sum', service_phase, rate(NETWORK.count, w, cfg.selectors.network))} > 0"
    stamp = series(LOOP_LAST_SAMPLE, cfg.selectors.event_loop)
    rules = [_record(PHASE_QUANTILE.format(percent=number(_decimal(q * 100))),
                     histogram_quantile(q, PHASES, w, _scope(cfg, "service", "model", "phase"), req))
             for q in QUANTILES]
    rules += [
        _record(MODEL_P99, histogram_quantile(0.99, PHASES, w, _scope(cfg, "service", "model"), req, model)),
        _record(NETWORK_P99, histogram_quantile(0.99, NETWORK, w, _scope(cfg, "service", "peer"),
                                                cfg.selectors.network)),
        _record(LOOP_DELAY_P99, histogram_quantile(0.99, LOOP_DELAY, w, _scope(cfg, "service"),
                                                   cfg.selectors.event_loop)),
        # per replica (scrape target): pooled over replicas, one starved loop among many is under 1% of the samples
        _record(REPLICA_LOOP_DELAY_P99, histogram_quantile(0.99, LOOP_DELAY, w, _replica(cfg),
                                                           cfg.selectors.event_loop)),
        # seconds of delay per second watched: a stall of B seconds is one sample of about B, so this counts it by
        # its length, where the quantiles count it once (the share of the time the loop stood still). Over the
        # seconds watched, not wall seconds: a multiprocess target merges its workers' loops, and gets their mean
        # rather than their sum; "> 0": a target with nothing watched (or an aiwatch without the counter) gives no
        # sample rather than a division by zero
        _record(LOOP_STALLED_RATIO.format(window=w),
                f"{by('sum', _replica(cfg), rate(LOOP_DELAY.sum, w, cfg.selectors.event_loop))}"
                f" / ({by('sum', _replica(cfg), rate(LOOP_SAMPLED, w, cfg.selectors.event_loop))} > 0)"),
        # the time watched over the stuck window: 0 while the loop is blocked (no sample runs, so neither the share
        # nor the p99 above has anything to read)
        _record(LOOP_SAMPLED_INCREASE.format(window=lat.loop_stuck_window),
                by("sum", _replica(cfg), increase(LOOP_SAMPLED, lat.loop_stuck_window, cfg.selectors.event_loop))),
        # the seconds since the stalest loop of each replica took its last sample: a merged multiprocess target
        # serves its stalest live worker's time (livemin), so one worker blocked for good shows here while the
        # others keep the time watched above growing. "> 0": a series made and not yet set reads 0, no value
        # the share of the last 5 minutes the worst loop of each replica stood still (in stalls that ended in them), by
        # its own sampler: a merged multiprocess target serves its largest live worker's (livemax), where the ratio
        # above is their mean
        _record(LOOP_STALLED_WORST, by("max", _replica(cfg), series(LOOP_STALLED, cfg.selectors.event_loop))),
        _record(LOOP_SAMPLE_AGE, "time() - " + by("min", _replica(cfg), f"{stamp} > 0 < +Inf")),
        # the loops of each replica whose last-sample timestamp did not change over the stuck window: what the alert
        # reads, not the age above, which compares the host's clock with Prometheus' (a host clock behind by more
        # than the window made a prompt loop stuck). A timestamp of 0 (made, not yet set) or +Inf (removed: every
        # process's sampler stopped) is no loop; nor is one sample alone in the window (a scrape interval as long as
        # the window), which has no change to show
        _record(LOOP_SAMPLE_UNCHANGED.format(window=lat.loop_stuck_window),
                by("count", _replica(cfg),
                   f"\n  changes({stamp}[{lat.loop_stuck_window}]) == 0"
                   f"\n  and\n  {stamp} > 0 < +Inf"
                   f"\n  and\n  count_over_time({stamp}[{lat.loop_stuck_window}]) >= 2\n")),
        # the network alert's: a caller whose loop is starved (AiwatchEventLoopDelayHigh's share, worst share or p99)
        # reads its responses late and counts the wait as network time, so its calls are left out, and one starved
        # replica of ten neither fires the alert nor (as an Alertmanager inhibition did) silences it for the other
        # nine; a replica without the loop records (a sync app, or an aiwatch without the sampler) counts
        _record(NETWORK_P99_PROMPT, "histogram_quantile(0.99, "
                + by("sum", [*_scope(cfg, "service", "peer"), "le"], _calls_of_prompt_loops(cfg, w)) + ")"),
        # the caller-side network time is one more non-model "phase" (service = the caller, peer = the callee), as
        # AiwatchNetworkLatencyHigh reads it: without the calls of starved loops, which nothing silences any more
        _record(NON_MODEL_P99,
                f"(\n  {histogram_quantile(0.99, PHASES, w, service_phase, req, other)}\n"
                f"  unless on ({', '.join(service_phase)})\n  {calling}\n)\nor\n"
                f'label_replace({NETWORK_P99_PROMPT}, {quote("phase")}, {quote("network")}, "", "")'),
        # bytes both ways over network seconds: a call's network time covers its request and its response
        # together, so it cannot be split by direction; "> 0": no network time (a peer that reports no
        # Server-Timing, or no calls) gives no sample rather than a division by zero
        _record(LINK_THROUGHPUT.format(window=w),
                f"{by('sum', _scope(cfg, 'service', 'peer'), rate(CLIENT_BYTES, w, cfg.selectors.network))}\n/\n"
                f"({by('sum', _scope(cfg, 'service', 'peer'), rate(NETWORK.sum, w, cfg.selectors.network))} > 0)"),
        _record(OUTSIDE_MODEL,
                f"{by('sum', _scope(cfg, 'service'), rate(PHASES.sum, w, req, other))}\n/\n"
                f"{by('sum', _scope(cfg, 'service'), rate(PHASES.sum, w, req))}"),
        _record(IN_FLIGHT_SUM, by("sum", _scope(cfg, "service"), series(IN_FLIGHT, req))),
        _record(SERVICE_REPLICAS, by("count", _scope(cfg, "service"), series(IN_FLIGHT, req))),
    ]
    # the autoscaling signal of demand: the SLOs' traffic class only (real-time by default), so that a batch job
    # sharing the replicas does not read as demand to scale for (its load shows as real-time latency instead).
    # "or 0 * replicas": replicas up with no request of the class since they started have no counter series, and
    # their demand is 0, not none (KEDA with ignoreNullValues "false" reads none as an error and goes to its
    # fallback); without replicas both sides are empty, so a broken scrape still gives no value
    shortest = burn_windows(cfg)[0]
    realtime = by("sum", _scope(cfg, "service"), rate(REQUESTS.count, shortest, req, *_traffic(cfg)))
    replicas = by("count", _scope(cfg, "service"), series(IN_FLIGHT, req))
    rules.append(_record(REQUESTS_PER_REPLICA.format(window=shortest),
                         f"({realtime} or 0 * {replicas})\n/\n{replicas}"))
    return rules


def gpu_series(cfg: RulesConfig) -> GpuSeries:
    """The GPU readings of the config's ``gpu.source``."""
    return GpuSeries(cfg.gpu.source, cfg.gpu.dcgm_utilization)


def capacity_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    g, c, gpus = cfg.gpu, cfg.cache, gpu_series(cfg)
    depth = series(QUEUE_DEPTH, cfg.selectors.queue)
    queue = _scope(cfg, "queue")
    utilization = gpus.utilization(cfg.selectors.gpu)
    workload = _scope(cfg, *g.workload_labels)
    gpu_replicas = by("count", workload, by("count", scoped(workload, (g.replica_label,)), utilization))
    total = by("sum", _scope(cfg, "cache"), rate(CACHE_REQUESTS, c.window, cfg.selectors.cache))
    hits = by("sum", _scope(cfg, "cache"),
              rate(CACHE_REQUESTS, c.window, cfg.selectors.cache, eq("result", "hit")))
    return [
        _record(QUEUE_DEPTH_SUM, by("sum", queue, depth)),
        # the replicas of a queue are the scrape targets exporting its depth gauge (see docs/autoscaling.md)
        _record(QUEUE_REPLICAS, by("count", queue, depth)),
        _record(QUEUE_PER_REPLICA, f"{by('sum', queue, depth)}\n/\n{by('count', queue, depth)}"),
        _record(QUEUE_DESIRED_REPLICAS,
                f"clamp_min(ceil({by('sum', queue, depth)} / {number(cfg.queue.target_per_replica)}), 1)"),
        _record(GPU_UTILIZATION_AVG.format(window=g.window), gpus.utilization_avg(g.window, cfg.selectors.gpu)),
        _record(GPU_MEMORY_HEADROOM, gpus.memory_headroom(cfg.selectors.gpu)),
        _record(JOB_GPU_UTILIZATION, by("avg", workload, utilization)),
        _record(JOB_GPU_REPLICAS, gpu_replicas),
        _record(GPU_DESIRED_REPLICAS,
                f"clamp_min(ceil(\n  {gpu_replicas}\n  * {by('avg', workload, utilization)}\n"
                f"  / {number(g.target_utilization)}\n), 1)"),
        _record(CACHE_RATE.format(window=c.window), total),
        _record(CACHE_HIT_RATIO.format(window=c.window), f"({hits} or 0 * {total})\n/\n{total}"),
    ]


def drift_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    sel, scope = selector(cfg.selectors.drift), cfg.aggregation_labels
    # the group's rules run in order at one timestamp: each reads the records of those before it
    rules = [_record(REFERENCE_SHARE_RECORD, reference_share_expr(sel, scope))]
    summed = cfg.drift.summed_windows()
    rate_record = BIN_RATE_RECORD.format(window=cfg.drift.rate_window_or_default())
    if summed:
        rules.append(_record(rate_record, live_bin_rate_expr(cfg.drift.rate_window_or_default(), sel, scope)))
    for w in cfg.drift.windows:
        bins = FLEET_BINS_RECORD.format(window=w)
        rules.append(_record(bins, summed_bins_expr(rate_record, w, duration_seconds(cfg.drift.interval))
                             if w in summed else live_bins_expr(w, sel, scope)))
        rules.append(_record(PSI_RECORD.format(window=w), psi_of(bins, REFERENCE_SHARE_RECORD, scope)))
        rules.append(_record(JS_RECORD.format(window=w), js_of(bins, REFERENCE_SHARE_RECORD, scope)))
    # AiwatchFeatureMissing's counts: in the alert they scanned every bin counter twice per evaluation
    w = cfg.drift.psi_window
    rules.append(_record(MISSING_VALUES_RECORD.format(window=w),
                         feature_counts_expr(w, (FEATURE_MISSING, FEATURE_INVALID), sel, scope)))
    rules.append(_record(ALL_VALUES_RECORD.format(window=w),
                         feature_counts_expr(w, (FEATURE_BINS, FEATURE_MISSING, FEATURE_INVALID), sel, scope)))
    rules.append(_record(REFERENCE_MISSING_RECORD, reference_missing_share_expr(sel, scope)))
    return rules


# --- alerts -------------------------------------------------------------------------------------------------------


def _burn_expr(record: str, budget: float, alert: BurnAlert, volume: str, min_bad: float) -> str:
    pairs = []
    # `or` keeps the left operand's value: longest pair first, so $value is the longest window that tripped
    for p in sorted(alert.windows, key=lambda p: duration_seconds(p.long), reverse=True):
        # at low traffic one bad request is a large share: the long window must also hold min_bad of them (ratio x
        # rate x seconds: the bad requests Prometheus counts in it), or one failed request at 1 a minute pages
        guard = (f"\nand\n  {record.format(window=p.long)} * {volume.format(window=p.long)} * "
                 f"{number(duration_seconds(p.long))} >= {number(min_bad)}" if min_bad > 0 else "")
        pairs.append(f"(\n  {record.format(window=p.long)} / {number(budget)} > {number(p.factor)}\nand\n"
                     f"  {record.format(window=p.short)} / {number(budget)} > {number(p.factor)}{guard}\n)")
    return "\nor\n".join(pairs)


def _burn_text(alert: BurnAlert, period: str, min_bad: float) -> str:
    parts = []
    for p in alert.windows:
        spent = p.factor * duration_seconds(p.long) / duration_seconds(period)
        parts.append(f"{number(p.factor)}x over both {p.long} and {p.short} ({_pct(spent)} of the {period} budget "
                     f"spent in {p.long})")
    guard = f", with at least {number(min_bad)} bad requests in that long window" if min_bad > 0 else ""
    return " or ".join(parts) + guard


def slo_alerts(cfg: RulesConfig) -> list[Alert]:
    s = cfg.slo
    out = []
    for slo, objective, record, what in (
        ("availability", s.availability_objective, ERROR_RATIO, "failed"),
        ("latency", s.latency_objective, SLOW_RATIO,
         f"took longer than {_ms(s.latency_threshold_seconds)}"),
    ):
        budget = _decimal(1 - objective)
        title = slo.capitalize()
        for speed, alert, severity in (("Fast", s.page, "critical"), ("Slow", s.ticket, "warning")):
            out.append(Alert(
                f"Aiwatch{title}BudgetBurn{speed}",
                _burn_expr(record, budget, alert, REQUEST_RATE, s.min_bad_requests), alert.for_, severity,
                f"{{{{ $labels.service }}}} is burning its {slo} error budget "
                f"{'fast (page)' if speed == 'Fast' else 'steadily (ticket)'}",
                f"{{{{ $labels.service }}}}: burn rate {{{{ $value | printf \"%.1f\" }}}}x over the longest window "
                f"that tripped: the share of requests that {what} is that many times the error budget. "
                f"Objective {_pct(objective)} over "
                f"{s.period}, so the error budget is {_pct(budget)} of requests; 1x spends it exactly in {s.period}. "
                f"This alert fires at {_burn_text(alert, s.period, s.min_bad_requests)}.",
                {"slo": slo},
            ))
    return out


def streaming_alerts(cfg: RulesConfig) -> list[Alert]:
    s, st = cfg.slo, cfg.streaming
    budget = _decimal(1 - st.ttft_objective)
    out = []
    for speed, alert, severity in (("Fast", s.page, "critical"), ("Slow", s.ticket, "warning")):
        out.append(Alert(
            f"AiwatchTimeToFirstTokenBudgetBurn{speed}",
            _burn_expr(TTFT_SLOW_RATIO, budget, alert, TTFT_RATE, s.min_bad_requests), alert.for_, severity,
            f"{{{{ $labels.service }}}} is burning its time-to-first-token error budget "
            f"{'fast (page)' if speed == 'Fast' else 'steadily (ticket)'}",
            f"{{{{ $labels.service }}}}: burn rate {{{{ $value | printf \"%.1f\" }}}}x over the longest window that "
            f"tripped: the share of streamed responses whose first token took longer than "
            f"{_ms(st.ttft_threshold_seconds)} is that many times the error budget. Objective "
            f"{_pct(st.ttft_objective)} over {s.period} ({_pct(budget)} budget). This alert fires at "
            f"{_burn_text(alert, s.period, s.min_bad_requests)}. Users wait for the first token: look at the queue in "
            "front of the model and at batch traffic on the same replicas before the model itself.",
            {"slo": "time_to_first_token"},
        ))
    out.append(Alert(
        "AiwatchDegradedShareHigh",
        f"{DEGRADED_RATIO.format(window=st.degraded_window)} > {number(st.degraded_share_max)}",
        st.degraded_for, "warning",
        "{{ $labels.service }} serves {{ $value | humanizePercentage }} of its responses from a fallback",
        f"{{{{ $value | humanizePercentage }}}} of the responses of {{{{ $labels.service }}}} over "
        f"{st.degraded_window} were served by a fallback (aiwatch.degraded: a cached prediction, a smaller model, "
        f"a default answer), above {_pct(st.degraded_share_max)}. The service still answers, but not with its "
        "model: it lacks capacity (scale out) or a dependency is too slow for its deadline.",
    ))
    return out


def _replica_value(cfg: RulesConfig, record: str, pipeline: str, missing: str = "unknown") -> str:
    """Annotation text: the value of ``record`` for the alert's replica, through the template ``pipeline``, or
    ``missing`` when it has none."""
    matchers, args = _same_scope_matchers(cfg, *REPLICA_LABELS)
    # an empty result is false to "with": its "else" is the no-sample case; NaN (a p99 of no samples: a hung loop)
    # is the one value not equal to itself
    return ('{{ with query (printf "' + record + '{' + matchers + '}" ' + args + ') }}'
            "{{ $v := . | first | value }}{{ if eq $v $v }}{{ $v | " + pipeline + " }}{{ else }}" + missing
            + "{{ end }}{{ else }}" + missing + "{{ end }}")


def latency_alerts(cfg: RulesConfig) -> list[Alert]:
    lat = cfg.latency
    stalled = LOOP_STALLED_RATIO.format(window=lat.window)
    share = _replica_value(cfg, stalled, "humanizePercentage", "an unknown share")
    watched = LOOP_SAMPLED_INCREASE.format(window=lat.loop_stuck_window)
    unchanged = LOOP_SAMPLE_UNCHANGED.format(window=lat.loop_stuck_window)
    replica_matchers, replica_args = _same_scope_matchers(cfg, *REPLICA_LABELS)
    target = ", ".join(_scope(cfg, "job", "instance"))
    stuck = ('{{ with query (printf "' + watched + '{' + replica_matchers + '} == 0" ' + replica_args + ') }}'
             "Its sampler took no sample for the last " + lat.loop_stuck_window + " while the target is up: the "
             "loop stood still that whole time (blocked, or hung for good: a share of 100%), and the figures above, "
             "of the samples that ran before, understate it. {{ else }}"
             '{{ with query (printf "' + unchanged + '{' + replica_matchers + '} > 0" ' + replica_args + ') }}'
             "One of its loops took no sample for the last " + lat.loop_stuck_window + " while the target is up "
             "(aiwatch_event_loop_last_sample_timestamp_seconds did not change: the stalest of the worker processes "
             "it merges): "
             "that worker's loop is blocked, hung for good or in a stall longer than " + lat.loop_stuck_window
             + ", while the others sample on; the figures above are theirs and leave it out. "
             "{{ end }}{{ end }}")
    worst = ('{{ with query (printf "' + LOOP_STALLED_WORST + '{' + replica_matchers + '} > '
             + number(lat.loop_stalled_ratio) + '" ' + replica_args + ') }}'
             "Its worst worker's loop stood still {{ . | first | value | humanizePercentage }} of the last 5 "
             "minutes, in stalls that ended in them (aiwatch_event_loop_stalled_ratio: each worker process's own "
             "share, the largest of the live ones; the share above is their mean). {{ end }}")
    matchers, args = _same_scope_matchers(cfg, "service")
    outside = _answer_text(OUTSIDE_MODEL + '{' + matchers + '}', args,
                           " Share of request time outside the model: {{ . | first | value | humanizePercentage }}.")
    return [
        Alert("AiwatchModelLatencyHigh",
              f"{MODEL_P99} > {number(lat.model_p99_seconds)}",
              lat.model_for, "warning",
              "Model {{ $labels.model }} on {{ $labels.service }} is slow",
              f"p99 of the model's own time (phases {template_text(lat.model_phases)}) for {{{{ $labels.model }}}} on "
              f"{{{{ $labels.service }}}} is {{{{ $value | humanizeDuration }}}} over {lat.window}, above "
              f"{_ms(lat.model_p99_seconds)}. The time is inside the model: look at the GPU, the batch size and "
              "the model version, not at the network or the queue."),
        Alert("AiwatchNonModelLatencyHigh",
              f"{NON_MODEL_P99} > {number(lat.non_model_p99_seconds)}",
              lat.non_model_for, "warning",
              "{{ $labels.service }} is slow outside the model ({{ $labels.phase }})",
              f"p99 of the {{{{ $labels.phase }}}} time on {{{{ $labels.service }}}} is "
              f"{{{{ $value | humanizeDuration }}}} over {lat.window}, above {_ms(lat.non_model_p99_seconds)}. "
              f"This time is outside the model (queueing, feature fetch, network or serving overhead), so scaling "
              f"or tuning the model will not fix it.{outside}"),
        Alert("AiwatchNetworkLatencyHigh",
              f"{NETWORK_P99_PROMPT} > {number(lat.network_p99_seconds)}",
              lat.network_for, "warning",
              "The network from {{ $labels.service }} to {{ $labels.peer }} is slow",
              f"p99 of the network time {{{{ $labels.service }}}} measures on its calls to {{{{ $labels.peer }}}} "
              f"(its client time minus the server time {{{{ $labels.peer }}}} reported; the calls of its replicas "
              f"whose event loop is starved left out, as AiwatchEventLoopDelayHigh tells) is "
              f"{{{{ $value | humanizeDuration }}}} over {lat.window}, above {_ms(lat.network_p99_seconds)}. The "
              "time is between the two services (connections, proxies, load balancer, congestion, payload size), "
              "not inside either: look at the path, not at the model."),
        # one replica at a time: the share of the time its loop stood still (a long stall counts by its length),
        # or its worst worker's own share (a multiprocess target's mean dilutes one stalled worker among N),
        # or the p99 of its samples (frequent shorter stalls), or no sample at all while the target is up (a loop
        # blocked for good, or in stalls longer than the stuck window: 1, stood still the whole window), or no
        # sample from one of its loops over the stuck window (a multiprocess target's worker blocked for good while
        # the others sample on: 1, that loop stood still the whole window). All five carry the same labels, so
        # "or" joins them and the "for" runs on when one branch hands over to another
        Alert("AiwatchEventLoopDelayHigh",
              f"{stalled} > {number(lat.loop_stalled_ratio)}\nor\n"
              f"{LOOP_STALLED_WORST} > {number(lat.loop_stalled_ratio)}\nor\n"
              f"{REPLICA_LOOP_DELAY_P99} > {number(lat.loop_delay_p99_seconds)}\nor\n"
              f"(\n  {watched} == 0\n  and on ({target})\n  ({UP} == 1)\n) + 1\nor\n"
              f"(\n  {unchanged} > 0\n  and on ({target})\n  ({UP} == 1)\n) * 0 + 1",
              lat.loop_delay_for, "warning",
              "The event loop of {{ $labels.service }} on {{ $labels.instance }} is starved",
              f"One replica, {{{{ $labels.instance }}}} of {{{{ $labels.service }}}}: its asyncio event loop stood "
              f"still {share} of the time over {lat.window} (the seconds its timers ran late per second watched, "
              f"each stall counted by its length; the mean over the worker processes a target merges; alert above "
              f"{_pct(lat.loop_stalled_ratio)}), and the p99 of how late its timer samples ran is "
              f"{_replica_value(cfg, REPLICA_LOOP_DELAY_P99, 'humanizeDuration')} (alert above "
              f"{_ms(lat.loop_delay_p99_seconds)}). {worst}{stuck}While it stands still, requests wait in the socket "
              "before the app sees them and responses wait before they are sent: this replica's latency rises, and "
              "its callers count the wait as network time. Look for CPU-bound or blocking work on the "
              "loop (a sync call in an async handler) or a saturated CPU on that replica, not at the network."),
    ]


def capacity_alerts(cfg: RulesConfig) -> list[Alert]:
    q, c = cfg.queue, cfg.cache
    # the median over the window, not the latest depth: one evaluation below the limit resets "for", and a queue
    # drained in bursts while it refills is below it at some evaluations of a backlog that never clears; not the
    # mean either, which one large burst between empty scrapes lifts above the limit for a whole window
    backlog = f"quantile_over_time(0.5, {QUEUE_PER_REPLICA}[{q.window}])"
    queue_desc = ("Queue {{ $labels.queue }} held a median of {{ $value | printf \"%.1f\" }} items per replica over "
                  f"the last {q.window} (alert above {{limit}}; the autoscaling target is "
                  f"{number(q.target_per_replica)} per replica). If the autoscaler is not adding replicas it is at "
                  "its maximum or cannot read the metric.")
    return [
        Alert("AiwatchQueueBacklog", f"{backlog} > {number(q.per_replica_warning)}",
              q.for_, "warning", "Queue {{ $labels.queue }} is backing up",
              queue_desc.replace("{limit}", number(q.per_replica_warning))),
        Alert("AiwatchQueueBacklog", f"{backlog} > {number(q.per_replica_critical)}",
              q.for_, "critical", "Queue {{ $labels.queue }} is far behind",
              queue_desc.replace("{limit}", number(q.per_replica_critical))),
        Alert("AiwatchFeatureCacheHitRatioLow",
              f"{CACHE_HIT_RATIO.format(window=c.window)} < {number(c.hit_ratio_min)}\n"
              f"and\n{CACHE_RATE.format(window=c.window)} > {number(c.min_requests_per_second)}",
              c.for_, "warning", "Feature cache {{ $labels.cache }} hit ratio dropped",
              f"Only {{{{ $value | humanizePercentage }}}} of lookups in feature cache {{{{ $labels.cache }}}} hit "
              f"over {c.window} (alert below {_pct(c.hit_ratio_min)}). Misses go to the feature store: expect "
              "slower `features` phases and more load on the store."),
    ]


def gpu_alerts(cfg: RulesConfig) -> list[Alert]:
    g, gs, gpus = cfg.gpu, cfg.selectors.gpu, gpu_series(cfg)
    lb = gpus.labels
    gpu, name, uuid, host = (f"{{{{ $labels.{n} }}}}" for n in (lb.gpu, lb.name, lb.uuid, lb.host))
    target = _scope(cfg, "job", "instance")
    if gpus.dcgm:  # a GPU's pod labels come and go with the pods using it: not part of the exporter's identity
        target = tuple(label for label in target if label not in POD_LABELS)
    memory_desc = (f"GPU {gpu} ({name}) on {host} had only "
                   "{{ $value | humanizePercentage }} of its memory free at its fullest over "
                   f"{g.memory_window} (alert below {{limit}}). The next larger batch or model load can fail with "
                   "out-of-memory.")
    presence = series(gpus.presence, gs)
    # "and"/"unless" bind tighter than "or": the target-up condition applies to the disappeared-metrics branch only
    vanished = (f"(\n  {by('max', target, f'max_over_time({presence}[{g.absent_lookback}])')}\n"
                f"  unless\n  {by('max', target, presence)}\n  and on ({', '.join(target)})\n"
                f"  ({UP} == 1)\n)")
    if gpus.dcgm:
        absent = f"{by('group', target, vanished)}"
        absent_desc = ("{{ $labels.instance }} (dcgm-exporter) is up but stopped exporting the GPU metrics it "
                       f"exported within the last {g.absent_lookback} (a GPU fell off the bus, DCGM lost the "
                       "device, or the exporter's counters changed). GPU alerts and the GPU autoscaling signal "
                       "are blind meanwhile.")
    else:
        absent = (f"({series(GPU_NVML_UP, gs)} == 0)\nor\n({series(GPU_UP, gs)} == 0)\nor\n{vanished}")
        absent_desc = ("{{ $labels.instance }} reports no usable GPU metrics{{ with $labels.gpu }} for GPU {{ . }}"
                       "{{ end }}: {{ if eq $value 0.0 }}NVML or the GPU did not answer the poll{{ else }}the "
                       "target is up but stopped exporting the GPU metrics it exported within the last "
                       f"{g.absent_lookback}{{{{ end }}}}. GPU alerts and the GPU autoscaling signal are blind "
                       "meanwhile.")
    if gpus.dcgm:
        xid_desc = (f"GPU {gpu} ({name}, {uuid}) on {host} reported XID {{{{ $value | printf \"%.0f\" }}}} within "
                    f"the last {g.xid_window} (dcgm-exporter keeps the latest XID code, so a repeat of the same "
                    "code shows once). XIDs are driver-reported GPU faults (ECC, fallen off the bus, illegal memory "
                    "access); the node's kernel log lists every one.")
    else:
        xid_desc = (f"GPU {gpu} ({name}, {uuid}) on {host} reported {{{{ $value | printf \"%.0f\" }}}} XID "
                    f"error(s) in the last {g.xid_window}. XIDs are driver-reported GPU faults (ECC, fallen off the "
                    "bus, illegal memory access); the node's kernel log names the XID code.")
    return [
        Alert("AiwatchGpuSaturated", f"{GPU_UTILIZATION_AVG.format(window=g.window)} > "
              f"{number(g.utilization_saturated)}", g.saturated_for, "warning",
              f"GPU {gpu} on {host} is saturated",
              f"GPU {gpu} ({name}) on {host} ran kernels "
              f"{{{{ $value | humanizePercentage }}}} of the time over {g.window} (alert above "
              f"{_pct(g.utilization_saturated)}). Requests queue behind the model: add replicas or shed load."),
        # memory that swings with each batch dips below the limit and back at every other evaluation, and each
        # evaluation above it reset `for`: the least headroom over the window is what the next batch runs into
        Alert("AiwatchGpuMemoryNearlyFull", f"min_over_time({GPU_MEMORY_HEADROOM}[{g.memory_window}]) < "
              f"{number(g.memory_headroom_warning)}", g.memory_for, "warning",
              f"GPU {gpu} on {host} is nearly out of memory",
              memory_desc.replace("{limit}", _pct(g.memory_headroom_warning))),
        Alert("AiwatchGpuMemoryNearlyFull", f"min_over_time({GPU_MEMORY_HEADROOM}[{g.memory_window}]) < "
              f"{number(g.memory_headroom_critical)}", g.memory_for, "critical",
              f"GPU {gpu} on {host} is about to run out of memory",
              memory_desc.replace("{limit}", _pct(g.memory_headroom_critical))),
        Alert("AiwatchGpuMetricsAbsent", absent, g.absent_for, "warning",
              "GPU metrics of {{ $labels.instance }} are missing", absent_desc),
        Alert("AiwatchGpuXidErrors", gpus.new_xid(g.xid_window, gs),
              g.xid_for, "warning", f"GPU {gpu} on {host} reported XID errors", xid_desc),
    ]


def _feature_missing(cfg: RulesConfig) -> str:
    """A feature's live missing share above its reference profile's plus ``drift.missing_share_increase``, from at
    least ``drift.fleet_min_values`` values and missing ones, per reference profile from its own replicas (a
    rollout). A feature without the reference gauge (exported by an aiwatch older than it) has no reference share
    to compare with, and never fires: a fixed threshold would page for every feature that is legitimately often
    missing."""
    d = cfg.drift
    keep = ", ".join(_scope(cfg, *FEATURE))
    total = ALL_VALUES_RECORD.format(window=d.psi_window)
    return (f"{MISSING_VALUES_RECORD.format(window=d.psi_window)}\n/\n{total}\n> on ({keep})\n"
            f"(\n  {REFERENCE_MISSING_RECORD}\n  + {number(d.missing_share_increase)}\n)\n"
            f"and on ({keep})\n{total} >= {number(d.fleet_min_values)}")


def drift_alerts(cfg: RulesConfig) -> list[Alert]:
    d, ds = cfg.drift, cfg.selectors.drift
    psi = PSI_RECORD.format(window=d.psi_window)
    js = JS_RECORD.format(window=d.psi_window)
    # an aiwatch older than the reference label exports none: its fleet PSI has none either
    matchers, args = _same_scope_matchers(cfg, *FEATURE, optional=("reference",))
    js_text = _answer_text(js + '{' + matchers + '}', args,
                           ' Jensen-Shannon distance: {{ . | first | value | printf "%.3f" }}.')
    feature_matchers, feature_args = _same_scope_matchers(cfg, "model", "feature")
    # the references the replicas count against (replica_references_expr): not a reference removed at a reload (NaN
    # in multiprocess mode), nor an older aiwatch's reference-less ratios left beside a replica's own
    references_text = _answer_text(
        f"count(count by (reference) ((group without (bin) ({REFERENCE_RATIO}{{{feature_matchers}, reference!=%q}} "
        f">= 0) or ignoring (reference) group without (bin) ({REFERENCE_RATIO}{{{feature_matchers}}} >= 0)))) > 1",
        f'{feature_args} "" {feature_args}',
        " The replicas run {{ . | first | value }} reference profiles of this feature (a rollout of a new one?): "
        "each has its own PSI, from its own replicas; this one is reference {{ $labels.reference }}'s.")
    reference_matchers, reference_args = _same_scope_matchers(cfg, *FEATURE, optional=("reference",))
    reference_text = _answer_text(
        f"max(group without (bin) ({REFERENCE_RATIO}{{{reference_matchers}}} >= 0) {REPLICA_JOIN} "
        f"{REFERENCE_MISSING_RATIO}{{{feature_matchers}}})", f"{reference_args} {feature_args}",
        ", against {{ . | first | value | humanizePercentage }} in the reference profile")
    return [
        Alert("AiwatchLocalInputDrift",
              by("max", _scope(cfg, "model", "feature", "test"),
                 f"\n  {series(DRIFT_SCORE, ds)}\n  and\n  ({series(DRIFT_DETECTED, ds)} == 1)\n"),
              d.local_for, "info", "Input feature {{ $labels.feature }} of {{ $labels.model }} drifted",
              "The {{ $labels.test }} test on the latest window of {{ $labels.feature }} (model {{ $labels.model }}) "
              "found drift against the reference profile on at least one replica; statistic "
              "{{ $value | printf \"%.3g\" }}. One replica's window can be unrepresentative: compare with the fleet "
              "PSI before acting."),
        Alert("AiwatchFleetInputDrift",
              f"{psi} > {number(d.psi_threshold)}\nand on ({', '.join(_scope(cfg, *FEATURE))})\n"
              # the count the PSI was computed from, recorded in the same evaluation
              f"{by('sum', _scope(cfg, *FEATURE), FLEET_BINS_RECORD.format(window=d.psi_window))} >= "
              f"{number(d.fleet_min_values)}",
              d.fleet_for, "warning",
              "Input feature {{ $labels.feature }} of {{ $labels.model }} shifted across the fleet",
              f"PSI of {{{{ $labels.feature }}}} (model {{{{ $labels.model }}}}) over all replicas in the last "
              f"{d.psi_window} is {{{{ $value | printf \"%.3f\" }}}} (alert above {number(d.psi_threshold)}; below "
              f"0.1 is stable, 0.1-0.2 moderate, above 0.2 significant; computed from at least "
              f"{number(d.fleet_min_values)} values).{js_text}{references_text}"),
        Alert("AiwatchFeatureMissing", _feature_missing(cfg), d.missing_for, "warning",
              "Input feature {{ $labels.feature }} of {{ $labels.model }} is missing",
              f"{{{{ $value | humanizePercentage }}}} of the values of {{{{ $labels.feature }}}} (model "
              f"{{{{ $labels.model }}}}) over the replicas of reference profile {{{{ $labels.reference }}}} in the "
              f"last {d.psi_window} were missing (None, NaN or inf, or the key absent from the row){reference_text} "
              f"(alert when more than "
              f"{format(d.missing_share_increase * 100, '.4g')} percentage points above the reference's share, from "
              f"at least {number(d.fleet_min_values)} values and missing ones). Missing values are left out of "
              "drift, so the drift alerts cannot see this: an upstream pipeline may have stopped sending the "
              "input."),
    ]


def quality_alerts(cfg: RulesConfig) -> list[Alert]:
    """Realised quality (``aiwatch quality``: delayed labels joined to the prediction log) on the wrong side of the
    objective exported with it: below it for accuracy / precision / recall, above it for MAE / RMSE."""
    def side(metrics: str, op: str, agg: str, bound_agg: str) -> str:
        keep = _scope(cfg, "model", "metric")
        return (f"{by(agg, keep, series(MODEL_QUALITY, matches('metric', metrics)))}\n"
                f"  {op} on ({', '.join(keep)})\n"
                f"{by(bound_agg, keep, str(MODEL_QUALITY_OBJECTIVE))}")

    # the alert's own cluster and namespace: another cluster's count of the same model is not this window's
    matchers, args = _same_scope_matchers(cfg, "model")
    labelled = _answer_text(f"max({MODEL_QUALITY_LABELLED}{{{matchers}}})", args,
                            ' ({{ . | first | value | printf "%.0f" }} labelled requests)')
    return [
        Alert("AiwatchModelQualityLow",
              f"(\n{side('accuracy|precision|recall', '<', 'max', 'min')}\n)\nor\n(\n"
              f"{side('mae|rmse', '>', 'min', 'max')}\n)\n",
              QUALITY_FOR, "warning", "Realised {{ $labels.metric }} of {{ $labels.model }} is off its objective",
              "The {{ $labels.metric }} of {{ $labels.model }} over its latest labelled window is "
              "{{ $value | printf \"%.4g\" }}" + labelled + ", on the wrong side of its objective: delayed labels "
              "joined to the prediction log say the model's answers got worse."),
    ]


#: how far AiwatchPredictionLogRecoveryIncomplete looks back for the time a log last counted a journal: a series
#: that held the same time in the day before the window (a scrape gap, a restarted Prometheus) is an old count, and so
#: is a time more than the window and a day behind Prometheus' clock (a new Prometheus or scrape config that first
#: sees a process with an old count). A day is far wider than a host clock hours off (a time zone set as UTC).
RECOVERY_LOOKBACK = "1d"


def _recovery_incomplete(cfg: RulesConfig) -> str:
    """Per log and result of :data:`UNFINISHED_RECOVERY_RESULTS`: the count of files, while it is above 0 and the
    log's ``..._recovery_last_timestamp_seconds`` (stamped at each such count) took a value within the window that it
    did not hold at the window's start (its last sample in the :data:`RECOVERY_LOOKBACK` before it), or first
    appeared within the window. A start counts before the log's first scrape, so ``increase()`` sees nothing; ``> 0``
    alone would fire for the life of the process; the count's own history cannot tell a new count from an old one
    (a restart that counts the same number changes no series of it); and ``time() - stamp`` compared the host's
    clock with Prometheus': a host ahead made it fire an hour plus the skew, one over an hour behind never. Only
    the guard against a count a new series shows long after it was made (older than the lookback) reads both
    clocks."""
    m = cfg.meta
    selectors = (one_of("result", UNFINISHED_RECOVERY_RESULTS), cfg.selectors.prediction_log)
    files = series(PREDICTION_LOG_RECOVERY_FILES, *selectors)
    last = series(PREDICTION_LOG_RECOVERY_LAST, *selectors)
    window = m.prediction_log_recovery_window
    scope = ", ".join(_scope(cfg, "job", "instance", "log", "result"))
    before = f"last_over_time({last}[{RECOVERY_LOOKBACK}] offset {window})"
    oldest = number(duration_seconds(window) + duration_seconds(RECOVERY_LOOKBACK))
    # An app older than the gauge (a rolling upgrade, rules ahead of the apps) has none: the count's appearance
    # within the window stands for it there (it fires again an hour after a scrape gap); a newer app sets the gauge
    # with the count, before its first scrape, so the second branch never reads it.
    return (f"{files} > 0\nand on ({scope})\n(\n  {last}\n  unless on ({scope})\n  {last} == on ({scope}) {before}\n)\n"
            f"and on ({scope})\n(time() - {last}) < {oldest}\n"
            f"or\n(\n  {files} > 0\n  unless\n  {files} offset {window}\n)\n"
            f"unless on ({scope})\n{last}\n")


def _targets_absent(cfg: RulesConfig, up: str) -> str:
    """``absent(up)``, which fires only when no target matches at all, or, per aggregation scope (cluster,
    namespace): one that had targets within the lookback and has none now, while others keep theirs (in a Thanos /
    Mimir view, a cluster whose targets all vanished; the last ``and`` leaves the all-gone case to ``absent``)."""
    if not cfg.aggregation_labels:
        return f"absent({up})"
    scope = cfg.aggregation_labels
    return (f"absent({up})\nor\n(\n  {by('group', scope, f'max_over_time({up}[{cfg.meta.target_absent_lookback}])')}"
            f"\n  unless\n  {by('group', scope, up)}\n  and on ()\n  group({up})\n)")


def meta_alerts(cfg: RulesConfig) -> list[Alert]:
    m, up = cfg.meta, series(UP, cfg.selectors.targets)
    where = "".join(f"{{{{ with $labels.{n} }}}} in {n} {{{{ . }}}}{{{{ end }}}}" for n in cfg.aggregation_labels)
    errors = increase(INSTRUMENTATION_ERRORS, m.instrumentation_window,
                      not_matches("component", alternatives(SIZE_CAP_COMPONENTS)), cfg.selectors.instrumentation)
    log_scope = _scope(cfg, "job", "instance", "log")
    unstored, handled = (by("sum", log_scope, increase(PREDICTION_LOG_RECORDS, m.prediction_log_window,
                                                    one_of("result", results), cfg.selectors.prediction_log))
                      for results in (UNSTORED_RESULTS, HANDLED_RESULTS))
    return [
        Alert("AiwatchInstrumentationErrors",
              f"{by('sum', _scope(cfg, 'job', 'instance', 'component'), errors)} > 0",
              m.instrumentation_for, "warning", "aiwatch is swallowing its own errors on {{ $labels.instance }}",
              f"aiwatch's {{{{ $labels.component }}}} component on {{{{ $labels.instance }}}} failed "
              f"{{{{ $value | printf \"%.0f\" }}}} time(s) in the last {m.instrumentation_window}. Requests were "
              "served, but the metrics of that component are incomplete: the app's logs carry the first error of "
              "each burst. (Server-Timing headers and trailers cut to their size cap are counted under "
              f"{', '.join(SIZE_CAP_COMPONENTS)} and do not fire this.)"),
        Alert("AiwatchPredictionLogLosingRecords",
              # at most 1: records kept before the window and failed in it count in no denominator of it (as
              # lost and recoverable ones do: a failed one is mostly kept in the window, and its share exact)
              f"clamp_max(\n  (\n    {unstored}\n  /\n    {handled}\n  ),\n  1\n) > "
              f"{number(m.prediction_log_loss_max)}\n",
              m.prediction_log_for, "warning",
              "Prediction log {{ $labels.log }} on {{ $labels.instance }} is losing records",
              f"{{{{ $value | humanizePercentage }}}} of the records prediction log {{{{ $labels.log }}}} on "
              f"{{{{ $labels.instance }}}} dealt with in the last {m.prediction_log_window} are not in storage "
              f"(dropped by a full queue, failed by the sink, or lost from a file it could not finish; or recoverable: "
              f"a file it could not finish whose rows wait in its journal until the sink makes it into a file, a "
              f"minute on once the disk has room; counted for the window even once recovered), above "
              f"{_pct(m.prediction_log_loss_max)}. Requests were served; "
              "drift checks and label joins on the log miss these records."),
        Alert("AiwatchPredictionLogRecoveryIncomplete", _recovery_incomplete(cfg), m.prediction_log_recovery_for,
              "warning",
              "Prediction log {{ $labels.log }} on {{ $labels.instance }}: journals {{ $labels.result }} at "
              "recovery",
              f"The ParquetSink of prediction log {{{{ $labels.log }}}} on {{{{ $labels.instance }}}} counted "
              f"{{{{ $value | printf \"%.0f\" }}}} journal(s) {{{{ $labels.result }}}} since its process started, "
              f"the latest in the last {m.prediction_log_recovery_window}: torn (a batch torn by a crash, and every "
              "byte after it, dropped: those rows are gone), set_aside (a journal whose data Parquet refuses, or "
              "damaged rather than torn, kept as a hidden .journal.unrecoverable file in the log directory) or "
              "failed (a journal left for the next start by an I/O error or another failure not of its data, "
              "such as memory short). Their rows are in no finished file: drift checks and label joins miss them "
              "until someone acts. A start counts before the first scrape, so this reads the count's value, not its "
              f"increase, and fires for {m.prediction_log_recovery_window} after Prometheus first saw the log's "
              "last such count (aiwatch_prediction_log_recovery_last_timestamp_seconds changed or appeared: a "
              "start, or a kept journal retried)."),
        # a crash-looping target answers a scrape now and then, and each success resets `for`: the share of
        # successful scrapes catches it
        Alert("AiwatchTargetDown", f"{up} == 0\nor\navg_over_time({up}[{m.target_flapping_window}]) < 0.5",
              m.target_down_for, "warning",
              "Prometheus cannot scrape {{ $labels.instance }}",
              "Scrapes of {{ $labels.instance }} (job {{ $labels.job }}) have failed for "
              f"{m.target_down_for}, or more than half of them over {m.target_flapping_window} (a crash-looping or "
              f"flapping target, up for a scrape now and then: avg_over_time(up[{m.target_flapping_window}]) above 0 "
              "tells it from one that is down): its metrics, alerts and autoscaling signals are stale or full of "
              "gaps."),
        Alert("AiwatchTargetAbsent", _targets_absent(cfg, up), m.target_absent_for, "critical",
              f"No aiwatch scrape target is known to Prometheus{where}",
              f"Prometheus has no target matching {template_text(up)}{where}{{{{ with $labels.job }}}} (job "
              f"{{{{ . }}}}){{{{ end }}}} for {m.target_absent_for}: service discovery or the scrape config lost "
              "the service (or that cluster's Prometheus stopped sending its series), and every aiwatch alert of it "
              "is silent."),
    ]


def alerts(cfg: RulesConfig) -> list[Alert]:
    """Every alerting rule, in file order."""
    return [*slo_alerts(cfg), *streaming_alerts(cfg), *latency_alerts(cfg), *capacity_alerts(cfg), *gpu_alerts(cfg),
            *drift_alerts(cfg), *quality_alerts(cfg), *meta_alerts(cfg)]


HEADER = ("# Generated by `aiwatch rules render` from a RulesConfig; do not edit by hand.\n"
          "# Change the config instead (`aiwatch rules defaults` prints the default one). See docs/alerts.md.\n")


def rule_files(cfg: RulesConfig | None = None) -> dict[str, dict[str, Any]]:
    """File name -> the rule file's content as data (what :func:`render` writes as YAML)."""
    cfg = (cfg or RulesConfig()).validate()
    recording = {"groups": [
        {"name": "aiwatch-slo.rules", "rules": slo_records(cfg)},
        {"name": "aiwatch-latency.rules", "rules": latency_records(cfg)},
        {"name": "aiwatch-streaming.rules", "rules": streaming_records(cfg)},
        {"name": "aiwatch-capacity.rules", "rules": capacity_records(cfg)},
        {"name": "aiwatch-drift.rules", "interval": cfg.drift.interval, "rules": drift_records(cfg)},
    ]}
    groups = [
        ("aiwatch-slo.alerts", slo_alerts(cfg)),
        ("aiwatch-streaming.alerts", streaming_alerts(cfg)),
        ("aiwatch-latency.alerts", latency_alerts(cfg)),
        ("aiwatch-capacity.alerts", capacity_alerts(cfg)),
        ("aiwatch-gpu.alerts", gpu_alerts(cfg)),
        ("aiwatch-drift.alerts", drift_alerts(cfg)),
        ("aiwatch-quality.alerts", quality_alerts(cfg)),
        ("aiwatch-meta.alerts", meta_alerts(cfg)),
    ]
    alerting = {"groups": [{"name": name, "rules": [a.rule(cfg.runbook_url) for a in rules]}
                           for name, rules in groups]}
    return {RECORDING_FILE: recording, ALERTING_FILE: alerting}


def render(cfg: RulesConfig | None = None) -> dict[str, str]:
    """File name -> YAML text of the recording and alerting rule files for ``cfg`` (default config if None)."""
    return {name: HEADER + dump(content) for name, content in rule_files(cfg).items()}


# --- Kubernetes: prometheus-operator's PrometheusRule ---------------------------------------------------------------

PROMETHEUS_RULE_FILE = "aiwatch.prometheusrule.yaml"
PROMETHEUS_RULE_NAME = "aiwatch"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
PROMETHEUS_RULE_HEADER = (
    "# A prometheus-operator PrometheusRule holding both rule files' groups: kubectl apply -f this file.\n"
    "# Your Prometheus resource's ruleSelector must match its labels (kube-prometheus-stack selects\n"
    "# release: <its release name>; add it with --label) and its ruleNamespaceSelector its namespace.\n")


def _check_kubernetes_name(value: str, what: str, *, label: bool) -> None:
    """``value`` as the API server checks an object's name (a DNS-1123 subdomain) or a namespace (a DNS-1123
    label), else :class:`ConfigError` naming ``what``."""
    limit, pattern = (63, re.compile(_DNS_LABEL)) if label else (253, _DNS_SUBDOMAIN)
    if len(value) > limit or not pattern.fullmatch(value):
        kind, chars = ("DNS-1123 label", "'-'") if label else ("DNS-1123 subdomain", "'-', '.'")
        raise ConfigError(f"{what}: {value!r} is not a Kubernetes {kind} ({chars}, lower case letters and digits, "
                          f"starting and ending with a letter or digit, at most {limit} characters)")


def _check_kubernetes_label(key: str, value: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash:
        _check_kubernetes_name(prefix, f"PrometheusRule label {key!r}: its prefix", label=False)
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ConfigError(f"PrometheusRule label {key!r}: {name!r} is not a Kubernetes label name (letters, "
                          "digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 "
                          "characters; an optional DNS subdomain prefix and '/' before it)")
    if len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
        raise ConfigError(f"PrometheusRule label {key}={value!r}: not a Kubernetes label value (empty, or "
                          "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most "
                          "63 characters)")


def prometheus_rule(cfg: RulesConfig | None = None, *, name: str = PROMETHEUS_RULE_NAME,
                    namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """prometheus-operator's ``PrometheusRule`` (monitoring.coreos.com/v1) holding the recording groups, then the
    alerting groups, of :func:`rule_files`; ``namespace`` left out lets ``kubectl`` or kustomize set it.
    :class:`ConfigError` for a name, namespace or label the API server would refuse."""
    _check_kubernetes_name(name, "PrometheusRule name", label=False)
    if namespace is not None:
        _check_kubernetes_name(namespace, "PrometheusRule namespace", label=True)
    for key, value in (labels or {}).items():
        _check_kubernetes_label(key, value)
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    files = rule_files(cfg)
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": metadata,
            "spec": {"groups": [*files[RECORDING_FILE]["groups"], *files[ALERTING_FILE]["groups"]]}}


def render_prometheus_rule(cfg: RulesConfig | None = None, *, name: str = PROMETHEUS_RULE_NAME,
                           namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, str]:
    """File name -> YAML text of :func:`prometheus_rule`: the one manifest ``kubectl apply -f`` loads."""
    doc = prometheus_rule(cfg, name=name, namespace=namespace, labels=labels)
    return {PROMETHEUS_RULE_FILE: HEADER + PROMETHEUS_RULE_HEADER + dump(doc)}
