"""The typed configuration of the rule renderer: SLOs, thresholds, selectors and ``for`` durations.

Every field has a default, so an empty config renders the committed files under ``alerts/``. A config file is YAML
(or JSON) with the same nesting as these dataclasses; ``for`` is written ``for`` in the file. Every value that reaches
the rules is checked, and a bad one is rejected with the dotted path of its key: unknown keys (with the known key
closest to each, a misspelling's likely meaning), wrong types, numbers
that are not finite or out of their range, durations Prometheus would not parse (or zero where a range needs one),
regular expressions RE2 would not compile (:func:`aiwatch.promql.check_regex`), selectors that are not label
matchers, strings that are not valid UTF-8. So a config that validates renders rules that pass
``promtool check rules`` (a property test generates configs to check it).

    >>> cfg = config_from_dict({"slo": {"availability_objective": 0.995}})
    >>> cfg.slo.availability_objective, cfg.slo.latency_threshold_seconds
    (0.995, 0.3)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiwatch.gpuseries import GPU_UTIL, SOURCES, UTILIZATION_FIELDS
from aiwatch.metrics import LATENCY_BUCKETS, SPECS, TIME_TO_FIRST_TOKEN_BUCKETS
from aiwatch.promql import DEFAULT_AGGREGATION_LABELS, LABEL_NAME, Matcher, check_regex, parse_matchers
from aiwatch.status import ERROR_STATUS_RE

# Prometheus' duration syntax (prometheus/common model.ParseDuration): each unit at most once, largest first.
_DURATION = re.compile(r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?"
                       r"(?:([0-9]+)ms)?$")
_UNIT_NS = (365 * 86400 * 10**9, 7 * 86400 * 10**9, 86400 * 10**9, 3600 * 10**9, 60 * 10**9, 10**9, 10**6)
_MAX_DURATION_NS = 2**63 - 1  # Go's time.Duration
MAX_CONFIG_BYTES = 1 << 20
MAX_STRING = 4096
MAX_WINDOWS = 10

#: The runbook link of the default config (and so of the committed files under ``alerts/``): a placeholder that
#: promtool accepts and that can never resolve (``.invalid`` is reserved, RFC 2606). ``aiwatch rules render`` warns
#: when a config leaves it there.
RUNBOOK_URL_PLACEHOLDER = "https://runbooks.invalid/aiwatch/{alert}"


class ConfigError(ValueError):
    """A rules config value is wrong; the message names the key."""


def _help(text: str, low: float = 0.0, high: float = math.inf, *, open_low: bool = False,
          open_high: bool = False) -> dict[str, Any]:
    """Field metadata: the help text, and for a number its range (``[0, inf)`` unless given)."""
    return {"help": text, "range": (low, high, open_low, open_high)}


def _range(low: float = 0.0, high: float = math.inf, *, open_low: bool = False,
           open_high: bool = False) -> dict[str, Any]:
    return {"range": (low, high, open_low, open_high)}


@dataclass
class BurnWindow:
    """One pair of windows of a multi-window burn-rate alert: both must burn faster than ``factor``."""

    long: str
    short: str
    factor: float = field(metadata=_range(open_low=True))


@dataclass
class BurnAlert:
    """A burn-rate alert: fires when any of its window pairs burns too fast."""

    windows: list[BurnWindow]
    for_: str = field(metadata=_help("how long the condition must hold"))


@dataclass
class Selectors:
    """Extra PromQL label matchers (without braces, e.g. ``service="recommender"``) for each metric family."""

    requests: str = field(default="", metadata=_help(
        "matchers on aiwatch_request_duration_seconds, aiwatch_phase_duration_seconds, "
        "aiwatch_gen_ai_time_to_first_token_seconds, aiwatch_degraded_responses_total and "
        "aiwatch_requests_in_flight: on a label they all carry, e.g. service=\"recommender\", or a target label "
        "(a matcher on route, status or model would empty the rules of the metrics without it, and is refused)"))
    network: str = field(default="", metadata=_help(
        "matchers on aiwatch_network_duration_seconds and aiwatch_client_bytes_total"))
    queue: str = field(default="", metadata=_help("matchers on aiwatch_queue_depth"))
    gpu: str = field(default="", metadata=_help("matchers on aiwatch_gpu_* series"))
    event_loop: str = field(default="", metadata=_help(
        "matchers on aiwatch_event_loop_delay_seconds, aiwatch_event_loop_sampled_seconds_total, "
        "aiwatch_event_loop_last_sample_timestamp_seconds and aiwatch_event_loop_stalled_ratio"))
    cache: str = field(default="", metadata=_help("matchers on aiwatch_feature_cache_requests_total"))
    drift: str = field(default="", metadata=_help("matchers on the drift gauges and the bin sketch"))
    instrumentation: str = field(default="", metadata=_help("matchers on aiwatch_instrumentation_errors_total"))
    prediction_log: str = field(default="", metadata=_help(
        "matchers on aiwatch_prediction_log_records_total and aiwatch_prediction_log_recovery_files_total"))
    targets: str = field(default='job="aiwatch"', metadata=_help(
        "matchers on `up` naming the scrape job(s) of the instrumented services (equality matchers give "
        "absent() its labels)"))


def _page() -> BurnAlert:
    return BurnAlert([BurnWindow("1h", "5m", 14.4), BurnWindow("6h", "30m", 6.0)], "2m")


def _ticket() -> BurnAlert:
    return BurnAlert([BurnWindow("1d", "2h", 3.0), BurnWindow("3d", "6h", 1.0)], "1h")


@dataclass
class SLO:
    """Service level objectives over ``aiwatch_request_duration_seconds``, per ``service``."""

    availability_objective: float = field(default=0.999, metadata=_help(
        "share of requests that must not fail (0-1); the error budget is 1 - objective", 0, 1, open_low=True,
        open_high=True))
    latency_objective: float = field(default=0.99, metadata=_help(
        "share of requests that must be faster than latency_threshold_seconds (0-1)", 0, 1, open_low=True,
        open_high=True))
    latency_threshold_seconds: float = field(default=0.3, metadata=_help(
        "the latency SLO threshold; must be a bucket bound of aiwatch_request_duration_seconds"))
    error_status: str = field(default=ERROR_STATUS_RE, metadata=_help(
        "regex of the `status` label values that count as errors (default: aiwatch.status, HTTP 5xx and the gRPC "
        "codes of server-side failures)"))
    period: str = field(default="30d", metadata=_help("the SLO period, used in alert texts"))
    traffic_class: str = field(default="realtime", metadata=_help(
        "regex of the traffic_class label values the SLOs are about (batch traffic has no latency objective); "
        "empty: every class"))
    min_bad_requests: float = field(default=5.0, metadata=_help(
        "the burn-rate alerts (page and ticket; availability, latency and time to first token) also need at least "
        "this many bad requests (failed, slow, slow first token) in the long window of the pair that trips: at low "
        "traffic one bad request is a large share (at 1 request a minute, one failure in 1h is a 16.7x availability "
        "burn, which would page); 0 turns the guard off"))
    page: BurnAlert = field(default_factory=_page, metadata=_help(
        "fast burn (critical): Google SRE workbook 1h/5m x14.4 or 6h/30m x6"))
    ticket: BurnAlert = field(default_factory=_ticket, metadata=_help(
        "slow burn (warning): 1d/2h x3 or 3d/6h x1"))


@dataclass
class Latency:
    """The latency split: the model's own time versus everything else."""

    window: str = field(default="5m", metadata=_help("rate window of the phase quantiles"))
    model_phases: str = field(default="inference", metadata=_help("regex of the phases that are the model's time"))
    model_p99_seconds: float = field(default=0.5, metadata=_help("AiwatchModelLatencyHigh: p99 of the model phases",
                                                                 open_low=True))
    model_for: str = "10m"
    non_model_p99_seconds: float = field(default=0.25, metadata=_help(
        "AiwatchNonModelLatencyHigh: p99 of any other phase (queue, features, overhead, ...; not a phase whose "
        "calls the callee timed, whose time the network and the callee's own alerts cover) or of the network",
        open_low=True))
    non_model_for: str = "10m"
    network_p99_seconds: float = field(default=0.1, metadata=_help(
        "AiwatchNetworkLatencyHigh: p99 of the network time a caller measures to one peer (client time minus the "
        "time the peer reported)", open_low=True))
    network_for: str = "10m"
    loop_stalled_ratio: float = field(default=0.2, metadata=_help(
        "AiwatchEventLoopDelayHigh: share of the time one replica's (scrape target's) asyncio event loop stood "
        "still, the seconds its timers ran late per second the sampler watched it (rate of "
        "aiwatch_event_loop_delay_seconds_sum over rate of aiwatch_event_loop_sampled_seconds_total, over window; "
        "for a multiprocess target, the mean over its worker processes' loops), or the share of the last 5 minutes "
        "its worst worker's loop stood still in stalls that ended in them (aiwatch_event_loop_stalled_ratio); a "
        "prompt loop shows about 1%, a loop blocked 1 s in every 2 s 50%", 0, 1, open_low=True))
    loop_delay_p99_seconds: float = field(default=0.1, metadata=_help(
        "AiwatchEventLoopDelayHigh also fires when the p99 of how late one replica's asyncio event loop ran a timer "
        "that was due (aiwatch_event_loop_delay_seconds, over window) is above this: frequent shorter stalls; a "
        "prompt loop stays around a millisecond", open_low=True))
    loop_stuck_window: str = field(default="2m", metadata=_help(
        "AiwatchEventLoopDelayHigh also fires for a replica whose sampler took no sample over this window "
        "(aiwatch_event_loop_sampled_seconds_total did not grow), or one of whose loops took none over it "
        "(aiwatch_event_loop_last_sample_timestamp_seconds, the stalest worker of a multiprocess target, did not "
        "change across at least 2 scrapes in it), while "
        "its target is up: a loop blocked for good, or "
        "in stalls longer than this, takes no sample, so the share and the p99 have nothing to read. At least 2 "
        "scrape intervals plus $AIWATCH_EVENT_LOOP_INTERVAL, or a prompt loop reads as stuck between two scrapes"))
    loop_delay_for: str = "10m"


