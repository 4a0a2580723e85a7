"""The matrix's cells: one demo per scenario and severity, its plan (traffic and model), its results, and the
matrix's verdict over all of them (AC@1, the false-attribution rate)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aiwatch.demo import alerting, scenarios
from aiwatch.demo.faults import Injector
from aiwatch.demo.names import Names
from aiwatch.demo.scenarios import AlertMatch, Scenario
from aiwatch.demo.slowlink import SlowLink
from aiwatch.diagnose import Diagnosis
from aiwatch.rules import RulesConfig

SEVERITIES_MS: tuple[float, ...] = (50.0, 200.0)
#: The matrix's noise floor: a part whose time per request moved less than this did not move. A fifth of the
#: smallest severity. Diagnose's own default (2 ms, or 5% of the baseline's mean) suits one service under steady
#: load; here twelve demos share two cores, with the fault stage's extra work (the sale's traffic) and whatever
#: else runs on the machine, and the parts that wait for a CPU (a gateway's overhead, the network) of a cell
#: without a fault moved by up to 7 ms between its two windows on the 2-core VM of the published runs, with other
#: work keeping a core busy.
NOISE_FLOOR_SECONDS = 0.010
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
#:   the model busy (at +200 ms, about one call in three: the queue adds 55-80 ms to the model's +200 ms; at 5 req/s
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
    scenarios: tuple[str, ...] = scenarios.FAULTS
    severities_ms: tuple[float, ...] = SEVERITIES_MS
    warmup_seconds: float = 8.0
    baseline_seconds: float = 30.0
    fault_seconds: float = 50.0
    #: alerts that fire this long after the fault stage ended still count as the fault's (evaluation lag)
    grace_seconds: float = 3.0
    #: Prometheus' scrape and rule-evaluation interval
    interval: str = "2s"
    seed: int = 11
    transport: str = "grpc"
    #: How long the latency alerts must hold, the non-model and network alerts' apart (``for``, seconds; see
    #: :func:`aiwatch.demo.alerting.rules_config`). A caller's network time (its client time minus the time the
    #: callee reported) includes both processes' waits for a CPU, and with under 100 calls in the alerts' 10 s
    #: window the p99 is the window's slowest call: on a busy 2-core machine, a fault-free cell's network p99 over
    #: 10 s rises past the 50 ms threshold whenever one call waited that long, for about a window's length. The more
    #: calls, the more often: the drift cells (8 req/s, 2.7 times the others') held it there for 22 s (a run at CPU
    #: pressure 0.99) and longer than 20 s (a CI run at 0.53), firing NetworkLatencyHigh and
    #: NonModelLatencyHigh(network) with no fault, where the cells at 2-3 req/s held it at most 8 s (pressure 0.74)
    #: or 18 s (0.99). An injected fault holds it there from 2-4 s after the injection to the stage's end (net50:
    #: 99 ms and more): it fired 32-36 s into the stage, whence the 50 s fault stage (16 s of margin, plus grace).
    hold_seconds: int = alerting.HOLD_SECONDS
    outside_model_hold_seconds: int = 30

    def rules_config(self) -> RulesConfig:
        """The demo's rules as the matrix evaluates them."""
        return alerting.rules_config(hold_seconds=self.hold_seconds,
                                     outside_model_hold_seconds=self.outside_model_hold_seconds)


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
    #: stage -> why its failed requests failed (``"HTTP 503"``, ``"ReadTimeout"``) -> count
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
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
