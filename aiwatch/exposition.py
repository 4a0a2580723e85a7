"""Serving the metrics: ``/metrics`` as an ASGI app, a WSGI app, or a standalone HTTP server.

Prometheus text or OpenMetrics is chosen by content negotiation (the ``Accept`` header), as prometheus_client does;
exemplars (trace ids on latency histograms) appear only in OpenMetrics. When ``PROMETHEUS_MULTIPROC_DIR`` is set
(gunicorn with several workers), the apps serve the merged view of every worker process.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as _multiprocess

from aiwatch.env import LEGACY_MULTIPROC_DIR, MULTIPROC_DIR
from aiwatch.safety import record_error


def multiprocess_dir() -> str | None:
    """The multiprocess directory as prometheus_client reads it: ``PROMETHEUS_MULTIPROC_DIR``, else the old lowercase
    ``prometheus_multiproc_dir``; ``None`` when neither is set. Set, even empty, either one puts prometheus_client in
    multiprocess mode."""
    for variable in (MULTIPROC_DIR, LEGACY_MULTIPROC_DIR):
        if variable.is_set():
            return variable.raw()
    return None


def multiprocess_enabled() -> bool:
    """Whether prometheus_client multiprocess mode is on with a directory to merge (:func:`multiprocess_dir`)."""
    return bool(multiprocess_dir())


def multiprocess_misconfiguration() -> str | None:
    """What is wrong with the multiprocess setting, or ``None``: set but empty, prometheus_client is in multiprocess
    mode with no directory (every process writes its sample files into its working directory, and there is nothing
    to merge: ``/metrics`` shows the one process that answers the scrape)."""
    if multiprocess_dir() == "":
        name = (MULTIPROC_DIR if MULTIPROC_DIR.is_set() else LEGACY_MULTIPROC_DIR).name
        return (f"{name} is set but empty: prometheus_client writes each process's sample files into its working "
                "directory, and /metrics shows only the worker that answers each scrape. Set it to a directory "
                "(the same for every worker), or unset it")
    return None


#: prometheus_client's sample files in multiprocess mode: ``counter_<pid>.db``, ``gauge_livesum_<pid>.db``...
_SAMPLE_FILE = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_([0-9]+)\.db")


def remove_dead_process_files() -> int:
    """Remove the sample files that processes no longer running left in :func:`multiprocess_dir` (creating the
    directory when it is missing); returns how many. A run killed with its workers, or one that ended before
    :func:`aiwatch.gunicorn.child_exit` ran, leaves them: merged into ``/metrics`` they show its requests as still
    in flight, and a new worker given a dead one's pid (pids restart at 1 in a container) adds to its old counts.
    Files of running processes (another server's workers during gunicorn's USR2 upgrade) are kept. A file that
    cannot be removed is left, and counted once per call as aiwatch's error (component ``multiprocess``)."""
    directory = Path(multiprocess_dir() or "")
    directory.mkdir(parents=True, exist_ok=True)
    removed = 0
    failed: list[tuple[Path, OSError]] = []
    for path in directory.iterdir():
        match = _SAMPLE_FILE.fullmatch(path.name)
        if match and not _running(int(match.group(1))) and path.is_file():
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # one file that cannot go (another user's) leaves the others to remove
                failed.append((path, exc))
                continue
            removed += 1
    if failed:
        first, error = failed[0]
        record_error("multiprocess", OSError(f"{len(failed)} sample file(s) of processes no longer running could not "
                                             f"be removed, the first {first.name}: {error}"))
    return removed


def _running(pid: int) -> bool:
    if pid <= 0:  # 0 would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):
        return False
    return True


def serving_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: in multiprocess mode a fresh one collecting every worker's files."""
    if multiprocess_enabled():
        merged = CollectorRegistry()
        _multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return registry if registry is not None else prometheus_client.REGISTRY


def make_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics of ``registry`` (default: the global registry)."""
    return prometheus_client.make_asgi_app(serving_registry(registry))


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving the metrics of ``registry`` (default: the global registry)."""
    return prometheus_client.make_wsgi_app(serving_registry(registry))


def start_http_server(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve the metrics on ``addr:port`` from a daemon thread; returns (server, thread)."""
    return prometheus_client.start_http_server(port, addr=addr, registry=serving_registry(registry))
