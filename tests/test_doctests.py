"""Every example in aiwatch's docstrings runs: each module whose source holds one (``>>>``) is found, not listed, so
a module added with examples is covered too (several modules' examples had run in no test)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import aiwatch

ROOT = Path(aiwatch.__file__).parent


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(ROOT.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_modules_are_found() -> None:
    assert len(MODULES) > 60 and "aiwatch.console.text" in MODULES and "aiwatch.drift.stattests" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0  # (a module whose examples all need a server, marked +SKIP, attempts none)
