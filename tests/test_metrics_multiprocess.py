"""aiwatch/metrics.py in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), which prometheus_client
picks at import: each test runs its code in a fresh Python process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.disks import read_only_directory
from tests.servers import python_env, wait_until


def _run(code: str, directory: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=python_env(PROMETHEUS_MULTIPROC_DIR=str(directory)))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


# Every Metrics of one process writes the same keys into the same per-process sample file: the merged view must hold
# what all of them recorded. get_metrics() for the global registry and get_metrics(registry) for an app's own
# (instrument(app, registry=...), a DriftMonitor or PredictionLog given one) live side by side in a worker.
_TWO_METRICS = """
from prometheus_client import CollectorRegistry
from aiwatch.exposition import serving_registry
from aiwatch.metrics import Metrics, get_metrics

mine = CollectorRegistry()
metrics = [get_metrics(), get_metrics(mine), Metrics(CollectorRegistry())]
# each object makes its series (as at start-up or a first request), then each records in turn
children = [(m.child(m.feature_bin, ("ranker", "basket_value", "3", "r1")),
             m.child(m.phase_duration, ("svc", "ranker", "", "inference")),
             m.child(m.requests_in_flight, ("svc",))) for m in metrics]
for bins, phases, in_flight in children:
    bins.inc()
    phases.observe(0.01)
    in_flight.inc()
merged = serving_registry()
bin3 = {"model": "ranker", "feature": "basket_value", "bin": "3", "reference": "r1"}
print(merged.get_sample_value("aiwatch_feature_bin_total", bin3))
print(merged.get_sample_value("aiwatch_phase_duration_seconds_count",
                              {"service": "svc", "model": "ranker", "model_version": "", "phase": "inference"}))
print(merged.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}))
# each registry of this process still reads the process's values, and has every metric
print(mine.get_sample_value("aiwatch_feature_bin_total", bin3))
print(*(len(m.unavailable) for m in metrics))
"""


def test_several_metrics_objects_in_one_process_lose_no_counts(tmp_path: Path) -> None:
    bins, phases, in_flight, mine, *unavailable = _run(_TWO_METRICS, tmp_path)
    assert (bins, phases, in_flight) == ("3.0", "3.0", "3.0")
    assert mine == "3.0"
    assert unavailable == ["0", "0", "0"]


# prometheus_client cannot remove a series in multiprocess mode: its value stays in the process's sample file, and
# the merged /metrics of every worker serves it. What aiwatch removes must read there as "nothing": a flag or a count
# 0, a statistic NaN (no rule fires on it), while a counter keeps its count.
_REMOVED = """
import math, os, warnings
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from aiwatch.metrics import Metrics

m = Metrics(CollectorRegistry())
series = ("ranker", "basket_value", "ks")
m.labels(m.drift_detected, series).set(1)
m.labels(m.drift_score, series).set(0.8)
m.labels(m.drift_pvalue, series).set(0.001)
m.labels(m.drift_window_samples, series[:2]).set(500)
bin3 = (*series[:2], "3", "r1")
m.labels(m.feature_reference_ratio, bin3).set(0.25)
m.labels(m.feature_bin, bin3).inc(7)
for metric, labels in ((m.drift_detected, series), (m.drift_score, series), (m.drift_pvalue, series),
                       (m.drift_window_samples, series[:2]), (m.feature_reference_ratio, bin3),
                       (m.feature_bin, bin3), (m.drift_pvalue, ("ranker", "never", "psi"))):
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        Metrics.remove(metric, labels)
    print(len(warned))
