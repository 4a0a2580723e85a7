"""The examples in the feedback modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["aiwatch.feedback.schema", "aiwatch.feedback.log", "aiwatch.feedback.outcomes",
                                  "aiwatch.feedback.redis_sink"])
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
