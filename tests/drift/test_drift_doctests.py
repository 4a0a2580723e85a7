"""The examples in the drift modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["aiwatch.drift.columns", "aiwatch.drift.counting", "aiwatch.drift.builder", "aiwatch.drift.selection",
           "aiwatch.drift.profile",
           "aiwatch.drift.stattests", "aiwatch.drift.current", "aiwatch.drift.evaluate", "aiwatch.drift.monitor",
           "aiwatch.drift.promql", "aiwatch.drift.report", "aiwatch.drift.sampling",
           "aiwatch.drift.validation", "aiwatch.drift.features"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
