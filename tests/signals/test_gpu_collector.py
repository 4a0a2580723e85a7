"""The GPU collector against a stand-in pynvml (this machine has no NVIDIA GPU) and against the real pynvml's
no-library path. The fake lives only at the pynvml boundary and raises pynvml's own NVMLError classes."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
import time
import types
from decimal import Decimal
from typing import Any

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.metrics import SPECS, Metrics
from aiwatch.signals.gpu import VALUE_METRICS, GpuCollector, GpuPoller
from tests.hostile_numbers import BAD_SECONDS
from tests.servers import python_env, wait_until
from tests.signals.fake_pynvml import EventData, FakeGpu, FakeMig, FakeNVML, Handle, fake_gpu

GIB = 1024**3


def make(nvml: FakeNVML, registry: CollectorRegistry) -> GpuCollector:
    return GpuCollector(nvml=nvml, registry=registry, metrics=Metrics(registry), start=False)


def labels(gpu: int | str, nvml: FakeNVML, mig: tuple[str, str] = ("", "")) -> dict[str, str]:
    g = nvml.gpus[int(gpu)]
    return {"gpu": str(gpu), "uuid": g.uuid, "name": g.name, "mig_gi": mig[0], "mig_ci": mig[1]}


def up_of(registry: CollectorRegistry, gpu: str) -> list[float]:
    """The ``aiwatch_gpu_up`` samples of NVML index ``gpu``, whatever its other labels (a GPU that cannot be opened
    may have no UUID or name)."""
    return [sample.value for fam in registry.collect() if fam.name == "aiwatch_gpu_up"
            for sample in fam.samples if sample.labels["gpu"] == gpu]


def at(index: int, gpu: FakeGpu) -> dict[str, str]:
    """The labels of ``gpu`` exported under NVML index ``index``."""
    return {"gpu": str(index), "uuid": gpu.uuid, "name": gpu.name, "mig_gi": "", "mig_ci": ""}


def test_eight_gpus_export_every_metric_in_base_units(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(8)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_nvml_up") == 1.0
    assert v("aiwatch_gpu_last_poll_timestamp_seconds") is not None
    for i in range(8):
        lab = labels(i, nvml)
        g = nvml.gpus[i]
        assert v("aiwatch_gpu_up", lab) == 1.0
        assert v("aiwatch_gpu_utilization_ratio", lab) == pytest.approx(g.util_gpu / 100)
        assert v("aiwatch_gpu_memory_utilization_ratio", lab) == pytest.approx(0.25)
        assert v("aiwatch_gpu_memory_used_bytes", lab) == 20 * GIB
        assert v("aiwatch_gpu_memory_total_bytes", lab) == 80 * GIB
        assert v("aiwatch_gpu_memory_reserved_bytes", lab) == 512 * 1024**2
        assert v("aiwatch_gpu_power_watts", lab) == pytest.approx(g.power_mw / 1000)
        assert v("aiwatch_gpu_energy_joules_total", lab) == pytest.approx(g.energy_mj / 1000)
        assert v("aiwatch_gpu_temperature_celsius", lab) == 40 + i
        assert v("aiwatch_gpu_sm_clock_hertz", lab) == 1980e6
        assert v("aiwatch_gpu_memory_clock_hertz", lab) == 2619e6
        assert v("aiwatch_gpu_throttle_reason", {**lab, "reason": "sw_power_cap"}) == 1.0
        assert v("aiwatch_gpu_throttle_reason", {**lab, "reason": "hw_thermal_slowdown"}) == 0.0
        assert v("aiwatch_gpu_xid_errors_total", lab) == 0.0
    text = generate_latest(registry).decode()
    for name in ("aiwatch_gpu_up", *VALUE_METRICS, "aiwatch_gpu_xid_errors_total"):
        spec = SPECS[name]
        assert f"# HELP {name} {spec.help}" in text
    assert not [line for line in text.splitlines()
                if line.startswith("aiwatch_instrumentation_errors_total{") and not line.endswith(" 0.0")]


def test_scrape_never_calls_nvml(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(8)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    calls = sum(nvml.calls.values())
    for _ in range(3):
        generate_latest(registry)
    assert sum(nvml.calls.values()) == calls


def test_scrape_does_not_wait_for_a_hung_poll(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.gpus[0].temperature = 99
    nvml.block = threading.Event()
    poll = threading.Thread(target=collector.poller.poll_once, daemon=True)
    poll.start()
    assert nvml.blocked.wait(10)  # the poll is now stuck inside an NVML call
    scraped: list[bytes] = []
    scrape = threading.Thread(target=lambda: scraped.append(generate_latest(registry)), daemon=True)
    scrape.start()
    scrape.join(10)  # a hang guard, not a timing assertion: a blocking scrape would never finish
    assert scraped, "the scrape waited for the NVML poll"
    assert registry.get_sample_value("aiwatch_gpu_temperature_celsius", labels(0, nvml)) == 40.0  # last snapshot
    nvml.block.set()
    poll.join(10)
    assert registry.get_sample_value("aiwatch_gpu_temperature_celsius", labels(0, nvml)) == 99.0


def test_nvml_is_initialised_once_across_polls_and_shut_down_on_stop(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    for _ in range(5):
        collector.poller.poll_once()
    assert nvml.calls["nvmlInit"] == 1
    assert nvml.calls["nvmlDeviceGetCount"] == 5  # read on every poll (a GPU may come or go) ...
    assert nvml.calls["nvmlDeviceGetHandleByIndex"] == 2  # ... the GPUs are opened again only when it changed
    collector.close()
    assert nvml.calls["nvmlShutdown"] == 1
    assert not nvml.initialised
    collector.close()
    assert nvml.calls["nvmlShutdown"] == 1


def test_background_thread_polls_at_the_configured_interval(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    collector = GpuCollector(nvml=nvml, registry=registry, metrics=Metrics(registry), interval=0.01)
    try:
        assert collector.poller.running
        wait_until(lambda: nvml.calls["nvmlDeviceGetPowerUsage"] >= 3, 10, 0.01, "three polls")
        assert registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) == 1.0
        assert [t.name for t in threading.enumerate()].count("aiwatch-gpu-poller") == 1
        assert next(t for t in threading.enumerate() if t.name == "aiwatch-gpu-poller").daemon
    finally:
        collector.close()
    assert not collector.poller.running
    assert "aiwatch-gpu-poller" not in [t.name for t in threading.enumerate()]
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") is None  # unregistered


def test_before_the_first_poll_nvml_is_reported_down_since_the_poller_was_created(
        registry: CollectorRegistry) -> None:
    before = time.time()
    collector = make(FakeNVML.with_gpus(1), registry)
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0
    created = registry.get_sample_value("aiwatch_gpu_last_poll_timestamp_seconds")
    assert created is not None and before <= created <= time.time()
    assert registry.get_sample_value("aiwatch_gpu_up", labels(0, collector.poller.nvml)) is None
    collector.poller.poll_once()
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 1.0


def test_mig_instances_reported_per_instance_without_utilization(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    parent = nvml.gpus[1]
    parent.mig_mode = pynvml.NVML_DEVICE_MIG_ENABLE
    parent.fail["utilization"] = pynvml.NVML_ERROR_NOT_SUPPORTED  # as NVML answers for a GPU in MIG mode
    parent.migs = [FakeMig(1, 0, "MIG-1111", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", memory_used=3 * GIB),
                   FakeMig(2, 0, "MIG-2222", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", memory_used=5 * GIB)]
    collector = make(nvml, registry)
    collector.poller.poll_once()
    v = registry.get_sample_value
    for mig, used in ((parent.migs[0], 3), (parent.migs[1], 5)):
        lab = {"gpu": "1", "uuid": mig.uuid, "name": mig.name, "mig_gi": str(mig.gi), "mig_ci": str(mig.ci)}
        assert v("aiwatch_gpu_up", lab) == 1.0
        assert v("aiwatch_gpu_memory_used_bytes", lab) == used * GIB
        assert v("aiwatch_gpu_memory_total_bytes", lab) == 10 * GIB
        assert v("aiwatch_gpu_utilization_ratio", lab) is None
        assert v("aiwatch_gpu_power_watts", lab) is None
    # the parent keeps what NVML reports for it; utilization is skipped, not an error
    assert v("aiwatch_gpu_utilization_ratio", labels(1, nvml)) is None
    assert v("aiwatch_gpu_power_watts", labels(1, nvml)) == 110.0
    assert v("aiwatch_gpu_utilization_ratio", labels(0, nvml)) == 0.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0
    # a MIG reconfiguration shows on the next poll
    parent.migs.pop()
    collector.poller.poll_once()
    assert v("aiwatch_gpu_up", {"gpu": "1", "uuid": "MIG-2222", "name": parent.migs[0].name, "mig_gi": "2",
                                "mig_ci": "0"}) is None


def test_mig_mode_switched_off_brings_the_gpus_utilization_back(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    gpu = nvml.gpus[0]
    gpu.util_gpu = 70
    gpu.mig_mode = pynvml.NVML_DEVICE_MIG_ENABLE
    gpu.migs = [FakeMig(1, 0, "MIG-1111", "NVIDIA H100 80GB HBM3 MIG 7g.80gb")]
    collector = make(nvml, registry)
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_utilization_ratio", labels(0, nvml)) is None  # NVML has none for a GPU in MIG mode
    gpu.mig_mode = pynvml.NVML_DEVICE_MIG_DISABLE  # the operator turns MIG off (nvidia-smi -mig 0)
    gpu.migs = []
    collector.poller.poll_once()
    assert v("aiwatch_gpu_utilization_ratio", labels(0, nvml)) == pytest.approx(0.7)
    assert v("aiwatch_gpu_memory_utilization_ratio", labels(0, nvml)) == pytest.approx(0.25)
    assert v("aiwatch_gpu_up", {"gpu": "0", "uuid": "MIG-1111", "name": "NVIDIA H100 80GB HBM3 MIG 7g.80gb",
                                "mig_gi": "1", "mig_ci": "0"}) is None
    gpu.mig_mode = pynvml.NVML_DEVICE_MIG_ENABLE  # and on again: utilization is skipped, not an error
    collector.poller.poll_once()
    assert v("aiwatch_gpu_utilization_ratio", labels(0, nvml)) is None
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0


def test_not_supported_fields_are_skipped_per_device_and_not_asked_again(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(3)
    nvml.gpus[1].fail.update(power=pynvml.NVML_ERROR_NOT_SUPPORTED, energy=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                             throttle=pynvml.NVML_ERROR_NO_PERMISSION, memory_v2=pynvml.NVML_ERROR_NOT_SUPPORTED,
                             throttle_legacy=pynvml.NVML_ERROR_NOT_SUPPORTED)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    calls = nvml.calls["nvmlDeviceGetPowerUsage"]
    collector.poller.poll_once()
    assert nvml.calls["nvmlDeviceGetPowerUsage"] == calls + 2  # GPUs 0 and 2 only
    v = registry.get_sample_value
    one = labels(1, nvml)
    assert v("aiwatch_gpu_up", one) == 1.0
    assert v("aiwatch_gpu_power_watts", one) is None
    assert v("aiwatch_gpu_energy_joules_total", one) is None
    assert v("aiwatch_gpu_throttle_reason", {**one, "reason": "sw_power_cap"}) is None
    assert v("aiwatch_gpu_memory_used_bytes", one) == 20 * GIB  # fell back to the v1 memory call
    assert v("aiwatch_gpu_memory_reserved_bytes", one) is None
    assert v("aiwatch_gpu_power_watts", labels(2, nvml)) == 120.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0


def test_gpu_lost_reports_up_0_keeps_the_others_logs_once_and_recovers(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNVML.with_gpus(8)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.xid(3, 79)  # "GPU has fallen off the bus"
    nvml.gpus[3].lost = True
    v = registry.get_sample_value
    with caplog.at_level(logging.INFO, logger="aiwatch"):
        for _ in range(3):
            collector.poller.poll_once()
            generate_latest(registry)
    lost = [r for r in caplog.records if "GPU 3" in r.getMessage() and "lost" in r.getMessage()]
    assert len(lost) == 1 and "NVMLError_GpuIsLost" in lost[0].getMessage()
    assert v("aiwatch_gpu_nvml_up") == 1.0
    assert v("aiwatch_gpu_up", labels(3, nvml)) == 0.0
    assert v("aiwatch_gpu_temperature_celsius", labels(3, nvml)) is None
    assert v("aiwatch_gpu_xid_errors_total", labels(3, nvml)) == 1.0  # the XID that explains it stays
    for i in (0, 1, 2, 4, 5, 6, 7):
        assert v("aiwatch_gpu_up", labels(i, nvml)) == 1.0
        assert v("aiwatch_gpu_temperature_celsius", labels(i, nvml)) == 40 + i
    caplog.clear()
    nvml.gpus[3].lost = False
    with caplog.at_level(logging.INFO, logger="aiwatch"):
        collector.poller.poll_once()
    assert v("aiwatch_gpu_up", labels(3, nvml)) == 1.0
    assert any("cleared" in r.getMessage() for r in caplog.records)


def test_gpu_lost_at_startup_is_reopened_later(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    nvml.gpus[0].lost = True
    collector = make(nvml, registry)
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_up", {"gpu": "0", "uuid": "", "name": "", "mig_gi": "", "mig_ci": ""}) == 0.0
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    nvml.gpus[0].lost = False
    collector.poller.poll_once()
    assert v("aiwatch_gpu_up", labels(0, nvml)) == 1.0


GPU_STATE_CODES = [pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED, pynvml.NVML_ERROR_GPU_NOT_FOUND,
                   pynvml.NVML_ERROR_INSUFFICIENT_POWER, pynvml.NVML_ERROR_IRQ_ISSUE,
                   pynvml.NVML_ERROR_CORRUPTED_INFOROM, pynvml.NVML_ERROR_OPERATING_SYSTEM,
                   pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_NOT_READY]


@pytest.mark.parametrize("call", ["handle", "uuid", "name"])
@pytest.mark.parametrize("code", GPU_STATE_CODES)
def test_a_gpu_that_cannot_be_opened_is_the_gpus_state_not_aiwatchs_error(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture, call: str, code: int) -> None:
    # before: only GpuIsLost, reset required and GPU not found were left out of aiwatch's error counter; a GPU
    # without external power, with an IRQ issue, a corrupted InfoROM, blocked by the OS or not accessible paged
    # SREs through AiwatchInstrumentationErrors as if aiwatch itself had failed
    nvml = FakeNVML.with_gpus(2)
    nvml.gpus[0].fail[call] = code
    collector = make(nvml, registry)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for _ in range(3):
            collector.poller.poll_once()
    v = registry.get_sample_value
    assert up_of(registry, "0") == [0.0]
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert v("aiwatch_gpu_nvml_up") == 1.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0
    logged = [r.getMessage() for r in caplog.records if "GPU 0 cannot be opened" in r.getMessage()]
    assert len(logged) == 1 and type(pynvml.NVMLError(code)).__name__ in logged[0]
    del nvml.gpus[0].fail[call]
    collector.poller.poll_once()
    assert v("aiwatch_gpu_up", labels(0, nvml)) == 1.0


@pytest.mark.parametrize("call", ["power", "temperature", "utilization"])
@pytest.mark.parametrize("code", GPU_STATE_CODES)
def test_a_gpu_state_error_while_reading_a_field_is_the_gpus_state_not_aiwatchs_error(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture, call: str, code: int) -> None:
    # before: insufficient external power, an IRQ issue, a corrupted InfoROM or blocked by the OS from a field's
    # getter (not at open) was counted as aiwatch's own error and the GPU stayed up with that field missing
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.gpus[0].fail[call] = code
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for _ in range(3):
            collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    logged = [r.getMessage() for r in caplog.records if "GPU 0" in r.getMessage()]
    if code in (pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_NOT_READY):
        # what this field does not support here / not now: the field is skipped, the GPU is up
        assert v("aiwatch_gpu_up", labels(0, nvml)) == 1.0
        assert logged == []
        return
    assert v("aiwatch_gpu_up", labels(0, nvml)) == 0.0
    assert v("aiwatch_gpu_temperature_celsius", labels(0, nvml)) is None
    assert len(logged) == 1 and type(pynvml.NVMLError(code)).__name__ in logged[0]
    del nvml.gpus[0].fail[call]
    collector.poller.poll_once()
    assert v("aiwatch_gpu_up", labels(0, nvml)) == 1.0
    assert v("aiwatch_gpu_temperature_celsius", labels(0, nvml)) == 40.0


@pytest.mark.parametrize("call", ["handle", "uuid", "name"])
@pytest.mark.parametrize("failure", [pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN),
                                     pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND),
                                     RuntimeError("a bug in the bindings")], ids=repr)
def test_opening_a_gpu_failing_in_nvml_or_aiwatch_is_aiwatchs_error(registry: CollectorRegistry, call: str,
                                                                     failure: Exception) -> None:
    nvml = FakeNVML.with_gpus(2)
    name = {"handle": "nvmlDeviceGetHandleByIndex", "uuid": "nvmlDeviceGetUUID", "name": "nvmlDeviceGetName"}[call]
    real = getattr(nvml, name)

    def failing(arg: Any) -> Any:
        if arg == 0 or getattr(arg, "gpu", None) is nvml.gpus[0]:
            raise failure
        return real(arg)

    setattr(nvml, name, failing)
    collector = make(nvml, registry)
    for _ in range(3):
        collector.poller.poll_once()
    v = registry.get_sample_value
    assert up_of(registry, "0") == [0.0]
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 3.0  # at each poll while it lasts


def test_a_gpu_that_appears_after_init_is_exported_on_the_next_poll(registry: CollectorRegistry) -> None:
    # before: the device list was read once at NVML init, so a hot-plugged GPU (or one re-enumerated after a reset,
    # or more GPUs given to the container) was never exported
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.xid(0, 79)
    collector.poller.poll_once()
    nvml.gpus.append(fake_gpu(2))
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_up", labels(2, nvml)) == 1.0
    assert v("aiwatch_gpu_temperature_celsius", labels(2, nvml)) == 42.0
    assert v("aiwatch_gpu_xid_errors_total", labels(2, nvml)) == 0.0
    assert v("aiwatch_gpu_xid_errors_total", labels(0, nvml)) == 1.0  # the GPUs already known keep their state
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert nvml.calls["nvmlDeviceRegisterEvents"] == 3  # the new GPU only was registered for XID events
    assert nvml.calls["nvmlInit"] == 1
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0


def test_a_host_without_gpus_exports_one_given_later(registry: CollectorRegistry) -> None:
    nvml = FakeNVML([])
    collector = make(nvml, registry)
    assert collector.poller.poll_once().reason == "NVML found no GPU"
    nvml.gpus.append(fake_gpu(0))  # e.g. the device plugin hands the container a GPU
    assert collector.poller.poll_once().nvml_up
    assert registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) == 1.0
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 1.0


def test_a_gpu_that_leaves_nvmls_list_is_reported_down_not_frozen(registry: CollectorRegistry,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNVML.with_gpus(3)
    first, gone, last = nvml.gpus
    collector = make(nvml, registry)
    nvml.xid(1, 79)
    collector.poller.poll_once()
    nvml.xid(2, 48)  # drained after the GPUs moved: still counted for the GPU that raised it
    nvml.gpus.remove(gone)  # NVML's list shrinks and the GPUs after it move up one index
    v = registry.get_sample_value
    with caplog.at_level(logging.INFO, logger="aiwatch"):
        for _ in range(3):
            collector.poller.poll_once()
    assert v("aiwatch_gpu_up", at(1, gone)) == 0.0
    assert v("aiwatch_gpu_temperature_celsius", at(1, gone)) is None
    assert v("aiwatch_gpu_xid_errors_total", at(1, gone)) == 1.0  # the XID that explains it stays
    assert v("aiwatch_gpu_up", at(2, last)) is None  # the GPU that moved is exported under its new index only
    assert v("aiwatch_gpu_up", at(1, last)) == 1.0
    assert v("aiwatch_gpu_temperature_celsius", at(1, last)) == 42.0
    assert v("aiwatch_gpu_xid_errors_total", at(1, last)) == 1.0
    assert v("aiwatch_gpu_up", at(0, first)) == 1.0
    assert len([r for r in caplog.records if gone.uuid in r.getMessage()]) == 1
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0
    nvml.gpus.insert(1, gone)  # back, e.g. after a reset and re-enumeration
    collector.poller.poll_once()
    for index, gpu in enumerate(nvml.gpus):
        assert v("aiwatch_gpu_up", at(index, gpu)) == 1.0
    assert v("aiwatch_gpu_xid_errors_total", at(1, gone)) == 1.0
    assert v("aiwatch_gpu_up", at(1, last)) is None
    assert nvml.calls["nvmlInit"] == 1


@pytest.mark.parametrize("position", [1, 2])
def test_a_gpu_swapped_for_another_between_two_polls_is_noticed(registry: CollectorRegistry, position: int) -> None:
    # before: the list was opened again only when NVML's count changed; one GPU leaving and another joining between
    # two polls kept the count, so the new GPU was never exported and the one that moved up stayed under its old index
    nvml = FakeNVML.with_gpus(3)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    gone = nvml.gpus.pop(position)
    nvml.gpus.append(fake_gpu(3))
    for _ in range(3):
        collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_up", at(position, gone)) == 0.0
    assert v("aiwatch_gpu_temperature_celsius", at(position, gone)) is None
    for index, gpu in enumerate(nvml.gpus):
        assert v("aiwatch_gpu_up", at(index, gpu)) == 1.0
        assert v("aiwatch_gpu_temperature_celsius", at(index, gpu)) == gpu.temperature
        assert v("aiwatch_gpu_xid_errors_total", at(index, gpu)) == 0.0  # the new GPU is registered for XIDs
    assert up_of(registry, "2") == [1.0] or position == 2  # the GPU that moved up is not also under its old index
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0


def test_a_gpu_that_could_not_be_opened_and_is_swapped_is_not_taken_for_another(registry: CollectorRegistry) -> None:
    # before: a GPU that could not be opened was opened again by its index on every poll, and took the identity of
    # whatever GPU had that index now: with the count unchanged, a GPU already exported was exported twice
    nvml = FakeNVML.with_gpus(3)
    nvml.gpus[1].lost = True
    collector = make(nvml, registry)
    collector.poller.poll_once()
    del nvml.gpus[1]
    nvml.gpus.append(fake_gpu(3))
    collector.poller.poll_once()
    v = registry.get_sample_value
    for index, gpu in enumerate(nvml.gpus):
        assert up_of(registry, str(index)) == [1.0]
        assert v("aiwatch_gpu_up", at(index, gpu)) == 1.0
    uuids = [s.labels["uuid"] for fam in registry.collect() if fam.name == "aiwatch_gpu_up" for s in fam.samples]
    assert sorted(uuids) == sorted(gpu.uuid for gpu in nvml.gpus)  # the one never opened cannot be told apart


def test_noticing_a_swap_adds_no_nvml_call_to_a_steady_poll(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(8)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    collector.poller.poll_once()
    before = nvml.calls.copy()
    collector.poller.poll_once()
    per_gpu = ("nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPowerUsage",
               "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetTemperature",
               "nvmlDeviceGetCurrentClocksEventReasons")
    assert nvml.calls - before == {"nvmlDeviceGetCount": 1, "nvmlEventSetWait": 1, "nvmlDeviceGetClockInfo": 16,
                                   **{name: 8 for name in per_gpu}}  # 66: the readings, nothing to notice a swap


def test_a_gpu_lost_while_the_list_changes_stays_down_under_its_labels(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.gpus[1].lost = True  # cannot be opened to read its UUID when the list is read again
    nvml.gpus.append(fake_gpu(2))
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 0.0  # the same series went from 1 to 0
    assert up_of(registry, "1") == [0.0]
    assert v("aiwatch_gpu_up", labels(2, nvml)) == 1.0
    nvml.gpus[1].lost = False
    collector.poller.poll_once()
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert v("aiwatch_gpu_xid_errors_total", labels(1, nvml)) == 0.0


def test_every_gpu_leaving_reports_nvml_down(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.gpus.clear()
    assert collector.poller.poll_once().reason == "NVML found no GPU"
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0
    assert "aiwatch_gpu_up{" not in generate_latest(registry).decode()


def test_a_gpu_count_that_fails_later_keeps_the_known_gpus(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.count_error = pynvml.NVML_ERROR_UNKNOWN  # NVML's own failure: logged, not aiwatch's error
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0
    nvml.count_error = None
    collector.poller.poll_once()
    nvml.nvmlDeviceGetCount = lambda: None  # type: ignore[method-assign,assignment]  # bindings gone wrong
    for _ in range(2):
        collector.poller.poll_once()
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 2.0  # at each poll while it lasts


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
                                  pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, pynvml.NVML_ERROR_UNKNOWN])
def test_no_driver_reports_nvml_down_and_never_raises(registry: CollectorRegistry, code: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNVML.with_gpus(2)
    nvml.init_error = code
    collector = make(nvml, registry)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for _ in range(3):
            snap = collector.poller.poll_once()
    assert not snap.nvml_up
    assert type(pynvml.NVMLError(code)).__name__ in snap.reason
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0
    assert "aiwatch_gpu_up{" not in generate_latest(registry).decode()
    assert len([r for r in caplog.records if "no NVIDIA GPU found" in r.getMessage()]) == 1
    # the driver loads later: the next poll picks it up
    nvml.init_error = None
    collector.poller.poll_once()
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 1.0
    assert registry.get_sample_value("aiwatch_gpu_up", labels(1, nvml)) == 1.0


def test_no_gpu_reports_nvml_down(registry: CollectorRegistry) -> None:
    collector = make(FakeNVML([]), registry)
    snap = collector.poller.poll_once()
    assert snap.reason == "NVML found no GPU"
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0


def test_real_pynvml_without_a_driver_reports_nvml_down(registry: CollectorRegistry) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver: scripts/gpu_check.py covers it")
    collector = GpuCollector(registry=registry, metrics=Metrics(registry), start=False)
    snap = collector.poller.poll_once()
    assert not snap.nvml_up and "NVMLError_" in snap.reason
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0
    collector.close()


def test_nvml_failing_mid_flight_reinitialises(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.initialised = False  # the driver was unloaded under us: every call now says UNINITIALIZED
    snap = collector.poller.poll_once()
    assert not snap.nvml_up and "Uninitialized" in snap.reason
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0
    collector.poller.poll_once()
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 1.0
    assert nvml.calls["nvmlInit"] == 2


def test_unexpected_errors_skip_the_field_count_at_each_poll_and_never_raise(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    nvml.gpus[0].fail["temperature"] = pynvml.NVML_ERROR_UNKNOWN
    collector = make(nvml, registry)
    for _ in range(3):
        collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_temperature_celsius", labels(0, nvml)) is None
    assert v("aiwatch_gpu_power_watts", labels(0, nvml)) == 100.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 3.0

    def broken(handle: object) -> int:
        raise RuntimeError("a bug in the bindings")

    nvml.nvmlDeviceGetClockInfo = broken  # type: ignore[method-assign,assignment]
    collector.poller.poll_once()
    assert v("aiwatch_gpu_sm_clock_hertz", labels(1, nvml)) is None
    assert v("aiwatch_gpu_up", labels(1, nvml)) == 1.0
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 8.0  # + temperature, clocks of 2 GPUs


ODD_VALUES = [  # NVML function, what it returns for GPU 0, the series that must be left out
    pytest.param("nvmlDeviceGetUtilizationRates", types.SimpleNamespace(gpu=None, memory=3),
                 {"aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_utilization_ratio"}, id="utilization-None"),
    pytest.param("nvmlDeviceGetMemoryInfo", types.SimpleNamespace(used="lots", total=1, reserved=0),
                 {"aiwatch_gpu_memory_used_bytes", "aiwatch_gpu_memory_total_bytes",
                  "aiwatch_gpu_memory_reserved_bytes"}, id="memory-str"),
    pytest.param("nvmlDeviceGetPowerUsage", None, {"aiwatch_gpu_power_watts"}, id="power-None"),
    pytest.param("nvmlDeviceGetTotalEnergyConsumption", 10**400, {"aiwatch_gpu_energy_joules_total"},
                 id="energy-10**400"),
    pytest.param("nvmlDeviceGetTemperature", object(), {"aiwatch_gpu_temperature_celsius"}, id="temperature-object"),
    pytest.param("nvmlDeviceGetClockInfo", math.nan, {"aiwatch_gpu_sm_clock_hertz", "aiwatch_gpu_memory_clock_hertz"},
                 id="clock-nan"),
    pytest.param("nvmlDeviceGetCurrentClocksEventReasons", "0x4", {"aiwatch_gpu_throttle_reason"}, id="throttle-str"),
    # NVML's "not available" (all ones) and readings out of their range: before, exported as they were (a
    # utilization ratio of 42949672.95, which the autoscaling rule turned into 43 million replicas wanted; 4.3e9 C)
    pytest.param("nvmlDeviceGetUtilizationRates", types.SimpleNamespace(gpu=0xFFFFFFFF, memory=3),
                 {"aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_utilization_ratio"},
                 id="utilization-0xFFFFFFFF"),
    pytest.param("nvmlDeviceGetUtilizationRates", types.SimpleNamespace(gpu=180, memory=3),
                 {"aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_utilization_ratio"}, id="utilization-180"),
    pytest.param("nvmlDeviceGetUtilizationRates", types.SimpleNamespace(gpu=30, memory=-1),
                 {"aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_utilization_ratio"}, id="utilization-minus-1"),
    pytest.param("nvmlDeviceGetMemoryInfo", types.SimpleNamespace(used=2**64 - 1, total=GIB, reserved=0),
                 {"aiwatch_gpu_memory_used_bytes", "aiwatch_gpu_memory_total_bytes",
                  "aiwatch_gpu_memory_reserved_bytes"}, id="memory-2**64-1"),
    pytest.param("nvmlDeviceGetPowerUsage", 0xFFFFFFFF, {"aiwatch_gpu_power_watts"}, id="power-0xFFFFFFFF"),
    pytest.param("nvmlDeviceGetTotalEnergyConsumption", 2**64 - 1, {"aiwatch_gpu_energy_joules_total"},
                 id="energy-2**64-1"),
    pytest.param("nvmlDeviceGetTemperature", 0xFFFFFFFF, {"aiwatch_gpu_temperature_celsius"},
                 id="temperature-0xFFFFFFFF"),
    pytest.param("nvmlDeviceGetClockInfo", 0xFFFFFFFF, {"aiwatch_gpu_sm_clock_hertz", "aiwatch_gpu_memory_clock_hertz"},
                 id="clock-0xFFFFFFFF"),
]


@pytest.mark.parametrize(("function", "odd", "missing"), ODD_VALUES)
def test_an_odd_value_from_nvml_skips_that_series_not_every_gpu(registry: CollectorRegistry, function: str,
                                                                 odd: Any, missing: set[str]) -> None:
    # before: the value was converted outside the guarded NVML call, so one GPU's odd value (None, a string, an int
    # too large for a float) failed the whole poll: aiwatch_gpu_nvml_up 0 and no series for any GPU of the host
    # (a NaN clock was exported as NaN)
    nvml = FakeNVML.with_gpus(2)
    real = getattr(nvml, function)

    def odd_for_gpu0(handle: Handle, *args: Any, **kwargs: Any) -> Any:
        value = real(handle, *args, **kwargs)
        return odd if handle.gpu is nvml.gpus[0] else value

    setattr(nvml, function, odd_for_gpu0)
    collector = make(nvml, registry)
    for _ in range(2):
        snap = collector.poller.poll_once()
    assert snap.nvml_up, snap.reason
    gpu0 = {name for name in (*VALUE_METRICS, "aiwatch_gpu_throttle_reason")
            if any(d.gpu == "0" and (name in d.values or (name == "aiwatch_gpu_throttle_reason" and d.throttle))
                   for d in snap.devices)}
    assert gpu0 == {*VALUE_METRICS, "aiwatch_gpu_throttle_reason"} - missing
    assert registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) == 1.0
    assert registry.get_sample_value("aiwatch_gpu_power_watts", labels(1, nvml)) == 110.0
    errors = registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"})
    assert errors is not None and errors >= 1  # aiwatch could not use what the bindings returned: its error


def test_an_event_of_an_odd_type_is_skipped_not_the_poll(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.events.append(EventData(Handle(nvml.gpus[0]), None, 79))  # type: ignore[arg-type]
    nvml.xid(1, 79)
    snap = collector.poller.poll_once()
    assert snap.nvml_up, snap.reason
    assert registry.get_sample_value("aiwatch_gpu_xid_errors_total", labels(1, nvml)) == 1.0
    assert registry.get_sample_value("aiwatch_gpu_xid_errors_total", labels(0, nvml)) == 0.0
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 1.0


def polls_within_a_watchdog(collector: GpuCollector) -> Any:
    """``poll_once()`` on a thread; a hang guard, not a timing assertion: a poll that loops for hours never ends."""
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(collector.poller.poll_once()), daemon=True)
    thread.start()
    thread.join(30)
    assert done, "the poll did not finish"
    return done[0]


@pytest.mark.parametrize("count", [2**32 - 1, -1, True, 2.0])
def test_a_gpu_count_that_is_no_count_is_an_error_not_an_endless_poll(registry: CollectorRegistry,
                                                                       count: Any) -> None:
    # before: 2**32 - 1 (-1 read as unsigned) made the poll try to open four billion GPUs, one NVML call each
    nvml = FakeNVML.with_gpus(2)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.nvmlDeviceGetCount = lambda: count  # type: ignore[method-assign,assignment]
    snap = polls_within_a_watchdog(collector)
    assert snap.nvml_up and len(snap.devices) == 2  # the GPUs as last listed
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 1.0
    fresh = make(nvml, CollectorRegistry())  # at init: NVML reported down, counted
    snap = polls_within_a_watchdog(fresh)
    assert not snap.nvml_up and "not a GPU count" in snap.reason


def test_a_mig_device_count_that_is_no_count_skips_the_mig_devices(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    gpu = nvml.gpus[0]
    gpu.mig_mode = pynvml.NVML_DEVICE_MIG_ENABLE
    gpu.migs = [FakeMig(1, 0, "MIG-1111", "NVIDIA H100 80GB HBM3 MIG 7g.80gb")]
    gpu.max_migs = 2**32 - 1
    collector = make(nvml, registry)
    snap = polls_within_a_watchdog(collector)
    assert snap.nvml_up and [d.mig_gi for d in snap.devices] == [""]
    assert registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) == 1.0
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 1.0


def test_a_failing_poll_never_escapes(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    nvml.nvmlDeviceGetCount = lambda: 1 / 0  # type: ignore[method-assign,assignment]
    collector = make(nvml, registry)
    snap = collector.poller.poll_once()
    assert not snap.nvml_up and "ZeroDivisionError" in snap.reason
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 1.0


def test_stop_does_not_hang_on_a_poll_stuck_in_nvml(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    nvml.block = threading.Event()
    collector = GpuCollector(nvml=nvml, registry=registry, metrics=Metrics(registry), interval=0.01)
    assert nvml.blocked.wait(10)
    collector.poller.stop(timeout=0.05)  # returns although the poll thread is still inside NVML
    assert nvml.calls["nvmlShutdown"] == 0
    nvml.block.set()


def test_a_stopped_poller_reports_nvml_down_not_its_last_readings(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    shared = GpuCollector(nvml=nvml, registry=registry, metrics=Metrics(registry), interval=0.01)
    other = GpuCollector(shared.poller, registry=CollectorRegistry(), start=False)
    try:
        wait_until(lambda: registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) == 1.0, 10, 0.01,
                   "a poll")
        other.close()  # stops the poller both collectors share
        last = shared.poller.snapshot
        assert last is not None and last.nvml_up
        assert not nvml.initialised
        v = registry.get_sample_value
        assert v("aiwatch_gpu_nvml_up") == 0.0
        assert v("aiwatch_gpu_up", labels(0, nvml)) is None
        assert v("aiwatch_gpu_power_watts", labels(0, nvml)) is None
        assert v("aiwatch_gpu_last_poll_timestamp_seconds") == last.timestamp
        shared.poller.start()  # polling again: readings again
        wait_until(lambda: v("aiwatch_gpu_up", labels(0, nvml)) == 1.0, 10, 0.01, "a poll after start()")
        assert v("aiwatch_gpu_nvml_up") == 1.0
    finally:
        shared.close()


def test_a_poll_stuck_through_stop_does_not_bring_its_readings_back(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    nvml.block = threading.Event()
    collector = GpuCollector(nvml=nvml, registry=registry, metrics=Metrics(registry), interval=0.01)
    assert nvml.blocked.wait(10)
    collector.poller.stop(timeout=0.05)
    nvml.block.set()  # the hung call returns after stop(): the thread finishes its poll and shuts NVML down
    wait_until(lambda: nvml.calls["nvmlShutdown"] == 1, 10, 0.01, "NVML shut down by the poll thread")
    assert collector.poller.snapshot is not None and collector.poller.snapshot.nvml_up
    assert registry.get_sample_value("aiwatch_gpu_nvml_up") == 0.0
    assert registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) is None


def test_xid_events_are_counted_per_gpu_and_drained_without_waiting(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(4)
    nvml.gpus[2].events = 0  # this GPU delivers no XID events: no series rather than a misleading 0
    collector = make(nvml, registry)
    collector.poller.poll_once()
    for gpu, code in ((0, 13), (0, 31), (1, 48), (3, 79)):
        nvml.xid(gpu, code)
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_xid_errors_total", labels(0, nvml)) == 2.0
    assert v("aiwatch_gpu_xid_errors_total", labels(1, nvml)) == 1.0
    assert v("aiwatch_gpu_xid_errors_total", labels(2, nvml)) is None
    assert v("aiwatch_gpu_xid_errors_total", labels(3, nvml)) == 1.0
    assert nvml.calls["nvmlDeviceRegisterEvents"] == 3


@pytest.mark.parametrize("gpus", [2, 3])
def test_an_xid_of_a_gpu_that_left_is_counted_for_it_not_dropped_or_given_to_another(
        registry: CollectorRegistry, gpus: int) -> None:
    # before: the event's device was matched by NVML's index (or by the handle being the same Python object, which
    # pynvml's never is): a GPU that fell off the bus has no index any more, so its XID was dropped, or on a host
    # left with one GPU counted for that other GPU
    nvml = FakeNVML.with_gpus(gpus)
    gone = nvml.gpus[1]
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.xid(1, 79)  # "GPU has fallen off the bus" ...
    nvml.gpus.remove(gone)  # ... and it leaves NVML's list before the next poll drains the event
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_up", at(1, gone)) == 0.0
    assert v("aiwatch_gpu_xid_errors_total", at(1, gone)) == 1.0
    for index, gpu in enumerate(nvml.gpus):
        assert v("aiwatch_gpu_xid_errors_total", at(index, gpu)) == 0.0


def test_an_xid_is_matched_by_the_handle_nvml_gives_not_by_a_call_about_it(registry: CollectorRegistry) -> None:
    # the event's handle points to the device the poller holds: no NVML call is needed (or possible) to tell which
    nvml = FakeNVML.with_gpus(3)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.xid(2, 79)
    nvml.gpus[2].lost = True
    calls = nvml.calls.copy()
    collector.poller.poll_once()
    assert registry.get_sample_value("aiwatch_gpu_xid_errors_total", labels(2, nvml)) == 1.0
    assert nvml.calls["nvmlDeviceGetIndex"] == calls["nvmlDeviceGetIndex"]
    assert nvml.calls["nvmlDeviceGetUUID"] == calls["nvmlDeviceGetUUID"]


def test_event_set_unsupported_leaves_xid_out(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    nvml.event_set_error = pynvml.NVML_ERROR_NOT_SUPPORTED
    collector = make(nvml, registry)
    collector.poller.poll_once()
    assert registry.get_sample_value("aiwatch_gpu_xid_errors_total", labels(0, nvml)) is None
    assert registry.get_sample_value("aiwatch_gpu_up", labels(0, nvml)) == 1.0


def test_collector_cannot_be_registered_twice(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    make(nvml, registry)
    with pytest.raises(ValueError, match="Duplicated"):
        make(nvml, registry)


def test_bad_interval_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"^the GPU poll interval must be a number of seconds above 0 and at most "
                                         r"1e9, got 0$"):
        GpuPoller(0, nvml=FakeNVML())
    monkeypatch.setenv("AIWATCH_GPU_POLL_INTERVAL", "soon")
    with pytest.raises(ValueError, match="AIWATCH_GPU_POLL_INTERVAL"):
        GpuPoller(nvml=FakeNVML())
    monkeypatch.setenv("AIWATCH_GPU_POLL_INTERVAL", "0.5")
    assert GpuPoller(nvml=FakeNVML()).interval == 0.5
    assert GpuPoller(2, nvml=FakeNVML()).interval == 2.0


@pytest.mark.parametrize("bad", [*(p for p in BAD_SECONDS if p.id != "None"), pytest.param(0, id="zero")])
@pytest.mark.parametrize("setting", ["interval", "hung_after"])
def test_an_interval_that_is_no_number_of_seconds_is_a_value_error_naming_it(setting: str, bad: Any) -> None:
    # before: 10**400 raised OverflowError, a string TypeError, a Decimal NaN decimal.InvalidOperation; True, 2**53+1
    # and a Unix timestamp were accepted, and Decimal("1e400") became an infinite interval (the poll thread then dies
    # in Event.wait with OverflowError)
    what = "the GPU poll interval" if setting == "interval" else "hung_after"
    with pytest.raises(ValueError, match=f"^{what} must be a number of seconds above 0 and at most 1e9, got "):
        GpuPoller(nvml=FakeNVML(), **{setting: bad})


STOP_TIMEOUTS = [pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf"),
                 pytest.param(10**400, id="10**400"), pytest.param(Decimal("NaN"), id="Decimal-NaN"),
                 pytest.param(True, id="True"), pytest.param("0.5", id="str"), pytest.param(None, id="None")]


@pytest.mark.parametrize("bad", STOP_TIMEOUTS)
def test_stopping_with_a_timeout_that_is_no_number_never_raises(registry: CollectorRegistry, bad: Any) -> None:
    # before: stop() and close(), documented never to raise, raised ValueError (NaN), OverflowError (inf, 10**400),
    # TypeError (a string, None) or decimal.InvalidOperation, leaving NVML initialised
    nvml = FakeNVML.with_gpus(1)
    collector = make(nvml, registry)
    collector.poller.start()
    wait_until(lambda: collector.poller.snapshot is not None, 10, what="a first poll")
    collector.close(bad)
    assert not collector.poller.running
    assert nvml.calls["nvmlShutdown"] == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 1
    assert collector.poller.poll_once().nvml_up  # the poller still works: a later poll reads the GPU again


def test_a_negative_stop_timeout_waits_not_at_all_and_is_no_error(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(1)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    collector.close(-1)
    assert nvml.calls["nvmlShutdown"] == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 0


def test_importing_aiwatch_imports_neither_pynvml_nor_redis() -> None:
    code = ("import sys, aiwatch, aiwatch.signals; import aiwatch.signals.queues, aiwatch.signals.batcher, "
            "aiwatch.signals.cache; aiwatch.MicroBatcher; aiwatch.instrument_queue; aiwatch.FeatureCache; "
            "print(sorted(m for m in ('pynvml', 'redis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_older_drivers_fall_back_to_the_older_nvml_calls(registry: CollectorRegistry) -> None:
    nvml = FakeNVML.with_gpus(2)
    for gpu in nvml.gpus:  # a driver before 535: no "clocks event reasons", no memory info v2
        gpu.fail.update(throttle=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, memory_v2=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    nvml.gpus[1].throttle = 0x40 | 0x1
    collector = make(nvml, registry)
    collector.poller.poll_once()
    collector.poller.poll_once()
    v = registry.get_sample_value
    assert v("aiwatch_gpu_throttle_reason", {**labels(1, nvml), "reason": "hw_thermal_slowdown"}) == 1.0
    assert v("aiwatch_gpu_throttle_reason", {**labels(1, nvml), "reason": "gpu_idle"}) == 1.0
    assert v("aiwatch_gpu_throttle_reason", {**labels(1, nvml), "reason": "sw_power_cap"}) == 0.0
    assert v("aiwatch_gpu_memory_used_bytes", labels(0, nvml)) == 20 * GIB
    assert nvml.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 2  # asked once per GPU, then remembered
    assert nvml.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 4


def test_a_field_that_keeps_failing_keeps_the_error_count_growing_but_is_logged_once(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    # before: counted at its first poll only, so AiwatchInstrumentationErrors (increase over 10m) resolved 10 minutes
    # in while aiwatch_gpu_utilization_ratio stayed missing for good (nvml_up 1, gpu_up 1: nothing showed it), and
    # AiwatchGpuSaturated and the GPU autoscaling signal were blind
    nvml = FakeNVML.with_gpus(1)
    collector = make(nvml, registry)
    collector.poller.poll_once()
    nvml.gpus[0].fail["utilization"] = pynvml.NVML_ERROR_UNKNOWN
    v = registry.get_sample_value
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for polls in range(1, 6):
            collector.poller.poll_once()
            assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == polls
    assert v("aiwatch_gpu_utilization_ratio", labels(0, nvml)) is None
    assert sum("reading utilization of GPU 0 failed" in r.getMessage() for r in caplog.records) == 1
    nvml.gpus[0].fail.clear()
    collector.poller.poll_once()
    assert v("aiwatch_instrumentation_errors_total", {"component": "gpu"}) == 5
