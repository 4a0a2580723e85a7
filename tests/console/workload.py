"""Test data for the console: a two-tier deployment, a "gateway" calling an instrumented "recommender", whose
traffic is recorded through aiwatch's real :class:`~aiwatch.timing.RequestRecorder` (synthetic clock values
instead of sleeps) and the gateway's calls through a real :class:`~aiwatch.client.ClientRecorder` reading the
recommender's Server-Timing value, plus queue, batch, cache and drift metrics written through
:class:`~aiwatch.metrics.Metrics`, served on a real HTTP ``/metrics`` endpoint.

GPUs: NVML cannot run here, so aiwatch's own :class:`~aiwatch.GpuCollector` polls the pynvml stand-in of
tests/signals/fake_pynvml.py once per :meth:`Workload.step`: only the NVML boundary is fake, the ``aiwatch_gpu_*``
families are the collector's.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from aiwatch.cardinality import guard_for
from aiwatch.client import ClientRecorder
from aiwatch.exposition import start_http_server
from aiwatch.feedback import PredictionLog
from aiwatch.feedback.parquet_sink import Recovery
from aiwatch.metrics import Metrics
from aiwatch.signals.gpu import GpuCollector
from aiwatch.timing import RequestRecorder
from tests.background import record_background_phase
from tests.servers import REPO, python_env
from tests.signals.fake_pynvml import FakeNVML

SERVICE = "recommender"
GATEWAY = "gateway"
"""The calling tier: its phases are features / inference_call (the hop to the recommender) / overhead, so its
``inference_call`` holds the recommender's whole request time plus the network."""
MODEL = "ranker"
REFERENCE = "4d3c61ed7249"  # the fleet sketch's reference label: one profile
STABLE, CANARY = "v1", "v2"
"""The ranker's two versions (``set_model(model, version)``): a quarter of the requests go to the canary."""
BATCH = "batch"
REQUEST_BYTES, RESPONSE_BYTES = 2_000, 48_000
"""What each gateway call to the recommender sends and receives (aiwatch_client_bytes_total)."""
CLAMPED_CALL = 2
"""The request of each step whose Server-Timing ``total`` the recommender reads 4 ms past the gateway's end of the call
(a total read on another clock): the gateway's client records that call's network time as 0 and counts it in
aiwatch_network_clamped_total, one call in a step's :data:`REQUESTS`."""
OVERLAPPED_REQUEST = 3
"""The request of each step whose phases add up to 100 ns more than the request's time (its end read on a coarser
clock): the recorder records its overhead as 0 and counts it in aiwatch_overhead_clamped_total. So little that each
service's phases still add up to its request time to a millionth."""
REQUESTS = 20
"""Requests per step (``--requests``)."""
BACKGROUND_PHASE, BACKGROUND_SECONDS = "reindex", (0.2, 0.3, 0.4)
"""The phase a background job in the recommender's process records outside any request, once per step, and its
lengths in turn (aiwatch_background_phase_duration_seconds): not request time."""
DEGRADED_REASON = "cached_prediction"
STARVED_LOOP, PROMPT_LOOP = (0.03, 0.045), (0.0002, 0.0009)
"""The range of the recommender's and the gateway's event loop delays (aiwatch_event_loop_delay_seconds)."""
LOOP_SAMPLES = 10
"""Event loop delay samples per service and step."""
LOOP_INTERVAL = 0.1
"""The interval the workload's loop samples stand for (aiwatch_event_loop_sampled_seconds_total grows by it and the
delay per sample): the recommender's loop stands still about 27% of the time, the gateway's under 1%."""
WORST_WORKER = {SERVICE: 0.6, GATEWAY: 0.005}
"""Each service's aiwatch_event_loop_stalled_ratio, as a merged multiprocess target serves it (its worst live
worker's share of the last 5 minutes, livemax): the recommender stands for one worker stalled 60% among several whose
mean is the ~27% above."""
LOG_NAME = "predictions"
"""The ``log`` label of the workload's prediction log."""
FAILING_BATCH = 3
"""The prediction log's sink fails every third batch (a fault at the sink boundary), so its records show as both
written and failed, and each failed batch is one of aiwatch's own errors (component ``prediction_log``)."""
LABEL_VALUES = 8
"""The bound of the registry's label guard (``max_label_values``): the workload's models, versions, phases and its
two routes fit, the raw paths of :data:`RAW_PATH` soon do not."""
RAW_PATH = "/items/{}"
"""A route the recommender records un-templated, a new value per step (the cardinality mistake the label guard is
for): once the guard is full, each one is folded into ``__overflow__`` and counted in ``aiwatch_label_overflow_total``.
Only the route changes: the request is one of the step's own, every answer by service stays the same."""


