"""docs/metrics.md is exactly what ``aiwatch metrics --markdown`` generates from the contract."""

from __future__ import annotations

import subprocess
import sys

from aiwatch.commands.metrics import markdown
from aiwatch.metrics import CONTRACT
from tests.servers import REPO, python_env


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
