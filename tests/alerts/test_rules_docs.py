"""The Python examples of docs/alerts.md run as written: the config they build renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.servers import REPO

pytest.importorskip("yaml")
pytest.importorskip("re2")

DOC = REPO / "docs" / "alerts.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_selector_example_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's selector example matched ``route`` in ``selectors.requests``, a label the phase, GenAI, degraded
    and in-flight metrics lack, which the page's own table says is refused: ``render`` raised a ConfigError."""
    from aiwatch.rules import render

    render_block, selector_block = (next(b for b in _blocks() if needle in b)
                                    for needle in ("render(cfg)", "cfg.selectors.requests"))
    (tmp_path / "alerts").mkdir()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(render_block, "docs/alerts.md", "exec"), namespace)
    assert sorted(p.name for p in (tmp_path / "alerts").iterdir()) == ["aiwatch-alerts.rules.yml",
                                                                       "aiwatch-recording.rules.yml"]
    exec(compile(selector_block, "docs/alerts.md", "exec"), namespace)
    selector = namespace["cfg"].selectors.requests
    rendered = render(namespace["cfg"])
    assert selector in rendered["aiwatch-recording.rules.yml"]
