"""The root-cause matrix, end to end on a real Prometheus and Alertmanager: every demo scenario at +50 and +200 ms,
side by side (about two minutes). For each cell: the right alerts fire and the wrong ones stay silent, and
``aiwatch diagnose`` (over that Prometheus) ranks the injected cause first; the control fires nothing and nothing
moves above the noise floor. The assertions are on cause names and alert names, never on timings. The table printed
on failure ends with how busy the machine was (other work's cores, CPU pressure): the matrix needs most of the CPU
its demos use, and a machine saturated by other work moves every part that runs Python."""

from __future__ import annotations

import dataclasses

import pytest

from aiwatch.demo import matrix
from tests.servers import require_binary

# pyproject's 300 s per test is too short for the fixture's setup: one matrix run takes ~100 s here, two ~215 s
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(900)]


#: each run's log and table, shown by a failing assertion: the fixture's own output is shown with the first test's
#: report only, and that test passes when another cell failed
_RUNS: list[str] = []


@pytest.fixture(scope="module")
def result() -> matrix.MatrixResult:
    """The matrix's result. When a cell of the first run failed a check or lost a request, the matrix runs once more
    and each such cell is judged by its second run (the cells that were clean keep their first). Why: on a shared
    2-core machine, other work that saturates the CPU during the fault stage makes the fault-free gateways' Python
    slower (their ``overhead`` grows by 30-45 ms, above the 10 ms noise floor; a starved event loop reads as network
    time), which the matrix cannot tell from an injected fault, and which hits a different cell each time. A real
    regression fails its cell in both runs; both tables are printed with any failure."""
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    first = _run_and_print()
    if all(_clean(cell) for cell in first.cells):
        return first
    print("\nsome cells failed or lost requests (the table above): running the matrix once more; each of them is "
          "judged by its second run")
    second = _run_and_print()
    again = {cell.key: cell for cell in second.cells}
    return dataclasses.replace(second, cells=[c if _clean(c) else again[c.key] for c in first.cells])


def _clean(cell: matrix.Cell) -> bool:
    """Whether the cell passed every check and every request of its stages was answered."""
    return cell.passed and not any(load["failed"] for load in cell.load.values())


def _run_and_print() -> matrix.MatrixResult:
    lines: list[str] = []
    found = matrix.run_matrix(say=lines.append)
    failures = [f"{cell.key} {stage}: {reasons}" for cell in found.cells for stage, reasons in cell.failures.items()
                if reasons]
    _RUNS.append("\n".join([*lines, "", matrix.format_table(found), *failures]))
    print(_RUNS[-1])
    return found


def tables() -> str:
    """Every run's log and table (a failing cell of the first run is why there is a second)."""
    return "\n\n".join(f"--- run {i} of the matrix ---\n{text}" for i, text in enumerate(_RUNS, 1))


def _cell(result: matrix.MatrixResult, key: str) -> matrix.Cell:
    return next(c for c in result.cells if c.key == key)


CELLS = [c.key for c in matrix.cells_of(matrix.MatrixOptions())]


@pytest.mark.parametrize("key", CELLS)
def test_diagnose_ranks_the_injected_cause_first(result: matrix.MatrixResult, key: str) -> None:
    cell = _cell(result, key)
    assert cell.diagnosis is not None, cell.diagnosis_error
    assert cell.cause == cell.expected_cause, tables()
    if cell.scenario.name == "none":
        assert not cell.diagnosis.moved, tables()


@pytest.mark.parametrize("key", CELLS)
def test_the_right_alerts_fire_and_the_wrong_ones_stay_silent(result: matrix.MatrixResult, key: str) -> None:
    cell = _cell(result, key)
    assert not cell.missing_alerts(), tables()
    assert not cell.wrong_alerts(), tables()


def test_every_request_was_answered(result: matrix.MatrixResult) -> None:
    for cell in result.cells:
        for stage, load in cell.load.items():
            assert load["failed"] == 0 and load["ok"] > 0, (cell.key, stage, load, cell.failures.get(stage), tables())


def test_ac_at_1_and_no_false_attribution(result: matrix.MatrixResult) -> None:
    assert result.ac_at_1 == 1.0, tables()
    assert result.false_attribution_rate == 0.0, tables()
