from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from aiwatch import safety, timing
from aiwatch.metrics import Metrics

#: every thread's stack in the report of a test that pytest-timeout fails (tests/hangs.py)
pytest_plugins = ["tests.hangs"]

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture(autouse=True)
def _default_recorder_restored() -> Iterator[None]:
    """``aiwatch.instrument()`` makes its recorder the default for phases outside requests: every test leaves the
    default recorder as it found it."""
    before = timing._default_recorder
    yield
    timing.set_default_recorder(before)


@pytest.fixture(autouse=True)
def _no_request_left_current() -> Iterator[None]:
    """A test that begins a request and never finishes it leaves it current in this thread's context: the next
    test's phases outside a request would land in it (and its failures in its recorder's metrics)."""
    yield
    timing._timeline.set(None)
    timing._frame.set(None)


@pytest.fixture(autouse=True)
def _fresh_warning_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiwatch logs each failure once per burst and key (60 s): every test starts with no burst open, so a test
    that counts warnings does not depend on which tests ran before it in the same process (a flood test's warning
    for model "m" silenced the drift monitor's "unknown feature" warning that a later test counts)."""
    monkeypatch.setattr(safety, "_burst", safety._BurstLog())


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test: no test sees another's samples."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


# opentelemetry-sdk is imported in the fixtures, not here: the core's run (scripts/test-lowest.sh) has no SDK
@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Every span that :func:`provider`'s tracers end, in memory."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """An SDK TracerProvider recording into :func:`exporter`; shut down after the test."""
    from tests.spans import recording_provider

    recording = recording_provider(exporter)
    yield recording
    recording.shutdown()


#: directories whose tests share one session-scoped stack (a Prometheus and a service under load): under
#: pytest-xdist, their tests stay on one worker so that the stack starts once per suite, not once per worker
_SHARED_STACK_DIRS = ("console", "diagnose")


# tryfirst: xdist's worker reads the xdist_group marks in its own pytest_collection_modifyitems, and it registers
# after this initial conftest, so it would run first and see no mark (then every test went to any worker)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (scripts/test.sh), a module's tests run on one worker (module-scoped
    fixtures start once), and so do the tests of each directory in :data:`_SHARED_STACK_DIRS`."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    tests_dir = Path(__file__).parent
    for item in items:
        if not item.path.is_relative_to(tests_dir):
            continue
        relative = item.path.relative_to(tests_dir)
        group = relative.parts[0] if relative.parts[0] in _SHARED_STACK_DIRS else relative.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