merged = CollectorRegistry()
MultiProcessCollector(merged, os.environ["PROMETHEUS_MULTIPROC_DIR"])
key = {"model": "ranker", "feature": "basket_value"}
for name, labels in (("aiwatch_drift_detected", {**key, "test": "ks"}), ("aiwatch_drift_score", {**key, "test": "ks"}),
                     ("aiwatch_drift_pvalue", {**key, "test": "ks"}), ("aiwatch_drift_window_samples", key),
                     ("aiwatch_feature_reference_ratio", {**key, "bin": "3", "reference": "r1"}),
                     ("aiwatch_feature_bin_total", {**key, "bin": "3", "reference": "r1"}),
                     ("aiwatch_drift_pvalue", {"model": "ranker", "feature": "never", "test": "psi"})):
    print(merged.get_sample_value(name, labels))
"""


def test_a_removed_series_reads_as_nothing_in_the_merged_metrics(tmp_path: Path) -> None:
    *warned, detected, score, pvalue, samples, ratio, bins, never = _run(_REMOVED, tmp_path)
    assert (detected, samples) == ("0.0", "0.0")
    # a reference share NaN, not 0: the old reference's counts still in the window, against shares of 0 in every
    # bin, made a large PSI for it after a reload
    assert (score, pvalue, ratio) == ("nan", "nan", "nan")
    assert bins == "7.0"  # a counter cannot go back
    assert never == "None"  # a series that never existed is not made by its removal
    assert warned == ["0"] * 7  # not prometheus_client's "not implemented in multi-process mode": it is handled


# A profile reloaded at runtime (a new monitor for the model): a feature only the old profile had kept its
# drift_detected 1, so AiwatchLocalInputDrift kept firing for it, and a bin only the old profile had kept its
# reference ratio.
_RELOADED = """
import os
import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from aiwatch.drift import DriftMonitor, ReferenceProfile

rng = np.random.default_rng(5)
old = ReferenceProfile.build({"x": rng.normal(size=2000), "color": ["red", "blue"] * 1000,
                              "gone": rng.normal(size=2000)})
new = ReferenceProfile.build({"x": rng.normal(size=2000), "color": ["red", "green", None, None] * 500})
first = DriftMonitor(old, model="m", registry=CollectorRegistry())
first.observe_batch({"x": rng.normal(size=300), "color": ["red", "blue"] * 150, "gone": rng.normal(4, 1, 300)})
method = first.evaluate().features["gone"].method
first.stop()
second = DriftMonitor(new, model="m", registry=CollectorRegistry())
second.observe_batch({"x": rng.normal(size=300), "color": ["red", "green"] * 150})
second.evaluate()
merged = CollectorRegistry()
MultiProcessCollector(merged, os.environ["PROMETHEUS_MULTIPROC_DIR"])
print(merged.get_sample_value("aiwatch_drift_detected", {"model": "m", "feature": "gone", "test": method}))
def ratio(profile, feature, b):
    ref = profile.features[feature].reference_id
    return merged.get_sample_value("aiwatch_feature_reference_ratio",
                                   {"model": "m", "feature": feature, "bin": b, "reference": ref})
print(ratio(old, "color", "blue"))
print(ratio(new, "color", "green"))
print(ratio(old, "x", "0"), ratio(new, "x", "0"))
print(merged.get_sample_value("aiwatch_feature_reference_missing_ratio", {"model": "m", "feature": "gone"}))
print(merged.get_sample_value("aiwatch_feature_reference_missing_ratio", {"model": "m", "feature": "color"}))
"""


def test_a_reloaded_profiles_old_series_stop_saying_drift_in_the_merged_metrics(tmp_path: Path) -> None:
    gone, blue, green, old_x, new_x, gone_missing, color_missing = _run(_RELOADED, tmp_path)
    assert gone == "0.0"
    assert blue == "nan"
    assert green == "0.5"
    # the old edges' shares read as nothing (their counts, still in the window, are another reference's)
    assert (old_x, new_x) == ("nan", "0.1")
    # NaN, not 0 ("never missing"): a feature the profile dropped cannot fire AiwatchFeatureMissing on the missing
    # counts it left in the window
    assert gone_missing == "nan"
    assert color_missing == "0.5"


# A model unloaded (DriftMonitor.close) in a worker: its series cannot leave the sample files, which every worker's
# merged /metrics serves; its last drift_detected 1 must read 0 there, its reference shares NaN (no PSI).
_CLOSED = """
import os
import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from aiwatch.drift import DriftMonitor, ReferenceProfile

