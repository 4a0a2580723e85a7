"""``aiwatch gpu``: the table with a stand-in pynvml, the no-GPU message with the real one, and --serve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from aiwatch.cli import main
from tests.servers import Process, http_get, python_env, wait_until
from tests.signals.fake_pynvml import FakeMig, FakeNVML


def _has_driver() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_gpu_table_with_eight_gpus(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    nvml = FakeNVML.with_gpus(8)
    nvml.gpus[2].lost = True
    nvml.gpus[5].mig_mode = 1
    nvml.gpus[5].migs = [FakeMig(3, 0, "MIG-5555", "NVIDIA H100 80GB HBM3 MIG 1g.10gb")]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert main(["gpu"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "NVIDIA driver 550.54.15, 8 GPU(s)"
    assert lines[1].split()[:4] == ["gpu", "mig", "name", "up"]
    assert re.search(r"^0\s+NVIDIA H100 80GB HBM3\s+yes\s+0%\s+20\.0/80\.0\s+100\.0\s+40\s+1980\s+sw_power_cap\s+0$",
                     out, re.M), out
    assert re.search(r"^2\s+.*LOST", out, re.M)
    assert re.search(r"^5\s+3\.0\s+NVIDIA H100 80GB HBM3 MIG 1g\.10gb\s+yes\s+-\s+1\.0/10\.0", out, re.M)
    assert nvml.calls["nvmlShutdown"] == 1


def test_gpu_table_in_the_apps_multiprocess_environment_writes_nothing_into_its_directory(tmp_path: Path) -> None:
    """Run where the app runs (PROMETHEUS_MULTIPROC_DIR set for its gunicorn workers), the poller's error counters
    were written into the workers' directory under the command's pid, and merged into every worker's /metrics."""
    code = ("import sys\n"
            "from tests.signals.fake_pynvml import FakeNVML\n"
            "nvml = FakeNVML.with_gpus(2)\n"
            "nvml.gpus[1].lost = True\n"
            "sys.modules['pynvml'] = nvml\n"
            "from aiwatch.cli import main\n"
            "sys.exit(main(['gpu']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "NVIDIA driver 550.54.15, 2 GPU(s)" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_gpu_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML.with_gpus(2))
    assert main(["gpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nvml_up"] is True
    assert [d["uuid"] for d in data["devices"]] == ["GPU-00000000-aaaa-bbbb-cccc-000000000000",
                                                    "GPU-00000001-aaaa-bbbb-cccc-000000000001"]
    assert data["devices"][1]["values"]["aiwatch_gpu_power_watts"] == 110.0


def test_no_gpu_prints_the_reason_and_exits_0(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    nvml = FakeNVML.with_gpus(1)
    nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert main(["gpu"]) == 0
    assert capsys.readouterr().out.strip() == "no NVIDIA GPU found: NVMLError_DriverNotLoaded: Driver Not Loaded"


def test_without_pynvml_installed_says_which_extra(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert main(["gpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no NVIDIA GPU found: pynvml is not installed") and 'aiwatch[gpu]' in out


def test_serving_without_pynvml_installed_fails_and_says_which_extra(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``aiwatch gpu --serve PORT`` (the exporter sidecar) without the gpu extra serves nothing: it said "no NVIDIA
    GPU found" and exited 0, a success to the service manager that would restart it on failure."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert main(["gpu", "--serve", "0"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ('aiwatch gpu: cannot serve the GPU metrics: pynvml is not installed; this aiwatch feature needs '
                   'it: pip install "aiwatch[gpu]"\n')


@pytest.mark.skipif(_has_driver(), reason="this machine has an NVIDIA driver")
def test_real_nvml_without_driver_in_a_subprocess() -> None:
    out = subprocess.run([sys.executable, "-m", "aiwatch", "gpu"], env=python_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no NVIDIA GPU found: NVMLError_"), out.stdout


@pytest.mark.slow
def test_serve_exposes_gpu_metrics_on_http(tmp_path: object) -> None:
    from pathlib import Path

    from tests.servers import free_port

    port = free_port()
    proc = Process([sys.executable, "-m", "aiwatch", "gpu", "--serve", str(port), "--interval", "0.2"],
                   Path(str(tmp_path)) / "gpu.log", env=python_env())
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: proc.alive() and b"aiwatch_gpu_nvml_up" in http_get(url)[1], 30, what=url)
        body = http_get(url)[1].decode()
        expected = "1.0" if _has_driver() else "0.0"
        assert f"aiwatch_gpu_nvml_up {expected}" in body
        assert "aiwatch_gpu_last_poll_timestamp_seconds" in body
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()


def test_serve_gpu_metrics_serves_gpus_and_the_error_counter_only() -> None:
    from aiwatch.signals.gpu import serve_gpu_metrics

    nvml = FakeNVML.with_gpus(2)
    nvml.gpus[1].fail["temperature"] = pynvml.NVML_ERROR_UNKNOWN
    served = serve_gpu_metrics(0, interval=0.01, nvml=nvml)
    try:
        url = f"http://127.0.0.1:{served.port}/metrics"
        wait_until(lambda: b'aiwatch_gpu_up{gpu="1"' in http_get(url)[1], 10, 0.01, what=url)
        body = http_get(url)[1].decode()
        # The failing field is counted at every poll it lasts (interval 0.01: several by the time of the scrape).
        counted = re.search(r'^aiwatch_instrumentation_errors_total\{component="gpu"\} (\S+)$', body, re.M)
        assert counted is not None and float(counted.group(1)) >= 1.0, body
        assert 'aiwatch_gpu_power_watts{gpu="0"' in body
        assert "aiwatch_request_duration_seconds" not in body and "aiwatch_queue_depth" not in body
    finally:
        served.close()
    assert not served.collector.poller.running
    assert nvml.calls["nvmlShutdown"] == 1


def test_serve_on_a_busy_port_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML.with_gpus(1))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["gpu", "--serve", str(port)]) == 2
    assert capsys.readouterr().err.startswith("aiwatch gpu: cannot serve the GPU metrics: [Errno")


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_serve_on_a_port_out_of_range_is_a_clear_error(port: str, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML.with_gpus(1))
    assert main(["gpu", "--serve", port]) == 2
    assert capsys.readouterr().err == f"aiwatch gpu: the GPU metrics port must be 0-65535, got {port}\n"


@pytest.mark.parametrize("port", [70000, -1, True, 8000.0, "8000"])
def test_serve_gpu_metrics_rejects_what_is_no_port(port: object) -> None:
    from aiwatch.signals.gpu import serve_gpu_metrics

    nvml = FakeNVML.with_gpus(1)
    with pytest.raises(ValueError, match="the GPU metrics port must be 0-65535, got "):
        serve_gpu_metrics(port, nvml=nvml)  # type: ignore[arg-type]
    assert nvml.calls["nvmlInit"] == 0
