"""get_metrics(registry): one Metrics per registry, living as long as the registry does."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from prometheus_client import CollectorRegistry

from aiwatch.metrics import Metrics, get_metrics


def test_a_registry_gets_one_metrics() -> None:
    registry = CollectorRegistry()
    assert get_metrics(registry) is get_metrics(registry)
    assert get_metrics(registry).registry is registry


def test_a_registry_given_to_get_metrics_is_not_kept_alive_by_it() -> None:
    # an app with a registry per tenant or per reload, or a test suite: each one used to stay for the process's life
    refs = []
    for _ in range(20):
        registry = CollectorRegistry()
        get_metrics(registry).requests_in_flight.labels("svc").inc()
        refs.append(weakref.ref(registry))
    del registry
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


class _NoAttributes(CollectorRegistry):
    """A registry that refuses the attribute aiwatch keeps its metrics under."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_aiwatch_metrics":
            raise AttributeError(name)
        super().__setattr__(name, value)


def test_a_registry_that_cannot_hold_its_metrics_still_gets_one() -> None:
    registry = _NoAttributes()
    found = get_metrics(registry)
    assert isinstance(found, Metrics) and get_metrics(registry) is found
