from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from aiwatch.metrics import Metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test: no test sees another's samples."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)