rng = np.random.default_rng(5)
profile = ReferenceProfile.build({"x": rng.normal(size=2000)})
mon = DriftMonitor(profile, model="m", registry=CollectorRegistry())
mon.observe_batch({"x": rng.normal(4, 1, 300)})
method = mon.evaluate().features["x"].method
merged = CollectorRegistry()
MultiProcessCollector(merged, os.environ["PROMETHEUS_MULTIPROC_DIR"])
detected = {"model": "m", "feature": "x", "test": method}
ratio = {"model": "m", "feature": "x", "bin": "9", "reference": profile.features["x"].reference_id}  # N(4, 1)'s
print(merged.get_sample_value("aiwatch_drift_detected", detected))
mon.close()
print(merged.get_sample_value("aiwatch_drift_detected", detected))
print(merged.get_sample_value("aiwatch_drift_score", detected))
print(merged.get_sample_value("aiwatch_feature_reference_ratio", ratio))
print(merged.get_sample_value("aiwatch_feature_bin_total", ratio))
"""


def test_a_closed_monitors_series_stop_saying_drift_in_the_merged_metrics(tmp_path: Path) -> None:
    before, detected, score, ratio, counted = _run(_CLOSED, tmp_path)
    assert before == "1.0"
    assert (detected, score, ratio) == ("0.0", "nan", "nan")
    assert float(counted) > 0  # a counter cannot go back


# A registry only its own process serves or writes out (a CLI command's, the GPU metrics server's) keeps every value
# in memory: written into PROMETHEUS_MULTIPROC_DIR, every worker's merged /metrics served it too.
_IN_PROCESS = """
import os
from prometheus_client import CollectorRegistry
from aiwatch.metrics import Metrics

m = Metrics(CollectorRegistry(), in_process=True)
m.child(m.phase_duration, ("svc", "ranker", "", "inference")).observe(0.01)
m.child(m.model_quality, ("churn", "accuracy")).set(0.75)
m.child(m.feature_bin, ("ranker", "basket_value", "3", "r1")).inc(2)
phase = {"service": "svc", "model": "ranker", "model_version": "", "phase": "inference"}
print(m.registry.get_sample_value("aiwatch_phase_duration_seconds_bucket", {**phase, "le": "0.01"}))
print(m.registry.get_sample_value("aiwatch_phase_duration_seconds_bucket", {**phase, "le": "0.0075"}))
print(m.registry.get_sample_value("aiwatch_phase_duration_seconds_sum", phase))
print(m.registry.get_sample_value("aiwatch_model_quality", {"model": "churn", "metric": "accuracy"}))
print(m.registry.get_sample_value("aiwatch_feature_bin_total",
                                  {"model": "ranker", "feature": "basket_value", "bin": "3", "reference": "r1"}))
