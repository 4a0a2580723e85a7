"""The root-cause matrix: every demo scenario at every severity, side by side, on a real Prometheus and Alertmanager.

Each cell of the matrix is one demo (a gateway and an inference service, :mod:`aiwatch.demo.gateway` and
:mod:`aiwatch.demo.inference`) under its own names (``net50-gateway``, ``net50-recommender``...), so that its series
and alerts are its own in the one Prometheus that scrapes them all, every second, and evaluates the demo's rules
(:func:`aiwatch.demo.alerting.rules_config`) every second. All cells run the same schedule: a cache warm-up, a
``baseline`` stage, then the ``fault`` stage in which each cell's scenario injects its fault. Then, per cell:

- the alerts Prometheus had firing during the fault stage, against the scenario's required and forbidden alerts
  (:meth:`~aiwatch.demo.scenarios.Scenario.required_alerts`, ``forbidden_alerts``; the control must fire none at
  all, at any time);
- ``aiwatch diagnose`` of the cell's gateway, fault stage against baseline, read from Prometheus, against the
  scenario's expected cause.

The faults are sleeps (a slower feature store, a throttled model) or a delaying proxy (the network), and the model
is mostly simulated accelerator time, so the whole matrix needs little CPU and its numbers hold on a busy machine.
Each scenario's traffic is chosen so that the injected part is the largest added time (see :data:`CELL_PLANS`).

``scripts/root_cause_matrix.py`` runs it and prints the table; ``tests/demo/test_root_cause_matrix.py`` asserts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiwatch.console.source import ERROR_STATUS_RE, duration
from aiwatch.demo import alerting, loadgen, scenarios
from aiwatch.demo.faults import Injector
from aiwatch.demo.names import Names
from aiwatch.demo.processes import HOST, DemoFailed, Supervisor, free_port
from aiwatch.demo.scenarios import AlertMatch, Scenario
from aiwatch.demo.slowlink import SlowLink
from aiwatch.diagnose import READS, DiagnoseError, Diagnosis, Read, WindowTotals, diagnose_windows
from aiwatch.diagnose.sources import aggregate
from aiwatch.diagnose.window import Key
from aiwatch.promql import by, eq, matches, series

SEVERITIES_MS: tuple[float, ...] = (50.0, 200.0)
#: The matrix's noise floor: a part whose time per request moved less than this did not move. A fifth of the
#: smallest severity. Diagnose's own default (2 ms, or 5% of the baseline's mean) suits one service under steady
#: load; here twelve demos share two cores, with the fault stage's extra work (the sale's traffic) and whatever
#: else runs on the machine, and the parts that wait for a CPU (a gateway's overhead, the network) of a cell
#: without a fault moved by up to 7 ms between its two windows on the 2-core VM of the published runs, with other
#: work keeping a core busy.
NOISE_FLOOR_SECONDS = 0.010
#: When tasks wait for a CPU more than this share of a stage (Linux CPU pressure, "some"), the matrix's twelve demos
#: have too little CPU: waiting for one adds tens of milliseconds to every part that runs Python, more in one stage
#: than in the other.
DISTURBED_PRESSURE = 0.9
SHORT = {"flash-sale": "sale", "network": "net", "feature-store": "store", "model": "model", "drift": "drift",
         "none": "none"}


@dataclass(frozen=True)
class CellPlan:
    """One scenario's traffic and model in the matrix.

    ``rps`` is the baseline's rate (the fault stage's too, except the flash sale's 10x); ``model_ms`` the model's
    time per call (``cpu_ms`` of it numpy work, the rest a simulated accelerator), ``max_batch`` its batch size."""

    rps: float
    model_ms: float = 20.0
    cpu_ms: float = 0.5
    max_batch: int = 2


#: Why these loads: the injected part must be the largest added time, the baseline must stay below the alert
#: thresholds, and the matrix must stay light on CPU.
#:
#: - ``model``: a slower model also makes requests wait for it, so it runs at 2 req/s, where a request rarely finds
#:   the model busy (at +200 ms, about one call in three: the queue adds ~50 ms to the model's +200 ms; at 5 req/s
#:   the model would be busy most of the time and the queue would add about as much as the model). Its model takes
#:   110 ms, so that +50 ms crosses the model-latency threshold (150 ms).
#: - ``flash-sale``: the sale (10x 3 req/s) must exceed the model's capacity well (so that the requests the sale
#:   keeps in flight always find it busy), and that capacity is kept small, so that the sale costs little CPU:
#:   60 ms per call, one request per call (16.7 req/s). Before the sale, the model is busy a sixth of the time, so
#:   its queue's p99 can already be near the non-model threshold.
#: - ``drift``: 200 values in the drift monitor's window (8 req/s over 28 s).
#: - the others: a 20 ms model (its queue's p99 stays under the 40 ms non-model threshold) at 3 req/s.
CELL_PLANS: dict[str, CellPlan] = {
    "flash-sale": CellPlan(rps=3.0, model_ms=60.0, max_batch=1),
    "network": CellPlan(rps=3.0),
    "feature-store": CellPlan(rps=3.0),
    "model": CellPlan(rps=2.0, model_ms=110.0),
    "drift": CellPlan(rps=8.0),
    "none": CellPlan(rps=3.0),
}


@dataclass(frozen=True)
class MatrixOptions:
    scenarios: tuple[str, ...] = tuple(scenarios.SCENARIOS)
    severities_ms: tuple[float, ...] = SEVERITIES_MS
    warmup_seconds: float = 8.0
    baseline_seconds: float = 30.0
    fault_seconds: float = 40.0
    #: alerts that fire this long after the fault stage ended still count as the fault's (evaluation lag)
    grace_seconds: float = 3.0
    #: Prometheus' scrape and rule-evaluation interval
    interval: str = "2s"
    seed: int = 11
    transport: str = "grpc"


@dataclass
class Cell:
    scenario: Scenario
    severity_ms: float
    key: str
    plan: CellPlan
    names: Names
    gateway_url: str = ""
    inference_url: str = ""
    gateway_port: int = 0
    inference_port: int = 0
    link: SlowLink | None = None
    injector: Injector | None = None
    sale_in_flight: int | None = None
    capacity_rps: float = 0.0
    #: results
    diagnosis: Diagnosis | None = None
    diagnosis_error: str | None = None
    fired: list[dict[str, str]] = field(default_factory=list)
    fired_outside_fault: list[dict[str, str]] = field(default_factory=list)
    load: dict[str, dict[str, int]] = field(default_factory=dict)
    #: "service/phase" -> p99 seconds in the baseline and the fault stage (what the latency alerts look at)
    p99: dict[str, tuple[float | None, ...]] = field(default_factory=dict)

    @property
    def expected_cause(self) -> str:
        return self.scenario.expected_cause(self.names)

    @property
    def cause(self) -> str:
        return self.diagnosis.cause if self.diagnosis is not None else "error"

    @property
    def attributed(self) -> bool:
        """Diagnose ranked the injected cause first (for the control: nothing above the noise floor)."""
        return self.cause == self.expected_cause

    @property
    def falsely_attributed(self) -> bool:
        """Diagnose named a part that was not the injected one (a miss, naming nothing, is not false)."""
        return self.cause not in (self.expected_cause, "none", "error")

    def missing_alerts(self) -> list[AlertMatch]:
        return [m for m in self.scenario.required_alerts(self.names) if not any(m.matches(a) for a in self.fired)]

    def wrong_alerts(self) -> list[dict[str, str]]:
        """Alerts that fired but should have stayed silent (for the control: any alert of this cell, any time)."""
        if self.scenario.name == "none":
            return [*self.fired, *self.fired_outside_fault]
        forbidden = self.scenario.forbidden_alerts(self.names)
        return [a for a in self.fired if any(m.matches(a) for m in forbidden)]

    @property
    def passed(self) -> bool:
        return self.attributed and not self.missing_alerts() and not self.wrong_alerts()

    def as_dict(self) -> dict[str, Any]:
        d = self.diagnosis
        top = d.moved[0] if d is not None and d.moved else None
        return {"scenario": self.scenario.name, "severity_ms": self.severity_ms, "cell": self.key,
                "expected_cause": self.expected_cause, "cause": self.cause, "attributed": self.attributed,
                "top_delta_seconds": top.delta_seconds if top else None, "top_share": top.share if top else None,
                "verdict": d.verdict if d is not None else self.diagnosis_error,
                "alerts_fired": sorted({alerting.describe(a) for a in self.fired}),
                "missing_alerts": [str(m) for m in self.missing_alerts()],
                "wrong_alerts": sorted({alerting.describe(a) for a in self.wrong_alerts()}),
                "load": self.load, "passed": self.passed, "p99_seconds": self.p99,
                "diagnosis": d.to_dict() if d is not None else None}


@dataclass
class MatrixResult:
    cells: list[Cell]
    baseline: tuple[float, float]
    fault: tuple[float, float]
    seconds: float
    #: CPU seconds used during the run, by part (the services, Prometheus, Alertmanager, this process)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: per stage: cores that other work on the machine kept busy on average, and the CPU pressure (the share of
    #: the time some task waited for a CPU, ``"<stage> cpu pressure"``)
    others_cores: dict[str, float] = field(default_factory=dict)

    @property
    def disturbed(self) -> bool:
        """Tasks waited for a CPU more than :data:`DISTURBED_PRESSURE` of a measured stage (see the test)."""
        return any(self.others_cores.get(f"{k} cpu pressure", 0.0) > DISTURBED_PRESSURE for k in ("baseline", "fault"))

    @property
    def ac_at_1(self) -> float:
        """Share of cells whose top-ranked cause is the injected one (the control: nothing)."""
        return sum(c.attributed for c in self.cells) / len(self.cells) if self.cells else math.nan

    @property
    def false_attribution_rate(self) -> float:
        """Share of cells whose top-ranked cause is a part that was not injected."""
        return sum(c.falsely_attributed for c in self.cells) / len(self.cells) if self.cells else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"ac_at_1": self.ac_at_1, "false_attribution_rate": self.false_attribution_rate,
                "seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "others_cores": self.others_cores,
                "baseline": self.baseline,
                "fault": self.fault,
                "cells": [c.as_dict() for c in self.cells]}


def cells_of(options: MatrixOptions) -> list[Cell]:
    out = []
    for name in options.scenarios:
        scenario = scenarios.get(name)
        for severity in options.severities_ms:
            key = f"{SHORT[name]}{severity:g}"
            out.append(Cell(scenario, severity, key, CELL_PLANS[name], Names.prefixed(key)))
    return out


# --- reading a cell's windows from Prometheus -----------------------------------------------------------------------


def read_promql(read: Read, seconds: float, cell: str) -> str:
    """The instant query answering ``read`` for the window of ``seconds`` ending at the query's time, for one cell's
    series (``cell`` is the label Prometheus' scrape config gives each cell's targets)."""
    selected = series(read.metric, eq("cell", cell), *([matches("status", ERROR_STATUS_RE)]
                                                        if read.errors_only else []))
    w = duration(seconds)
    if read.kind == "increase":
        return by("sum", read.by, f"increase({selected}[{w}])")
    if read.kind == "avg":
        return by("sum", read.by, f"avg_over_time({selected}[{w}])")
    return by("max", read.by, f"max_over_time({selected}[{w}])")


def prometheus_window(prometheus_url: str, cell: str, start: float, end: float) -> WindowTotals:
    """Every read of :data:`aiwatch.diagnose.READS` for ``[start, end]``, one instant query each at ``end``: what
    :func:`aiwatch.diagnose.prometheus_totals` asks, restricted to one cell's series (it has no selector)."""

    def answer(read: Read) -> dict[Key, float]:
        rows = alerting.query(prometheus_url, read_promql(read, end - start, cell), at=end)
        return aggregate(read, ((row["metric"], float(row["value"][1])) for row in rows
                                if not math.isnan(float(row["value"][1]))))

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(answer, READS))
    return WindowTotals(start, end, {read.key: found for read, found in zip(READS, answers, strict=True)})


