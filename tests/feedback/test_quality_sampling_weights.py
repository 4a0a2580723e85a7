"""Realised quality weighs each labelled request by ``1 / sample_rate``, the keep probability the log wrote with it.

A sampling policy keeps slow and failed requests at a higher rate than the rest on purpose (``sample_rate=0.05,
slow_rate=1.0``), and those are the hard ones. Scored as logged, one row one vote, the quality was that of the slow
requests, not of the traffic: with 10 % of requests slow and half of those wrong, 95 % right otherwise, the served
accuracy of ~0.90 came out as ~0.64, and the accuracy objective's alert fired on a model doing its job."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.feedback import ParquetSink, PredictionLog
from aiwatch.feedback.outcomes import quality_report
from tests.feedback.quality_files import labels_csv, sink_log

T0 = 1_790_002_800.0


def test_a_log_sampled_more_for_slow_requests_scores_the_traffic_as_served(tmp_path: Path) -> None:
    rng = random.Random(7)
    served = right = 0
    labels: list[tuple[str, float]] = []
    with PredictionLog(ParquetSink(tmp_path / "log"), registry=CollectorRegistry(), sample_rate=0.05,
                       slow_seconds=0.5, slow_rate=1.0) as log:
        for i in range(20_000):
            slow = rng.random() < 0.1
            correct = rng.random() < (0.5 if slow else 0.95)
            served, right = served + 1, right + correct
            rid = log.log("ranker", {"i": i}, 1.0 if correct else 0.0, latency=1.0 if slow else 0.1,
                          timestamp=T0 + i / 100)
            if rid is not None:
                labels.append((rid, 1.0))
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("request_id", "outcome"), *labels])
    [window] = quality_report(tmp_path / "log", tmp_path / "labels.csv", window_seconds=86_400).windows
    assert window.labelled == window.logged == len(labels)  # the counts stay the rows'
    assert window.metrics["accuracy"] == pytest.approx(right / served, abs=0.03)  # ~0.90, not ~0.64


def test_each_row_counts_as_the_requests_it_stands_for(tmp_path: Path) -> None:
    rows = [{"request_id": "a", "timestamp": T0, "model": "m", "output": 1.0, "sample_rate": 0.25},  # right, 4x
            {"request_id": "b", "timestamp": T0, "model": "m", "output": 0.0, "sample_rate": 1.0},  # wrong
            {"request_id": "c", "timestamp": T0, "model": "m", "output": 3.0, "sample_rate": 0.5}]  # regressor only
    log = sink_log(tmp_path, rows)
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1)])
    [classifier] = quality_report(log, labels).windows
    assert classifier.metrics == {"accuracy": 0.8, "precision": 1.0, "recall": 0.8}
    numbers = labels_csv(tmp_path, [("a", 2), ("b", 4), ("c", 0)], name="numbers.csv")
    [regressor] = quality_report(log, numbers, kind="regressor").windows
    # errors 1 (x4), 4 (x1), 3 (x2)
    assert regressor.metrics["mae"] == pytest.approx((4 * 1 + 4 + 2 * 3) / 7)
    assert regressor.metrics["rmse"] == pytest.approx(math.sqrt((4 * 1 + 16 + 2 * 9) / 7))


@pytest.mark.parametrize("rates", [
    pa.array([None, None], type=pa.float64()),  # a foreign log's nulls
    pa.array([0.0, 2.0]),  # no probability above 0
    pa.array([math.nan, -1.0]),
    pa.array(["0.25", "x"]),  # text: not read as rates
])
def test_a_sample_rate_that_is_no_probability_counts_its_row_once(tmp_path: Path, rates: pa.Array) -> None:
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b"], "timestamp": [T0, T0], "model": ["m", "m"],
                             "output": [1.0, 0.0], "sample_rate": rates}), tmp_path / "log" / "part.parquet")
    [window] = quality_report(tmp_path / "log", labels_csv(tmp_path, [("a", 1), ("b", 1)])).windows
    assert window.metrics["accuracy"] == 0.5