@dataclass
class Streaming:
    """Generative AI: the time-to-first-token SLO (aiwatch_gen_ai_time_to_first_token_seconds, real-time traffic)
    and the share of responses served by a fallback (aiwatch.degraded)."""

    ttft_objective: float = field(default=0.99, metadata=_help(
        "share of successful streamed responses whose first token must come within ttft_threshold_seconds (0-1)",
        0, 1, open_low=True, open_high=True))
    ttft_threshold_seconds: float = field(default=1.0, metadata=_help(
        "the time-to-first-token threshold; must be a bucket bound of aiwatch_gen_ai_time_to_first_token_seconds"))
    degraded_window: str = field(default="10m", metadata=_help("rate window of the degraded share"))
    degraded_share_max: float = field(default=0.05, metadata=_help(
        "AiwatchDegradedShareHigh above this share of responses served by a fallback (0-1)", 0, 1))
    degraded_for: str = "10m"


@dataclass
class Queue:
    """Queue backlog and the autoscaling signal (queue depth per replica)."""

    window: str = field(default="5m", metadata=_help(
        "AiwatchQueueBacklog reads the median depth per replica over this window: a batcher that drains the "
        "queue in bursts shows a low depth at some scrapes of a lasting backlog, and one burst is no backlog"))
    per_replica_warning: float = field(default=20.0, metadata=_help("AiwatchQueueBacklog warning: items per replica"))
    per_replica_critical: float = field(default=100.0, metadata=_help("AiwatchQueueBacklog critical"))
    for_: str = "5m"
    target_per_replica: float = field(default=5.0, metadata=_help(
        "the autoscaling target: desired replicas = ceil(total queue depth / target_per_replica)", open_low=True))