def phase_p99s(prometheus_url: str, cell: str, *windows: tuple[float, float]) -> dict[
        str, tuple[float | None, ...]]:
    """``service/phase`` (and ``service/network``) -> the p99 over each window, for one cell."""
    out: dict[str, list[float | None]] = {}
    for i, (start, end) in enumerate(windows):
        w = duration(end - start)
        for metric, label in (("aiwatch_phase_duration_seconds", "phase"), ("aiwatch_network_duration_seconds",
                                                                             "peer")):
            promql = (f"histogram_quantile(0.99, sum by (service, {label}, le) "
                      f"(increase({metric}_bucket{{cell={json.dumps(cell)}}}[{w}])))")
            for row in alerting.query(prometheus_url, promql, at=end):
                name = row["metric"].get(label, "")
                key = f"{row['metric'].get('service', '')}/{'network' if label == 'peer' else name}"
                value = float(row["value"][1])
                out.setdefault(key, [None] * len(windows))[i] = None if math.isnan(value) else value
    return {k: tuple(v) for k, v in sorted(out.items())}


# --- running it -------------------------------------------------------------------------------------------------------


class AlertLog:
    """Polls Prometheus' alerts every second on a thread and keeps when each firing alert was seen."""

    def __init__(self, prometheus_url: str) -> None:
        self.url = prometheus_url
        self.seen: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiwatch-matrix-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as resp:
                    alerts = json.loads(resp.read())["data"]["alerts"]
            except (OSError, ValueError, KeyError):
                continue
            now = time.time()
            self.seen += [(now, dict(a["labels"])) for a in alerts if a.get("state") == "firing"]

    def between(self, start: float, end: float) -> list[dict[str, str]]:
        unique: dict[str, dict[str, str]] = {}
        for t, labels in self.seen:
            if start <= t <= end:
                unique[json.dumps(labels, sort_keys=True)] = labels
        return list(unique.values())


