"""The metric contract: every metric aiwatch exports, in one place.

Nothing else in the package creates metrics ad hoc. Alerts, dashboards, the console and docs/metrics.md use the
names defined here, and tests check that they agree.

Two kinds of metric live here:

* *direct* metrics (``collector=False``) are prometheus_client objects created by :class:`Metrics` on an
  injectable :class:`~prometheus_client.CollectorRegistry`;
* *collected* metrics (``collector=True``) are built fresh at scrape time by a custom collector (the GPU poller),
  which takes their name, help and labels from the :data:`CONTRACT` entry so the contract stays the single source.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from aiwatch.metrics import Metrics
    >>> m = Metrics(CollectorRegistry())
    >>> m.instrumentation_errors.labels(component="docs").inc()
    >>> m.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "docs"})
    1.0
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.utils import floatToGoString

from aiwatch.deferred import DeferredWork, RunDeferredOnScrape, new_queue
from aiwatch.flags import flag
from aiwatch.forksafe import at_fork_in_child, renew_at_fork
from aiwatch.safety import record_error
from aiwatch.utf8 import text_or_value

MetricKind = Literal["counter", "gauge", "histogram"]

#: Inference latencies run from sub-millisecond (a cached prediction) to tens of seconds (a long generation).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
#: Items per model call: powers of two up to the largest batch a GPU server typically forms.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Feature-store lookups are fast: 50 µs to 1 s.
LOOKUP_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

#: Event loop delay: a healthy loop runs its timers within a millisecond; a starved one seconds late.
EVENT_LOOP_DELAY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: Payload sizes: powers of four from 64 bytes to 1 GiB (a feature vector, an embedding batch, an image tensor).
BYTES_BUCKETS: tuple[float, ...] = tuple(float(64 * 4**i) for i in range(13))
#: OpenTelemetry's recommended buckets for ``gen_ai.server.time_to_first_token`` (seconds).
TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: OpenTelemetry's recommended buckets for ``gen_ai.server.time_per_output_token`` (seconds).
TIME_PER_OUTPUT_TOKEN_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
#: OpenTelemetry's recommended buckets for ``gen_ai.client.token.usage`` (tokens per request and type).
TOKEN_USAGE_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(14))

GPU_LABELS: tuple[str, ...] = ("gpu", "uuid", "name", "mig_gi", "mig_ci")
"""GPU metrics carry the device index, UUID and product name; MIG instances add their GPU- and compute-instance
ids (empty strings on a whole, non-MIG GPU, which Prometheus treats as absent labels)."""


@dataclass(frozen=True)
class MetricSpec:
    """One row of the contract."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] | None = None
    collector: bool = False
    #: How a gauge is aggregated across processes in prometheus_client multiprocess mode.
    multiprocess_mode: str = "all"
    #: What a gauge's series reads after :meth:`Metrics.remove` in multiprocess mode, where prometheus_client cannot
    #: take it out of the sample files: 0 for a flag, count or share; NaN for a statistic (no rule fires on it); +Inf
    #: for a ``livemin`` timestamp (the other processes' minimum wins, and no age computed from it is positive).
    removed_value: float = 0.0


#: The ``component`` values of ``aiwatch_instrumentation_errors_total``, each created at 0 with a registry's
#: :class:`Metrics`. A series born at its first error hides that first burst from ``increase()`` (Prometheus has no
#: earlier sample to count it from), so AiwatchInstrumentationErrors missed a component that failed once after a
#: start. ``tests/test_package.py`` checks that every component aiwatch records under is listed.
ERROR_COMPONENTS: tuple[str, ...] = (
    "batcher", "cache", "cardinality", "client", "degraded", "drift", "event_loop", "genai", "gpu", "grpc_client",
    "grpc_server", "grpc_server_timing", "grpc_server_trailer", "hook", "instrument", "metrics", "multiprocess",
    "phase", "prediction_log", "queue", "route", "server_timing", "server_timing_header", "tracing",
)
#: The components that count a Server-Timing header or trailer cut to its size cap, not a failure: the response went
#: out and every metric was kept, so AiwatchInstrumentationErrors does not fire on them (an app that opens 40 phases
#: would cut every response).
SIZE_CAP_COMPONENTS: tuple[str, ...] = ("grpc_server_trailer", "server_timing_header")
#: The ``result`` values of ``aiwatch_prediction_log_recovery_files_total``: what a ParquetSink did with each journal
#: or file it recovered, one result per file (the sink counts these, the console shows them in this order).
RECOVERY_RESULTS: tuple[str, ...] = ("recovered", "torn", "set_aside", "orphan_removed", "failed")
#: The results that leave rows in no finished file (dropped, kept for a person, or left for the next start): what
#: AiwatchPredictionLogRecoveryIncomplete fires on and ``..._recovery_last_timestamp_seconds`` is stamped for.
UNFINISHED_RECOVERY_RESULTS: tuple[str, ...] = ("torn", "set_aside", "failed")


