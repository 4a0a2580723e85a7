from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from aiwatch import timing
from aiwatch.metrics import Metrics


@pytest.fixture(autouse=True)
def _default_recorder_restored() -> Iterator[None]:
    """``aiwatch.instrument()`` makes its recorder the default for phases outside requests: every test leaves the
    default recorder as it found it."""
    before = timing._default_recorder
    yield
    timing.set_default_recorder(before)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test: no test sees another's samples."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)