print(len(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
"""


def test_in_process_metrics_write_nothing_into_the_directory(tmp_path: Path) -> None:
    assert _run(_IN_PROCESS, tmp_path) == ["1.0", "0.0", "0.01", "0.75", "2.0", "0"]


# gunicorn --preload: a master thread (a drift monitor started at import evaluates there) may be setting a gauge when
# the master forks a worker. prometheus_client's multiprocess mode has one lock for every value of the process, and
# the metric's own lock guards its series: a worker that inherited either held had no request counted, ever.
_FORK_WHILE_HELD = """
import os, signal, threading, time
from prometheus_client import values
from aiwatch.metrics import get_metrics

m = get_metrics()
gauge = m.drift_window_samples
series = m.labels(gauge, ("m", "x"))
code = type(series._value).inc.__code__
shared = type(series._value).inc.__closure__[code.co_freevars.index("lock")].cell_contents
holding, release = threading.Event(), threading.Event()

def hold():
    with shared, gauge._lock:
        holding.set()
        release.wait()

threading.Thread(target=hold, daemon=True).start()
holding.wait()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        in_flight = m.child(m.requests_in_flight, ("svc",))  # a new series of another metric: the shared value lock
        in_flight.inc()
        other = m.labels(gauge, ("m", "y"))  # a new series of the held metric: its own lock
        other.set(2)
        series.set(3)
        code = 0 if (in_flight._value.get(), other._value.get(), series._value.get()) == (1, 2, 3) else 2
    finally:
        os._exit(code)
release.set()
deadline = time.monotonic() + 30
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("exit", os.waitstatus_to_exitcode(status))
        break
    if time.monotonic() > deadline:  # hung: the bug, not a timing bound
        os.kill(pid, signal.SIGKILL)
        print("hung")
        break
    time.sleep(0.05)
"""


def test_a_worker_forked_while_a_master_thread_held_prometheus_clients_locks_updates_metrics(tmp_path: Path
                                                                                             ) -> None:
    # exit 1: the child raised; 2: a value it set did not read back
    assert _run(_FORK_WHILE_HELD, tmp_path) == ["exit", "0"]


# A finalizer leaves a dropped response's recording (aiwatch.deferred); the merged /metrics reads sample files, not
# the registry whose scrape would record it: the worker serving it records its own queues first.
_DEFERRED = """
from prometheus_client import CollectorRegistry
from aiwatch.exposition import serving_registry
from aiwatch.metrics import Metrics, get_metrics

metrics = [get_metrics(), Metrics(CollectorRegistry())]
for m in metrics:
    m.deferred.append(lambda m=m: m.child(m.unclosed_responses, ("svc",)).inc())
print(serving_registry().get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}))
print(*(len(m.deferred) for m in metrics))
"""


def test_the_merged_metrics_record_what_this_workers_finalizers_left_first(tmp_path: Path) -> None:
    unclosed, *left = _run(_DEFERRED, tmp_path)
    assert unclosed == "2.0"
    assert left == ["0", "0"]


# uvicorn --workers runs no hook that makes PROMETHEUS_MULTIPROC_DIR (gunicorn's on_starting does): prometheus_client
# makes a process's sample file at a value's first use, and a directory not made yet failed aiwatch.instrument()
# with its FileNotFoundError, each worker dying at import while uvicorn started it again.
_INSTRUMENT_AND_SERVE = """
import io, os, sys
import aiwatch
from aiwatch.exposition import serving_registry

