"""scripts/gpu_check.py's own logic, run against the stand-in pynvml (the real run needs an NVIDIA GPU)."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import pynvml
import pytest

from tests.servers import REPO
from tests.signals.fake_pynvml import FakeMig, FakeNVML


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(nvml: FakeNVML, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return int(load_script().main(["--seconds", "0.05", *args]))


def test_passes_on_healthy_gpus_with_mig(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    nvml = FakeNVML.with_gpus(8)
    nvml.gpus[7].mig_mode = 1
    nvml.gpus[7].fail["utilization"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    nvml.gpus[7].migs = [FakeMig(1, 0, "MIG-7", "MIG 7g.80gb")]
    assert run(nvml, monkeypatch) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "OK: every aiwatch_gpu_* metric present and plausible on 9 device(s)" in out
    assert "forked child: polled NVML itself after the fork" in out


def test_fails_when_a_forked_child_cannot_poll_nvml_itself(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    nvml = FakeNVML.with_gpus(1)
    parent, init = os.getpid(), nvml.nvmlInit

    def init_in_the_parent_only() -> None:
        if os.getpid() != parent:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        init()

    monkeypatch.setattr(nvml, "nvmlInit", init_in_the_parent_only)
    assert run(nvml, monkeypatch) == 1
    assert "a forked child did not poll NVML itself" in capsys.readouterr().out


def test_fails_on_a_lost_gpu_an_implausible_value_or_a_missing_metric(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    nvml = FakeNVML.with_gpus(3)
    nvml.gpus[0].lost = True
    nvml.gpus[1].temperature = 500
    nvml.gpus[2].fail["energy"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert run(nvml, monkeypatch) == 1
    out = capsys.readouterr().out
    assert "gpu 0: aiwatch_gpu_up is 0.0" in out
    assert "gpu 1: aiwatch_gpu_temperature_celsius = 500.0 outside" in out
    assert "gpu 2: aiwatch_gpu_energy_joules_total missing" in out
    nvml = FakeNVML.with_gpus(1)
    nvml.gpus[0].fail["energy"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert run(nvml, monkeypatch, "--allow-missing", "aiwatch_gpu_energy_joules_total") == 0


def test_fails_on_a_mig_device_reporting_its_parents_readings(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    nvml = FakeNVML.with_gpus(1)
    nvml.gpus[0].mig_mode = 1
    nvml.gpus[0].migs = [FakeMig(1, 0, "MIG-0", "MIG 7g.80gb")]
    nvml.gpus[0].mig_reports_whole_gpu = True
    assert run(nvml, monkeypatch) == 1
    out = capsys.readouterr().out
    assert ("gpu 0 mig 1.0: a MIG device reports aiwatch_gpu_power_watts, aiwatch_gpu_energy_joules_total, "
            "aiwatch_gpu_temperature_celsius, aiwatch_gpu_sm_clock_hertz, aiwatch_gpu_memory_clock_hertz") in out


def test_no_gpu_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    nvml = FakeNVML.with_gpus(1)
    nvml.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    assert run(nvml, monkeypatch) == 1
    assert "FAIL: NVML is down: NVMLError_LibraryNotFound" in capsys.readouterr().out
