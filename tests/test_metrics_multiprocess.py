"""aiwatch/metrics.py in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), which prometheus_client
picks at import: each test runs its code in a fresh Python process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import python_env


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
children = [(m.child(m.feature_bin, ("ranker", "basket_value", "3")),
             m.child(m.phase_duration, ("svc", "ranker", "", "inference")),
             m.child(m.requests_in_flight, ("svc",))) for m in metrics]
for bins, phases, in_flight in children:
    bins.inc()
    phases.observe(0.01)
    in_flight.inc()
merged = serving_registry()
print(merged.get_sample_value("aiwatch_feature_bin_total", {"model": "ranker", "feature": "basket_value", "bin": "3"}))
print(merged.get_sample_value("aiwatch_phase_duration_seconds_count",
                              {"service": "svc", "model": "ranker", "model_version": "", "phase": "inference"}))
print(merged.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}))
# each registry of this process still reads the process's values, and has every metric
print(mine.get_sample_value("aiwatch_feature_bin_total", {"model": "ranker", "feature": "basket_value", "bin": "3"}))
print(*(len(m.unavailable) for m in metrics))
"""


def test_several_metrics_objects_in_one_process_lose_no_counts(tmp_path: Path) -> None:
    bins, phases, in_flight, mine, *unavailable = _run(_TWO_METRICS, tmp_path)
    assert (bins, phases, in_flight) == ("3.0", "3.0", "3.0")
    assert mine == "3.0"
    assert unavailable == ["0", "0", "0"]
