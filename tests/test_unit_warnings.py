"""A setting in seconds given in another unit (``5000`` meant as milliseconds, ``0.001`` for a drift interval) is
warned of once, with the option's name and what the value does: a warning, not a refusal, since such a value may be
meant (:func:`aiwatch.amounts.warn_implausible`). A value within the bounds, the defaults first, says nothing."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import amounts
from aiwatch.console.config import ConsoleConfig
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.feedback import ParquetSink
from aiwatch.signals.gpu import GpuPoller

NVML = types.SimpleNamespace(NVMLError=Exception)  # the poller is made, never started


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its warnings: the once-per-process memory starts empty."""
    monkeypatch.setattr(amounts, "_implausible_warned", set(), raising=False)


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return ReferenceProfile.build({"x": np.random.default_rng(7).normal(0, 1, 500)})


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aiwatch" and r.levelno == logging.WARNING]


def test_a_slow_threshold_above_the_largest_latency_bucket_is_warned_of_once(caplog: pytest.LogCaptureFixture
                                                                               ) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        recorder = aiwatch.make_recorder(slow_threshold=300, registry=CollectorRegistry())
        aiwatch.make_recorder(slow_threshold=300, registry=CollectorRegistry())
    assert recorder.slow_threshold == 300.0  # kept: a warning, not a refusal
    [line] = warnings(caplog)
    assert line.startswith("aiwatch: slow_threshold is 300 seconds, above 60 s: the largest bucket of "
                           "aiwatch_request_duration_seconds"), line
    assert "It is read in seconds" in line


def test_the_slow_threshold_variable_is_named_when_it_set_the_value(caplog: pytest.LogCaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_SLOW_THRESHOLD_SECONDS", "500")
    with caplog.at_level(logging.WARNING, "aiwatch"):
        aiwatch.make_recorder(registry=CollectorRegistry())
    assert [line.split(",")[0] for line in warnings(caplog)] == [
        "aiwatch: AIWATCH_SLOW_THRESHOLD_SECONDS is 500 seconds"]


def test_a_batch_wait_above_a_second_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        batcher = aiwatch.MicroBatcher(lambda items: items, max_wait_seconds=5, registry=CollectorRegistry())
    assert batcher.max_wait_seconds == 5.0
    [line] = warnings(caplog)
    assert line.startswith("aiwatch: max_wait_seconds is 5 seconds, above 1 s: a request that finds the batch not "
                           "full waits that long"), line


def test_a_gpu_poll_interval_above_an_hour_is_warned_of(caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        poller = GpuPoller(5000, nvml=NVML, registry=CollectorRegistry())
        monkeypatch.setenv("AIWATCH_GPU_POLL_INTERVAL", "7200")
        GpuPoller(nvml=NVML, registry=CollectorRegistry())
    assert poller.interval == 5000.0
    assert [line.split(":")[1] for line in warnings(caplog)] == [
        " the GPU poll interval is 5000 seconds, above 3600 s",
        " AIWATCH_GPU_POLL_INTERVAL is 7200 seconds, above 3600 s"]


@pytest.mark.parametrize(("interval", "side"), [(0.001, "below 1 s"), (5000, "above 3600 s")])
def test_a_drift_interval_under_a_second_or_over_an_hour_is_warned_of(caplog: pytest.LogCaptureFixture,
                                                                      profile: ReferenceProfile, interval: float,
                                                                      side: str) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        monitor = DriftMonitor(profile, registry=CollectorRegistry(), interval=interval)
    assert monitor.interval == interval
    [line] = warnings(caplog)
    assert line.startswith(f"aiwatch: the drift monitor's interval is {interval:g} seconds, {side}: "), line


@pytest.mark.parametrize(("name", "value", "side", "effect"), [
    ("interval", 5000, "above 3600 s", "the charts get a point that rarely"),
    ("interval", 0.05, "below 0.1 s", "its /metrics URLs are scraped that often"),
    ("refresh", 10000, "above 3600 s", "the open view is redrawn that rarely"),
    ("refresh", 0.01, "below 0.1 s", "the open view is redrawn that often"),
])
def test_a_console_interval_or_refresh_under_a_tenth_of_a_second_or_over_an_hour_is_warned_of(
        caplog: pytest.LogCaptureFixture, name: str, value: float, side: str, effect: str) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        config = ConsoleConfig(**{name: value})  # type: ignore[arg-type]
        ConsoleConfig.from_env({f"AIWATCH_CONSOLE_{name.upper()}": str(value)})  # the same setting: not again
    assert getattr(config, name) == value
    [line] = warnings(caplog)
    flag, var = f"--{name}", f"AIWATCH_CONSOLE_{name.upper()}"
    assert line.startswith(f"aiwatch: console {name} ({flag} or {var}) is {value:g} seconds, {side}: {effect}"), line


@pytest.mark.parametrize(("seconds", "side"), [(0.2, "below 1 s"), (300_000, "above 3600 s")])
def test_a_parquet_file_age_under_a_second_or_over_an_hour_is_warned_of(caplog: pytest.LogCaptureFixture,
                                                                        tmp_path: Path, seconds: float,
                                                                        side: str) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        sink = ParquetSink(tmp_path / "a", max_file_seconds=seconds)
        ParquetSink(tmp_path / "b", max_file_seconds=seconds)
    assert sink.max_file_seconds == seconds
    [line] = warnings(caplog)
    assert line.startswith(f"aiwatch: max_file_seconds is {seconds:g} seconds, {side}: "), line


def test_plausible_settings_say_nothing(caplog: pytest.LogCaptureFixture, profile: ReferenceProfile,
                                       tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, "aiwatch"):
        aiwatch.make_recorder(registry=CollectorRegistry())
        aiwatch.make_recorder(slow_threshold=60, registry=CollectorRegistry())
        aiwatch.MicroBatcher(lambda items: items, registry=CollectorRegistry())
        aiwatch.MicroBatcher(lambda items: items, max_wait_seconds=1, registry=CollectorRegistry())
        GpuPoller(nvml=NVML, registry=CollectorRegistry())
        GpuPoller(3600, nvml=NVML, registry=CollectorRegistry())
        DriftMonitor(profile, registry=CollectorRegistry())
        DriftMonitor(profile, registry=CollectorRegistry(), interval=1)
        DriftMonitor(profile, registry=CollectorRegistry(), interval=3600)
        ConsoleConfig()
        ConsoleConfig(interval=0.1, refresh=0.1)
        ConsoleConfig(interval=3600, refresh=3600)
        ConsoleConfig(refresh=0)  # off
        ParquetSink(tmp_path / "default")
        ParquetSink(tmp_path / "second", max_file_seconds=1)
        ParquetSink(tmp_path / "hour", max_file_seconds=3600)
    assert warnings(caplog) == []


def test_a_value_at_a_bound_says_nothing_and_one_past_it_is_warned_of_in_full(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        amounts.warn_implausible(1.0, "poll_seconds", below=1.0, above=60.0, effect="it polls that often")
        amounts.warn_implausible(60.0, "poll_seconds", below=1.0, above=60.0, effect="it polls that often")
        assert warnings(caplog) == []
        amounts.warn_implausible(0.5, "poll_seconds", below=1.0, above=60.0, effect="it polls that often")
    assert warnings(caplog) == [
        "aiwatch: poll_seconds is 0.5 seconds, below 1 s: it polls that often. It is read in seconds: a value meant in "
        "milliseconds (or minutes) is off by 1000 (or 60)"]
