"""Prometheus and Alertmanager for the demo, on loopback, with aiwatch's own rules on the demo's time scale.

When the ``prometheus`` and ``alertmanager`` binaries are installed, ``aiwatch demo`` renders aiwatch's rules from
:func:`rules_config` (the shipped rules, with windows, ``for`` durations and thresholds shrunk from hours and
minutes to the seconds of a demo stage), starts Prometheus (scraping the services every second, evaluating every
second) and Alertmanager, and points the console at that Prometheus, so the Alerts view shows alerts going pending
and firing during a stage, each linked to its runbook page in the console itself.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiwatch.demo.summary import SLO_LATENCY_SECONDS
from aiwatch.rules import BurnAlert, BurnWindow, RulesConfig, render

PROMETHEUS_BINARIES = ("prometheus",)
#: Debian and Ubuntu install Alertmanager as ``prometheus-alertmanager``; upstream's binary is ``alertmanager``.
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
INSTALL_HINT = ("to see aiwatch's alerts fire during the demo, install Prometheus and Alertmanager "
                "(Debian/Ubuntu: sudo apt-get install prometheus prometheus-alertmanager; elsewhere: "
                "https://prometheus.io/download/) and run it again")
#: Labels that identify what an alert is about, in the order the summary shows them.
ALERT_KEYS = ("service", "phase", "peer", "model", "queue", "cache", "feature", "slo")


#: How long the latency alerts' condition must hold in the root-cause matrix (see :func:`rules_config`).
HOLD_SECONDS = 20
#: The p99 above which the non-model and network alerts fire in the root-cause matrix, whose faults add 50 ms.
OUTSIDE_MODEL_P99_SECONDS = 0.05
#: The same threshold in the interactive demo when its fault adds at least :data:`WIDE_FAULT_SECONDS` (see
#: :func:`outside_model_threshold`).
WIDE_OUTSIDE_MODEL_P99_SECONDS = 0.1
WIDE_FAULT_SECONDS = 0.15


def outside_model_threshold(fault_seconds: float) -> float:
    """The non-model and network alerts' p99 threshold for a demo whose fault adds ``fault_seconds``.

    The queue's p99 over 10 s is about one model call before any fault: a request that arrives while a call runs
    waits for it. At a 50 ms threshold the queue alert fired in the normal stage of each of three quiet demo runs;
    in a fourth, polled every second (model ~37 ms per call), the p99 was 60-70 ms while the cache warm-up ran at 3x
    the normal rate and 24-49 ms in the normal stage, and the warm-up's requests, still in the window, held the
    alert pending until it fired 6 s into the normal stage. A fault of 150 ms or more leaves room for a threshold
    above that (100 ms, a bound of the latency buckets); a smaller one does not, and keeps the matrix's 50 ms (and
    the noise that comes with it)."""
    return WIDE_OUTSIDE_MODEL_P99_SECONDS if fault_seconds >= WIDE_FAULT_SECONDS else OUTSIDE_MODEL_P99_SECONDS


def rules_config(runbook_url: str | None = None, hold_seconds: int = HOLD_SECONDS,
                 outside_model_hold_seconds: int | None = None,
                 outside_model_p99_seconds: float = OUTSIDE_MODEL_P99_SECONDS) -> RulesConfig:
    """aiwatch's rules on the demo's time scale: second-long windows and ``for`` durations, and thresholds for a
    model that answers in tens of milliseconds. ``runbook_url``: where the links point (the demo's console).

    The latency alerts look at the p99 over 10 s and fire when it holds for ``hold_seconds``. Held longer than
    the window (the matrix's 20 s), requests that stalled once on a busy machine leave the window before they
    could fire it; the interactive demo holds for a third of a stage, so that alerts fire while the stage runs.
    ``outside_model_hold_seconds`` (default ``hold_seconds``) is the hold of the non-model and network alerts
    alone: the time between two services' clocks waits for both processes' CPU, and the root-cause matrix holds
    it longer (:attr:`aiwatch.demo.matrix.MatrixOptions.outside_model_hold_seconds`). ``outside_model_p99_seconds``
    is their threshold (:func:`outside_model_threshold`)."""
    cfg = RulesConfig()
    if runbook_url:
        cfg.runbook_url = runbook_url
    cfg.slo.latency_threshold_seconds = SLO_LATENCY_SECONDS
    cfg.slo.page = BurnAlert([BurnWindow("1m", "10s", 14.4)], "10s")
    cfg.slo.ticket = BurnAlert([BurnWindow("2m", "30s", 3.0)], "30s")
    lat = cfg.latency
    # The thresholds are bucket bounds of the latency histograms (a p99 between two bounds is interpolated).
    lat.window = "10s"
    lat.model_for = f"{hold_seconds}s"
    outside = hold_seconds if outside_model_hold_seconds is None else outside_model_hold_seconds
    lat.non_model_for = lat.network_for = f"{outside}s"
    lat.model_p99_seconds = 0.15
    lat.non_model_p99_seconds = lat.network_p99_seconds = outside_model_p99_seconds
    cfg.queue.per_replica_warning, cfg.queue.per_replica_critical = 3.0, 10.0
    cfg.queue.window = cfg.queue.for_ = "5s"
    # the degraded share over a stage's time scale (the shipped rule's 10m would never fire in a demo)
    cfg.streaming.degraded_window, cfg.streaming.degraded_for = "10s", f"{max(hold_seconds // 2, 5)}s"
    cfg.cache.window, cfg.cache.hit_ratio_min, cfg.cache.for_ = "10s", 0.3, "10s"
    cfg.gpu.window, cfg.gpu.saturated_for, cfg.gpu.memory_for, cfg.gpu.absent_for = "10s", "15s", "10s", "10s"
    cfg.drift.windows, cfg.drift.psi_window, cfg.drift.interval = ["1m"], "1m", "5s"
    cfg.drift.fleet_for, cfg.drift.local_for = "10s", "5s"
    m = cfg.meta
    m.instrumentation_window, m.instrumentation_for, m.target_down_for, m.target_absent_for = "1m", "10s", "10s", "10s"
    return cfg.validate()


def find_binaries() -> tuple[str, str] | None:
    """The Prometheus and Alertmanager executables, or ``None`` when either is missing."""
    prometheus = next((p for name in PROMETHEUS_BINARIES if (p := shutil.which(name))), None)
    alertmanager = next((p for name in ALERTMANAGER_BINARIES if (p := shutil.which(name))), None)
    return (prometheus, alertmanager) if prometheus and alertmanager else None


@dataclass(frozen=True)
class ScrapeGroup:
    """Targets (``host:port``) scraped with the same extra labels."""

    targets: Sequence[str]
    labels: Mapping[str, str]


def prometheus_config(groups: Sequence[ScrapeGroup], rule_files: Sequence[Path], alertmanager: str,
                      interval: str = "1s") -> str:
    """prometheus.yml (JSON is YAML): scrape and evaluate every ``interval``, alerts to ``alertmanager``."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "aiwatch", "static_configs": [
            {"targets": list(g.targets), "labels": dict(g.labels)} for g in groups]}],
    }
    return json.dumps(config, indent=2) + "\n"


