"""How long ``aiwatch diagnose`` takes against a real Prometheus holding 50 services x 10 phases.

The history is written beforehand and backfilled (``promtool tsdb create-blocks-from openmetrics``), so the bench
needs no hour of scraping: 50 services in a binary call tree (``svc-00`` calls ``svc-01`` and ``svc-02`` from its
phases ``call_a`` and ``call_b``, ``svc-01`` calls ``svc-03`` and ``svc-04``, ...), each with 10 phases (8 of its own
plus the two call phases, or 10 of its own for a leaf; ``overhead`` among them), every series the instrumentation
exports for that traffic: the request histogram (two statuses), the phase histograms, the client and network
histograms of every call, the slow-request counters and the gauges, all buckets included. A scrape every
``--interval`` seconds over the default baseline and incident windows (1 h + 5 min) and a margin. In the incident
window the model phase of ``svc-07`` (four levels down: svc-00 -> 01 -> 03 -> 07) is 100 ms slower, and the
diagnosis of ``svc-00`` must name it.

Timed, after one warm-up query:

- the library, ``diagnose(PrometheusWindows(url), "svc-00", at=...)``: one instant query per read in each window
  (2 x 30 at stop 48) and each window's coverage and resets queries, 64 in all (the bench counts and prints them),
  8 in flight;
- the command end to end, ``python -m aiwatch diagnose --prometheus URL --service svc-00 --at T --json`` (a new
  Python process: imports included), and without ``--service`` (the entry service is found from the same reads).

    PYTHONPATH=. python bench/diagnose_bench.py             # 30 s scrape interval
    PYTHONPATH=. python bench/diagnose_bench.py --interval 15
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwatch.diagnose import PrometheusWindows, diagnose
from aiwatch.metrics import LATENCY_BUCKETS
from tests.diagnose.backfill import backfilled_prometheus
from tests.servers import python_env

SERVICES = 50
PHASES = 10
REQUESTS_PER_SECOND = 20.0
SLOW_THRESHOLD = 0.3
BASELINE, INCIDENT = 3600.0, 300.0
CULPRIT, CULPRIT_PHASE, ADDED = 7, "inference", 0.100
BOUNDS = [*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"]


def name(i: int) -> str:
    return f"svc-{i:02d}"


def children(i: int) -> list[int]:
    return [c for c in (2 * i + 1, 2 * i + 2) if c < SERVICES]


def own_phases(i: int) -> dict[str, float]:
    """Mean seconds of each phase's own work (outside calls)."""
    calls = len(children(i))
    names = ["queue", "features", "inference", "rerank", "encode", "decode", "auth", "log", "overhead", "cache"]
    names = names[:PHASES - calls]
    means = {p: 0.001 + 0.0005 * k for k, p in enumerate(names)}
    means["inference"] = 0.010
    return {**means, **{f"call_{'ab'[k]}": 0.0003 for k in range(calls)}}


