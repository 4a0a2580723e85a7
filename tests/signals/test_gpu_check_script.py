"""scripts/gpu_check.py's own logic, run against the stand-in pynvml (the real run needs an NVIDIA GPU).

Each check runs in a fresh Python process, as the script does on a GPU machine: the script forks, and a fork of a
pytest worker (whose other threads may hold a lock at the fork) can leave the child waiting for ever.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType

import pynvml

from tests.servers import REPO, python_env
from tests.signals.fake_pynvml import FakeMig, FakeNVML


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _healthy_with_mig() -> FakeNVML:
    nvml = FakeNVML.with_gpus(8)
    nvml.gpus[7].mig_mode = 1
    nvml.gpus[7].fail["utilization"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    nvml.gpus[7].migs = [FakeMig(1, 0, "MIG-7", "MIG 7g.80gb")]
    return nvml


def _init_in_the_parent_only() -> FakeNVML:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    nvml = FakeNVML.with_gpus(1)
    parent, init = os.getpid(), nvml.nvmlInit

    def init_in_the_parent_only() -> None:
        if os.getpid() != parent:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        init()

    nvml.nvmlInit = init_in_the_parent_only  # type: ignore[method-assign]
    return nvml


def _child_hangs_after_the_fork() -> FakeNVML:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.register_at_fork(after_in_child=lambda: time.sleep(3600))  # as a child stuck on a lock held at the fork
    return FakeNVML.with_gpus(1)


def _lost_hot_and_no_energy() -> FakeNVML:
    nvml = FakeNVML.with_gpus(3)
    nvml.gpus[0].lost = True
    nvml.gpus[1].temperature = 500
    nvml.gpus[2].fail["energy"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    return nvml


def _no_energy_counter() -> FakeNVML:
    nvml = FakeNVML.with_gpus(1)
    nvml.gpus[0].fail["energy"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    return nvml


def _mig_reports_whole_gpu() -> FakeNVML:
    nvml = FakeNVML.with_gpus(1)
    nvml.gpus[0].mig_mode = 1
    nvml.gpus[0].migs = [FakeMig(1, 0, "MIG-0", "MIG 7g.80gb")]
    nvml.gpus[0].mig_reports_whole_gpu = True
    return nvml


def _no_library() -> FakeNVML:
    nvml = FakeNVML.with_gpus(1)
    nvml.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    return nvml


SCENARIOS: dict[str, Callable[[], FakeNVML]] = {f.__name__.lstrip("_"): f for f in (
    _healthy_with_mig, _init_in_the_parent_only, _child_hangs_after_the_fork, _lost_hot_and_no_energy,
    _no_energy_counter, _mig_reports_whole_gpu, _no_library)}


def run_here(scenario: str, args: list[str]) -> int:
    """In the fresh process: the scenario's stand-in NVML as ``pynvml``, then the script's main."""
    sys.modules["pynvml"] = SCENARIOS[scenario]()
    return int(load_script().main(["--seconds", "0.05", *args]))


def run(scenario: str, *args: str) -> tuple[int, str]:
    """The script's exit code and output, run on ``scenario`` in a fresh Python process."""
    code = ("import sys; from tests.signals.test_gpu_check_script import run_here; "
            "sys.exit(run_here(sys.argv[1], sys.argv[2:]))")
    done = subprocess.run([sys.executable, "-c", code, scenario, *args], cwd=REPO, env=python_env(),
                          capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout + done.stderr


def test_passes_on_healthy_gpus_with_mig() -> None:
    rc, out = run("healthy_with_mig")
    assert rc == 0, out
    assert "OK: every aiwatch_gpu_* metric present and plausible on 9 device(s)" in out
    assert "forked child: polled NVML itself after the fork" in out


def test_fails_when_a_forked_child_cannot_poll_nvml_itself() -> None:
    rc, out = run("init_in_the_parent_only")
    assert rc == 1, out
    assert "a forked child did not poll NVML itself" in out


def test_a_forked_child_that_hangs_is_killed_and_reported() -> None:
    rc, out = run("child_hangs_after_the_fork", "--fork-timeout", "1")
    assert rc == 1, out
    assert "a forked child had not exited 4 s after the fork (hung, e.g. on a lock another thread held at the " \
           "fork): killed it" in out


def test_fails_on_a_lost_gpu_an_implausible_value_or_a_missing_metric() -> None:
    rc, out = run("lost_hot_and_no_energy")
    assert rc == 1, out
    assert "gpu 0: aiwatch_gpu_up is 0.0" in out
    assert "gpu 1: aiwatch_gpu_temperature_celsius = 500.0 outside" in out
    assert "gpu 2: aiwatch_gpu_energy_joules_total missing" in out
    rc, out = run("no_energy_counter", "--allow-missing", "aiwatch_gpu_energy_joules_total")
    assert rc == 0, out


def test_fails_on_a_mig_device_reporting_its_parents_readings() -> None:
    rc, out = run("mig_reports_whole_gpu")
    assert rc == 1, out
    assert ("gpu 0 mig 1.0: a MIG device reports aiwatch_gpu_power_watts, aiwatch_gpu_energy_joules_total, "
            "aiwatch_gpu_temperature_celsius, aiwatch_gpu_sm_clock_hertz, aiwatch_gpu_memory_clock_hertz") in out


def test_no_gpu_fails() -> None:
    rc, out = run("no_library")
    assert rc == 1, out
    assert "FAIL: NVML is down: NVMLError_LibraryNotFound" in out
