"""The metric contract: docs/metrics.md is exactly what ``aiwatch metrics --markdown`` generates, and no module
but aiwatch/metrics.py creates metrics."""

from __future__ import annotations

import ast
import subprocess
import sys

from aiwatch.commands.metrics import markdown
from aiwatch.metrics import CONTRACT
from tests.servers import REPO, python_env
from tests.sourcecode import parse


def test_docs_metrics_md_matches_the_contract() -> None:
    doc = (REPO / "docs" / "metrics.md").read_text()
    assert doc == markdown(), "docs/metrics.md is stale: run `python -m aiwatch metrics --markdown > docs/metrics.md`"


def test_every_contract_metric_has_a_row() -> None:
    text = markdown()
    for spec in CONTRACT:
        assert f"| `{spec.name}` | {spec.kind} |" in text


def test_cli_prints_the_same_markdown() -> None:
    out = subprocess.run([sys.executable, "-m", "aiwatch", "metrics", "--markdown"], capture_output=True,
                         text=True, env=python_env(), check=True, cwd=REPO).stdout
    assert out == markdown()


_METRIC_CLASSES = frozenset({"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"})


def _modules_creating_metrics() -> set[str]:
    """Modules of aiwatch/ that import a prometheus_client metric class (or use one as ``prometheus_client.X``)."""
    found = set()
    for path in sorted((REPO / "aiwatch").rglob("*.py")):
        tree = parse(path)
        for node in ast.walk(tree):
            imports_class = (isinstance(node, ast.ImportFrom)
                             and (node.module or "").startswith("prometheus_client")
                             and any(alias.name in _METRIC_CLASSES for alias in node.names))
            uses_class = (isinstance(node, ast.Attribute) and node.attr in _METRIC_CLASSES
                          and isinstance(node.value, ast.Name) and node.value.id == "prometheus_client")
            if imports_class or uses_class:
                found.add(path.relative_to(REPO).as_posix())
    return found


def test_only_the_contract_module_creates_metrics() -> None:
    # metrics.py must be found (the scan works); any other module would be creating metrics outside the contract.
    # (The GPU collector builds metric families from the contract's SPECS: tests/signals/test_gpu_collector.py.)
    assert _modules_creating_metrics() == {"aiwatch/metrics.py"}