def mean_request(i: int, slow: bool) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The phase means of service ``i`` (call phases holding the callee's time plus the network) and, per call
    phase, ``(client seconds, network seconds)``; ``slow``: the incident (the culprit's model is slower)."""
    phases = own_phases(i)
    if slow and i == CULPRIT:
        phases[CULPRIT_PHASE] += ADDED
    calls: dict[str, tuple[float, float]] = {}
    for k, child in enumerate(children(i)):
        child_phases, _ = mean_request(child, slow)
        network = 0.002
        client = sum(child_phases.values()) + network
        calls[f"call_{'ab'[k]}"] = (client, network)
        phases[f"call_{'ab'[k]}"] += client
    return phases, calls


class Writer:
    """Writes one OpenMetrics family at a time: every series' value at every scrape time."""

    def __init__(self, out: TextIO, times: np.ndarray) -> None:
        self.out, self.times = out, times
        self.stamps = [f" {t:.0f}\n" for t in times]
        self.series = 0

    def family(self, family: str, kind: str) -> None:
        self.out.write(f"# TYPE {family} {kind}\n")

    def write(self, sample: str, labels: dict[str, str], values: np.ndarray) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        head = f"{sample}{{{text}}} "
        self.out.writelines(f"{head}{v:.6g}{s}" for v, s in zip(values.tolist(), self.stamps, strict=True))
        self.series += 1


def counter(per_second: np.ndarray, interval: float) -> np.ndarray:
    """A counter's values from its per-second increase in each scrape interval (starting at 0)."""
    return np.concatenate([[0.0], np.cumsum(per_second[1:] * interval)])


def histogram(w: Writer, family: str, labels: dict[str, str], rate: np.ndarray, mean: np.ndarray,
              interval: float) -> None:
    """A histogram whose observations in each interval are spread around ``mean`` (from 0.5x to 1.5x)."""
    count = counter(rate, interval)
    for bound in BOUNDS:
        le = float(bound)
        share = np.clip((le - 0.5 * mean) / np.maximum(mean, 1e-9), 0.0, 1.0)
        w.write(f"{family}_bucket", {**labels, "le": bound}, counter(rate * share, interval))
    w.write(f"{family}_sum", labels, counter(rate * mean, interval))
    w.write(f"{family}_count", labels, count)


def write_history(path: Path, start: float, interval: float) -> tuple[int, int, float]:
    """The whole history as OpenMetrics; returns (series, samples, the incident window's end)."""
    steps = int((BASELINE + INCIDENT + 600) / interval) + 1
    times = start + interval * np.arange(steps)
    incident_start = start + 300 + BASELINE
    incident_end = incident_start + INCIDENT
    slow = (times > incident_start) & (times <= incident_end)
    means = {i: (mean_request(i, False), mean_request(i, True)) for i in range(SERVICES)}

    def over_time(i: int, pick: str, key: str) -> np.ndarray:
        (quiet_phases, quiet_calls), (slow_phases, slow_calls) = means[i]
        if pick == "phase":
            return np.where(slow, slow_phases[key], quiet_phases[key])
        index = 0 if pick == "client" else 1
        return np.where(slow, slow_calls[key][index], quiet_calls[key][index])

    def total(i: int) -> np.ndarray:
        return sum((over_time(i, "phase", p) for p in means[i][0][0]), np.zeros(steps))

    rate = np.full(steps, REQUESTS_PER_SECOND)
    with path.open("w") as out:
        w = Writer(out, times)
        w.family("aiwatch_request_duration_seconds", "histogram")
        for i in range(SERVICES):
            for status, share in (("200", 0.99), ("500", 0.01)):
                histogram(w, "aiwatch_request_duration_seconds", {"service": name(i), "route": "/predict",
                          "method": "POST", "status": status}, rate * share, total(i), interval)
        w.family("aiwatch_phase_duration_seconds", "histogram")
        for i in range(SERVICES):
            for phase in means[i][0][0]:
                histogram(w, "aiwatch_phase_duration_seconds", {"service": name(i), "model": "m", "phase": phase},
                          rate, over_time(i, "phase", phase), interval)
        for family, pick in (("aiwatch_client_request_duration_seconds", "client"),
                             ("aiwatch_network_duration_seconds", "network")):
            w.family(family, "histogram")
            for i in range(SERVICES):
                for k, child in enumerate(children(i)):
                    phase = f"call_{'ab'[k]}"
                    labels = {"service": name(i), "peer": name(child), "phase": phase}
                    if pick == "client":
                        labels |= {"route": "/predict", "status": "200"}
                    histogram(w, family, labels, rate, over_time(i, pick, phase), interval)
        # the tail: requests above the threshold, a share that grows with the mean (10% at the threshold)
        w.family("aiwatch_slow_requests", "counter")
        slow_share = {i: np.clip(0.1 * total(i) / SLOW_THRESHOLD, 0.0, 1.0) for i in range(SERVICES)}
        for i in range(SERVICES):
            w.write("aiwatch_slow_requests_total", {"service": name(i)}, counter(rate * slow_share[i], interval))
        w.family("aiwatch_slow_phase_seconds", "counter")
        for i in range(SERVICES):
            for phase in means[i][0][0]:
                w.write("aiwatch_slow_phase_seconds_total", {"service": name(i), "phase": phase},
                        counter(rate * slow_share[i] * over_time(i, "phase", phase) * 1.5, interval))
        for family, pick in (("aiwatch_slow_call_seconds", "client"), ("aiwatch_slow_network_seconds", "network")):
            w.family(family, "counter")
            for i in range(SERVICES):
                for k, child in enumerate(children(i)):
                    phase = f"call_{'ab'[k]}"
                    w.write(f"{family}_total", {"service": name(i), "peer": name(child), "phase": phase},
                            counter(rate * slow_share[i] * over_time(i, pick, phase) * 1.5, interval))
        w.family("aiwatch_slow_threshold_seconds", "gauge")
        for i in range(SERVICES):
            w.write("aiwatch_slow_threshold_seconds", {"service": name(i)}, np.full(steps, SLOW_THRESHOLD))
        w.family("aiwatch_requests_in_flight", "gauge")
        for i in range(SERVICES):
            w.write("aiwatch_requests_in_flight", {"service": name(i)}, REQUESTS_PER_SECOND * total(i))
        w.family("aiwatch_queue_depth", "gauge")
        for i in range(SERVICES):
            w.write("aiwatch_queue_depth", {"queue": name(i)}, np.full(steps, 2.0))
        out.write("# EOF\n")
    return w.series, w.series * steps, float(incident_end)


def timed(fn: object, runs: int) -> Iterator[float]:
    for _ in range(runs):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        yield time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between scrapes (default 30)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    args = parser.parse_args(argv)
    start = float(int(time.time() - 3 * 3600) // 60 * 60)
    with tempfile.TemporaryDirectory(prefix="aiwatch-diagnose-bench-") as tmp:
        path = Path(tmp) / "history.om"
        began = time.perf_counter()
        series, samples, at = write_history(path, start, args.interval)
        written = time.perf_counter() - began
        print(f"{SERVICES} services x {PHASES} phases: {series} series, {samples} samples (a scrape every "
              f"{args.interval:g} s over {(BASELINE + INCIDENT + 600) / 3600:.2f} h), "
              f"{path.stat().st_size / 2**20:.0f} MiB of OpenMetrics written in {written:.1f} s")
        began = time.perf_counter()
        with backfilled_prometheus(path) as prom:
            print(f"promtool backfill + Prometheus start: {time.perf_counter() - began:.1f} s")
            src = PrometheusWindows(prom.url)
            src.window_totals(at - 3 * args.interval, at)  # warm-up: the first query opens the blocks
            library = list(timed(lambda: diagnose(src, "svc-00", at=at), args.runs))
            asked = 0
            query = src.api.query

            def counted(*a: object, **kw: object) -> object:
                nonlocal asked
                asked += 1
                return query(*a, **kw)  # type: ignore[arg-type]

            src.api.query = counted  # type: ignore[method-assign,assignment]
            d = diagnose(src, "svc-00", at=at)
            src.api.query = query  # type: ignore[method-assign]
            print(f"verdict: {d.verdict}")
            assert d.cause == f"model:{name(CULPRIT)}/{CULPRIT_PHASE}", d.cause
            command = [sys.executable, "-m", "aiwatch", "diagnose", "--prometheus", prom.url, "--at", f"{at:.0f}",
                       "--json"]

            def cli(*extra: str) -> None:
                done = subprocess.run([*command, *extra], capture_output=True, text=True, env=python_env())
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout)["cause"] == d.cause

            named = list(timed(lambda: cli("--service", "svc-00"), args.runs))
            entry = list(timed(cli, args.runs))
            startup = list(timed(lambda: subprocess.run([sys.executable, "-c", "import aiwatch.commands.diagnose"],
                                                        check=True, env=python_env()), args.runs))
    queries = asked  # counted on one diagnosis: the reads of both windows, and each window's extra queries
    print(f"{'what':<58}{'median s':>10}{'min s':>8}{'max s':>8}")
    for label, values in ((f"library diagnose(), {queries} queries", library),
                          ("aiwatch diagnose --service svc-00 --json (new process)", named),
                          ("aiwatch diagnose --json (entry service found)", entry),
                          ("  of which: python start + import", startup)):
        print(f"{label:<58}{statistics.median(values):>10.3f}{min(values):>8.3f}{max(values):>8.3f}")
    worst = max(max(named), max(entry))
    print(f"target: under 2 s end to end: {'met' if worst < 2.0 else 'MISSED'} (slowest run {worst:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