@dataclass
class GPU:
    """GPU saturation, memory headroom, absent metrics and XID errors."""

    window: str = field(default="5m", metadata=_help("window of the utilization average"))
    utilization_saturated: float = field(default=0.95, metadata=_help("AiwatchGpuSaturated: average utilization",
                                                                      0, 1))
    saturated_for: str = "15m"
    memory_headroom_warning: float = field(default=0.10, metadata=_help(
        "AiwatchGpuMemoryNearlyFull warning: free share of device memory", 0, 1))
    memory_headroom_critical: float = field(default=0.03, metadata=_help("AiwatchGpuMemoryNearlyFull critical", 0, 1))
    memory_window: str = field(default="5m", metadata=_help(
        "AiwatchGpuMemoryNearlyFull reads the least free share over this window (min_over_time of the headroom): "
        "memory that swings with each batch, below the limit at its peaks and above it between them, reset the "
        "`for` at every evaluation above it and never fired"))
    memory_for: str = "5m"
    absent_lookback: str = field(default="1h", metadata=_help(
        "AiwatchGpuMetricsAbsent fires for a target that exported GPU metrics within this lookback and is up, "
        "but no longer does"))
    absent_for: str = "5m"
    xid_window: str = field(default="10m", metadata=_help(
        "AiwatchGpuXidErrors fires for a GPU that reported an XID error within this window"))
    xid_for: str = "1m"
    target_utilization: float = field(default=0.8, metadata=_help(
        "the autoscaling target: desired replicas = ceil(replicas x average utilization / target)", 0, 1,
        open_low=True))
    source: str = field(default="aiwatch", metadata=_help(
        "where the GPU metrics come from: aiwatch (its NVML collector, aiwatch_gpu_*) or dcgm (NVIDIA's "
        "dcgm-exporter, DCGM_FI_*; see docs/signals.md)"))
    dcgm_utilization: str = field(default=GPU_UTIL, metadata=_help(
        f"with source dcgm: the field read as utilization, {' or '.join(UTILIZATION_FIELDS)} (the profiling "
        f"metrics, when dcgm-exporter collects them)"))
    workload_labels: list[str] = field(default_factory=lambda: ["job"], metadata=_help(
        "labels that tell one workload's GPUs apart in the per-workload utilization and desired-replicas rules "
        "(job: the scrape job of aiwatch's collector; with dcgm-exporter's pod attribution, e.g. [container])"))
    replica_label: str = field(default="instance", metadata=_help(
        "the label that tells a workload's replicas apart in those rules (instance: one aiwatch collector per "
        "replica; with dcgm-exporter's pod attribution, pod)"))


@dataclass
class Cache:
    """Feature-cache hit ratio."""

    window: str = "10m"
    hit_ratio_min: float = field(default=0.5, metadata=_help("AiwatchFeatureCacheHitRatioLow below this ratio", 0, 1))
    min_requests_per_second: float = field(default=1.0, metadata=_help("ignore caches with less traffic"))
    for_: str = "15m"


