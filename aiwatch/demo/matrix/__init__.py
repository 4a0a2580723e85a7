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

``bench/root_cause_matrix.py`` (or ``python -m aiwatch.demo.matrix``) runs it and prints the table;
``tests/demo/test_root_cause_matrix.py`` asserts it. The package's modules: ``cells`` (the plans, the cells and the
verdict), ``run`` (starting and driving them), ``reads`` (what is read back from Prometheus), ``machine`` (how busy
the machine was) and ``table``.
"""

from aiwatch.demo.matrix.cells import (
    CELL_PLANS,
    NOISE_FLOOR_SECONDS,
    SEVERITIES_MS,
    Cell,
    CellPlan,
    MatrixOptions,
    MatrixResult,
    cells_of,
)
from aiwatch.demo.matrix.run import run_matrix
from aiwatch.demo.matrix.table import format_table

__all__ = ["CELL_PLANS", "NOISE_FLOOR_SECONDS", "SEVERITIES_MS", "Cell", "CellPlan",
           "MatrixOptions", "MatrixResult", "cells_of", "format_table", "run_matrix"]