def belongs_to(labels: Mapping[str, str], cell: Cell) -> bool:
    """The alert is about one of the cell's services, its model / queue, its cache or its scrape targets."""
    names = cell.names
    mine = {names.gateway, names.inference, names.model, names.cache}
    targets = {f"{HOST}:{cell.gateway_port}", f"{HOST}:{cell.inference_port}"}
    return (any(labels.get(k) in mine for k in ("service", "model", "queue", "cache"))
            or labels.get("cell") == cell.key or labels.get("instance") in targets)


def run_matrix(options: MatrixOptions | None = None, say: Callable[[str], None] = print) -> MatrixResult:
    """Run the matrix (a few minutes); raises :class:`DemoFailed` when a part cannot start."""
    options = options or MatrixOptions()
    binaries = alerting.find_binaries()
    if binaries is None:
        raise DemoFailed(f"the root-cause matrix needs Prometheus and Alertmanager: {alerting.INSTALL_HINT}")
    cells = cells_of(options)
    supervisor = Supervisor()
    started = time.monotonic()
    try:
        return _run(options, cells, supervisor, binaries, say, started)
    finally:
        supervisor.stop()


def _run(options: MatrixOptions, cells: list[Cell], supervisor: Supervisor, binaries: tuple[str, str],
         say: Callable[[str], None], started: float) -> MatrixResult:
    from aiwatch.demo.model import Recommender

    say(f"root-cause matrix: {len(cells)} cells ({', '.join(c.key for c in cells)}), training the model once ...")
    model_cache = supervisor.log_dir / "recommender.npz"
    Recommender.cached(model_cache)
    drift_window = options.baseline_seconds - 2.0
    for cell in cells:
        _start_cell(cell, supervisor, str(model_cache), drift_window, options.transport)
    groups = [alerting.ScrapeGroup([f"{HOST}:{c.gateway_port}", f"{HOST}:{c.inference_port}"], {"cell": c.key})
              for c in cells]
    stack = alerting.start_stack(lambda name, args: supervisor.start(name, args, die_with_parent=True),
                                 supervisor.wait_ready,
                                 supervisor.log_dir, groups, alerting.rules_config(), binaries, free_port(),
                                 free_port(), interval=options.interval)
    for cell in cells:
        supervisor.wait_ready(supervisor_child(supervisor, f"{cell.key}-inference"), f"{cell.inference_url}/healthz",
                              timeout=120)
        supervisor.wait_ready(supervisor_child(supervisor, f"{cell.key}-gateway"), f"{cell.gateway_url}/healthz",
                              timeout=120)
        with urllib.request.urlopen(f"{cell.inference_url}/info", timeout=10) as resp:
            info = json.loads(resp.read())
        cell.capacity_rps = float(info["capacity_rps"])
        if cell.scenario.name == "flash-sale":
            cell.sale_in_flight = scenarios.sale_in_flight(cell.severity_ms / 1000.0, info["model_seconds"],
                                                           cell.capacity_rps)
        cell.injector = Injector(cell.scenario.name, cell.severity_ms / 1000.0, cell.gateway_url,
                                 cell.inference_url, cell.link)
    alerting.wait_for_rules(stack.prometheus_url)
    say(f"  {len(cells) * 2} services up after {time.monotonic() - started:.0f}s; Prometheus "
        f"{stack.prometheus_url}, Alertmanager {stack.alertmanager_url}")
    log = AlertLog(stack.prometheus_url)
    log.start()
    meter = CpuMeter(supervisor)
    try:
        baseline, fault, others = asyncio.run(_drive(cells, options, supervisor.check_alive, say, meter))
    finally:
        log.stop()
    fault_until = fault[1] + options.grace_seconds
    for cell in cells:
        cell.fired = [a for a in log.between(fault[0], fault_until) if belongs_to(a, cell)]
        cell.fired_outside_fault = [a for a in log.between(baseline[0], fault[0]) if belongs_to(a, cell)]
        try:
            before = prometheus_window(stack.prometheus_url, cell.key, *baseline)
            during = prometheus_window(stack.prometheus_url, cell.key, *fault)
            cell.diagnosis = diagnose_windows(before, during, cell.names.gateway, noise_floor=NOISE_FLOOR_SECONDS)
        except (DiagnoseError, OSError, RuntimeError) as exc:
            cell.diagnosis_error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError, RuntimeError):
            cell.p99 = phase_p99s(stack.prometheus_url, cell.key, baseline, fault)
    return MatrixResult(cells, baseline, fault, time.monotonic() - started,
                        {k: round(v, 1) for k, v in sorted(meter.ours().items())}, others)


