"""The app that ``test_http_preload`` serves with ``gunicorn --preload`` and no multiprocess directory: a
``GpuCollector`` (on a stand-in NVML) made and polling at import, in the master, on the registry the worker serves."""

from __future__ import annotations

import time

from flask import Flask

import aiwatch
from aiwatch.signals.gpu import GpuCollector
from tests.signals.fake_pynvml import FakeNVML

collector = GpuCollector(interval=0.1, nvml=FakeNVML.with_gpus(1))
for _ in range(1000):  # the master polled before it forks: the worker inherits a snapshot
    if collector.poller.snapshot is not None:
        break
    time.sleep(0.01)
app = Flask("preload-gpu")


@app.get("/")
def index() -> str:
    return "ok"


aiwatch.instrument(app, service="preload-gpu")
