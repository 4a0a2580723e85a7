"""``aiwatch_instrumentation_errors_total`` has every component's series from the start, at 0: a series born at its
first error hides that first burst from ``increase()``, so AiwatchInstrumentationErrors missed a component that
failed once (say, the first drift evaluation) after the process started."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aiwatch import safety
from aiwatch.metrics import ERROR_COMPONENTS, Metrics
from aiwatch.safety import record_error

SOURCE = Path(__file__).resolve().parent.parent / "aiwatch"
#: the ways a component name is written where aiwatch counts its own failures
NAMED = re.compile(r'(?:record_error|call_hook|guarded|errors_of)\(\s*"([a-z_]+)"|\b[A-Z_]*COMPONENT\s*=\s*"([a-z_]+)"')


@pytest.fixture(autouse=True)
def fresh_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "_burst", safety._BurstLog())


def components_in_source() -> set[str]:
    found = set()
    for path in SOURCE.rglob("*.py"):
        for match in NAMED.finditer(path.read_text(encoding="utf-8")):
            found.update(g for g in match.groups() if g)
    return found


def test_every_component_aiwatch_counts_failures_under_is_listed() -> None:
    found = components_in_source()
    assert {"drift", "tracing", "grpc_server", "prediction_log", "hook"} <= found  # the scan reads the source
    assert found <= set(ERROR_COMPONENTS), sorted(found - set(ERROR_COMPONENTS))


def test_a_fresh_registry_exports_every_component_at_zero_and_counts_from_there() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for component in ERROR_COMPONENTS:
        assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": component}) == 0
    record_error("drift", ValueError("first failure after a start"), metrics)
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"}) == 1


def test_the_runbook_says_what_each_component_means_and_what_to_do() -> None:
    # before: its Mitigation named hook, drift and multiprocess only; an SRE paged for component="gpu",
    # "prediction_log" or "event_loop" had no line saying what was skipped or where to look
    runbook = (SOURCE / "runbooks" / "AiwatchInstrumentationErrors.md").read_text(encoding="utf-8")
    table = runbook.split("## Components", 1)[1].split("## ", 1)[0]
    rows = {cell.strip(" `") for line in table.splitlines() if line.startswith("| `")
            for cell in line.split("|")[1].split(",")}
    assert rows == set(ERROR_COMPONENTS), sorted(set(ERROR_COMPONENTS) ^ rows)


def test_a_new_failure_is_logged_while_another_of_its_component_repeats(caplog: pytest.LogCaptureFixture) -> None:
    # before: one burst per component: with a record that cannot be read failing at every request, the disk filling
    # up under the same component was counted and never logged (the log named the noisy failure only)
    metrics = Metrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for i in range(200):
            record_error("prediction_log", ValueError(f"a record that cannot be read ({i})"), metrics)
            if i == 100:
                record_error("prediction_log", OSError(28, "No space left on device"), metrics)
    logged = [r.getMessage() for r in caplog.records]
    assert sum("cannot be read" in m for m in logged) == 1  # still rate-limited
    assert sum("No space left on device" in m for m in logged) == 1
    assert metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total",
                                             {"component": "prediction_log"}) == 201


def test_the_bursts_of_exception_types_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    kinds = [type(f"Failure{i}", (Exception,), {}) for i in range(safety.MAX_BURST_KINDS + 50)]
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for kind in kinds:
            record_error("hook", kind("raised by a hook"), metrics)
    assert len(safety._burst._last) <= safety.MAX_BURST_KINDS + 1  # past the bound: the component's own burst