class CpuMeter:
    """CPU time on this machine (Linux ``/proc``): the matrix's own (this process and its children) and everyone
    else's, so a result can say how busy the machine was with other work while the matrix ran."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.tick = os.sysconf("SC_CLK_TCK")

    def ours(self) -> dict[str, float]:
        """CPU seconds of each kind of child so far, and of this process."""
        out: dict[str, float] = {}
        for child in self.supervisor.children:
            try:
                fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            kind = child.name.rsplit("-", 1)[-1]
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / self.tick
        out["matrix runner"] = time.process_time()
        return out

    def machine_busy(self) -> float:
        """CPU seconds the whole machine has been busy (every CPU, every process)."""
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return math.nan
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / self.tick

    def reading(self) -> tuple[float, float, float, float]:
        """(wall time, machine busy seconds, our CPU seconds, CPU pressure stall seconds) now."""
        return time.monotonic(), self.machine_busy(), sum(self.ours().values()), self.stalled()

    @staticmethod
    def stalled() -> float:
        """Seconds during which some task waited for a CPU (Linux pressure stall information), ``nan`` without."""
        try:
            some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
            return int(some.rsplit("total=", 1)[1]) / 1e6
        except (OSError, IndexError, ValueError):
            return math.nan

    @staticmethod
    def pressure(before: tuple[float, ...], after: tuple[float, ...]) -> float:
        """Share of the time between two readings during which some task waited for a CPU."""
        wall = after[0] - before[0]
        return (after[3] - before[3]) / wall if wall > 0 else math.nan

    @staticmethod
    def others_cores(before: tuple[float, ...], after: tuple[float, ...]) -> float:
        """Cores other work kept busy on average between two readings."""
        wall = after[0] - before[0]
        return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall if wall > 0 else math.nan


def supervisor_child(supervisor: Supervisor, name: str) -> Any:
    return next(c for c in supervisor.children if c.name == name)


def _start_cell(cell: Cell, supervisor: Supervisor, model_cache: str, drift_window: float, transport: str) -> None:
    py, plan, names = sys.executable, cell.plan, cell.names
    cell.inference_port, cell.gateway_port = free_port(), free_port()
    cell.inference_url = f"http://{HOST}:{cell.inference_port}"
    cell.gateway_url = f"http://{HOST}:{cell.gateway_port}"
    inf_args = [py, "-m", "aiwatch.demo.inference", "--port", str(cell.inference_port), "--model-ms",
                str(plan.cpu_ms), "--device-ms", str(plan.model_ms - plan.cpu_ms), "--max-batch",
                str(plan.max_batch), "--drift-window", f"{drift_window:.3f}", "--service", names.inference,
                "--model", names.model, "--model-cache", model_cache]
    gw_args = [py, "-m", "aiwatch.demo.gateway", "--port", str(cell.gateway_port), "--service", names.gateway,
               "--cache-name", names.cache]
    hop_port = cell.inference_port
    if transport == "grpc":
        hop_port = free_port()
        inf_args += ["--grpc-port", str(hop_port)]
    if cell.scenario.name == "network":
        cell.link = SlowLink(HOST, hop_port)
        cell.link.start()
        supervisor.on_stop(cell.link.stop)
        hop_port = cell.link.port
    gw_args += ["--inference-grpc", f"{HOST}:{hop_port}"] if transport == "grpc" else [
        "--inference-url", f"http://{HOST}:{hop_port}"]
    supervisor.start(f"{cell.key}-inference", inf_args)
    supervisor.start(f"{cell.key}-gateway", gw_args)


async def _drive(cells: list[Cell], options: MatrixOptions, check_alive: Callable[[], None],
                 say: Callable[[str], None], meter: CpuMeter) -> tuple[tuple[float, float], tuple[float, float],
                                                                        dict[str, float]]:
    import httpx

    rng = np.random.default_rng(options.seed)
    seeds = rng.integers(0, 2**31, len(cells))
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    clients = [httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=32,
                                                                  max_keepalive_connections=32)) for _ in cells]

    others: dict[str, float] = {}

    async def stage(kind: str, seconds: float) -> tuple[float, float]:
        check_alive()
        start, before = time.time(), meter.reading()
        runs = []
        for cell, client, cell_rng in zip(cells, clients, rngs, strict=True):
            runs.append(loadgen.run_stage(client, f"{cell.gateway_url}/recommend", _stage(cell, kind, seconds),
                                          cell_rng, max_in_flight=32))
        results = await asyncio.gather(*runs)
        for cell, result in zip(cells, results, strict=True):
            cell.load[kind] = {"sent": result.sent, "ok": result.ok, "failed": result.failed,
                               "dropped": result.dropped}
        now = meter.reading()
        others[kind] = round(CpuMeter.others_cores(before, now), 2)
        others[f"{kind} cpu pressure"] = round(CpuMeter.pressure(before, now), 2)
        return start, time.time()

    try:
        say(f"  warm-up {options.warmup_seconds:.0f}s (fills the feature caches)")
        await stage("warm-up", options.warmup_seconds)
        say(f"  baseline {options.baseline_seconds:.0f}s")
        baseline = await stage("baseline", options.baseline_seconds)
        say(f"  fault {options.fault_seconds:.0f}s: every cell's scenario injects its fault")
        await asyncio.gather(*(asyncio.to_thread(c.injector.on) for c in cells if c.injector is not None))
        try:
            fault = await stage("fault", options.fault_seconds)
        finally:
            await asyncio.gather(*(asyncio.to_thread(c.injector.off) for c in cells if c.injector is not None))
        await asyncio.sleep(options.grace_seconds)
        return baseline, fault, others
    finally:
        for client in clients:
            await client.aclose()


def _stage(cell: Cell, kind: str, seconds: float) -> loadgen.Stage:
    rps = cell.plan.rps
    if kind == "warm-up":
        return loadgen.Stage("warm-up", seconds, rps)
    if kind == "baseline":
        return loadgen.Stage("baseline", seconds, rps)
    s = cell.scenario
    factor = 10.0 if s.name == "flash-sale" else s.rate_factor
    return loadgen.Stage(s.stage, seconds, rps * factor, sale=s.shifted_inputs, shift=s.shift,
                         new_user_share=s.new_user_share, fault=True, max_in_flight=cell.sale_in_flight)


# --- the table ----------------------------------------------------------------------------------------------------


def format_table(result: MatrixResult) -> str:
    """The matrix as a Markdown table, then AC@1 and the false-attribution rate."""
    lines = ["| scenario | severity | expected cause | diagnose: top cause | added | share | alerts fired "
             "(fault stage) | missing | wrong | |",
             "|---|---:|---|---|---:|---:|---|---|---|---|"]
    for c in result.cells:
        d = c.diagnosis
        top = d.moved[0] if d is not None and d.moved else None
        severity = f"+{c.severity_ms:g} ms" if c.scenario.uses_severity else "-"
        alerts = ", ".join(sorted({alerting.describe(_strip(a, c.names)) for a in c.fired})) or "none"
        lines.append(
            f"| {c.scenario.name} | {severity} | {_short(c.expected_cause, c.names)} | "
            f"{_short(c.cause, c.names)} | {f'{top.delta_seconds * 1000:+.1f} ms' if top else '-'} | "
            f"{f'{top.share:.0%}' if top else '-'} | {alerts} | "
            f"{', '.join(str(m) for m in c.missing_alerts()) or '-'} | "
            f"{', '.join(sorted({alerting.describe(a) for a in c.wrong_alerts()})) or '-'} | "
            f"{'ok' if c.passed else 'FAIL'} |")
    lines.append("")
    lines.append(f"AC@1 = {result.ac_at_1:.0%} ({sum(c.attributed for c in result.cells)}/{len(result.cells)} cells "
                 f"rank the injected cause first); false-attribution rate = {result.false_attribution_rate:.0%}; "
                 f"{sum(c.passed for c in result.cells)}/{len(result.cells)} cells pass every check "
                 f"({result.seconds:.0f} s in all)")
    if result.cpu_seconds:
        lines.append("CPU seconds of the matrix: " + ", ".join(f"{k} {v:g}" for k, v in result.cpu_seconds.items()))
    if result.others_cores:
        lines.append("cores kept busy by other work on the machine, and CPU pressure: " + ", ".join(
            f"{k} {v:.2f}" for k, v in result.others_cores.items()))
    return "\n".join(lines)


def _short(text: str, names: Names) -> str:
    """A cause or alert text with the cell's name prefixes taken off (``net50-gateway`` -> ``gateway``)."""
    for full, plain in ((names.gateway, Names().gateway), (names.inference, Names().inference),
                        (names.model, Names().model), (names.cache, Names().cache)):
        text = text.replace(full, plain)
    return text


def _strip(labels: Mapping[str, str], names: Names) -> dict[str, str]:
    return {k: _short(v, names) for k, v in labels.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aiwatch.demo.matrix [--json PATH]``: run the matrix and print its table."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m aiwatch.demo.matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write every cell's result as JSON")
    parser.add_argument("--scenario", action="append", choices=list(scenarios.SCENARIOS),
                        help="only these scenarios (repeatable; default: all)")
    args = parser.parse_args(argv)
    options = MatrixOptions(scenarios=tuple(args.scenario) if args.scenario else tuple(scenarios.SCENARIOS))
    try:
        result = run_matrix(options, say=lambda line: print(line, flush=True))
    except DemoFailed as exc:
        print(f"root-cause matrix: {exc}", file=sys.stderr)
        return 2
    print("\n" + format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return 0 if all(c.passed for c in result.cells) else 1


if __name__ == "__main__":
    sys.exit(main())