#: What the workload's sink hands its log at the start, as a ParquetSink does on a directory where writers that died
#: left journals (aiwatch_prediction_log_recovery_files_total, counted before the first scrape): two made into files,
#: one torn, one set aside, with the rows made into files.
MISSING_FEATURE = "session_length"
"""The input whose upstream broke: of its 20 rows each step, 12 carry None and 3 lack the key, a 75% missing share
against its reference profile's 2% (every feature's), past AiwatchFeatureMissing's 20 points, from well over its 200
values in the tests' 5 s window."""
MISSING_PER_STEP = {"values": 5, "none": 12, "absent": 3}
REFERENCE_MISSING = 0.02

RECOVERY_AT_START = {"recovered": 2, "torn": 1, "set_aside": 1, "orphan_removed": 0, "failed": 0}
RECOVERED_RECORDS = 40
#: the stand-in sink completes a file early every this many batches (aiwatch_prediction_log_forced_rotations_total)
FORCED_ROTATION_BATCHES = 5


class FlakySink:
    """A prediction-log sink that counts the rows it keeps and raises on every :data:`FAILING_BATCH`-th batch; at
    the start it reports :data:`RECOVERY_AT_START` (``take_recovery``, once, as a ParquetSink does)."""

    def __init__(self) -> None:
        self.batches = self.rows = self.forced_taken = 0
        self.recovery = Recovery(dict(RECOVERY_AT_START), RECOVERED_RECORDS)

    def take_recovery(self) -> Recovery:
        recovery, self.recovery = self.recovery, Recovery()
        return recovery

    def take_forced_rotations(self) -> int:
        """Files completed early since the last call (a ParquetSink's at max_open_files): one every
        :data:`FORCED_ROTATION_BATCHES` batches here."""
        total = self.batches // FORCED_ROTATION_BATCHES
        taken, self.forced_taken = total - self.forced_taken, total
        return taken

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self.batches += 1
        if self.batches % FAILING_BATCH == 0:
            raise OSError(28, "No space left on device")
        self.rows += len(rows)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def feature_names(count: int) -> list[str]:
    base = ["basket_value", "user_age", "session_length", "country", "device"]
    return base[:count] + [f"feature_{i:03d}" for i in range(len(base), count)]


