"""gunicorn settings for running an aiwatch-instrumented app with several worker processes.

With several workers each process has its own metrics, so prometheus_client's multiprocess mode must be on:
every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (served by any worker)
merges them, so every request is counted exactly once whichever worker served it. Set the variable before gunicorn
starts (prometheus_client reads it at import), and load this module as the config::

    PROMETHEUS_MULTIPROC_DIR=/tmp/aiwatch-metrics gunicorn -w 4 -c python:aiwatch.gunicorn app:app

or, in your own ``gunicorn.conf.py``::

    from aiwatch.gunicorn import child_exit, on_starting, pre_fork  # noqa: F401  (gunicorn looks hooks up by name)

``on_starting`` clears what a previous run left in the directory (prometheus_client asks for it to be wiped before
each start), ``child_exit`` drops an exited worker's live gauges and folds its counts into the master's archive
files, ``pre_fork`` leaves the schedules of the drift
monitors the app started at import (``--preload``), and the metrics servers it started (``start_http_server``), to
the workers. For FastAPI, add ``-k uvicorn_worker.UvicornWorker`` (the ``uvicorn-worker`` package; uvicorn's own
``uvicorn.workers.UvicornWorker`` is deprecated). In multiprocess mode prometheus_client
stores no exemplars, and the in-flight gauge is summed over live workers.
"""

from __future__ import annotations

import sys
from typing import Any

from aiwatch.exposition import (
    fold_dead_process_files,
    hand_over_http_servers,
    multiprocess_dir,
    multiprocess_directory_problem,
    multiprocess_enabled,
    multiprocess_misconfiguration,
    remove_dead_process_files,
    remove_live_gauges,
)
from aiwatch.safety import record_error

__all__ = ["child_exit", "on_starting", "pre_fork"]


def on_starting(server: Any) -> None:
    """gunicorn hook, in the master before any worker starts: remove the samples that processes no longer running
    left in ``PROMETHEUS_MULTIPROC_DIR`` (:func:`~aiwatch.exposition.remove_dead_process_files`), so that a restart
    after a crash does not serve the dead run's requests as still in flight. A ``PROMETHEUS_MULTIPROC_DIR`` set but
    empty, or not set while gunicorn runs several workers, is logged as an error and counted (component
    ``multiprocess``): the workers start, each serving only its own samples. One that is a file, or a directory
    gunicorn's user cannot write to, is logged and counted the same (each worker's ``aiwatch.instrument()`` then
    refuses it): the master had logged a bare FileExistsError."""
    problem = multiprocess_misconfiguration() or multiprocess_directory_problem()
    if problem is not None:
        server.log.error("aiwatch: %s", problem)
        record_error("multiprocess", ValueError(problem))
        return
    if not multiprocess_enabled():
        workers = getattr(getattr(server, "cfg", None), "workers", 1)
        if isinstance(workers, int) and workers > 1:
            problem = (f"gunicorn runs {workers} workers but PROMETHEUS_MULTIPROC_DIR is not set: each worker keeps "
                       "its own metrics, and /metrics shows only the worker that answers each scrape (its counters "
                       "jump between the workers' values, which Prometheus reads as resets). Set it to a directory "
                       "(the same for every worker) before gunicorn starts")
            server.log.error("aiwatch: %s", problem)
            record_error("multiprocess", ValueError(problem))
        return
    try:
        removed = remove_dead_process_files(parent=False)
    except Exception as exc:
        record_error("multiprocess", exc)
        return
    if removed:
        server.log.info("aiwatch: removed %d sample files of processes no longer running from "
                        "PROMETHEUS_MULTIPROC_DIR", removed)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited; drop its live gauges (in-flight requests) from the merged view, as
    prometheus_client's ``mark_process_dead`` (a file a scrape's drop of the same gone pid removed first is no
    error), and fold its other sample files into the master's archives
    (:func:`~aiwatch.exposition.fold_dead_process_files`): the requests it served still count, and the directory
    does not grow by a set of files per worker ``max_requests`` recycles."""
    if not multiprocess_enabled():
        return
    path = multiprocess_dir() or ""
    try:
        remove_live_gauges(worker.pid, path)
    except Exception as exc:
        record_error("multiprocess", exc)
    try:
        fold_dead_process_files([worker.pid], path)
    except Exception as exc:
        record_error("multiprocess", exc)


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn hook, in the master before it forks a worker: the drift monitors that the app started at import
    (``--preload``) stop evaluating in the master, whose window no request reaches; each worker resumes the schedule
    at its first row (:func:`aiwatch.drift.monitor.hand_over_schedules`). The metrics servers the app started
    (``aiwatch.start_http_server``) stop serving the master's registry; each worker serves them
    (:func:`aiwatch.exposition.hand_over_http_servers`)."""
    try:
        hand_over_http_servers()
    except Exception as exc:
        record_error("multiprocess", exc)
    monitor = sys.modules.get("aiwatch.drift.monitor")  # not imported: no monitor to hand over, and none imported here
    if monitor is None:
        return
    try:
        monitor.hand_over_schedules()
    except Exception as exc:
        record_error("drift", exc)
