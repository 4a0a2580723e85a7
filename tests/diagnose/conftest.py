"""One recorded history with an injected network slowdown, served by a real backfilled Prometheus, shared by the
source and CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.traffic import History, history, slower


@pytest.fixture(scope="session")
def network_history() -> History:
    return history(slower(network=0.2))


@pytest.fixture(scope="session")
def prometheus_url(network_history: History) -> Iterator[str]:
    with backfilled_prometheus(network_history.traffic.openmetrics()) as prom:
        yield prom.url
