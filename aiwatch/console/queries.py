"""The PromQL of every console panel, shared by :class:`~aiwatch.console.prometheus.PrometheusSource` and the
Grafana dashboards (``scripts/build_dashboard.py`` renders ``dashboards/*.json`` from :class:`PanelQueries`).

``w`` is a PromQL duration (``"1m"``, or ``"$__rate_interval"`` in Grafana); ``svc`` / ``mdl`` are optional label
matchers (``'service=~"$service"'`` or an :class:`aiwatch.promql.Matcher`) that narrow service- and model-labelled
metrics. Selectors, quoting and metric names come from :mod:`aiwatch.promql`; the metric constants below are also
the names :class:`~aiwatch.console.scrape.ScrapeSource` reads.

A :class:`PanelQueries` carries what a deployment decides once for every panel:

- ``scope``: the aggregation labels every panel keeps (default ``cluster`` and ``namespace``), so that a Thanos or
  Mimir holding several clusters never has their series summed; a label the series lack groups as empty;
- ``match``: matchers added to every selector (``cluster="eu-1"``; the dashboards' ``cluster=~"$cluster"``);
- ``gpu``: where the GPU panels read from, aiwatch's collector or dcgm-exporter (:mod:`aiwatch.gpuseries`).

    >>> PanelQueries(scope=()).throughput("1m")
    'sum by (service) (rate(aiwatch_request_duration_seconds_count[1m]))'
    >>> PanelQueries(match='cluster="eu"').throughput("1m")
    'sum by (cluster, namespace, service) (rate(aiwatch_request_duration_seconds_count{cluster="eu"}[1m]))'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from aiwatch.console.source import (
    EVERY_GPU_UP_TO,
    GPU_ATTENTION,
    GPU_FLEET_READINGS,
    RECOVERY_SEEN_SPAN,
    RECOVERY_SEEN_STEP,
    duration,
)
from aiwatch.drift.promql import (
    FEATURE_INVALID,
    FEATURE_MISSING,
    feature_counts_expr,
    live_missing_share_expr,
    live_share_expr,
    live_values_expr,
    reference_missing_share_expr,
    reference_share_expr,
)
from aiwatch.gpuseries import GpuSeries
from aiwatch.promql import (
    DEFAULT_AGGREGATION_LABELS,
    Matcher,
    Metric,
    by,
    eq,
    histogram_quantile,
    increase,
    matchers_of,
    matches,
    metric,
    ne,
    one_of,
    rate,
    scoped,
    selector,
    series,
)
from aiwatch.status import ERROR_STATUS_RE
from aiwatch.traffic import REALTIME

REQUESTS = metric("aiwatch_request_duration_seconds")
PHASES = metric("aiwatch_phase_duration_seconds")
BACKGROUND_PHASES = metric("aiwatch_background_phase_duration_seconds")
NETWORK = metric("aiwatch_network_duration_seconds")
CLIENT_BYTES = metric("aiwatch_client_bytes_total")
LOOP_DELAY = metric("aiwatch_event_loop_delay_seconds")
LOOP_SAMPLED = metric("aiwatch_event_loop_sampled_seconds_total")
LOOP_LAST_SAMPLE = metric("aiwatch_event_loop_last_sample_timestamp_seconds")
LOOP_STALLED = metric("aiwatch_event_loop_stalled_ratio")
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
PREDICTION_LOG_RECORDS = metric("aiwatch_prediction_log_records_total")
SAMPLED_OUT = "sampled_out"
PREDICTION_LOG_RECOVERY_FILES = metric("aiwatch_prediction_log_recovery_files_total")
PREDICTION_LOG_RECOVERY_LAST = metric("aiwatch_prediction_log_recovery_last_timestamp_seconds")
PREDICTION_LOG_RECOVERED_RECORDS = metric("aiwatch_prediction_log_recovered_records_total")
PREDICTION_LOG_FORCED_ROTATIONS = metric("aiwatch_prediction_log_forced_rotations_total")
"""The prediction log's ``result`` of the requests it did not sample: left out of the prediction-log panels, which
show what became of the records it kept."""
REFERENCE_RATIO = metric("aiwatch_feature_reference_ratio")
TIME_TO_FIRST_CHUNK = metric("aiwatch_time_to_first_chunk_seconds")
TIME_BETWEEN_CHUNKS = metric("aiwatch_time_between_chunks_seconds")
TIME_TO_FIRST_TOKEN = metric("aiwatch_gen_ai_time_to_first_token_seconds")
TIME_PER_OUTPUT_TOKEN = metric("aiwatch_gen_ai_time_per_output_token_seconds")
TOKEN_USAGE = metric("aiwatch_gen_ai_token_usage_tokens")
DEGRADED = metric("aiwatch_degraded_responses_total")
VERSION_ERRORS = metric("aiwatch_model_version_errors_total")
INSTRUMENTATION_ERRORS = metric("aiwatch_instrumentation_errors_total")
LABEL_OVERFLOW = metric("aiwatch_label_overflow_total")
NETWORK_CLAMPED = metric("aiwatch_network_clamped_total")
CLIENT_REQUESTS = metric("aiwatch_client_request_duration_seconds")
OVERHEAD_CLAMPED = metric("aiwatch_overhead_clamped_total")
UNCLOSED_RESPONSES = metric("aiwatch_unclosed_responses_total")

REPLICA_GAUGES = (IN_FLIGHT, QUEUE_DEPTH, GPU_NVML_UP)
"""The serving gauges whose exporters count as replicas."""

# factored as aiwatch_(a|b|c): the committed dashboard's text
_REPLICA_NAMES = "aiwatch_(" + "|".join(m.name.removeprefix("aiwatch_") for m in REPLICA_GAUGES) + ")"

GPU_GAUGES: tuple[tuple[str, str], ...] = (
    ("up", metric("aiwatch_gpu_up").name),
    ("utilization", GPU_UTILIZATION.name),
    ("memory_used_bytes", metric("aiwatch_gpu_memory_used_bytes").name),
    ("memory_total_bytes", metric("aiwatch_gpu_memory_total_bytes").name),
    ("power_watts", metric("aiwatch_gpu_power_watts").name),
    ("temperature_celsius", metric("aiwatch_gpu_temperature_celsius").name),
)
"""(GpuRow field, aiwatch metric) of the GPU table (:meth:`PanelQueries.gpu_reading` reads each from either
source)."""

DRIFT_GAUGES: tuple[tuple[str, str], ...] = (
    ("score", DRIFT_SCORE.name), ("pvalue", DRIFT_PVALUE.name), ("detected", DRIFT_DETECTED.name))
"""(DriftRow field, metric) of the drift table."""

MatcherText: TypeAlias = Matcher | str


@dataclass(frozen=True)
class PanelQueries:
    """The panels' PromQL for one deployment: aggregation ``scope``, ``match`` on every selector, ``gpu`` source."""

    scope: tuple[str, ...] = DEFAULT_AGGREGATION_LABELS
    match: str = ""
    gpu: GpuSeries = field(default_factory=GpuSeries)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", tuple(self.scope))
        matchers_of([self.match])  # ValueError now for text that is no matchers

    def _by(self, *labels: str) -> tuple[str, ...]:
        return scoped(self.scope, labels)

    def _m(self, *matchers: MatcherText) -> tuple[MatcherText, ...]:
        return (*matchers, self.match)

    # --- latency ------------------------------------------------------------------------------------------
    def latency_quantile(self, q: float, w: str, svc: MatcherText = "") -> str:
        """Request latency quantile per ``service`` (a gateway's and its backend's requests never share a
        histogram)."""
        return histogram_quantile(q, REQUESTS, w, self._by("service"), *self._m(svc))

    def phase_split(self, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        """Mean seconds per request in each phase, per ``service``: each service's phase time divided by that
        service's own request rate. Never summed across services: a caller's phase that calls another service (a
        gateway's ``inference_call``) already holds that service's whole request time."""
        return (f"{by('sum', self._by('service', 'phase'), rate(PHASES.sum, w, *self._m(svc, mdl)))}"
                f" / on ({', '.join(self._by('service'))}) group_left {self.throughput(w, svc)}")

    def throughput(self, w: str, svc: MatcherText = "") -> str:
        return by("sum", self._by("service"), rate(REQUESTS.count, w, *self._m(svc)))

    def error_ratio(self, w: str, svc: MatcherText = "") -> str:
        """Share of requests whose status is an error (:data:`aiwatch.status.ERROR_STATUS_RE`)."""
        errors = by("sum", self._by("service"),
                    rate(REQUESTS.count, w, *self._m(svc, matches("status", ERROR_STATUS_RE))))
        total = self.throughput(w, svc)
        # "or ... * 0" keeps services without errors at 0 instead of dropping them.
        return f"({errors} or {total} * 0) / {total}"

    def network_quantile(self, q: float, w: str, svc: MatcherText = "") -> str:
        """Network time quantile per calling ``service`` and the ``peer`` it called."""
        return histogram_quantile(q, NETWORK, w, self._by("service", "peer"), *self._m(svc))

    def loop_delay_quantile(self, q: float, w: str, svc: MatcherText = "") -> str:
        """Event loop delay quantile per ``service`` (every process' samples of the service)."""
        return histogram_quantile(q, LOOP_DELAY, w, self._by("service"), *self._m(svc))

    def loop_delay_mean(self, w: str, svc: MatcherText = "") -> str:
        """Mean event loop delay per ``service``; no sample for a service that took none in the window."""
        return self._mean(LOOP_DELAY, w, svc, "service")

    def background_phase_quantile(self, q: float, w: str, svc: MatcherText = "") -> str:
        """Quantile of the phases recorded outside any request (a background worker, a batch job), per ``service``
        and ``phase``: not request time."""
        return histogram_quantile(q, BACKGROUND_PHASES, w, self._by("service", "phase"), *self._m(svc))

    def background_phase_mean(self, w: str, svc: MatcherText = "") -> str:
        """Mean of the phases recorded outside any request, per ``service`` and ``phase``; no sample for one that
        did not run in the window."""
        return self._mean(BACKGROUND_PHASES, w, svc, "service", "phase")

    def _mean(self, histogram: Metric, w: str, svc: MatcherText, *labels: str) -> str:
        """A histogram's mean observation over ``w`` by ``labels``; no sample without observations."""
        by_labels = self._by(*labels)
        return (f"{by('sum', by_labels, rate(histogram.sum, w, *self._m(svc)))}"
                f" / ({by('sum', by_labels, rate(histogram.count, w, *self._m(svc)))} > 0)")

    def loop_stalled_ratio(self, w: str, svc: MatcherText = "") -> str:
        """Share of the time each replica's event loop stood still, per ``service`` and scrape target (``job``,
        ``instance``): the seconds its timers ran late per second the sampler watched it, so a stall counts by its
        length (the mean and the quantiles count it as one sample), as in the
        ``instance_service:aiwatch_event_loop_stalled:ratio_rate`` rule AiwatchEventLoopDelayHigh reads. For a
        multiprocess target, the mean over its workers' loops; no sample for a target with nothing watched."""
        labels = self._by("job", "instance", "service")
        return (f"{by('sum', labels, rate(LOOP_DELAY.sum, w, *self._m(svc)))}"
                f" / ({by('sum', labels, rate(LOOP_SAMPLED, w, *self._m(svc)))} > 0)")

    def loop_unwatched(self, w: str, svc: MatcherText = "") -> str:
        """The replicas (``job``, ``instance`` and ``service``) whose event loop sampler took no sample over ``w``
        (``aiwatch_event_loop_sampled_seconds_total`` did not grow) while their target is up (value 0): a loop
        that stood still the whole window, which :meth:`loop_stalled_ratio` has no sample for; the stuck branch of
        AiwatchEventLoopDelayHigh reads the same over ``latency.loop_stuck_window``. ``up`` is matched on the
        target and scope labels only: the ``match`` matchers may name labels only aiwatch's series carry."""
        labels = self._by("job", "instance", "service")
        watched = by("sum", labels, increase(LOOP_SAMPLED, w, *self._m(svc)))
        return f"{watched} == 0 and on ({', '.join(self._by('job', 'instance'))}) (up == 1)"

    def loop_worst_stalled(self, svc: MatcherText = "") -> str:
        """The share of the last 5 minutes the worst worker's event loop of each replica (``job``, ``instance`` and
        ``service``) stood still, by its own sampler (``aiwatch_event_loop_stalled_ratio``: a merged multiprocess
        target serves its largest live worker's, where :meth:`loop_stalled_ratio` is their mean), as the
        ``instance_service:aiwatch_event_loop_stalled_ratio:max`` rule AiwatchEventLoopDelayHigh reads. Always
        5 minutes, whatever the window; no sample for an aiwatch without the gauge."""
        return by("max", self._by("job", "instance", "service"), series(LOOP_STALLED, *self._m(svc)))

    def loop_sample_unchanged(self, w: str, svc: MatcherText = "") -> str:
        """The replicas (``job``, ``instance`` and ``service``) one of whose loops took no sample over ``w`` while
        their target is up (value: how many such series, > 0): ``aiwatch_event_loop_last_sample_timestamp_seconds``
        (a merged multiprocess target's stalest live worker's) did not change over ``w`` and was seen at least twice
        in it, neither 0 (made, not set) nor +Inf (every sampler stopped). The clock-free stuck branch of
        AiwatchEventLoopDelayHigh (the ``instance_service:aiwatch_event_loop_last_sample_unchanged:count`` rule over
        ``latency.loop_stuck_window``, the ``w`` the console passes whatever its window); it shows the one worker of
        several that :meth:`loop_unwatched` misses."""
        stamp = series(LOOP_LAST_SAMPLE, *self._m(svc))
        unchanged = by("count", self._by("job", "instance", "service"),
                       f"changes({stamp}[{w}]) == 0 and {stamp} > 0 < +Inf and count_over_time({stamp}[{w}]) >= 2")
        return f"{unchanged} and on ({', '.join(self._by('job', 'instance'))}) (up == 1)"

    def link_throughput(self, w: str, svc: MatcherText = "") -> str:
        """Each link's effective throughput: bytes the calling ``service`` sent to and received from ``peer`` per
        second of network time (not of wall time), as in the ``service_peer:aiwatch_client_throughput_bytes_per_
        second`` rule; no sample for a link without network time."""
        labels = self._by("service", "peer")
        moved = by("sum", labels, rate(CLIENT_BYTES, w, *self._m(svc)))
        return f"{moved} / ({by('sum', labels, rate(NETWORK.sum, w, *self._m(svc)))} > 0)"

    # --- AI traffic: traffic classes, streams, tokens, fallbacks, model versions ---------------------------------
    def latency_by_class(self, q: float, w: str, svc: MatcherText = "") -> str:
        """Request latency quantile per ``service`` and ``traffic_class``: real-time and batch side by side, so that
        batch traffic raising real-time latency on the same replicas shows."""
        return histogram_quantile(q, REQUESTS, w, self._by("service", "traffic_class"), *self._m(svc))

    def throughput_by_class(self, w: str, svc: MatcherText = "") -> str:
        return by("sum", self._by("service", "traffic_class"), rate(REQUESTS.count, w, *self._m(svc)))

    def first_chunk_quantile(self, q: float, w: str, svc: MatcherText = "") -> str:
        """Time to the first body chunk of streamed responses, per ``service`` and ``route``."""
        return histogram_quantile(q, TIME_TO_FIRST_CHUNK, w, self._by("service", "route"), *self._m(svc))

    def between_chunks_quantile(self, q: float, w: str, svc: MatcherText = "") -> str:
        return histogram_quantile(q, TIME_BETWEEN_CHUNKS, w, self._by("service", "route"), *self._m(svc))

    def first_token_quantile(self, q: float, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        """Time to first token (OpenTelemetry GenAI), per ``service``, ``model`` and ``traffic_class``."""
        return histogram_quantile(q, TIME_TO_FIRST_TOKEN, w, self._by("service", "model", "traffic_class"),
                                  *self._m(svc, mdl))

    def per_output_token_quantile(self, q: float, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        return histogram_quantile(q, TIME_PER_OUTPUT_TOKEN, w, self._by("service", "model", "traffic_class"),
                                  *self._m(svc, mdl))

    def token_rate(self, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        """Tokens per second per ``service``, ``model`` and ``token_type`` (input, output)."""
        return by("sum", self._by("service", "model", "token_type"), rate(TOKEN_USAGE.sum, w, *self._m(svc, mdl)))

    def degraded_share(self, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        """Share of a service's responses served by a fallback, per ``model`` and ``reason`` (the denominator is
        every response of the service, as in the ``AiwatchDegradedShareHigh`` rule)."""
        degraded = by("sum", self._by("service", "model", "reason"), rate(DEGRADED, w, *self._m(svc, mdl)))
        return f"{degraded} / on ({', '.join(self._by('service'))}) group_left {self.throughput(w, svc)}"

    def version_latency(self, q: float, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        """The model's own time (the ``inference`` phase) quantile per ``service``, ``model`` and
        ``model_version``: a canary against the stable version."""
        return histogram_quantile(q, PHASES, w, self._by("service", "model", "model_version"),
                                  *self._m(svc, mdl, eq("phase", "inference"), ne("model_version", "")))

    def version_error_ratio(self, w: str, svc: MatcherText = "", mdl: MatcherText = "") -> str:
        """Share of each model version's requests with an error status. Every request observes its ``overhead``
        phase once, labelled with its model and version, so that phase's count is the version's request rate."""
        labels = self._by("service", "model", "model_version")
        total = by("sum", labels, rate(PHASES.count, w, *self._m(svc, mdl, eq("phase", "overhead"),
                                                                 ne("model_version", ""))))
        errors = by("sum", labels, rate(VERSION_ERRORS, w, *self._m(svc, mdl)))
        return f"({errors} or {total} * 0) / {total}"

    # --- GPUs ---------------------------------------------------------------------------------------------
    def gpu_reading(self, reading: str, *matchers: MatcherText) -> str:
        """One GPU reading (a field of :data:`GPU_GAUGES`: ``utilization``, ``power_watts``, ...) per GPU, in
        aiwatch's units, whichever the source; ``matchers`` narrow its series (in the source's label names)."""
        gpu = self.gpu
        readings = {"up": gpu.up, "utilization": gpu.utilization, "memory_used_bytes": gpu.memory_used_bytes,
                    "memory_total_bytes": gpu.memory_total_bytes, "power_watts": gpu.power_watts,
                    "temperature_celsius": gpu.temperature_celsius}
        if reading not in readings:
            raise ValueError(f"no GPU reading {reading!r}; known: {', '.join(readings)}")
        return readings[reading](*self._m(*matchers))

    def gpu_gauge(self, reading: str, *matchers: MatcherText) -> str:
        """The latest value of a GPU reading per GPU, for the GPU table (labelled ``gpu``, ``name``, ``uuid``
        whichever the source; ``memory_share``: used over total memory); ``matchers`` narrow the GPUs (in the
        source's label names)."""
        if reading == "memory_share":
            used, total = (self.gpu_gauge(f"memory_{part}_bytes", *matchers) for part in ("used", "total"))
            return f"{used} / {total}"
        return by("max", self._by("gpu", "name", "uuid"),
                  self.gpu.with_aiwatch_labels(self.gpu_reading(reading, *matchers)))

    def gpu_attention(self, n: int | str) -> str:
        """The GPUs a fleet's GPU table lists (:data:`~aiwatch.console.source.GPU_ATTENTION`): the ``n`` GPUs of
        each reason, labelled ``attention`` with it; at most ``5 n`` series however large the fleet."""
        picks = []
        for reason, reading, high in GPU_ATTENTION:
            gauge = self.gpu_gauge(reading)
            if reason == "down":
                gauge = f"{gauge} < 0.5"
            elif reason == "idlest":
                gauge = f"{gauge} unless on ({', '.join(self._by('gpu', 'name', 'uuid'))}) topk({n}, {gauge})"
            ranked = f'{"topk" if high else "bottomk"}({n}, {gauge})'
            picks.append(f'label_replace({ranked}, "attention", "{reason}", "", "")')
        return " or ".join(picks)

    def gpu_table_rows(self, reading: str, n: str) -> str:
        """:meth:`gpu_gauge` of the GPUs a fleet's GPU table lists, in one query (for Grafana): every GPU of a fleet
        of up to :data:`~aiwatch.console.source.EVERY_GPU_UP_TO`, past that those of :meth:`gpu_attention`."""
        gauge = self.gpu_gauge(reading)
        return (f"{gauge} and on ({', '.join(self._by('gpu', 'name', 'uuid'))}) ({self.gpu_attention(n)})"
                f" or {gauge} and on () (count({gauge}) <= {EVERY_GPU_UP_TO})")

    def gpu_table_fleet(self) -> str:
        """A fleet's GPU table's summary over every GPU: ``count`` of GPUs (with ``up`` or a utilization), ``down``
        (``up`` under 0.5; none when none is) and each :data:`~aiwatch.console.source.GPU_FLEET_READINGS`' ``min``,
        ``median`` and ``max`` (labels ``reading`` and ``stat``): one series each, however many GPUs."""
        # every GPU exports up (dcgm: derived from utilization) or utilization: a union of all six readings
        # took 170 ms at 4 000 GPUs, this one 25-45 ms
        every = f"{self.gpu_gauge('up')} or {self.gpu_gauge('utilization')}"
        parts = [(f"count({every})", "", "count"), (f"count({self.gpu_gauge('up')} < 0.5)", "", "down")]
        for reading in GPU_FLEET_READINGS:
            gauge = self.gpu_gauge(reading)
            parts += [(f"min({gauge})", reading, "min"), (f"quantile(0.5, {gauge})", reading, "median"),
                      (f"max({gauge})", reading, "max")]
        tagged = ('label_replace(label_replace({}, "reading", "{}", "", ""), "stat", "{}", "", "")'.format(*part)
                  for part in parts)
        return " or ".join(tagged)

    def per_gpu(self, reading: str, *matchers: MatcherText) -> str:
        """A GPU reading per GPU, for the over-time charts: its ``gpu`` index and ``uuid`` (GPU 0 of every host, of
        every Kubernetes node, is another one); ``matchers`` narrow the GPUs (in the source's label names)."""
        return by("max", self._by("gpu", "uuid"), self.gpu.with_aiwatch_labels(self.gpu_reading(reading, *matchers)))

    def gpus_of(self, uuids: list[str]) -> Matcher:
        """The matcher selecting the GPUs of these UUIDs, in the GPU source's label name."""
        return one_of(self.gpu.labels.uuid, uuids)

    def gpu_mean_utilization(self, span: str) -> str:
        """Each GPU's utilization averaged over ``span``, labelled as :meth:`per_gpu` labels it."""
        return by("max", self._by("gpu", "uuid"), self.gpu.with_aiwatch_labels(self.gpu.utilization_avg(span,
                                                                                                         self.match)))

    def gpu_ranked(self, reading: str, n: str, window: str, *matchers: MatcherText, lowest: bool = False) -> str:
        """:meth:`per_gpu` of the ``n`` GPUs with the highest (``lowest``: the lowest, among those not the highest)
        mean of ``reading`` over ``window`` ending at the query's end (``@ end()``): in a range query the same GPUs
        at every step, where a ``topk`` at each step draws a set that changes over time (Grafana's time series
        panels show its members' lines broken, and more than ``n`` of them). ``n`` may be a Grafana variable."""
        on = f"on ({', '.join(self._by('gpu', 'uuid'))})"
        mean = by("max", self._by("gpu", "uuid"),
                  self.gpu.with_aiwatch_labels(self.gpu.averaged(reading, window, *self._m(*matchers), at="end()")))
        top = f"topk({n}, {mean})"
        chosen = f"bottomk({n}, {mean} unless {on} {top})" if lowest else top
        return f"{self.per_gpu(reading, *matchers)} and {on} {chosen}"

    def gpu_count(self, span: str) -> str:
        """How many GPUs had a utilization over ``span``."""
        return f"count({self.gpu_mean_utilization(span)})"

    def gpu_extremes(self, n: int, span: str) -> str:
        """The ``n`` GPUs whose utilization averaged highest over ``span`` (the ``rank`` label ``busiest``) and the
        ``n`` lowest of the others (``idlest``): at most ``2 n`` series, however large the fleet (a flat fleet's ties
        would put the same GPUs in both)."""
        mean = self.gpu_mean_utilization(span)
        busiest = f"topk({n}, {mean})"
        others = f"{mean} unless on ({', '.join(self._by('gpu', 'uuid'))}) {busiest}"
        return (f'label_replace({busiest}, "rank", "busiest", "", "")'
                f' or label_replace(bottomk({n}, {others}), "rank", "idlest", "", "")')

    def gpu_fleet(self, reading: str) -> str:
        """The fleet's distribution of a GPU reading over its GPUs' series, per scope: ``min``, ``median`` and
        ``max`` (the ``stat`` label). Over the series as exported, not :meth:`per_gpu`'s one per GPU: that
        aggregation by GPU, at every step, made the query 10 times slower (4 000 GPUs: 490 ms against 30-50 ms for
        the min), and only a GPU exported twice (two scrape jobs) counts twice here."""
        gpus, scope = self.gpu_reading(reading), self.scope
        stats = (("min", by("min", scope, gpus)), ("median", by("quantile", scope, f"0.5, {gpus}")),
                 ("max", by("max", scope, gpus)))
        return " or ".join(f'label_replace({expr}, "stat", "{name}", "", "")' for name, expr in stats)

    # --- queues, batching, cache --------------------------------------------------------------------------
    def queue_depth(self) -> str:
        return by("sum", self._by("queue"), series(QUEUE_DEPTH, *self._m()))

    def in_flight(self, svc: MatcherText = "") -> str:
        return by("sum", self._by("service"), series(IN_FLIGHT, *self._m(svc)))

    def batch_size(self, w: str, mdl: MatcherText = "") -> str:
        items = by("sum", self._by("model"), rate(BATCH_SIZE.sum, w, *self._m(mdl)))
        return f"{items} / {by('sum', self._by('model'), rate(BATCH_SIZE.count, w, *self._m(mdl)))}"

    def cache_hit_ratio(self, w: str) -> str:
        total = by("sum", self._by("cache"), rate(CACHE_REQUESTS, w, *self._m()))
        hits = by("sum", self._by("cache"), rate(CACHE_REQUESTS, w, *self._m(eq("result", "hit"))))
        return f"({hits} or {total} * 0) / {total}"

    # --- drift --------------------------------------------------------------------------------------------
    def drift_gauge(self, gauge: str, mdl: MatcherText = "", extra: MatcherText = "") -> str:
        return by("max", self._by("model", "feature", "test"), series(metric(gauge), *self._m(mdl, extra)))

    def drift_scores_of(self, models: list[str], features: list[str]) -> str:
        """The drift score of exactly these models' and features' series (literal values, regex-escaped)."""
        return self.drift_gauge(DRIFT_SCORE.name, one_of("model", models), one_of("feature", features))

    def reference_share_for(self, *matchers: MatcherText) -> str:
        """The reference profile's share per bin of the features the matchers select."""
        return reference_share_expr(selector(*self._m(*matchers)), self.scope)

    def live_share_for(self, w: str, *matchers: MatcherText) -> str:
        """The live share per bin over ``w`` of the features the matchers select."""
        return live_share_expr(w, selector(*self._m(*matchers)), self.scope)

    def live_values_for(self, w: str, *matchers: MatcherText) -> str:
        """How many live values over ``w`` each reference of the features the matchers select counted."""
        return live_values_expr(w, selector(*self._m(*matchers)), self.scope)

    def missing_share(self, w: str, *matchers: MatcherText) -> str:
        """Each feature's live share of missing values over ``w`` (None, NaN, inf, or the key absent from the row),
        as AiwatchFeatureMissing reads it over ``drift.psi_window``."""
        return live_missing_share_expr(w, selector(*self._m(*matchers)), self.scope)

    def reference_missing_share(self, *matchers: MatcherText) -> str:
        """Each feature's share of missing values in the reference profile."""
        return reference_missing_share_expr(selector(*self._m(*matchers)), self.scope)

    def missing_counted(self, w: str, *matchers: MatcherText) -> str:
        """How many values and missing ones each feature counted over ``w``: what its missing share is a share of
        (AiwatchFeatureMissing fires from ``drift.fleet_min_values`` of them)."""
        return feature_counts_expr(w, (FEATURE_BINS, FEATURE_MISSING, FEATURE_INVALID), selector(*self._m(*matchers)),
                                   self.scope)

    def feature_reference(self, model: str, feature: str) -> str:
        return self.reference_share_for(eq("model", model), eq("feature", feature))

    def feature_live(self, model: str, feature: str, w: str) -> str:
        return self.live_share_for(w, eq("model", model), eq("feature", feature))

    # --- autoscaling --------------------------------------------------------------------------------------
    def replicas(self) -> str:
        """How many replicas (scrape instances) export aiwatch's serving gauges, per scope."""
        exporting = series("", *self._m(matches("__name__", _REPLICA_NAMES)))
        return by("count", self.scope, by("count", self._by("instance"), exporting))

    def selected_targets(self) -> str:
        """The scrape targets ``match`` selects (their ``up`` series, labelled as the targets are)."""
        return series("up", *self._m())

    def exporters(self) -> str:
        """The scrape targets (``job``, ``instance``) exporting any aiwatch series: the ones the panels read."""
        return by("group", ("job", "instance"), series("", *self._m(matches("__name__", "aiwatch_.+"))))

    def service_exporters(self) -> str:
        """The scrape targets (``job``, ``instance``) exporting aiwatch series of each ``service`` (per scope)."""
        return by("group", ("job", "instance", *self._by("service")),
                  series("", *self._m(matches("__name__", "aiwatch_.+"), ne("service", ""))))

    def autoscaling(self, w: str) -> list[str]:
        """The PromQL of :data:`~aiwatch.console.source.AUTOSCALING_SIGNALS`, in the same order (per scope)."""
        per_replica = f" / {self.replicas()}"
        return [
            by("sum", self.scope, series(QUEUE_DEPTH, *self._m())) + per_replica,
            by("sum", self.scope, series(IN_FLIGHT, *self._m())) + per_replica,
            # replicas up and no real-time request since they started: 0, as the recording rule reads it
            f"({by('sum', self.scope, rate(REQUESTS.count, w, *self._m(eq('traffic_class', REALTIME))))} or 0 * "
            f"{self.replicas()}){per_replica}",
            histogram_quantile(0.95, QUEUE_WAIT, w, self.scope, *self._m()),
            by("avg", self.scope, self.gpu_reading("utilization")),
        ]

    # --- the prediction log ------------------------------------------------------------------------------
    def prediction_log_records(self, w: str) -> str:
        """Records per second per prediction ``log`` and ``result``, the requests it did not sample left out: what
        became of the records it kept (queued, then written; or dropped, failed, lost)."""
        return by("sum", self._by("log", "result"),
                  rate(PREDICTION_LOG_RECORDS, w, *self._m(ne("result", SAMPLED_OUT))))

    def prediction_log_recovery_files(self) -> str:
        """Journals the ParquetSinks of each prediction ``log`` recovered, by ``result``, summed over replicas: the
        value (a start counts before the first scrape, so a rate or increase() misses it)."""
        return by("sum", self._by("log", "result"), series(PREDICTION_LOG_RECOVERY_FILES, *self._m()))

    def prediction_log_recovery_last(self) -> str:
        """When the sinks of each prediction ``log`` last counted a journal by ``result`` (torn, set_aside,
        failed), unix seconds, the latest over replicas."""
        return by("max", self._by("log", "result"), series(PREDICTION_LOG_RECOVERY_LAST, *self._m()))

    def prediction_log_recovery_seen(self) -> str:
        """When Prometheus first saw the time each prediction ``log``'s sinks last counted a journal by ``result``
        (the value :meth:`prediction_log_recovery_last` reads now), on Prometheus' clock and to a minute after, the
        latest over replicas: what AiwatchPredictionLogRecoveryIncomplete times its window by. The start of the
        :data:`~aiwatch.console.source.RECOVERY_SEEN_SPAN` for a value held all through it."""
        last = series(PREDICTION_LOG_RECOVERY_LAST, *self._m())
        # the subquery's steps are whole minutes: a value first seen after the latest one has its sample's time
        seen = (f"min_over_time(timestamp({last} == {last} @ end())"
                f"[{duration(RECOVERY_SEEN_SPAN)}:{duration(RECOVERY_SEEN_STEP)}])")
        return by("max", self._by("log", "result"), f"({seen} or timestamp({last}))")

    def prediction_log_forced_rotations(self, w: str) -> str:
        """Files per second the ParquetSinks of each prediction ``log`` completed early because ``max_open_files``
        of them were open, summed over replicas."""
        return by("sum", self._by("log"), rate(PREDICTION_LOG_FORCED_ROTATIONS, w, *self._m()))

    def prediction_log_recovered_records(self) -> str:
        """Rows the ParquetSinks of each prediction ``log`` made into files from journals, summed over replicas."""
        return by("sum", self._by("log"), series(PREDICTION_LOG_RECOVERED_RECORDS, *self._m()))

    # --- aiwatch's own errors ----------------------------------------------------------------------------
    def instrumentation_errors(self, w: str) -> str:
        """Failures aiwatch swallowed per second, per ``instance`` and ``component`` (metrics, tracing, drift,
        prediction_log, ...): what AiwatchInstrumentationErrors alerts on."""
        return by("sum", self._by("instance", "component"), rate(INSTRUMENTATION_ERRORS, w, *self._m()))

    def label_overflow(self, w: str) -> str:
        """Label values the cardinality guard folded into ``__overflow__`` per second, per ``label``."""
        return by("sum", self._by("label"), rate(LABEL_OVERFLOW, w, *self._m()))

    # --- what the latency split could not measure as it is ----------------------------------------------------
    def network_clamped_share(self, w: str, svc: MatcherText = "") -> str:
        """Share of each ``service``'s calls to each ``peer`` whose network time was recorded as 0, because the
        peer reported more time than the caller saw the call take (every such call is in the network time's
        count, at 0)."""
        labels = self._by("service", "peer")
        return (f"{by('sum', labels, rate(NETWORK_CLAMPED, w, *self._m(svc)))}"
                f" / {by('sum', labels, rate(NETWORK.count, w, *self._m(svc)))}")

    def unmeasured_share(self, w: str, svc: MatcherText = "") -> str:
        """Share of each ``service``'s calls to each ``peer`` with no network time (no total came back from the peer,
        or the call was retried), for the peers whose network time has a count: one that never reports has no
        series."""
        labels = self._by("service", "peer")
        return (f"clamp_min(1 - {by('sum', labels, rate(NETWORK.count, w, *self._m(svc)))}"
                f" / {by('sum', labels, rate(CLIENT_REQUESTS.count, w, *self._m(svc)))}, 0)")

    def overhead_clamped_share(self, w: str, svc: MatcherText = "") -> str:
        """Share of each ``service``'s requests whose named phases added up to more than the request (phases that
        ran concurrently, or clock anomalies): their overhead was recorded as 0."""
        return f"{by('sum', self._by('service'), rate(OVERHEAD_CLAMPED, w, *self._m(svc)))} / {self.throughput(w, svc)}"

    def unclosed_share(self, w: str, svc: MatcherText = "") -> str:
        """Share of each ``service``'s requests whose response the WSGI server dropped without closing it: each was
        recorded as it stood when dropped."""
        return (f"{by('sum', self._by('service'), rate(UNCLOSED_RESPONSES, w, *self._m(svc)))}"
                f" / {self.throughput(w, svc)}")

    # --- realised model quality ---------------------------------------------------------------------------
    def quality_gauge(self, gauge: str, labels: tuple[str, ...] = ("model", "metric")) -> str:
        """The latest realised-quality gauge per model (one exporter per model is expected: max over instances
        and scopes; ``match`` narrows it to one cluster)."""
        return by("max", labels, series(metric(gauge), *self._m()))