def alertmanager_config() -> str:
    """alertmanager.yml: every alert grouped by name and service, delivered nowhere (the console shows them)."""
    config = {"route": {"receiver": "demo", "group_by": ["alertname", "service"], "group_wait": "1s",
                        "group_interval": "5s", "repeat_interval": "1h"},
              "receivers": [{"name": "demo"}]}
    return json.dumps(config, indent=2) + "\n"


@dataclass(frozen=True)
class Stack:
    prometheus_url: str
    alertmanager_url: str
    prometheus_pid: int = 0
    alertmanager_pid: int = 0


Start = Callable[[str, Sequence[str]], Any]
"""Starts a named child process (the runner's supervisor) and returns it."""


def start_stack(start: Start, wait_ready: Callable[[Any, str], None], workdir: Path, groups: Sequence[ScrapeGroup],
                cfg: RulesConfig, binaries: tuple[str, str], prometheus_port: int, alertmanager_port: int,
                host: str = "127.0.0.1", interval: str = "1s") -> Stack:
    """Render the rules of ``cfg`` into ``workdir``, start Alertmanager, then Prometheus (scraping and evaluating
    every ``interval``), and wait for both."""
    prometheus, alertmanager = binaries
    rule_files = []
    for name, text in render(cfg).items():
        (workdir / name).write_text(text)
        rule_files.append(workdir / name)
    am_address, prom_address = f"{host}:{alertmanager_port}", f"{host}:{prometheus_port}"
    (workdir / "alertmanager.yml").write_text(alertmanager_config())
    am = start("alertmanager", [alertmanager, f"--config.file={workdir / 'alertmanager.yml'}",
                                f"--storage.path={workdir / 'alertmanager-data'}",
                                f"--web.listen-address={am_address}", "--cluster.listen-address="])
    (workdir / "prometheus.yml").write_text(prometheus_config(groups, rule_files, am_address, interval))
    prom = start("prometheus", [prometheus, f"--config.file={workdir / 'prometheus.yml'}",
                                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                                f"--web.listen-address={prom_address}", "--storage.tsdb.retention.time=2h"])
    stack = Stack(f"http://{prom_address}", f"http://{am_address}", prom.pid, am.pid)
    wait_ready(am, f"{stack.alertmanager_url}/-/ready")
    wait_ready(prom, f"{stack.prometheus_url}/-/ready")
    return stack


def query(prometheus_url: str, promql: str, at: float | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data = json.loads(resp.read())
    if data.get("status") != "success":
        raise RuntimeError(f"Prometheus query {promql!r} failed: {data}")
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def firing_during(prometheus_url: str, start: float, end: float) -> list[dict[str, str]]:
    """The label sets of the alerts that were firing at any evaluation between ``start`` and ``end``."""
    seconds = max(1, round(end - start))
    found = query(prometheus_url, f'max_over_time(ALERTS{{alertstate="firing"}}[{seconds}s])', at=end)
    return sorted((dict(r["metric"]) for r in found), key=describe)


def describe(labels: Mapping[str, str]) -> str:
    """``AlertName{service=..., phase=...}`` with only the labels that say what the alert is about."""
    inner = ", ".join(f"{k}={labels[k]}" for k in ALERT_KEYS if labels.get(k))
    return f"{labels.get('alertname', '?')}{{{inner}}}" if inner else labels.get("alertname", "?")


def wait_for_rules(prometheus_url: str, timeout: float = 30.0) -> None:
    """Wait until Prometheus has loaded the rule groups (its first evaluation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{prometheus_url}/api/v1/rules", timeout=5) as resp:
                if json.loads(resp.read())["data"]["groups"]:
                    return
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            pass
        time.sleep(0.2)
