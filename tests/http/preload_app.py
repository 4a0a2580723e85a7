"""The app that ``test_http_preload`` serves with ``gunicorn --preload``: its prediction log (Parquet files into
``$AIWATCH_TEST_LOG_DIR``) and its drift monitor, started on a short schedule (and given warm-up rows), are made at
import, in the master. ``$AIWATCH_TEST_FLUSH_EVERY``: the monitor's ``flush_every`` (default 1: every row counted at
once); ``$AIWATCH_TEST_MAX_FILE_SECONDS``: the sink's ``max_file_seconds`` (default 0.2)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
from flask import Flask

import aiwatch
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.feedback import ParquetSink, PredictionLog

monitor = DriftMonitor(ReferenceProfile.build({"x": np.random.default_rng(1).normal(0, 1, 200)}), model="preloaded",
                       interval=0.2, flush_every=int(os.environ.get("AIWATCH_TEST_FLUSH_EVERY", "1"))).start()
for _ in range(7):  # warm-up rows in the master, one by one (counted every flush_every): the workers' windows do
    monitor.observe({"x": 0.0})  # not hold them
log = PredictionLog(ParquetSink(os.environ["AIWATCH_TEST_LOG_DIR"],
                               max_file_seconds=float(os.environ.get("AIWATCH_TEST_MAX_FILE_SECONDS", "0.2")),
                               fsync=False),
                    batch_size=1, flush_seconds=0.1)
app = Flask("preload")


@app.get("/predict/<int:n>")
def predict(n: int) -> dict[str, int]:
    monitor.observe({"x": float(n)})
    log.log("preloaded", {"x": float(n)}, {"y": 1.0})
    return {"pid": os.getpid()}


@app.get("/spawn")
def spawn() -> dict[str, int]:
    """A worker that forks: a subprocess with ``preexec_fn`` runs Python's fork hooks in it."""
    return {"code": subprocess.run(["true"], preexec_fn=os.setpgrp, check=False).returncode}


aiwatch.instrument(app, service="preload")
