"""The Grafana dashboard's per-GPU panels on a fleet: range queries, as Grafana asks them, against a real Prometheus
holding more GPUs than a panel draws (backfilled, so the hosts need not run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.test_console_dashboard import load, substitute
from tests.diagnose.backfill import backfilled_prometheus
from tests.servers import Prometheus

GPUS = 24
LIMIT = 3
SPIKE = "GPU-0"
"""Fully busy for the first half of the range, idle after: half busy on average, so neither among the busiest nor
the idlest over the range, yet the busiest GPU at each step of its first half."""
STEP, RANGE = 30, 480
NOW = int(time.time())
END = NOW - 60  # the data runs from 10 minutes before NOW to 10 after: END and the range before it lie inside
MID = END - RANGE // 2
READINGS = {"aiwatch_gpu_utilization_ratio": lambda i: (i + 1) / (GPUS + 1),
            "aiwatch_gpu_power_watts": lambda i: 100.0 + 10 * i,
            "aiwatch_gpu_temperature_celsius": lambda i: 40.0 + i * 5 % GPUS,
            "aiwatch_gpu_memory_used_bytes": lambda i: (i * 7 % GPUS + 1) * 1e9}


DOWN = "GPU-5"
TOTAL_BYTES = 80e9


def history() -> str:
    lines = []
    stamps = range(NOW - 600, NOW + 600, 15)
    every = {**READINGS, "aiwatch_gpu_up": lambda i: 0.0 if f"GPU-{i}" == DOWN else 1.0,
             "aiwatch_gpu_memory_total_bytes": lambda i: TOTAL_BYTES}
    for name, value in every.items():
        lines.append(f"# TYPE {name} gauge")
        for i in range(GPUS):
            labels = f'instance="10.0.2.{i}:8000",job="aiwatch",gpu="0",uuid="GPU-{i}",name="H100"'
            for t in stamps:
                v = (1.0 if t < MID else 0.0) if name.endswith("utilization_ratio") and i == 0 else value(i)
                lines.append(f"{name}{{{labels}}} {v} {t}")
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prom() -> Iterator[Prometheus]:
    with backfilled_prometheus(history()) as found:
        yield found


def drawn(prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    """What a time series panel's target draws over the range, as Grafana asks it (a range query)."""
    expr = substitute(expr.replace("$__range", f"{RANGE}s").replace("$gpu_limit", str(LIMIT)))
    answer: list[dict[str, Any]] = prom.api("/api/v1/query_range", query=expr, start=str(END - RANGE),
                                            end=str(END), step=str(STEP))["result"]
    return answer


def panel(title: str) -> dict[str, Any]:
    (found,) = [p for p in load()["panels"] if p["title"] == title]
    return found


def mean_rank(values: dict[int, float]) -> list[str]:
    return [f"GPU-{i}" for i in sorted(values, key=lambda i: -values[i])]


@pytest.mark.slow
def test_the_gpu_utilization_panel_draws_the_fleet_and_the_busiest_and_idlest_over_the_range(prom: Prometheus) -> None:
    a, b, c = panel("GPU utilization")["targets"]
    assert [t["refId"] for t in (a, b, c)] == ["A", "B", "C"]
    # the fleet's min / median / max at every step
    fleet = {s["metric"]["stat"]: s["values"] for s in drawn(prom, a["expr"])}
    assert sorted(fleet) == ["max", "median", "min"]
    busiest, idlest = drawn(prom, b["expr"]), drawn(prom, c["expr"])
    steady = {i: (i + 1) / (GPUS + 1) for i in range(1, GPUS)}
    # the spike is the busiest at each step of the range's first half, but half busy over the range: not drawn
    assert [s["metric"]["uuid"] for s in sorted(busiest, key=lambda s: -float(s["values"][-1][1]))] == \
        mean_rank(steady)[:LIMIT]
    assert sorted(s["metric"]["uuid"] for s in idlest) == sorted(mean_rank(steady)[-LIMIT:])
    steps = RANGE // STEP + 1
    assert all(len(s["values"]) == steps for s in busiest + idlest)  # unbroken lines: the same GPUs throughout
    # a topk at each step (what the busiest target would be without its ranking over the range) draws the spike too
    per_step = drawn(prom, f"topk({LIMIT}, max by (cluster, namespace, gpu, uuid) (aiwatch_gpu_utilization_ratio))")
    assert len(per_step) == LIMIT + 1 and SPIKE in {s["metric"]["uuid"] for s in per_step}


@pytest.mark.slow
@pytest.mark.parametrize(("title", "metric"), [("GPU power", "aiwatch_gpu_power_watts"),
                                               ("GPU temperature", "aiwatch_gpu_temperature_celsius"),
                                               ("GPU memory used", "aiwatch_gpu_memory_used_bytes")])
def test_each_per_gpu_panel_draws_the_fleet_and_its_highest_gpus_not_every_gpu(prom: Prometheus, title: str,
                                                                            metric: str) -> None:
    targets = panel(title)["targets"]
    lines = [s for t in targets for s in drawn(prom, t["expr"])]
    assert len(lines) == 3 + LIMIT < GPUS
    highest = {s["metric"]["uuid"] for s in lines if "uuid" in s["metric"]}
    assert highest == set(mean_rank({i: READINGS[metric](i) for i in range(GPUS)})[:LIMIT])


@pytest.mark.slow
def test_a_fleets_gpu_table_lists_the_gpus_needing_attention_first(prom: Prometheus) -> None:
    targets = panel("GPUs")["targets"]
    assert len(targets) == 6
    rows = []
    for t in targets:
        expr = substitute(t["expr"].replace("$gpu_limit", str(LIMIT)))
        rows.append({s["metric"]["uuid"] for s in prom.api("/api/v1/query", query=expr, time=str(END))["result"]})
    # at END the spike (GPU-0) is idle: the idlest are it and the two least busy others
    utilization = {i: READINGS["aiwatch_gpu_utilization_ratio"](i) for i in range(1, GPUS)} | {0: 0.0}
    memory = {i: READINGS["aiwatch_gpu_memory_used_bytes"](i) / TOTAL_BYTES for i in range(GPUS)}
    temperature = {i: READINGS["aiwatch_gpu_temperature_celsius"](i) for i in range(GPUS)}
    expected = {DOWN, *mean_rank(temperature)[:LIMIT], *mean_rank(memory)[:LIMIT], *mean_rank(utilization)[:LIMIT],
                *mean_rank(utilization)[-LIMIT:]}
    assert rows == [expected] * 6 and len(expected) < GPUS