class Workload:
    """Records traffic into ``metrics`` one :meth:`step` at a time (deterministic given ``seed``)."""

    BINS = 10

    def __init__(self, metrics: Metrics, features: int = 5, gpus: int = 2, seed: int = 7) -> None:
        self.metrics = metrics
        self.features = feature_names(features)
        self.gpus = gpus
        self.rng = random.Random(seed)
        # the registry's one label guard (guard_for), created with a small bound: a recorder created with the
        # default would raise it to 100 (a bound only grows), so both are given this one
        guard = guard_for(metrics, LABEL_VALUES)
        self.recorder = RequestRecorder(metrics, SERVICE, MODEL, guard=guard)
        self.gateway = RequestRecorder(metrics, GATEWAY, guard=guard)
        self.client = ClientRecorder(service=GATEWAY, peer=SERVICE, metrics=metrics, max_label_values=LABEL_VALUES)
        self.steps = 0
        self._lock = threading.Lock()
        self.nvml = FakeNVML.with_gpus(gpus)
        for i, gpu in enumerate(self.nvml.gpus):
            gpu.memory_used = (20 + 5 * i) * 2**30
            gpu.power_mw = (250 + 20 * i) * 1000
            gpu.temperature = 55 + i
        # polled by hand in step(): no thread, so a scrape right after a step sees that step's readings
        self.gpu = GpuCollector(nvml=self.nvml, registry=metrics.registry, metrics=metrics, start=False) \
            if gpus else None
        # the real log and its writer thread; only the sink's storage is a stand-in
        self.prediction_log = PredictionLog(FlakySink(), batch_size=8, flush_seconds=0.05, name=LOG_NAME,
                                            metrics=metrics)
        for feature in self.features:
            for b in range(self.BINS):
                metrics.feature_reference_ratio.labels(MODEL, feature, str(b), REFERENCE).set(1.0 / self.BINS)
            # as a DriftMonitor exports them: the reference's missing share, and the missing counts from 0
            metrics.feature_reference_missing_ratio.labels(MODEL, feature).set(REFERENCE_MISSING)
            metrics.feature_missing.labels(MODEL, feature)
            metrics.feature_invalid.labels(MODEL, feature, "missing_feature")

    def request(self, status: str = "200", traffic_class: str = "realtime", version: str = STABLE,
                route: str = "/predict", *, clamped: bool = False, overlapped: bool = False) -> None:
        """One gateway request calling the recommender once; ``clamped``: the call of :data:`CLAMPED_CALL`,
        ``overlapped``: the request of :data:`OVERLAPPED_REQUEST`."""
        rng, clock = self.rng, 1000.0 + self.steps
        tl = self.recorder.begin(start=clock)
        tl.traffic_class, tl.version = traffic_class, version
        queue, features, inference = rng.uniform(0.005, 0.04), rng.uniform(0.004, 0.012), rng.uniform(0.02, 0.04)
        tl.add("queue", None, queue)
        tl.add("features", None, features)
        tl.add("inference", None, inference)
        overhead = -1e-7 if overlapped else rng.uniform(0.002, 0.01)
        served = queue + features + inference + overhead
        network = rng.uniform(0.003, 0.02)  # between the gateway and the recommender, both ways
        # the Server-Timing value the recommender answers with, as its middleware writes it
        reported, _ = tl.server_timing(now=clock + served + (network + 0.004 if clamped else 0.0))
        self.recorder.finish(tl, route, "POST", status, end=clock + served)
        self.metrics.queue_wait.labels("predict").observe(queue)
        # The gateway in front: its own feature lookup, then the call (recommender time + network), then overhead.
        gw = self.gateway.begin(start=clock)
        lookup = rng.uniform(0.002, 0.006)
        gw.add("features", None, lookup)
        gw.add("inference_call", None, served + network)
        # the call, recorded by the gateway's client recorder from the recommender's Server-Timing value
        call_start, call_end = clock + lookup, clock + lookup + served + network
        self.client.record(call_start, call_end, f"{SERVICE}:8000", "/predict", status, reported, None,
                           "inference_call", "server_timing", sent=REQUEST_BYTES, received=RESPONSE_BYTES)
        self.gateway.finish(gw, "/recommend", "POST", status, end=call_end + rng.uniform(0.001, 0.003))
        self.prediction_log.log(MODEL, {"basket_value": rng.uniform(5, 120)}, {"score": rng.random()},
                                version=version)

    def background_step(self) -> None:
        """A background job in the recommender's process: one :data:`BACKGROUND_PHASE` per step, recorded outside
        any request through aiwatch's own path for it (the recommender's recorder as the default, as
        ``aiwatch.instrument`` sets it; restored after), :data:`BACKGROUND_SECONDS` long in turn."""
        record_background_phase(self.recorder, BACKGROUND_PHASE,
                                BACKGROUND_SECONDS[self.steps % len(BACKGROUND_SECONDS)])

    def stream(self, requests: int) -> None:
        """Streamed answers of the ``/generate`` route: chunk times, tokens, and a few served from a cache."""
        m, rng = self.metrics, self.rng
        for i in range(max(1, requests // 4)):
            first = rng.uniform(0.05, 0.15)
            m.time_to_first_chunk.labels(SERVICE, "/generate").observe(first)
            m.time_to_first_token.labels(SERVICE, MODEL, "realtime").observe(first)
            m.time_between_chunks.labels(SERVICE, "/generate").observe(rng.uniform(0.01, 0.03))
            m.time_per_output_token.labels(SERVICE, MODEL, "realtime").observe(rng.uniform(0.02, 0.04))
            m.token_usage.labels(SERVICE, MODEL, "input").observe(rng.randint(100, 400))
            m.token_usage.labels(SERVICE, MODEL, "output").observe(rng.randint(20, 80))
            if i == 0:
                m.degraded_responses.labels(SERVICE, MODEL, DEGRADED_REASON).inc()

    def step(self, requests: int = REQUESTS) -> None:
        with self._lock:
            m, rng = self.metrics, self.rng
            for i in range(requests):
                # every fifth request is a batch one, every fourth is served by the canary
                self.request("500" if i == 0 and self.steps % 2 == 0 else "200",
                             BATCH if i % 5 == 4 else "realtime", CANARY if i % 4 == 0 else STABLE,
                             RAW_PATH.format(self.steps) if i == 1 else "/predict",
                             clamped=i == CLAMPED_CALL, overlapped=i == OVERLAPPED_REQUEST)
            # one response per step the recommender's WSGI server dropped unclosed, counted as aiwatch's WSGI
            # middleware counts it (that path itself: tests/http/test_http_wsgi.py)
            m.unclosed_responses.labels(SERVICE).inc()
            self.background_step()
            self.stream(requests)
            # the event loop samplers: the recommender's loop is late by 30-45 ms (CPU-bound work on it), the
            # gateway's prompt (0.2-0.9 ms)
            for _ in range(LOOP_SAMPLES):
                for service, lateness in ((SERVICE, STARVED_LOOP), (GATEWAY, PROMPT_LOOP)):
                    delay = rng.uniform(*lateness)
                    m.event_loop_delay.labels(service).observe(delay)
                    # what the sampler watched since its previous sample: its interval and this sample's delay
                    m.event_loop_sampled.labels(service).inc(LOOP_INTERVAL + delay)
            for service in (SERVICE, GATEWAY):
                m.event_loop_stalled.labels(service).set(WORST_WORKER[service])
                m.event_loop_last_sample.labels(service).set(time.time())  # the loops sample on: never stuck
            m.batch_size.labels(MODEL).observe(rng.choice([4, 8, 16, 32]))
            m.queue_depth.labels("predict").set(rng.randint(2, 12))
            for _ in range(requests):
                m.feature_cache_requests.labels("redis", "hit" if rng.random() < 0.85 else "miss").inc()
            for idx, feature in enumerate(self.features):
                shift = 3 if idx == 0 else 0  # the first feature drifted
                for _ in range(MISSING_PER_STEP["values"]):
                    b = min(self.BINS - 1, max(0, int(rng.gauss(4.5 + shift, 2.0))))
                    m.feature_bin.labels(MODEL, feature, str(b), REFERENCE).inc()
                if feature == MISSING_FEATURE:
                    m.feature_missing.labels(MODEL, feature).inc(MISSING_PER_STEP["none"])
                    m.feature_invalid.labels(MODEL, feature, "missing_feature").inc(MISSING_PER_STEP["absent"])
                score = 0.31 if idx == 0 else 0.01 + 0.001 * (idx % 7) + 0.002 * (self.steps % 3)
                m.drift_score.labels(MODEL, feature, "psi").set(score)
                m.drift_detected.labels(MODEL, feature, "psi").set(1.0 if score > 0.2 else 0.0)
                m.drift_score.labels(MODEL, feature, "ks").set(score / 2)
                m.drift_pvalue.labels(MODEL, feature, "ks").set(0.001 if idx == 0 else 0.4)
                m.drift_detected.labels(MODEL, feature, "ks").set(1.0 if idx == 0 else 0.0)
            # realised quality, as `aiwatch quality --textfile` exports it: accuracy below its objective
            m.model_quality.labels(MODEL, "accuracy").set(0.62)
            m.model_quality_objective.labels(MODEL, "accuracy").set(0.85)
            m.model_quality.labels(MODEL, "recall").set(0.8)
            m.model_quality_labelled.labels(MODEL).set(1800)
            for i, gpu in enumerate(self.nvml.gpus):
                gpu.util_gpu = min(100, 35 + 7 * i + 2 * (self.steps % 5))
                gpu.energy_mj += 1_000_000
            if self.gpu is not None:
                self.gpu.poller.poll_once()
            self.steps += 1


class _BetweenSteps:
    """What ``/metrics`` serves: the registry as it stands between two workload steps, never in the middle of one.
    Tests compare series of different metrics at one instant (e.g. the phases stacked against the request time),
    which only add up when every scrape sees whole requests; a real app's scrape can split one, the test's must not."""

    def __init__(self, registry: CollectorRegistry, workload: Workload) -> None:
        self._registry, self._workload = registry, workload

    def collect(self) -> Iterator[Any]:
        with self._workload._lock:
            families = list(self._registry.collect())
        return iter(families)

    def restricted_registry(self, names: Any) -> Any:
        return self._registry.restricted_registry(names)


@contextmanager
def serve(features: int = 5, gpus: int = 2, interval: float = 0.2,
          requests: int = REQUESTS, clock_offset: float = 0.0) -> Iterator[dict[str, Any]]:
    """A real ``/metrics`` endpoint on loopback with traffic recorded every ``interval`` seconds, served by the
    workload in a process of its own, as a service would be: its prediction log's failing sink and its label folds
    are counted and logged through aiwatch's process-wide error limiter (:mod:`aiwatch.safety`), which must never
    see them in the tests that share this pytest process.

    ``clock_offset``: seconds the process' wall clock (``time.time``) runs ahead of the machine's (behind: negative),
    as on an app host whose clock is not Prometheus'.

    Yields ``{"url", "target", "process"}``; ``target`` is ``host:port`` for Prometheus.
    """
    args = [sys.executable, "-m", "tests.console.workload", "--features", str(features), "--gpus", str(gpus),
            "--interval", str(interval), "--requests", str(requests), "--clock-offset", str(clock_offset)]
    proc = subprocess.Popen(args, cwd=REPO, env=python_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "port N" once it serves, or "" when it died
        if not line.startswith("port "):
            raise AssertionError(f"the console workload did not start (exit {proc.wait(10)})")
        port = int(line.split()[1])
        yield {"url": f"http://127.0.0.1:{port}/metrics", "target": f"127.0.0.1:{port}", "process": proc}
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the workload stops when its stdin closes (also when this process dies)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _run(features: int, gpus: int, interval: float, requests: int) -> None:
    """:func:`serve`'s process: the workload on a ``/metrics`` endpoint until its stdin closes."""
    registry = CollectorRegistry()
    workload = Workload(Metrics(registry), features=features, gpus=gpus)
    workload.step(requests)
    server, thread = start_http_server(0, registry=_BetweenSteps(registry, workload))  # type: ignore[arg-type]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(interval):
            workload.step(requests)

    runner = threading.Thread(target=traffic, daemon=True)
    runner.start()
    print(f"port {server.server_port}", flush=True)
    sys.stdin.read()
    stop.set()
    runner.join(5)
    server.shutdown()
    server.server_close()
    thread.join(5)
    workload.prediction_log.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=_run.__doc__)
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    options = parser.parse_args()
    if options.clock_offset:
        machine = time.time
        time.time = lambda: machine() + options.clock_offset  # the whole process's wall clock, as on its host
    _run(options.features, options.gpus, options.interval, options.requests)
