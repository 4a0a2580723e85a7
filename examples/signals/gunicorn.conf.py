"""gunicorn config: one NVML poller per host, in the master, serving only the GPU metrics on its own port.

    PROMETHEUS_MULTIPROC_DIR=/tmp/prom AIWATCH_GPU_PORT=9400 \\
        gunicorn -c examples/signals/gunicorn.conf.py -w 4 'aiwatch.exposition:make_wsgi_app()'

Workers serve the app (and the merged per-worker metrics on the app's port); the master polls the GPUs once for the
whole host, whatever the number of workers. Scrape both ports. A sidecar does the same job outside gunicorn:
``aiwatch gpu --serve 9400``.
"""

from __future__ import annotations

import os
from typing import Any

from aiwatch.gunicorn import child_exit, on_starting, pre_fork  # noqa: F401  (see docs/http.md)

_gpu: Any = None


def when_ready(server: Any) -> None:
    global _gpu
    from aiwatch.signals.gpu import serve_gpu_metrics

    port = int(os.environ.get("AIWATCH_GPU_PORT", "9400"))
    _gpu = serve_gpu_metrics(port, os.environ.get("AIWATCH_GPU_ADDR", "127.0.0.1"))
    server.log.info("aiwatch: GPU metrics on http://%s:%d/metrics", _gpu.server.server_address[0], _gpu.port)


def on_exit(server: Any) -> None:
    if _gpu is not None:
        _gpu.close()
