"""gunicorn settings for running an aiwatch-instrumented app with several worker processes.

With several workers each process has its own metrics, so prometheus_client's multiprocess mode must be on:
every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (served by any worker)
merges them, so every request is counted exactly once whichever worker served it. Set the variable to an empty
directory before gunicorn starts (prometheus_client reads it at import), and load this module as the config::

    rm -rf /tmp/aiwatch-metrics && mkdir /tmp/aiwatch-metrics
    PROMETHEUS_MULTIPROC_DIR=/tmp/aiwatch-metrics gunicorn -w 4 -c python:aiwatch.gunicorn app:app

or, in your own ``gunicorn.conf.py``::

    from aiwatch.gunicorn import child_exit  # noqa: F401  (gunicorn looks hooks up by name)

For FastAPI, add ``-k uvicorn.workers.UvicornWorker`` (or ``uvicorn_worker.UvicornWorker``). In multiprocess
mode prometheus_client stores no exemplars, and the in-flight gauge is summed over live workers.
"""

from __future__ import annotations

from typing import Any

from aiwatch.exposition import multiprocess_enabled
from aiwatch.safety import record_error

__all__ = ["child_exit"]


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited; drop its live gauges (in-flight requests) from the merged view.

    Its counters and histograms stay: the requests it served still count."""
    if not multiprocess_enabled():
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
    except Exception as exc:
        record_error("multiprocess", exc)
