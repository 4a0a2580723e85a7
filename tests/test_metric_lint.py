"""Every family aiwatch exports follows Prometheus' naming and exposition conventions, as Prometheus' own linter
(``promtool check metrics``) reads them: a counter's ``_total``, base units, help text. The exposition is that of the
console's test workload, which writes through aiwatch's real recorders every family the console reads."""

from __future__ import annotations

import subprocess

from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.metrics import CONTRACT, Metrics
from tests.console.workload import Workload
from tests.servers import require_binary


def lint(exposition: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), "check", "metrics"], input=exposition.decode(),
                          capture_output=True, text=True, timeout=60)


def test_promtool_finds_nothing_to_lint_in_aiwatchs_metrics() -> None:
    registry = CollectorRegistry()
    workload = Workload(Metrics(registry))
    for _ in range(2):
        workload.step()
    exposition = generate_latest(registry).decode()
    typed = {line.split()[2].removesuffix("_total") for line in exposition.splitlines() if line.startswith("# TYPE ")}
    assert {spec.name.removesuffix("_total") for spec in CONTRACT} <= typed  # every family of the contract
    found = lint(exposition.encode())
    assert (found.returncode, found.stdout + found.stderr) == (0, "")


def test_the_linter_reads_what_it_is_given() -> None:
    found = lint(b"# TYPE aiwatch_things counter\naiwatch_things 1\n")
    assert found.returncode != 0 and 'should have "_total" suffix' in found.stdout + found.stderr