@dataclass
class Drift:
    """Input drift: local (per replica, exact tests) and fleet (PSI over the bin sketch)."""

    windows: list[str] = field(default_factory=lambda: ["1h", "1d"], metadata=_help(
        "windows of the fleet PSI / JS recording rules"))
    psi_window: str = field(default="1h", metadata=_help("the window AiwatchFleetInputDrift reads (one of windows)"))
    interval: str = field(default="1m", metadata=_help(
        "evaluation interval of the fleet PSI / JS recording group: the expressions are heavy and hour-long windows "
        "need no finer resolution; shorter than 5m (Prometheus' lookback), or the alerts reading its records see "
        "none between two evaluations"))
    raw_window_max: str = field(default="1h", metadata=_help(
        "windows up to this read every replica's bin counters at each evaluation (exact, and full at once); longer "
        "ones are summed from a record of the fleet's per-bin rate over rate_window, made every interval (a 1d "
        "window then reads 1440 samples per feature and bin instead of every replica's samples of the day, 1.44 "
        "billion at 500 replicas x 50 features x 10 bins scraped every 15 s). Such a window fills only once that "
        "record is as old as the window, and misses the values of an evaluation that did not run"))
    rate_window: str = field(default="", metadata=_help(
        "window of the per-bin rate the windows longer than raw_window_max are summed from, a multiple of interval "
        "(each value then counts once) spanning several scrape intervals (rate() needs two samples); empty: the "
        "shortest multiple of interval of at least 5m"))
    psi_threshold: float = field(default=0.2, metadata=_help("PSI above this is a significant shift"))
    fleet_min_values: float = field(default=200.0, metadata=_help(
        "AiwatchFleetInputDrift only for a feature with at least this many live values in psi_window: the PSI of "
        "fewer values is mostly sampling noise (about (bins - 1) / values)"))
    fleet_for: str = "15m"
    local_for: str = "15m"
    missing_share_increase: float = field(default=0.2, metadata=_help(
        "AiwatchFeatureMissing when a feature's live share of missing values (None, NaN, inf, or the key absent "
        "from the row) over psi_window is above its reference profile's share plus this (0.2: 20 percentage "
        "points), from at least fleet_min_values values and missing ones", 0.0, 1.0, open_low=True))
    missing_for: str = "15m"

    def rate_window_or_default(self) -> str:
        """``rate_window``, or where it is empty the shortest multiple of ``interval`` of at least 5m."""
        if self.rate_window:
            return self.rate_window
        step = duration_ns(self.interval) or LOOKBACK_NS
        return duration_text(-(-LOOKBACK_NS // step) * step)

    def summed_windows(self) -> list[str]:
        """The windows longer than ``raw_window_max``, summed from the recorded rate."""
        bound = duration_ns(self.raw_window_max) or 0
        return [w for w in self.windows if (duration_ns(w) or 0) > bound]


@dataclass
class Meta:
    """aiwatch's own health and the scrape targets."""

    instrumentation_window: str = "10m"
    instrumentation_for: str = field(default="1m", metadata=_help(
        "how long AiwatchInstrumentationErrors' count over instrumentation_window must stay above 0; shorter than "
        "the window, or errors that stop within it (a check that fails once an hour) never alert"))
    prediction_log_window: str = field(default="10m", metadata=_help(
        "window of AiwatchPredictionLogLosingRecords' share of records that are not in storage"))
    prediction_log_loss_max: float = field(default=0.01, metadata=_help(
        "AiwatchPredictionLogLosingRecords above this share of a prediction log's records that are not in storage "
        "(dropped, failed or lost by the sink, or recoverable: waiting in a journal for a sink to start on the "
        "directory): drift on the log and joined labels miss them", 0, 1))
    prediction_log_for: str = "5m"
    prediction_log_recovery_window: str = field(default="1h", metadata=_help(
        "how long AiwatchPredictionLogRecoveryIncomplete fires after a prediction log last counted a journal "
        "torn, set aside or failed at recovery (aiwatch_prediction_log_recovery_last_timestamp_seconds)"))
    prediction_log_recovery_for: str = field(default="1m", metadata=_help(
        "how long AiwatchPredictionLogRecoveryIncomplete's condition must hold before it fires; shorter than "
        "prediction_log_recovery_window"))
    target_down_for: str = "5m"
    target_flapping_window: str = field(default="10m", metadata=_help(
        "AiwatchTargetDown also fires for a target whose scrapes succeeded less than half the time over this window "
        "(avg_over_time of up below 0.5): a crash-looping or flapping target is up for a scrape now and then, so "
        "up == 0 never holds for target_down_for"))
    target_absent_for: str = "5m"
    target_absent_lookback: str = field(default="1h", metadata=_help(
        "AiwatchTargetAbsent also fires for a cluster / namespace (the aggregation_labels) that had targets within "
        "this lookback and has none now, while others still have theirs (absent() alone fires only when no "
        "cluster has any); it resolves once the lookback has passed"))


@dataclass
class RulesConfig:
    """Everything the renderer reads. ``RulesConfig()`` is the default config."""

    runbook_url: str = field(default=RUNBOOK_URL_PLACEHOLDER, metadata=_help(
        "where each alert's runbook page lives: a URL in which {alert} stands for the alert's name. Your wiki "
        "(https://wiki.example.com/oncall/{alert}), your copy of the runbooks in a repository "
        "(https://github.com/acme/ml/blob/main/runbooks/{alert}.md), or the aiwatch console, which serves them "
        "(http://aiwatch-console.example.com:8501/?runbook={alert}). The default is a placeholder"))
    aggregation_labels: list[str] = field(default_factory=lambda: list(DEFAULT_AGGREGATION_LABELS), metadata=_help(
        "labels every rule keeps when it aggregates, so that Thanos / Mimir never sum series of different clusters "
        "or namespaces; a label the series lack is harmless ([] for none)"))
    selectors: Selectors = field(default_factory=Selectors)
    slo: SLO = field(default_factory=SLO)
    latency: Latency = field(default_factory=Latency)
    streaming: Streaming = field(default_factory=Streaming)
    queue: Queue = field(default_factory=Queue)
    gpu: GPU = field(default_factory=GPU)
    cache: Cache = field(default_factory=Cache)
    drift: Drift = field(default_factory=Drift)
    meta: Meta = field(default_factory=Meta)

    @property
    def unit_warnings(self) -> list[str]:
        """A line for each p99 threshold at or above the largest bucket bound of the histogram its p99 is read from:
        ``histogram_quantile`` reads no p99 above that bound, so the alert on it can never fire (``300`` meant as
        milliseconds). Warned, not refused: a threshold set that high may be meant to keep the alert quiet."""
        found = []
        for key, metric, alert in _P99_THRESHOLDS:
            threshold = getattr(self.latency, key)
            top = (SPECS[metric].buckets or LATENCY_BUCKETS)[-1]
            if threshold >= top:
                found.append(f"latency.{key} is {threshold:g} seconds, at or above the largest bucket bound of "
                             f"{metric} ({top:g} s): histogram_quantile reads no p99 above it, so {alert} can never "
                             f"fire on it. Thresholds are in seconds ({threshold / 1000:g} for {threshold:g} ms)")
        return found

    @property
    def runbook_url_is_placeholder(self) -> bool:
        """True while ``runbook_url`` is still the default's placeholder (every runbook link goes nowhere)."""
        return self.runbook_url == RUNBOOK_URL_PLACEHOLDER

    def validate(self) -> RulesConfig:
        """Check every value (types are checked when a config is read); returns ``self``."""
        for path, value, f in _walk(self):
            leaf = path.rsplit(".", 1)[-1].split("[", 1)[0]
            if isinstance(value, str):
                _check_text(path, value)
                if leaf in _DURATIONS or leaf.endswith("for"):
                    _check_duration(path, value, positive=not leaf.endswith("for"))
                if path.startswith("selectors."):
                    _check_selector(path, value)
                elif leaf in ("error_status", "model_phases", "traffic_class"):
                    _check_regex(path, value)
            elif isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
                _check_number(path, value, f.metadata.get("range", _NON_NEGATIVE) if f else _NON_NEGATIVE)
            else:
                raise ConfigError(f"{path}: unexpected value {value!r}")
        if self.streaming.ttft_threshold_seconds not in TIME_TO_FIRST_TOKEN_BUCKETS:
            raise ConfigError(f"streaming.ttft_threshold_seconds: {self.streaming.ttft_threshold_seconds} is not a "
                              "bucket bound of aiwatch_gen_ai_time_to_first_token_seconds; choose one of "
                              f"{list(TIME_TO_FIRST_TOKEN_BUCKETS)}")
        _check_url("runbook_url", self.runbook_url)
        if "{alert}" not in self.runbook_url or not self.runbook_url.startswith(("http://", "https://")):
            raise ConfigError(f"runbook_url: {self.runbook_url!r} must be an http(s) URL containing {{alert}}, "
                              "which is replaced by each alert's name")
        for path, names in (("aggregation_labels", self.aggregation_labels),
                            ("gpu.workload_labels", self.gpu.workload_labels),
                            ("gpu.replica_label", [self.gpu.replica_label])):
            _check_labels(path, names)
        for name, metrics in SELECTOR_METRICS.items():
            if name != "gpu" or self.gpu.source == "aiwatch":  # dcgm-exporter's series are not in the contract
                _check_selector_labels(f"selectors.{name}", getattr(self.selectors, name), metrics)
        split = [label for label in self.aggregation_labels if label in _RATIO_LABELS]
        if split:
            raise ConfigError(f"aggregation_labels: {split[0]!r} is a label the rules take ratios across "
                              f"({_RATIO_LABELS[split[0]]}): kept by every aggregation, each ratio would read 1 for "
                              "one value and 0 for the others (one failed request in ten thousand paged at 1000x)")
        if self.gpu.source not in SOURCES:
            raise ConfigError(f"gpu.source: must be one of {list(SOURCES)}, got {self.gpu.source!r}")
        if self.gpu.dcgm_utilization not in UTILIZATION_FIELDS:
            raise ConfigError(f"gpu.dcgm_utilization: must be one of {list(UTILIZATION_FIELDS)}, got "
                              f"{self.gpu.dcgm_utilization!r}")
        if self.slo.latency_threshold_seconds not in LATENCY_BUCKETS:
            raise ConfigError(f"slo.latency_threshold_seconds: {self.slo.latency_threshold_seconds} is not a bucket "
                              f"bound of aiwatch_request_duration_seconds; choose one of {list(LATENCY_BUCKETS)}")
        for name in ("page", "ticket"):
            windows = getattr(self.slo, name).windows
            if not windows or len(windows) > MAX_WINDOWS:
                raise ConfigError(f"slo.{name}.windows: between 1 and {MAX_WINDOWS} window pairs are needed")
        # a pair fires when the bad share over budget exceeds the factor: at factor x budget >= 1 not even every
        # request bad does (the budget as the rules write it, rounded as aiwatch.rules.render does)
        for objective_path, objective in (("slo.availability_objective", self.slo.availability_objective),
                                          ("slo.latency_objective", self.slo.latency_objective),
                                          ("streaming.ttft_objective", self.streaming.ttft_objective)):
            budget = float(format(1 - objective, ".12g"))
            for name in ("page", "ticket"):
                for i, pair in enumerate(getattr(self.slo, name).windows):
                    if pair.factor * budget >= 1:
                        raise ConfigError(
                            f"slo.{name}.windows[{i}].factor: {pair.factor:g} times the error budget of "
                            f"{objective_path} {objective:g} ({budget:.4g}) is a bad share of "
                            f"{pair.factor * budget:.4g}, more than every request: the pair would never fire; "
                            "choose a factor below "
                            f"{1 / budget:.4g} (1 / budget) or a higher objective")
        if not self.drift.windows or len(self.drift.windows) > MAX_WINDOWS \
                or len(set(self.drift.windows)) != len(self.drift.windows):
            raise ConfigError(f"drift.windows: between 1 and {MAX_WINDOWS} distinct windows are needed, got "
                              f"{self.drift.windows}")
        # increase()/changes() over a window stays above 0 for that window after a burst, and no longer
        for path, for_, window in (("meta.instrumentation_for", self.meta.instrumentation_for,
                                    self.meta.instrumentation_window),
                                   ("gpu.xid_for", self.gpu.xid_for, self.gpu.xid_window),
                                   ("meta.prediction_log_recovery_for", self.meta.prediction_log_recovery_for,
                                    self.meta.prediction_log_recovery_window)):
            if (duration_ns(for_) or 0) >= (duration_ns(window) or 0):
                raise ConfigError(f"{path}: {for_!r} must be shorter than its window {window!r}: the count over "
                                  "the window drops back to 0 once a burst leaves it, so the alert would never fire "
                                  "for a burst")
        if self.drift.psi_window not in self.drift.windows:
            raise ConfigError(f"drift.psi_window: {self.drift.psi_window!r} is not one of drift.windows "
                              f"{self.drift.windows}")
        if (duration_ns(self.drift.interval) or 0) >= LOOKBACK_NS:
            raise ConfigError(f"drift.interval: {self.drift.interval!r} must be shorter than 5m, Prometheus' "
                              "lookback: AiwatchFleetInputDrift and AiwatchFeatureMissing read the drift group's "
                              "records, which an alert evaluation more than 5m after the group's last one does not "
                              "see, so their 'for' starts over at every gap and they never fire")
        if self.drift.rate_window:
            _check_duration("drift.rate_window", self.drift.rate_window)
        if self.drift.summed_windows() and (duration_ns(self.drift.rate_window_or_default()) or 0) \
                % (duration_ns(self.drift.interval) or 1):
            raise ConfigError(f"drift.rate_window: {self.drift.rate_window!r} must be a multiple of drift.interval "
                              f"{self.drift.interval!r}: the windows longer than drift.raw_window_max sum the rate "
                              "recorded at each interval, and each value counts once only where the rate windows "
                              "overlap evenly (shorter, the values between two windows are never counted); leave "
                              f"it empty for {Drift(interval=self.drift.interval).rate_window_or_default()}")
        return self


LOOKBACK_NS = 5 * 60 * 10**9
"""Prometheus' default ``--query.lookback-delta``: how old the latest sample an instant selector reads may be."""


_NON_NEGATIVE = (0.0, math.inf, False, False)
#: The contract's labels whose values a rule's ratio is taken across (each numerator selects some values of the label
#: its denominator sums over): an aggregation label keeps them apart.
_RATIO_LABELS = {
    "status": "the error ratio: failed statuses over all",
    "result": "the cache hit ratio and the prediction log's share of records not stored",
    "bin": "the fleet PSI and Jensen-Shannon distance: each bin's share of all; a feature's missing share",
    "phase": "the share of request time outside the model",
    "reason": "the degraded share: fallbacks of every reason over all responses; a feature's missing share",
    "direction": "the link throughput: bytes both ways over network seconds",
}
#: Durations that are range windows or periods: they must be longer than 0 (a ``for`` may be 0s).
_DURATIONS = {"window", "windows", "degraded_window", "period", "long", "short", "absent_lookback", "xid_window",
              "psi_window", "instrumentation_window", "prediction_log_window", "prediction_log_recovery_window",
              "interval", "loop_stuck_window", "target_absent_lookback", "raw_window_max",
              "target_flapping_window", "memory_window"}


#: (``latency`` key, the histogram its p99 is read from, the alert it sets) for :attr:`RulesConfig.unit_warnings`
_P99_THRESHOLDS = (
    ("model_p99_seconds", "aiwatch_phase_duration_seconds", "AiwatchModelLatencyHigh"),
    ("non_model_p99_seconds", "aiwatch_phase_duration_seconds", "AiwatchNonModelLatencyHigh"),
    ("network_p99_seconds", "aiwatch_network_duration_seconds", "AiwatchNetworkLatencyHigh"),
    ("loop_delay_p99_seconds", "aiwatch_event_loop_delay_seconds", "AiwatchEventLoopDelayHigh"),
)


def _check_text(path: str, value: str) -> None:
    if len(value) > MAX_STRING:
        raise ConfigError(f"{path}: longer than {MAX_STRING} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{path}: {value!r} is not valid UTF-8 text") from None


def _check_number(path: str, value: float, bounds: tuple[float, float, bool, bool]) -> None:
    low, high, open_low, open_high = bounds
    inside = math.isfinite(value) and (low < value if open_low else low <= value) \
        and (value < high if open_high else value <= high)
    if not inside:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high or math.isinf(high) else ']'}"
        raise ConfigError(f"{path}: must be a finite number in {interval}, got {value!r}")


def _check_url(path: str, value: str) -> None:
    bad = next((c for c in value if c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ConfigError(f"{path}: {value!r} is not a URL (it holds {bad!r})")


def _check_labels(path: str, names: list[str]) -> None:
    if len(names) > MAX_WINDOWS or len(set(names)) != len(names):
        raise ConfigError(f"{path}: at most {MAX_WINDOWS} distinct label names, got {names}")
    for name in names:
        if not LABEL_NAME.fullmatch(name) or name.startswith("__") or name == "le":
            raise ConfigError(f"{path}: {name!r} is not a label name a rule can aggregate by")


def _check_regex(path: str, value: str) -> None:
    try:
        check_regex(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _check_selector(path: str, value: str) -> None:
    try:
        matchers = parse_matchers(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {value!r} is not a list of PromQL label matchers like 'service=\"x\"' "
                          f"({exc})") from None
    for m in matchers:
        if m.label == "__name__":
            raise ConfigError(f"{path}: a selector cannot match __name__: the rules name each metric themselves")
        if m.op in ("=~", "!~"):
            _check_regex(f"{path} ({m.label}{m.op})", m.value)


#: The contract's metrics each selector is applied to (aiwatch.rules.render; a test checks the two agree).
SELECTOR_METRICS: dict[str, tuple[str, ...]] = {
    "requests": ("aiwatch_request_duration_seconds", "aiwatch_phase_duration_seconds",
                 "aiwatch_gen_ai_time_to_first_token_seconds", "aiwatch_degraded_responses_total",
                 "aiwatch_requests_in_flight"),
    "network": ("aiwatch_network_duration_seconds", "aiwatch_client_bytes_total"),
    "queue": ("aiwatch_queue_depth",),
    "gpu": ("aiwatch_gpu_up", "aiwatch_gpu_nvml_up", "aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_used_bytes",
            "aiwatch_gpu_memory_total_bytes", "aiwatch_gpu_xid_errors_total"),
    "event_loop": ("aiwatch_event_loop_delay_seconds", "aiwatch_event_loop_sampled_seconds_total",
                   "aiwatch_event_loop_last_sample_timestamp_seconds", "aiwatch_event_loop_stalled_ratio"),
    "cache": ("aiwatch_feature_cache_requests_total",),
    "drift": ("aiwatch_drift_score", "aiwatch_drift_detected", "aiwatch_feature_bin_total",
              "aiwatch_feature_reference_ratio", "aiwatch_feature_reference_missing_ratio",
              "aiwatch_feature_missing_total", "aiwatch_feature_invalid_total"),
    "instrumentation": ("aiwatch_instrumentation_errors_total",),
    "prediction_log": ("aiwatch_prediction_log_records_total", "aiwatch_prediction_log_recovery_files_total",
                       "aiwatch_prediction_log_recovery_last_timestamp_seconds"),
}


def _matches_empty(m: Matcher) -> bool:
    """Whether ``m`` selects a series that lacks its label (Prometheus reads a missing label as "")."""
    if m.op in ("=", "!="):
        return (m.value == "") == (m.op == "=")
    from aiwatch._optional import require

    re2 = require("re2", "rules")
    return (re2.fullmatch(m.value, "") is not None) == (m.op == "=~")


def _check_selector_labels(path: str, value: str, metrics: tuple[str, ...]) -> None:
    """A matcher on a label that some of the selector's metrics carry and others lack selects no series of the
    latter (unless it matches the empty value): every rule on those would stay empty and its alert never fire. A
    label none of them carries (a target label: job, pod, ...) is the operator's to know."""
    labels = {name: set(SPECS[name].labels) for name in metrics}
    common = sorted(set.intersection(*labels.values()))
    for m in parse_matchers(value):
        lacking = [name for name in metrics if m.label not in labels[name]]
        if lacking and len(lacking) < len(metrics) and not _matches_empty(m):
            raise ConfigError(f"{path}: {m} selects no series of {', '.join(lacking)} (no {m.label!r} label), so "
                              "the rules on them would select nothing and their alerts never fire. The selector "
                              f"applies to {', '.join(metrics)}: match {' or '.join(map(repr, common)) or 'no label'}"
                              " of theirs, or target labels (job, namespace, ...)"
                              + ("; the SLOs' traffic class is slo.traffic_class" if m.label == "traffic_class"
                                 else ""))


def duration_ns(text: str) -> int | None:
    """Nanoseconds in a Prometheus duration (``1h30m``), or None when Prometheus would not parse it."""
    match = _DURATION.match(text)
    if not text or match is None:
        return None
    total = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_NS, strict=True) if n)
    return total if total <= _MAX_DURATION_NS else None


def duration_text(ns: int) -> str:
    """A Prometheus duration for ``ns`` nanoseconds, whole milliseconds (``315_000_000_000`` -> ``5m15s``)."""
    ms, parts = ns // 1_000_000, []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"


def _check_duration(path: str, value: str, positive: bool = True) -> None:
    ns = duration_ns(value)
    if ns is None:
        raise ConfigError(f"{path}: {value!r} is not a Prometheus duration such as 30s, 5m, 1h, 1d (units largest "
                          "first, each once, at most about 292y)")
    if positive and ns == 0:
        raise ConfigError(f"{path}: {value!r} must be longer than 0")


def _key(f: dataclasses.Field[Any]) -> str:
    return f.name[:-1] if f.name.endswith("_") else f.name


def _walk(obj: Any, prefix: str = "", f: dataclasses.Field[Any] | None = None
          ) -> list[tuple[str, Any, dataclasses.Field[Any] | None]]:
    """(dotted path, value, the dataclass field that holds it) of every leaf value."""
    out: list[tuple[str, Any, dataclasses.Field[Any] | None]] = []
    if dataclasses.is_dataclass(obj):
        for sub in dataclasses.fields(obj):
            out += _walk(getattr(obj, sub.name), f"{prefix}.{_key(sub)}" if prefix else _key(sub), sub)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            out += _walk(item, f"{prefix}[{i}]", f)
    else:
        out.append((prefix, obj, f))
    return out


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_short(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {_short(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            hint = " (a number or a boolean: quote it to give a string)" if isinstance(
                value, (bool, int, float)) else ""
            raise ConfigError(f"{path}: expected a string, got {_short(value)}{hint}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - a bug in this module


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(unknown: list[str], known: Iterable[str], path: str) -> str:
    """`` (did you mean slo.availability_objective?)``: the known key closest to each unknown one (any case, by
    :func:`difflib.get_close_matches`), with its dotted path; ``""`` when none is close.

        >>> _did_you_mean(["availabilty"], ["availability_objective", "page"], "slo")
        ' (did you mean slo.availability_objective?)'
    """
    by_lower = {key.lower(): key for key in known}
    guesses = []
    for key in unknown:
        close = difflib.get_close_matches(key.lower(), by_lower, n=1)
        if close:
            guesses.append((key, f"{path}.{by_lower[close[0]]}" if path else by_lower[close[0]]))
    if not guesses:
        return ""
    if len(unknown) == 1:
        return f" (did you mean {guesses[0][1]}?)"
    return " (did you mean " + ", ".join(f"{guess} for {key!r}" for key, guess in guesses) + "?)"


def _build(cls: type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    unknown = sorted((k if isinstance(k, str) else _short(k) for k in data if k not in fields), key=str)
    if unknown:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unknown key(s) {unknown}{_did_you_mean(unknown, fields, path)}; "
                          f"known: {sorted(fields)}")
    kwargs = {fields[k].name: _convert(hints[fields[k].name], v, f"{path}.{k}" if path else k)
              for k, v in data.items()}
    missing = [key for key, f in fields.items() if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path or 'config'}: missing key(s) {missing}")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> RulesConfig:
    """A validated :class:`RulesConfig` from parsed YAML/JSON; missing keys keep their defaults."""
    if isinstance(data, dict) and "runbook_base_url" in data:
        raise ConfigError("runbook_base_url: replaced by runbook_url, a URL in which {alert} stands for the alert's "
                          "name, e.g. runbook_url: 'https://github.com/acme/ml/blob/main/runbooks/{alert}.md'")
    cfg: RulesConfig = _build(RulesConfig, {} if data is None else data, "")
    return cfg.validate()


def load_config(path: str | Path) -> RulesConfig:
    """Read a YAML (needs PyYAML: ``pip install "aiwatch[rules]"``) or JSON rules config. YAML numbers are read
    as YAML 1.2 does (``1e-07`` is a number). Anything wrong raises :class:`ConfigError` naming the file, and so
    does an empty file (no YAML document, only comments, or null): the wrong file, or one not yet written, would
    otherwise render the defaults without a word; ``{}`` asks for them."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; a rules config is a few lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if str(path).endswith(".json"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    else:
        from aiwatch.rules.yamlout import YAMLError, load

        try:
            data = load(text)
        except (YAMLError, RecursionError, ValueError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc) or type(exc).__name__}") from None
    if data is None:
        raise ConfigError(f"{path}: the config is empty (no settings); for the defaults, write {{}} in it, or give "
                          "no config")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_to_dict(cfg: RulesConfig) -> dict[str, Any]:
    """The config as plain data (file keys: ``for`` rather than ``for_``)."""
    return typing.cast(dict[str, Any], _plain(cfg))


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_key(f): _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def config_comments() -> dict[str, str]:
    """Dotted key path -> help text, for the commented default config."""
    out: dict[str, str] = {}

    def visit(cls: type[Any], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            path = f"{prefix}.{_key(f)}" if prefix else _key(f)
            tp = hints[f.name]
            if "help" in f.metadata:
                out[path] = f.metadata["help"]
            elif dataclasses.is_dataclass(tp) and tp.__doc__:
                out[path] = tp.__doc__.strip().splitlines()[0]
            if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp is not BurnAlert:
                visit(tp, path)

    visit(RulesConfig, "")
    return out