def inner(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

app = aiwatch.instrument(inner, service="svc")
status = []
environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "SERVER_NAME": "h", "SERVER_PORT": "80",
           "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "SERVER_PROTOCOL": "HTTP/1.1"}
body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
print(status[0].split()[0], body.decode())
if sys.argv[1] == "merge":
    print(serving_registry().get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": "__unmatched__", "method": "GET", "status": "200", "traffic_class": "realtime"}))
"""


def test_a_multiprocess_directory_not_made_yet_is_made_when_the_app_is_instrumented(tmp_path: Path) -> None:
    directory = tmp_path / "not-made-yet" / "metrics"
    done = subprocess.run([sys.executable, "-c", _INSTRUMENT_AND_SERVE, "merge"], capture_output=True, text=True,
                          timeout=120, env=python_env(PROMETHEUS_MULTIPROC_DIR=str(directory)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "ok", "1.0"]
    assert any(name.startswith("histogram_") for name in (p.name for p in directory.iterdir()))


def test_a_multiprocess_directory_that_cannot_be_made_serves_the_app_and_logs_why(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    directory = tmp_path / "a-file" / "metrics"
    done = subprocess.run([sys.executable, "-c", _INSTRUMENT_AND_SERVE, "serve"], capture_output=True, text=True,
                          timeout=120, env=python_env(PROMETHEUS_MULTIPROC_DIR=str(directory)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "ok"]
    assert "aiwatch: multiprocess failed" in done.stderr and "Not a directory" in done.stderr



def test_a_multiprocess_directory_that_is_a_file_is_refused_when_instrumenting(tmp_path: Path) -> None:
    # it was accepted (two warnings: NotADirectoryError, FileExistsError), and every scrape raised prometheus_client's
    # "env PROMETHEUS_MULTIPROC_DIR is not set or not a directory" into the request
    (tmp_path / "a-file").write_text("")
    done = subprocess.run([sys.executable, "-c", _INSTRUMENT_AND_SERVE, "serve"], capture_output=True, text=True,
                          timeout=120, env=python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "a-file")))
    assert done.returncode != 0 and done.stdout == ""
    assert (f"ValueError: PROMETHEUS_MULTIPROC_DIR is {str(tmp_path / 'a-file')!r}, which is not a directory"
            in done.stderr), done.stderr


def test_a_multiprocess_directory_this_process_cannot_write_is_refused_when_instrumenting(tmp_path: Path) -> None:
    # it was accepted (one warning, OSError 30 on a read-only one), requests recorded nowhere, /metrics 200 and empty
    with read_only_directory(tmp_path) as directory:
        done = subprocess.run([sys.executable, "-c", _INSTRUMENT_AND_SERVE, "serve"], capture_output=True, text=True,
                              timeout=120, env=python_env(PROMETHEUS_MULTIPROC_DIR=str(directory)))
    assert done.returncode != 0 and done.stdout == ""
    assert (f"ValueError: PROMETHEUS_MULTIPROC_DIR is {str(directory)!r}, a directory this process (uid "
            in done.stderr), done.stderr


_ASGI_SCRAPE = """
import asyncio
from aiwatch import AiwatchMiddleware

async def inner(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

middleware = AiwatchMiddleware(inner, service="svc")  # made by hand: no instrument() to refuse the directory

async def get(path):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        sent.append(message)
    await middleware({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                      "headers": [], "scheme": "http", "server": ("h", 80), "http_version": "1.1"}, receive, send)
    return sent[0]["status"], sent[-1]["body"].decode()

print(asyncio.run(get("/x")))
print(asyncio.run(get("/metrics")))
"""


def test_a_scrape_that_cannot_merge_a_file_for_a_directory_is_a_counted_503_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = subprocess.run([sys.executable, "-c", _ASGI_SCRAPE], capture_output=True, text=True, timeout=120,
                          env=python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "a-file")))
    assert done.returncode == 0, done.stderr
    request, scrape = done.stdout.splitlines()
    assert request == "(200, 'ok')"
    assert scrape.startswith("(503, 'aiwatch cannot serve /metrics: env PROMETHEUS_MULTIPROC_DIR is not set or not "
                             "a directory"), scrape
    assert "aiwatch: metrics failed and was skipped" in done.stderr
    # and Metrics' own warning at setup says what is wrong, not FileExistsError
    assert f"PROMETHEUS_MULTIPROC_DIR is {str(tmp_path / 'a-file')!r}, which is not a directory" in done.stderr

# A worker's samples of every kind of file, as a worker gunicorn recycles leaves them (it runs as a process of its own,
# gone once it has printed its pid). ``drifted`` is the drift gauge it sets (mostrecent: the latest wins), -1 none.
_WORKER = """
import os
from prometheus_client import CollectorRegistry, Gauge, Summary
from aiwatch.metrics import Metrics

m = Metrics(CollectorRegistry())
for _ in range({requests}):
    m.child(m.request_duration, ("svc", "/p", "GET", "200", "realtime")).observe(0.02 * {requests})
    m.child(m.feature_bin, ("ranker", "x", "3", "r1")).inc()
if {drifted} >= 0:
    m.child(m.drift_detected, ("ranker", "x", "psi")).set({drifted})
m.child(m.prediction_log_recovery_last_timestamp, ("log", "torn")).set({requests})
m.child(m.requests_in_flight, ("svc",)).inc()
own = CollectorRegistry()
Summary("t_wait_seconds", "a summary", registry=own).observe({requests})
Gauge("t_each", "an all gauge", registry=own).set({requests})
Gauge("t_least", "a min gauge", registry=own, multiprocess_mode="min").set({requests})
Gauge("t_total", "a sum gauge", registry=own, multiprocess_mode="sum").set({requests})
print(os.getpid())
"""

_SNAPSHOT = """
import json, os
from aiwatch.exposition import fold_dead_process_files, serving_registry

def out(value):  # one word: the test reads words
    print(json.dumps(value, separators=(",", ":")))

def snapshot():
    # floats compared whole: an archive adds some of the files first, and the merge adds up in directory order, yet
    # each summed value is their exact sum correctly rounded (the histograms' sums of 0.04 and 0.06 were a last bit
    # apart)
    return sorted([s.name, sorted(s.labels.items()), s.value]
                  for m in serving_registry().collect() for s in m.samples)
"""


def _workers(directory: Path, *settings: tuple[int, int]) -> list[str]:
    return [_run(_WORKER.format(requests=requests, drifted=drifted), directory)[0] for requests, drifted in settings]


def test_folding_dead_workers_files_keeps_every_merged_value_in_one_archive_per_kind(tmp_path: Path) -> None:
    """gunicorn's master folds each worker that exits (max_requests) into its archives: the merged /metrics must
    read the same before and after, whatever the order of the folds (the drift gauge's latest value came from the
    worker folded first), and the directory keeps one file per kind instead of one per worker."""
    early, late, third = _workers(tmp_path, (2, 0), (3, 1), (4, -1))  # `late` set drift 1 after `early` set 0
    out = _run(_SNAPSHOT + f"""
before = snapshot()
out(before == snapshot())
print(fold_dead_process_files([{late}], os.environ["PROMETHEUS_MULTIPROC_DIR"]))
once = snapshot()
print(fold_dead_process_files([{early}, {third}], os.environ["PROMETHEUS_MULTIPROC_DIR"]))
out([once == before, snapshot() == before])
out(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
print(os.getpid())
out(before)
""", tmp_path)
    stable, first, second, equal, names, master, before = out[0], out[1], out[2], out[3], out[4], out[5], out[6]
    assert stable == "true"
    assert (first, second) == ("7", "13")  # counter, histogram, summary; the max, min, sum and mostrecent gauges
    # (`third` set no mostrecent gauge)
    assert json.loads(equal) == [True, True]
    kinds = ["counter", "gauge_max", "gauge_min", "gauge_mostrecent", "gauge_sum", "histogram", "summary"]
    assert json.loads(names) == sorted([".aiwatch-fold.gate", ".aiwatch-fold.lock"]
                                       + [f"{kind}_archive-{master}.db" for kind in kinds]
                                       + [f"gauge_all_{pid}.db" for pid in (early, late, third)]
                                       + [f"gauge_livesum_{pid}.db" for pid in (early, late, third)])
    samples = {(name, tuple(map(tuple, labels))): value for name, labels, value in json.loads(before)}
    assert samples[("aiwatch_drift_detected", (("feature", "x"), ("model", "ranker"), ("test", "psi")))] == 1
    assert samples[("aiwatch_feature_bin_total", (("bin", "3"), ("feature", "x"), ("model", "ranker"),
                                                  ("reference", "r1")))] == 9
    assert (samples[("t_least", ())], samples[("t_total", ())], samples[("t_wait_seconds_count", ())]) == (2, 9, 3)


# The fold killed (SIGKILL) before each of its file operations in turn, on a copy of the directory each time: a
# scrape then, and after the next fold (another process, as a new master), must read what it read before any.
_DYING_FOLDS = _SNAPSHOT + """
import shutil, signal
source = os.environ["PROMETHEUS_MULTIPROC_DIR"]
pids = {pids}
expected = snapshot()

def fold_dying_at(directory, step):
    child = os.fork()
    if child == 0:
        calls = [0]
        def dying(real):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)
            return call
        os.replace, os.remove = dying(os.replace), dying(os.remove)
        fold_dead_process_files(pids, directory)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])

results = []
step = 1
while True:
    directory = f"{{source}}-{{step}}"
    shutil.copytree(source, directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    killed = fold_dying_at(directory, step) == -signal.SIGKILL
    after_crash = snapshot() == expected
    fold_dead_process_files(pids, directory)
    left = [name for name in os.listdir(directory)
            if name.endswith((".new", ".intent")) or any(name.endswith(f"_{{pid}}.db") and "live" not in name
                                                        and "_all_" not in name for pid in pids)]
    results.append([step, killed, after_crash, snapshot() == expected, left])
    if not killed:
        break
    step += 1
out(results)
"""


def test_a_fold_killed_at_any_step_counts_nothing_twice_and_loses_nothing(tmp_path: Path) -> None:
    """A fold replaces the archive, then removes the files it folded: killed in between, every merge read those
    files' counts twice until the next start. With the intent it writes first (the new archive's inode, its
    sources), a merge leaves out the sources an archive in place holds, and the next fold completes the removal."""
    multiproc = tmp_path / "multiproc"
    pids = _workers(multiproc, (2, 0), (3, 1))
    (results,) = _run(_DYING_FOLDS.format(pids=f"[{','.join(pids)}]"), multiproc)
    steps = json.loads(results)
    assert len(steps) > 20 and all(killed for _, killed, *_ in steps[:-1]) and not steps[-1][1]
    assert [step for step, _, after_crash, after_next, _ in steps if not (after_crash and after_next)] == []
    assert [[step, left] for step, *_, left in steps if left] == []  # the next fold leaves nothing half done


# A scrape of the merged view through aiwatch's WSGI /metrics app, after {damage} put a file in the directory: the
# status, the merged count of this process's series, and aiwatch's multiprocess errors in the same answer.
_SCRAPE_AFTER = """
import os, struct
from prometheus_client.parser import text_string_to_metric_families
from aiwatch.exposition import make_wsgi_app
from aiwatch.metrics import get_metrics

directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
m = get_metrics()
m.child(m.feature_bin, ("ranker", "x", "3", "r1")).inc()
{damage}
status = []
environ = {{"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}}
try:
    body = b"".join(make_wsgi_app()(environ, lambda line, headers: status.append(line)))
except Exception as exc:
    print("raised", type(exc).__name__)
    raise SystemExit
values = {{(s.name, s.labels.get("component")): s.value
          for family in text_string_to_metric_families(body.decode()) for s in family.samples}}
print(status[0].split()[0], values[("aiwatch_feature_bin_total", None)],
      values.get(("aiwatch_instrumentation_errors_total", "multiprocess"), 0.0))
"""


def test_a_scrape_while_a_worker_makes_its_sample_file_serves_every_other_value(tmp_path: Path) -> None:
    """prometheus_client makes a process's sample file empty, then sizes it (MmapedDict: open, then truncate). A merge
    reading it in between raised struct.error out of /metrics: gunicorn answered the scrape 500 while a worker
    recycled by max_requests made its files at its first request (2 failed scrapes in ~30 runs of the recycling
    test). Empty, the file holds no value yet: the scrape leaves it out, and counts no error."""
    damage = 'open(os.path.join(directory, "counter_999999.db"), "a+b").close()  # as MmapedDict opens it'
    assert _run(_SCRAPE_AFTER.format(damage=damage), tmp_path) == ["200", "1.0", "0.0"]


def test_a_scrape_with_an_unreadable_sample_file_is_answered_and_counts_the_error(tmp_path: Path) -> None:
    """A sample file the merge cannot read (here one whose header claims an entry past its used size, which
    prometheus_client reads as corrupted) failed every scrape with 500, and Prometheus saw the target down: the
    scrape is answered with every other file, and the error counted."""
    damage = ('open(os.path.join(directory, "counter_999999.db"), "wb").write('
              'struct.pack("iii", 64, 0, 1000) + bytes(52))')
    # counted twice: the scrape's fold of the files of processes gone (pid 999999 runs nothing) fails on it too
    assert _run(_SCRAPE_AFTER.format(damage=damage), tmp_path) == ["200", "1.0", "2.0"]


def test_a_dead_workers_empty_sample_file_is_folded(tmp_path: Path) -> None:
    """A worker killed between making its sample file and sizing it left it empty: reading it failed every fold in
    the master (the exited workers' files were never folded after it, an error counted at each exit)."""
    multiproc = tmp_path / "multiproc"
    (worker,) = _workers(multiproc, (2, 0))
    (multiproc / f"counter_{worker}.db").write_bytes(b"")
    out = _run(_SNAPSHOT + f"""
print(fold_dead_process_files([{worker}], os.environ["PROMETHEUS_MULTIPROC_DIR"]))
out(sorted(name for name in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if name.startswith("counter")))
print(os.getpid())
""", multiproc)
    assert out[0] == "7" and json.loads(out[1]) == [f"counter_archive-{out[2]}.db"]


# PROMETHEUS_MULTIPROC_DIR set after prometheus_client was imported: prometheus_client picks its mode at its import,
# and keeps every value in memory; aiwatch's /metrics, reading the variable, served the merge of a directory no
# process writes: 200, empty.
_SET_AFTER_IMPORT = """
import os, sys
import aiwatch
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
try:
    aiwatch.instrument(lambda environ, start_response: [b"ok"], service="svc")
except ValueError as exc:
    print(exc)
"""


def test_a_multiprocess_directory_set_after_prometheus_client_was_imported_is_refused_when_instrumenting(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _SET_AFTER_IMPORT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=python_env(), check=True)
    assert done.stdout.startswith(f"PROMETHEUS_MULTIPROC_DIR is set ({str(tmp_path)!r}), but only after "
                                  "prometheus_client was imported: it keeps every process's metrics in memory, and "
                                  "/metrics, the merge of that directory's files, would serve none of them."), \
        done.stdout


_GUNICORN_APP = """
import aiwatch

def inner(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

app = aiwatch.instrument(inner, service="svc")
"""


def test_gunicorn_given_the_multiprocess_directory_with_e_says_why_and_does_not_serve_empty_metrics(
        tmp_path: Path) -> None:
    """``gunicorn -c python:aiwatch.gunicorn -e PROMETHEUS_MULTIPROC_DIR=...``: gunicorn sets its -e variables after
    the config module (aiwatch.gunicorn, which imports prometheus_client) was imported, and forks the workers from
    that master. Every worker counted in memory and /metrics answered 200 with an empty body, nothing logged."""
    import requests

    from tests.servers import free_port

    (tmp_path / "gapp.py").write_text(_GUNICORN_APP)
    directory, port = tmp_path / "multiproc", free_port()
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path), "-w", "2", "-b",
                                 f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn", "-e",
                                 f"PROMETHEUS_MULTIPROC_DIR={directory}", "gapp:app"],
                                stdout=out, stderr=subprocess.STDOUT, env=python_env())
    served: list[str] = []
    try:
        def exited_or_served() -> bool:
            if proc.poll() is not None:
                return True
            requests.get(f"http://127.0.0.1:{port}/x", timeout=5)
            served.append(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            return True

        wait_until(exited_or_served, 60, what="gunicorn to exit or serve /metrics")
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)
    assert not served, f"gunicorn served /metrics: {served[0][:200]!r}"
    text = log.read_text()
    assert "ValueError: PROMETHEUS_MULTIPROC_DIR is set" in text  # each worker's aiwatch.instrument()
    assert "not with gunicorn's -e or raw_env" in text
    assert proc.returncode != 0