CONTRACT: tuple[MetricSpec, ...] = (
    # --- requests and the latency split -------------------------------------------------------------------
    MetricSpec("aiwatch_request_duration_seconds", "histogram",
               "Server time per request, from the first byte in to the last byte out. 'traffic_class' is the "
               "request's class (realtime, batch...: its aiwatch-traffic-class header or a route rule).",
               ("service", "route", "method", "status", "traffic_class"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_phase_duration_seconds", "histogram",
               "Time per request spent in each phase; 'inference' is the model's own latency and 'overhead' is the "
               "request time outside every named phase. 'model_version' is the version set_model() gave the "
               "request's model (empty when none).",
               ("service", "model", "model_version", "phase"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_background_phase_duration_seconds", "histogram",
               "Time of each phase recorded outside any request (a background worker, a batch job, a startup "
               "step), for the service of the last instrument() call. Kept out of aiwatch_phase_duration_seconds, "
               "whose phases add up to the requests' time: the latency split and the phase alerts read that one.",
               ("service", "model", "phase"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_network_duration_seconds", "histogram",
               "Network and transport time seen by a caller: client-observed time minus the time the server "
               "reported back (Server-Timing header or gRPC trailing metadata). 'peer' is the name the server "
               "reported (its service), else the one name that answered the same route at that address before, "
               "else its address; 'phase' is the caller's phase the call was made in.",
               ("service", "peer", "phase"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_client_request_duration_seconds", "histogram",
               "Client-observed time per outgoing call, by peer, route, status (including client-side statuses "
               "such as DEADLINE_EXCEEDED) and the caller's phase the call was made in.",
               ("service", "peer", "route", "status", "phase"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_network_clamped_total", "counter",
               "Calls whose server-reported time exceeded the client-observed time (clock granularity or a bogus "
               "server report); their network time was recorded as 0.", ("service", "peer")),
    MetricSpec("aiwatch_slow_requests_total", "counter",
               "Requests slower than the service's slow threshold (aiwatch_slow_threshold_seconds).", ("service",)),
    MetricSpec("aiwatch_slow_phase_seconds_total", "counter",
               "Seconds of each phase (overhead included) counted only in requests slower than the slow threshold: "
               "the tail's time, split by phase so that it adds up.", ("service", "phase"), "seconds"),
    MetricSpec("aiwatch_slow_call_seconds_total", "counter",
               "Client-observed seconds of outgoing calls made by requests slower than the slow threshold, by peer "
               "and the caller's phase.", ("service", "peer", "phase"), "seconds"),
    MetricSpec("aiwatch_slow_network_seconds_total", "counter",
               "Network seconds (client time minus the server's reported time) of outgoing calls made by requests "
               "slower than the slow threshold.", ("service", "peer", "phase"), "seconds"),
    # livemax: the live workers' threshold; with max, the workers gone before a reload or an upgrade that changed
    # it (gunicorn HUP, USR2) kept serving the old one until the next cold start
    MetricSpec("aiwatch_slow_threshold_seconds", "gauge",
               "The request time above which a request counts as slow (the latency objective).", ("service",),
               "seconds", multiprocess_mode="livemax"),
    MetricSpec("aiwatch_requests_in_flight", "gauge", "Requests being served right now.",
               ("service",), multiprocess_mode="livesum"),
    MetricSpec("aiwatch_event_loop_delay_seconds", "histogram",
               "How late the asyncio event loop serving requests ran a timer callback that was due, sampled every "
               "AIWATCH_EVENT_LOOP_INTERVAL seconds (ASGI and grpc.aio servers). A starved loop (CPU-bound work on "
               "it, a saturated CPU) holds requests in the socket before the app sees them and responses before "
               "they are read: time callers count as network time.",
               ("service",), "seconds", EVENT_LOOP_DELAY_BUCKETS),
    MetricSpec("aiwatch_event_loop_sampled_seconds_total", "counter",
               "Wall-clock seconds the event loop delay sampler watched its loop: each sample adds the time since "
               "the previous one ran (from the sampler's start for the first). Its rate is the number of loops "
               "watched, so rate(aiwatch_event_loop_delay_seconds_sum) over it is the share of the time a loop "
               "stood still: exact for one loop, the mean over the loops a scrape target merges (multiprocess "
               "mode).", ("service",), "seconds"),
    MetricSpec("aiwatch_event_loop_last_sample_timestamp_seconds", "gauge",
               "Unix time (wall clock) at which the event loop delay sampler last took a sample, or started. It "
               "stops moving while the loop stands still. A target that merges several processes (multiprocess "
               "mode) serves the stalest of its live processes' loops, so one loop blocked for good shows here "
               "even while the other processes keep aiwatch_event_loop_sampled_seconds_total growing. 0 (a "
               "series made but not yet set) means no value, +Inf no loop sampled for it any more (its sampler "
               "stopped or dropped it).", ("service",), "seconds",
               multiprocess_mode="livemin", removed_value=math.inf),
    MetricSpec("aiwatch_event_loop_stalled_ratio", "gauge",
               "Share of the last 5 minutes the event loop stood still in stalls that ended in them, computed by "
               "its sampler (its delays' sum over the time it watched, updated at each sample: a stall counts in "
               "full at the sample that ends it). A target that merges several processes "
               "(multiprocess mode) serves the largest of its live processes', where the share read from "
               "aiwatch_event_loop_delay_seconds_sum and aiwatch_event_loop_sampled_seconds_total is their mean: "
               "one worker stalled much of the time shows undiluted.", ("service",), "ratio",
               multiprocess_mode="livemax"),
    MetricSpec("aiwatch_rpc_messages_total", "counter",
               "Messages sent and received by streaming RPCs.", ("service", "route", "direction")),
    # --- payloads and bandwidth --------------------------------------------------------------------------
    MetricSpec("aiwatch_request_size_bytes", "histogram",
               "HTTP request body size per request (Content-Length, else the bytes received).",
               ("service", "route", "method"), "bytes", BYTES_BUCKETS),
    MetricSpec("aiwatch_response_size_bytes", "histogram", "HTTP response body size per request (bytes sent).",
               ("service", "route", "method"), "bytes", BYTES_BUCKETS),
    MetricSpec("aiwatch_rpc_message_size_bytes", "histogram",
               "Serialized size of each gRPC message a server received (request) or sent (response).",
               ("service", "route", "direction"), "bytes", BYTES_BUCKETS),
    MetricSpec("aiwatch_client_bytes_total", "counter",
               "Bytes outgoing calls sent to and received from each peer (bodies, or serialized gRPC messages); "
               "divided by the network seconds to the peer it is the link's effective throughput.",
               ("service", "peer", "direction"), "bytes"),
    # --- streamed responses and generative AI -------------------------------------------------------------
    MetricSpec("aiwatch_time_to_first_chunk_seconds", "histogram",
               "Streamed responses (two body chunks or gRPC messages or more): time from the request's start to "
               "the first chunk of the body, not the headers.", ("service", "route"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_time_between_chunks_seconds", "histogram",
               "Streamed responses: time between one body chunk (or gRPC message) and the next.",
               ("service", "route"), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_gen_ai_time_to_first_token_seconds", "histogram",
               "OpenTelemetry's gen_ai.server.time_to_first_token: time from the request's start to its first "
               "output token (aiwatch.record_tokens), for successful responses.",
               ("service", "model", "traffic_class"), "seconds", TIME_TO_FIRST_TOKEN_BUCKETS),
    MetricSpec("aiwatch_gen_ai_time_per_output_token_seconds", "histogram",
               "OpenTelemetry's gen_ai.server.time_per_output_token: time per output token generated after the "
               "first one, per successful response.",
               ("service", "model", "traffic_class"), "seconds", TIME_PER_OUTPUT_TOKEN_BUCKETS),
    MetricSpec("aiwatch_gen_ai_token_usage_tokens", "histogram",
               "OpenTelemetry's gen_ai.client.token.usage, recorded by the server: tokens per request by "
               "token_type (gen_ai.token.type: input or output).",
               ("service", "model", "token_type"), "tokens", TOKEN_USAGE_BUCKETS),
    MetricSpec("aiwatch_degraded_responses_total", "counter",
               "Responses served by a fallback (aiwatch.degraded: a cached prediction, a smaller model, a default "
               "answer), by the model and the reason.", ("service", "model", "reason")),
    MetricSpec("aiwatch_model_version_errors_total", "counter",
               "Requests with an error status whose model had a version (set_model(model, version)); divided by "
               "the rate of that version's overhead phase (one per request), the version's error share, to compare "
               "a canary with the stable version.", ("service", "model", "model_version")),
    MetricSpec("aiwatch_overhead_clamped_total", "counter",
               "Requests whose named phases added up to more than the request's total time (concurrent phases or "
               "clock anomalies); their overhead was recorded as 0.", ("service",)),
    MetricSpec("aiwatch_unclosed_responses_total", "counter",
               "WSGI responses the server dropped without closing them (PEP 3333 says it must; werkzeug's "
               "development server does so when the client resets the connection): each was recorded as it stood "
               "when dropped, at the next request or scrape.", ("service",)),
    # --- queues and batching ------------------------------------------------------------------------------
    MetricSpec("aiwatch_queue_depth", "gauge", "Items waiting in a queue in front of a model.", ("queue",),
               multiprocess_mode="livesum"),
    MetricSpec("aiwatch_queue_wait_seconds", "histogram", "Time an item waited in a queue, enqueue to dequeue.",
               ("queue",), "seconds", LATENCY_BUCKETS),
    MetricSpec("aiwatch_batch_size", "histogram", "Items per model call.", ("model",), "", BATCH_SIZE_BUCKETS),
    # --- feature cache ------------------------------------------------------------------------------------
    MetricSpec("aiwatch_feature_cache_requests_total", "counter",
               "Feature-store cache lookups by result (hit, miss or error).", ("cache", "result")),
    MetricSpec("aiwatch_feature_cache_lookup_duration_seconds", "histogram",
               "Feature-store cache lookup latency by result.", ("cache", "result"), "seconds", LOOKUP_BUCKETS),
    # --- drift --------------------------------------------------------------------------------------------
    MetricSpec("aiwatch_drift_score", "gauge", "Latest drift statistic of a feature against its reference.",
               ("model", "feature", "test"), multiprocess_mode="mostrecent", removed_value=math.nan),
    MetricSpec("aiwatch_drift_pvalue", "gauge",
               "Latest p-value of a drift test (absent for tests without one, such as PSI).",
               ("model", "feature", "test"), multiprocess_mode="mostrecent", removed_value=math.nan),
    MetricSpec("aiwatch_drift_detected", "gauge", "1 if the latest evaluation found drift in the feature, else 0.",
               ("model", "feature", "test"), multiprocess_mode="mostrecent"),
    MetricSpec("aiwatch_drift_window_samples", "gauge",
               "Live values in the window used by the latest drift evaluation.", ("model", "feature"),
               multiprocess_mode="mostrecent"),
    # ``reference`` (the feature's reference_id, aiwatch.drift.features): only counts binned by the same edges,
    # against the same shares, are added up. During a re-baselining rollout the replicas on the old profile and those
    # on the new one exported the same bin indices (quantile bins: the same 0.1 shares), and the fleet PSI of traffic
    # matching the new profile read 0.21 where its own was 0.002.
    MetricSpec("aiwatch_feature_bin_total", "counter",
               "Live values counted into the reference profile's bins (the mergeable fleet drift sketch).",
               ("model", "feature", "bin", "reference")),
    # NaN once removed: in multiprocess mode the old reference's counts stay in the window after a reload, and a 0
    # share there (every bin) made its PSI large
    MetricSpec("aiwatch_feature_reference_ratio", "gauge", "The reference profile's share of each bin.",
               ("model", "feature", "bin", "reference"), multiprocess_mode="mostrecent", removed_value=math.nan),
    # NaN once removed (a profile reloaded without the feature): a 0 there read as "never missing", and the feature's
    # old missing counts, still in the window, fired AiwatchFeatureMissing
    MetricSpec("aiwatch_feature_reference_missing_ratio", "gauge",
               "The reference profile's share of missing values of each feature: missing / (values + missing); "
               "NaN for a feature whose reference had neither.",
               ("model", "feature"), multiprocess_mode="mostrecent", removed_value=math.nan),
    MetricSpec("aiwatch_feature_missing_total", "counter",
               "Live feature values that were missing (None, NaN or inf) and excluded from drift.",
               ("model", "feature")),
    MetricSpec("aiwatch_feature_invalid_total", "counter",
               "Live feature values rejected by drift monitoring, by reason (wrong_type, missing_feature, "
               "unknown_feature).", ("model", "feature", "reason")),
    # --- the feedback path: prediction log and realised quality ----------------------------------------------
    MetricSpec("aiwatch_prediction_log_records_total", "counter",
               "Prediction-log records by what became of them: sampled_out (not kept by the sampling rate), queued, "
               "dropped (the queue was full or the log closed; the request was not slowed), written (handed to the "
               "sink), failed (the sink or the record raised), lost (written, then lost by the sink: a Parquet file "
               "that could not be completed, as when the disk filled, without a journal), recoverable (written, then "
               "its Parquet file could not be completed, but kept in its journal: the sink makes them into a file "
               "once the disk has room, a minute on, or the next ParquetSink to start on the directory does, and "
               "counts them in "
               "aiwatch_prediction_log_recovered_records_total).", ("log", "result")),
    MetricSpec("aiwatch_prediction_log_recovery_files_total", "counter",
               "Files of prediction-log writers that died, found by a ParquetSink when it started, and the journals "
               "it kept of its own files that failed (a full disk), made into files later, by what it did with each: "
               "recovered (a journal made into the finished file it was for), torn (the same after dropping a "
               "batch torn by the crash, and every byte after it; no file when no whole batch came before it; or an "
               "empty journal, deleted), set_aside (a journal whose data Parquet refuses, or damaged rather than "
               "torn: a batch not valid, the whole batches before it made into the file; kept as "
               ".journal.unrecoverable), "
               "orphan_removed (an unreadable .inprogress file without a journal, or an "
               "empty .journal.new with its .inprogress file, of a writer killed before it locked it, deleted), "
               "failed (left for the next start, unchanged: an I/O error, or another failure that is not its "
               "data's, such as memory short). A start's are counted when the log is made, before "
               "its first scrape: read the value, not increase().", ("log", "result")),
    MetricSpec("aiwatch_prediction_log_recovery_last_timestamp_seconds", "gauge",
               "Unix time at which a ParquetSink's recovery last counted a journal torn, set_aside or failed in "
               "aiwatch_prediction_log_recovery_files_total (at its start, when the log is made, or when a kept "
               "journal was retried later); no series until one is. AiwatchPredictionLogRecoveryIncomplete fires "
               "for a while after it changes.", ("log", "result"), "seconds", multiprocess_mode="max"),
    MetricSpec("aiwatch_prediction_log_recovered_records_total", "counter",
               "Prediction-log records a ParquetSink made into finished files from journals: when it started, those "
               "of writers that died (the process that died had counted them written); later, those it kept of its "
               "own files that failed (counted recoverable before). A start's are counted when the log is made, "
               "before its first scrape: read the value, not increase().", ("log",)),
    MetricSpec("aiwatch_prediction_log_forced_rotations_total", "counter",
               "Prediction-log files a ParquetSink completed early because max_open_files of them were open and a "
               "batch needed another (a model or hour with no open file): smaller files than max_rows and "
               "max_file_seconds make. A steady rate means more models are written at once than the cap: raise "
               "max_open_files or the process's descriptor limit (ulimit -n).", ("log",)),
    MetricSpec("aiwatch_model_quality", "gauge",
               "Realised quality of a model in its latest labelled window: delayed labels joined to the prediction "
               "log (accuracy, precision, recall for a classifier; mae, rmse for a regressor).", ("model", "metric"),
               multiprocess_mode="mostrecent"),
    MetricSpec("aiwatch_model_quality_objective", "gauge",
               "The bound aiwatch_model_quality is held to: a floor for accuracy, precision and recall, a ceiling for "
               "mae and rmse (AiwatchModelQualityLow fires on the wrong side).", ("model", "metric"),
               multiprocess_mode="mostrecent"),
    MetricSpec("aiwatch_model_quality_labelled", "gauge",
               "Labelled requests aiwatch_model_quality was computed on, in its window: those logged with a label "
               "and a prediction that could be scored.", ("model",),
               multiprocess_mode="mostrecent"),
    # --- aiwatch itself -----------------------------------------------------------------------------------
    MetricSpec("aiwatch_instrumentation_errors_total", "counter",
               "Failures inside aiwatch that were swallowed instead of breaking the app. Every component's series "
               "exists from the start, at 0.", ("component",)),
    MetricSpec("aiwatch_label_overflow_total", "counter",
               "Label values folded into the overflow value by the cardinality guard.", ("label",)),
    # --- GPU (built at scrape time from the NVML poller's last snapshot) -----------------------------------
    MetricSpec("aiwatch_gpu_up", "gauge", "1 if the GPU answered the latest NVML poll, 0 if it did not.",
               GPU_LABELS, collector=True),
    MetricSpec("aiwatch_gpu_nvml_up", "gauge",
               "1 if NVML is initialised and polling, 0 if no driver or GPU was found, the first poll has not "
               "finished, an NVML call hung, or the poller was stopped.", (), collector=True),
    MetricSpec("aiwatch_gpu_utilization_ratio", "gauge", "Share of time a kernel was running (0-1).",
               GPU_LABELS, collector=True),
    MetricSpec("aiwatch_gpu_memory_utilization_ratio", "gauge",
               "Share of time device memory was being read or written (0-1).", GPU_LABELS, collector=True),
    MetricSpec("aiwatch_gpu_memory_used_bytes", "gauge", "Device memory in use.", GPU_LABELS, "bytes",
               collector=True),
    MetricSpec("aiwatch_gpu_memory_total_bytes", "gauge", "Device memory installed.", GPU_LABELS, "bytes",
               collector=True),
    MetricSpec("aiwatch_gpu_memory_reserved_bytes", "gauge", "Device memory reserved by the driver.", GPU_LABELS,
               "bytes", collector=True),
    MetricSpec("aiwatch_gpu_power_watts", "gauge", "Power draw.", GPU_LABELS, "watts", collector=True),
    MetricSpec("aiwatch_gpu_energy_joules_total", "counter", "Energy consumed since the driver loaded.",
               GPU_LABELS, "joules", collector=True),
    MetricSpec("aiwatch_gpu_temperature_celsius", "gauge", "GPU core temperature.", GPU_LABELS, "celsius",
               collector=True),
    MetricSpec("aiwatch_gpu_sm_clock_hertz", "gauge", "Streaming-multiprocessor clock.", GPU_LABELS, "hertz",
               collector=True),
    MetricSpec("aiwatch_gpu_memory_clock_hertz", "gauge", "Memory clock.", GPU_LABELS, "hertz", collector=True),
    MetricSpec("aiwatch_gpu_throttle_reason", "gauge",
               "1 for each clock throttle reason active on the GPU.", (*GPU_LABELS, "reason"), collector=True),
    MetricSpec("aiwatch_gpu_xid_errors_total", "counter", "XID errors reported by the driver since polling began.",
               GPU_LABELS, collector=True),
    MetricSpec("aiwatch_gpu_last_poll_timestamp_seconds", "gauge",
               "Unix time of the NVML poller's latest poll (a stale value means the poller is stuck).", (),
               "seconds", collector=True),
)  # fmt: skip

SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in CONTRACT}

#: the histograms whose observations of a request (or an outgoing call) in a sampled trace carry its id as exemplar
#: (label ``trace_id``, 32 lowercase hex digits), exposed in OpenMetrics only
EXEMPLAR_HISTOGRAMS: tuple[str, ...] = ("aiwatch_request_duration_seconds", "aiwatch_phase_duration_seconds",
                                        "aiwatch_gen_ai_time_to_first_token_seconds",
                                        "aiwatch_gen_ai_time_per_output_token_seconds",
                                        "aiwatch_time_to_first_chunk_seconds", "aiwatch_time_between_chunks_seconds",
                                        "aiwatch_client_request_duration_seconds", "aiwatch_network_duration_seconds")


def metric_names() -> set[str]:
    """Every sample-family name in the contract, as used in PromQL (histograms' base name)."""
    return set(SPECS)


def exposed_sample_names() -> set[str]:
    """Every sample name Prometheus can store for the contract: histogram ``_bucket``/``_sum``/``_count``,
    counter ``_total`` and ``_created`` variants included."""
    names: set[str] = set()
    for spec in CONTRACT:
        if spec.kind == "histogram":
            names.update(f"{spec.name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
        elif spec.kind == "counter":
            base = spec.name.removesuffix("_total")
            names.update({f"{base}_total", f"{base}_created"})
        else:
            names.add(spec.name)
    return names


# In-process metrics keep their values in this process's memory also in prometheus_client's multiprocess mode, where a
# plain metric writes them to PROMETHEUS_MULTIPROC_DIR for every worker's /metrics to merge. prometheus_client picks
# the value class for every metric at once; _metric_init is where each metric makes its values.
def _in_memory(typ: str, name: str, sample: str, labelnames: Sequence[str], labelvalues: Sequence[str],
               documentation: str) -> Any:
    return values.MutexValue(typ, name, sample, labelnames, labelvalues, documentation)  # type: ignore[no-untyped-call]


class _InProcessCounter(Counter):
    def _metric_init(self) -> None:
        self._value = _in_memory(self._type, self._name, self._name + "_total", self._labelnames, self._labelvalues,
                                 self._documentation)
        self._created = time.time()


class _InProcessGauge(Gauge):
    def _metric_init(self) -> None:
        self._value = _in_memory(self._type, self._name, self._name, self._labelnames, self._labelvalues,
                                 self._documentation)


class _InProcessHistogram(Histogram):
    def _metric_init(self) -> None:
        self._created = time.time()
        self._sum = _in_memory(self._type, self._name, self._name + "_sum", self._labelnames, self._labelvalues,
                               self._documentation)
        bounds = [floatToGoString(b) for b in self._upper_bounds]  # type: ignore[no-untyped-call]
        self._buckets = [_in_memory(self._type, self._name, self._name + "_bucket", (*self._labelnames, "le"),
                                    (*self._labelvalues, bound), self._documentation) for bound in bounds]


def _build(spec: MetricSpec, registry: CollectorRegistry | None, in_process: bool = False) -> Any:
    metric = _new_metric(spec, registry, in_process)
    _built.add(metric)
    return metric


def _new_metric(spec: MetricSpec, registry: CollectorRegistry | None, in_process: bool) -> Any:
    # prometheus_client appends the unit itself when unit= is given; our names already end in the unit.
    if spec.kind == "histogram":
        histogram = _InProcessHistogram if in_process else Histogram
        return histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets or LATENCY_BUCKETS)
    if spec.kind == "counter":
        counter = _InProcessCounter if in_process else Counter
        return counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)
    gauge = _InProcessGauge if in_process else Gauge
    return gauge(spec.name, spec.help, spec.labels, registry=registry,
                 multiprocess_mode=spec.multiprocess_mode)  # type: ignore[arg-type]


#: The metric objects aiwatch made in this process. prometheus_client makes none of its locks new at a fork, and a
#: thread of gunicorn's master (a drift monitor started at import evaluates there) may hold one when a worker is
#: forked: each metric's lock (its series), each in-memory value's, and in multiprocess mode the one lock of every
#: value of the process. The child makes those new (``_renew_prometheus_locks``).
_built: weakref.WeakSet[Any] = weakref.WeakSet()


def _renew_prometheus_locks() -> None:
    # It runs in every forked child (a subprocess with preexec_fn, a multiprocessing fork included), on every series,
    # so in one loop over named attributes, and a lock is made new only where held at the fork (by a thread the child
    # does not have; a free one stays free): a new lock for each of 20k series, found by a scan of their attributes,
    # cost about 50 ms per fork, this 7 ms.
    _renew_multiprocess_lock()
    for metric in list(_built):
        _renew_if_held(metric)
        for series in (metric, *getattr(metric, "_metrics", {}).values()):
            # a counter's or gauge's in-memory value, else a histogram's sum and buckets
            attributes = vars(series)
            value = attributes.get("_value")
            found = (value,) if value is not None else (attributes.get("_sum"), *attributes.get("_buckets", ()))
            for value in found:
                if isinstance(value, values.MutexValue) and value._lock.locked():
                    value._lock = threading.Lock()


def _renew_if_held(owner: Any) -> None:
    lock = getattr(owner, "_lock", None)
    if lock is not None and lock.locked():
        owner._lock = threading.Lock()


def _renew_multiprocess_lock() -> None:
    """Make new the lock that prometheus_client's multiprocess values share: a variable of the function that made
    their class (``values.MultiProcessValue``), which every method of the class reads from one closure cell."""
    value_class: Any = values.ValueClass
    inc: Any = getattr(value_class, "inc", None)
    code = getattr(inc, "__code__", None)
    if not _file_backed() or code is None or "lock" not in code.co_freevars:
        return
    inc.__closure__[code.co_freevars.index("lock")].cell_contents = threading.Lock()


at_fork_in_child(_renew_prometheus_locks)


def _file_backed() -> bool:
    """Whether prometheus_client keeps metric values in ``PROMETHEUS_MULTIPROC_DIR`` (its multiprocess mode, picked
    at its import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


#: In multiprocess mode, the one metric object per contract name of this process, on no registry of its own: every
#: :class:`Metrics` of the process registers it on its registry. Each value object keeps its value in memory and
#: writes it over its key in the process's sample file, so two objects for one series (two ``Metrics`` on two
#: registries) overwrote each other's counts.
_file_backed_metrics: dict[str, Any] = {}
_file_backed_lock = threading.Lock()


def _renew_file_backed_lock() -> None:
    global _file_backed_lock
    _file_backed_lock = threading.Lock()


at_fork_in_child(_renew_file_backed_lock)


def _make_sample_directory() -> Exception | None:
    """Make ``PROMETHEUS_MULTIPROC_DIR`` when it is missing, as :func:`aiwatch.gunicorn.on_starting` does; the
    error when it cannot be made, or when it is no directory this process can write to (a ValueError saying so,
    :func:`~aiwatch.exposition.multiprocess_directory_problem`). prometheus_client makes each process's sample file
    there at a value's first use, and a directory not made yet (``uvicorn --workers``, which runs no hook; a volume
    not mounted) raised its FileNotFoundError out of ``aiwatch.instrument()``, failing the app's start-up."""
    from aiwatch.exposition import multiprocess_dir, multiprocess_directory_problem

    directory = multiprocess_dir()
    if not directory:  # set but empty: prometheus_client writes into the working directory
        return None
    problem = multiprocess_directory_problem()
    if problem is not None:
        return ValueError(problem)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return exc
    return None


def _make(spec: MetricSpec, registry: CollectorRegistry, in_process: bool) -> Any:
    if not _file_backed() or in_process:
        return _build(spec, registry, in_process)
    with _file_backed_lock:
        metric = _file_backed_metrics.get(spec.name)
        if metric is None:
            metric = _file_backed_metrics[spec.name] = _build(spec, None)
    registry.register(metric)
    return metric


class _Unavailable:
    """Stands in for a metric that could not be created (its name already taken on the registry, a registry that
    refuses it): every label set is this object, and every update does nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _Unavailable:
        return self

    def remove(self, *args: Any) -> None:
        pass

    def inc(self, amount: float = 1.0, exemplar: Any = None) -> None:
        pass

    def dec(self, amount: float = 1.0) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float, exemplar: Any = None) -> None:
        pass


class Metrics:
    """The direct metrics of the contract, registered on one registry.

    Attributes are named after the metric without the ``aiwatch_`` prefix and unit suffix. A metric that cannot be
    created (its name already registered by someone else, a registry that raises) never fails the app at start-up:
    it records nothing, :attr:`unavailable` says why, and the failure is counted in
    ``aiwatch_instrumentation_errors_total{component="metrics"}`` (when that one exists) and logged.

    In prometheus_client's multiprocess mode every ``Metrics`` of a process, whatever its registry, holds the same
    metric objects (registered on each registry): the process has one sample file, and two objects for one series
    would each write their own count over the other's.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, in_process: bool = False) -> None:
        """``in_process``: every metric keeps its values in this process's memory also in prometheus_client's
        multiprocess mode, for a registry that only its own process serves or writes out (the GPU server's error
        counter, a CLI command's gauges): written to ``PROMETHEUS_MULTIPROC_DIR``, they would be served by every
        worker's merged ``/metrics``."""
        in_process = flag(in_process, "in_process")
        self.registry: CollectorRegistry = registry if registry is not None else REGISTRY
        #: contract name -> why that metric could not be created (it then records nothing)
        self.unavailable: dict[str, str] = {}
        #: recording that finalizers left for later (see :mod:`aiwatch.deferred`): done by the next call of an
        #: instrumentation using these metrics, or by the next scrape of the registry
        self.deferred: deque[DeferredWork] = new_queue(self)
        directory_failed = _make_sample_directory() if _file_backed() and not in_process else None
        hook_refused = None
        try:  # before the metrics: the scrape that records what was left shows it
            self.registry.register(RunDeferredOnScrape(self))
        except Exception as exc:  # a registry that refuses collectors: the next call still records it
            hook_refused = exc
        m: dict[str, Any] = {}
        for spec in CONTRACT:
            if spec.collector:
                continue
            try:
                m[spec.name] = _make(spec, self.registry, in_process)
            except Exception as exc:
                m[spec.name] = _Unavailable()
                self.unavailable[spec.name] = repr(exc)
        self.request_duration: Histogram = m["aiwatch_request_duration_seconds"]
        self.phase_duration: Histogram = m["aiwatch_phase_duration_seconds"]
        self.background_phase_duration: Histogram = m["aiwatch_background_phase_duration_seconds"]
        self.network_duration: Histogram = m["aiwatch_network_duration_seconds"]
        self.client_request_duration: Histogram = m["aiwatch_client_request_duration_seconds"]
        self.network_clamped: Counter = m["aiwatch_network_clamped_total"]
        self.requests_in_flight: Gauge = m["aiwatch_requests_in_flight"]
        self.slow_requests: Counter = m["aiwatch_slow_requests_total"]
        self.slow_phase_seconds: Counter = m["aiwatch_slow_phase_seconds_total"]
        self.slow_call_seconds: Counter = m["aiwatch_slow_call_seconds_total"]
        self.slow_network_seconds: Counter = m["aiwatch_slow_network_seconds_total"]
        self.slow_threshold: Gauge = m["aiwatch_slow_threshold_seconds"]
        self.event_loop_delay: Histogram = m["aiwatch_event_loop_delay_seconds"]
        self.event_loop_sampled: Counter = m["aiwatch_event_loop_sampled_seconds_total"]
        self.event_loop_last_sample: Gauge = m["aiwatch_event_loop_last_sample_timestamp_seconds"]
        self.event_loop_stalled: Gauge = m["aiwatch_event_loop_stalled_ratio"]
        self.rpc_messages: Counter = m["aiwatch_rpc_messages_total"]
        self.overhead_clamped: Counter = m["aiwatch_overhead_clamped_total"]
        self.unclosed_responses: Counter = m["aiwatch_unclosed_responses_total"]
        self.request_size: Histogram = m["aiwatch_request_size_bytes"]
        self.response_size: Histogram = m["aiwatch_response_size_bytes"]
        self.rpc_message_size: Histogram = m["aiwatch_rpc_message_size_bytes"]
        self.client_bytes: Counter = m["aiwatch_client_bytes_total"]
        self.time_to_first_chunk: Histogram = m["aiwatch_time_to_first_chunk_seconds"]
        self.time_between_chunks: Histogram = m["aiwatch_time_between_chunks_seconds"]
        self.time_to_first_token: Histogram = m["aiwatch_gen_ai_time_to_first_token_seconds"]
        self.time_per_output_token: Histogram = m["aiwatch_gen_ai_time_per_output_token_seconds"]
        self.token_usage: Histogram = m["aiwatch_gen_ai_token_usage_tokens"]
        self.degraded_responses: Counter = m["aiwatch_degraded_responses_total"]
        self.model_version_errors: Counter = m["aiwatch_model_version_errors_total"]
        self.queue_depth: Gauge = m["aiwatch_queue_depth"]
        self.queue_wait: Histogram = m["aiwatch_queue_wait_seconds"]
        self.batch_size: Histogram = m["aiwatch_batch_size"]
        self.feature_cache_requests: Counter = m["aiwatch_feature_cache_requests_total"]
        self.feature_cache_lookup_duration: Histogram = m["aiwatch_feature_cache_lookup_duration_seconds"]
        self.drift_score: Gauge = m["aiwatch_drift_score"]
        self.drift_pvalue: Gauge = m["aiwatch_drift_pvalue"]
        self.drift_detected: Gauge = m["aiwatch_drift_detected"]
        self.drift_window_samples: Gauge = m["aiwatch_drift_window_samples"]
        self.feature_bin: Counter = m["aiwatch_feature_bin_total"]
        self.feature_reference_ratio: Gauge = m["aiwatch_feature_reference_ratio"]
        self.feature_reference_missing_ratio: Gauge = m["aiwatch_feature_reference_missing_ratio"]
        self.feature_missing: Counter = m["aiwatch_feature_missing_total"]
        self.feature_invalid: Counter = m["aiwatch_feature_invalid_total"]
        self.instrumentation_errors: Counter = m["aiwatch_instrumentation_errors_total"]
        self.label_overflow: Counter = m["aiwatch_label_overflow_total"]
        self.prediction_log_records: Counter = m["aiwatch_prediction_log_records_total"]
        self.prediction_log_recovery_files: Counter = m["aiwatch_prediction_log_recovery_files_total"]
        self.prediction_log_recovered_records: Counter = m["aiwatch_prediction_log_recovered_records_total"]
        self.prediction_log_recovery_last_timestamp: Gauge = m[
            "aiwatch_prediction_log_recovery_last_timestamp_seconds"]
        self.prediction_log_forced_rotations: Counter = m["aiwatch_prediction_log_forced_rotations_total"]
        self.model_quality: Gauge = m["aiwatch_model_quality"]
        self.model_quality_objective: Gauge = m["aiwatch_model_quality_objective"]
        self.model_quality_labelled: Gauge = m["aiwatch_model_quality_labelled"]
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._children_lock = threading.Lock()
        renew_at_fork(self)
        if "aiwatch_instrumentation_errors_total" not in self.unavailable:
            try:
                for component in ERROR_COMPONENTS:
                    self.child(self.instrumentation_errors, (component,))
            except Exception as exc:  # a sample file that cannot be made: counted in no file, but logged
                record_error("metrics", exc, self)
        if directory_failed is not None:
            record_error("multiprocess", directory_failed, self)
        if self.unavailable:
            listed = "; ".join(f"{name}: {reason}" for name, reason in self.unavailable.items())
            record_error("metrics", RuntimeError(f"{len(self.unavailable)} aiwatch metric(s) could not be created "
                                                 f"and record nothing: {listed}"), self)
        if hook_refused is not None:
            record_error("metrics", RuntimeError(f"the registry refused aiwatch's scrape hook ({hook_refused!r}): what "
                                                 "a dropped response leaves is recorded at the next call only"), self)

    def _renew_after_fork(self) -> None:
        self._children_lock = threading.Lock()
        self.deferred.clear()  # the parent's dropped requests: the parent records them

    def child(self, metric: Any, labels: Sequence[str]) -> Any:
        """``metric.labels(*labels)``, cached: the hot path skips prometheus_client's label validation and lock. A
        label value UTF-8 cannot encode (a lone surrogate) is written out as its escape: as it is, it made every
        later scrape of the registry fail."""
        key = (id(metric), tuple(labels))
        found = self._children.get(key)
        if found is None:
            found = self.labels(metric, labels)
            with self._children_lock:
                self._children[key] = found
        return found

    @staticmethod
    def labels(metric: Any, labels: Sequence[str]) -> Any:
        """``metric.labels(*labels)``, not cached (for a child that :meth:`remove` may take away again), each value
        one UTF-8 can encode, as :meth:`child` writes it."""
        return metric.labels(*map(text_or_value, labels))

    @staticmethod
    def remove(metric: Any, labels: Sequence[str]) -> None:
        """Remove the child :meth:`labels` gives for ``labels``, if there is one.

        In multiprocess mode prometheus_client cannot remove a series from the sample files, which every worker's
        ``/metrics`` merges: a gauge's series is first set to its :attr:`MetricSpec.removed_value` there (else its
        last value, a drift_detected 1, was served for ever); a counter or histogram keeps its counts."""
        values = tuple(map(text_or_value, labels))
        if _file_backed():
            _remove_file_backed(metric, values)
            return
        with contextlib.suppress(KeyError):
            metric.remove(*values)


def _remove_file_backed(metric: Any, values: tuple[str, ...]) -> None:
    """:meth:`Metrics.remove` in multiprocess mode, where prometheus_client's ``remove()`` only warns that it cannot
    take the series out of the file: a gauge's existing child is set to its removed value, then dropped from the
    metric's children (as ``remove()`` does). A child that does not exist is not made: it would add a series."""
    lock = getattr(metric, "_lock", None)
    if lock is None or not hasattr(metric, "_metrics"):  # not a prometheus_client metric (_Unavailable)
        return
    spec = SPECS.get(getattr(metric, "_name", ""))
    with lock:
        child = metric._metrics.pop(values, None)
        if child is not None and isinstance(metric, Gauge):
            child.set(spec.removed_value if spec is not None else 0.0)


_default: Metrics | None = None
_default_lock = threading.Lock()


def _renew_default_lock() -> None:
    global _default_lock
    _default_lock = threading.Lock()


at_fork_in_child(_renew_default_lock)


def default_metrics() -> Metrics:
    """The process-wide :class:`Metrics` on prometheus_client's global ``REGISTRY``, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Metrics(REGISTRY)
    return _default


def get_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """The :class:`Metrics` for ``registry``: the default one for ``None``/the global registry, else one cached
    per registry so several integrations sharing a registry share metric objects."""
    if registry is None or registry is REGISTRY:
        return default_metrics()
    with _default_lock:
        found = getattr(registry, _CACHED, None)
        if isinstance(found, Metrics) and found.registry is registry:
            return found
        found = _per_registry.get(id(registry))
        if found is None or found.registry is not registry:
            found = Metrics(registry)
            try:
                setattr(registry, _CACHED, found)
            except AttributeError:  # a registry type without attributes of its own: kept for the process's life
                _per_registry[id(registry)] = found
        return found


#: Where a registry's :class:`Metrics` is kept: on the registry, so that it lives as long as the registry does. A
#: process-wide table kept every registry ever given alive (a test suite, or an app with a registry per tenant or
#: per reload, grew without bound); a weak one would have made a second set of metrics, which the registry refuses.
_CACHED = "_aiwatch_metrics"
#: The :class:`Metrics` of registries that cannot hold :data:`_CACHED`, by ``id``.
_per_registry: dict[int, Metrics] = {}
