"""Running the matrix: every cell's two services, one Prometheus and Alertmanager for all, the same schedule for
every cell (warm-up, baseline, fault), then each cell's alerts and diagnosis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np

from aiwatch.demo import alerting, loadgen, scenarios
from aiwatch.demo.faults import Injector
from aiwatch.demo.matrix.cells import NOISE_FLOOR_SECONDS, Cell, MatrixOptions, MatrixResult, cells_of
from aiwatch.demo.matrix.machine import CpuMeter
from aiwatch.demo.matrix.reads import AlertLog, belongs_to, phase_p99s, prometheus_window
from aiwatch.demo.processes import HOST, DemoFailed, Supervisor, free_port
from aiwatch.demo.slowlink import SlowLink
from aiwatch.diagnose import DiagnoseError, diagnose_windows


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

    meter = CpuMeter(supervisor)
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
                                 supervisor.log_dir, groups, options.rules_config(), binaries, free_port(),
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
            cell.failures[kind] = dict(result.failures)
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
