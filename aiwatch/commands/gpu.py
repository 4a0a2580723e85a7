"""``aiwatch gpu``: print the GPUs NVML sees, or serve their metrics (one poller per host)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

DEFAULT_TIMEOUT = 10.0
"""Seconds ``aiwatch gpu`` waits for NVML to answer its one poll."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gpu", help="print the NVIDIA GPUs with their current metrics, or serve them with --serve PORT",
        description="Poll NVML once and print a table of the GPUs (or 'no NVIDIA GPU found: <reason>'; exit 0 "
                    "either way). With --serve PORT, keep polling and serve the aiwatch_gpu_* metrics on "
                    "http://ADDR:PORT/metrics: run it once per host as a sidecar (exit 1 without the gpu extra, 2 "
                    "when the port cannot be served).")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve /metrics on this port until stopped")
    parser.add_argument("--addr", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between polls with --serve (default $AIWATCH_GPU_POLL_INTERVAL or 5)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to wait for NVML to answer the poll (default {DEFAULT_TIMEOUT:g}); past it, "
                             "say so and exit 2")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aiwatch._optional import MissingExtraError
    from aiwatch.amounts import period

    try:
        period(args.timeout, "--timeout")  # past 1e9, thread.join() would raise OverflowError
    except ValueError as exc:
        print(f"aiwatch gpu: {exc}", file=sys.stderr)
        return 2
    try:
        from prometheus_client import CollectorRegistry

        from aiwatch.metrics import Metrics
        from aiwatch.signals.gpu import GpuPoller, format_table, serve_gpu_metrics

        if args.serve is not None:
            return _serve(lambda: serve_gpu_metrics(args.serve, args.addr, interval=args.interval))
        # its own metrics, in memory: run where the app runs (PROMETHEUS_MULTIPROC_DIR set), the global registry's
        # error counters went into the workers' directory, merged into every worker's /metrics
        poller = GpuPoller(args.interval, metrics=Metrics(CollectorRegistry(), in_process=True))
    except MissingExtraError as exc:
        if args.serve is not None:  # a metrics server that never started: no success, and not "no GPU" either
            print(f"aiwatch gpu: cannot serve the GPU metrics: {exc}", file=sys.stderr)
            return 1
        print(f"no NVIDIA GPU found: {exc}")
        return 0
    except ValueError as exc:
        print(f"aiwatch gpu: {exc}", file=sys.stderr)
        return 2
    gpu_log = logging.getLogger("aiwatch.signals.gpu")
    quiet = logging.NullHandler()  # the table says it all: no duplicate warning from the poller on stderr
    gpu_log.addHandler(quiet)
    gpu_log.propagate = False
    try:
        snap = _poll_within(poller, args.timeout)
    finally:
        gpu_log.removeHandler(quiet)
        gpu_log.propagate = True
    if snap is None:
        print(f"aiwatch gpu: NVML did not answer within {args.timeout:g} s (a hung driver call); no GPU table",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(snap), indent=2, default=dict))
    else:
        print(format_table(snap))
    return 0


def _poll_within(poller: Any, timeout: float) -> Any:
    """One poll on a daemon thread, waited for ``timeout`` seconds at most: the snapshot, or ``None`` when NVML
    did not answer in time (the thread is left in the hung call; the process exits without it)."""
    result: list[Any] = []

    def poll() -> None:
        result.append(poller.poll_once())
        poller.stop()

    thread = threading.Thread(target=poll, name="aiwatch-gpu-poll", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None


def _serve(start: Any) -> int:
    stop = threading.Event()
    # before start(): the metrics answer as soon as it has begun, and a SIGTERM between that and a handler
    # installed after it killed the process without closing the server (exit -15)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            served = start()
        except OSError as exc:
            print(f"aiwatch gpu: cannot serve the GPU metrics: {exc}", file=sys.stderr)
            return 2
        print(f"serving GPU metrics on http://{served.server.server_address[0]}:{served.port}/metrics", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            served.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
