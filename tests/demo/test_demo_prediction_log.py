"""The demo's prediction log: the inference service logs each request's features and answer (user ids hashed), and
`aiwatch drift` on the log directory with --since the sale's start finds the sale's drift, and none before it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

import aiwatch
from aiwatch.cli import main
from aiwatch.demo import data
from aiwatch.demo.drift import PSI_THRESHOLD
from aiwatch.demo.inference import MODEL, InferenceCore
from aiwatch.demo.model import Request
from aiwatch.demo.runner import write_log_profile
from aiwatch.metrics import Metrics

#: the demo's drift monitor's test: PSI over the reference deciles, any drifted feature is drift
DEMO_TEST = ["--method", "psi", "--threshold", str(PSI_THRESHOLD), "--rule", "any", "--json"]


def test_drift_on_the_demo_log_finds_the_sale(tmp_path: Path, metrics: Metrics,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The requests the demo's load generator sends before and during the sale, logged as the inference service
    logs them (the service's own logging is the next test)."""
    log_dir = tmp_path / "log"
    rng = np.random.default_rng(3)
    hour_ago = time.time() - 3600
    with aiwatch.PredictionLog(aiwatch.ParquetSink(log_dir), metrics=metrics) as log:
        for sale, start in ((False, hour_ago), (True, hour_ago + 1800)):
            features = data.live_features(rng, 800, sale=sale)
            for i in range(800):
                log.log(MODEL, {name: values[i] for name, values in features.items()}, {"items": 10},
                        timestamp=start + i)
    sale_began = datetime.fromtimestamp(hour_ago + 1800, UTC).isoformat()
    profile = write_log_profile(log_dir)

    assert main(["drift", str(profile), str(log_dir), "--until", sale_began, *DEMO_TEST]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["drift", str(profile), str(log_dir), "--since", sale_began, *DEMO_TEST]) == 1
    sale = json.loads(capsys.readouterr().out)
    assert {f["feature"] for f in sale["features"] if f["drifted"]} == {"basket_value"}
    assert [f["current_count"] for f in before["features"]] == [800] * 3
    assert [f["current_count"] for f in sale["features"]] == [800] * 3


async def test_the_inference_service_logs_each_request(tmp_path: Path, metrics: Metrics) -> None:
    log = aiwatch.PredictionLog(aiwatch.ParquetSink(tmp_path), metrics=metrics, hash_fields={"user_id"},
                                hash_key=b"demo")
    core = InferenceCore(metrics, model_seconds=0.001, max_batch=8, prediction_log=log)
    try:
        answers = await asyncio.gather(*(core.predict(Request(u, 40.0 + u, 2.0, 100.0)) for u in range(8)))
    finally:
        await core.aclose()  # closes the log: every file rotated
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 8 and set(table.column("model").to_pylist()) == {MODEL}
    assert sorted(table.column("basket_value").to_pylist()) == [40.0 + u for u in range(8)]
    assert all(len(u) == 64 for u in table.column("user_id").to_pylist())  # HMAC-SHA256 hex, not the id
    assert sorted(table.column("output.top_item").to_pylist()) == sorted(float(a[0]) for a in answers)
    assert set(table.column("output.items").to_pylist()) == {10.0}
