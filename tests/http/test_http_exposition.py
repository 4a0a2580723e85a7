"""/metrics as an ASGI app, a WSGI app and a standalone server, with Prometheus text / OpenMetrics negotiation."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from werkzeug.test import Client

from aiwatch.exposition import (
    drop_dead_live_gauges,
    make_asgi_app,
    make_wsgi_app,
    multiprocess_dir,
    multiprocess_enabled,
    remove_dead_process_files,
    start_http_server,
)
from aiwatch.gunicorn import on_starting
from aiwatch.metrics import Metrics, default_metrics
from tests.http.asgi_driver import call
from tests.servers import free_port

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def populate(metrics: Metrics) -> None:
    h = metrics.child(metrics.request_duration, ("svc", "/p", "GET", "200", "realtime"))
    h.observe(0.01, {"trace_id": "ab" * 16})


def check(content_type: str, body: bytes, openmetrics: bool) -> None:
    text = body.decode()
    assert ('aiwatch_request_duration_seconds_count{method="GET",route="/p",service="svc",status="200",'
            'traffic_class="realtime"} 1') in text
    if openmetrics:
        assert content_type.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        assert f'# {{trace_id="{"ab" * 16}"}} 0.01' in text
    else:
        assert content_type.startswith("text/plain; version=0.0.4")
        assert "# EOF" not in text and "trace_id" not in text


async def test_asgi_app_negotiates(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    app = make_asgi_app(registry)
    plain = await call(app, "/metrics")
    check(plain.headers["content-type"], plain.body, openmetrics=False)
    om = await call(app, "/metrics", headers=[("accept", OPENMETRICS)])
    check(om.headers["content-type"], om.body, openmetrics=True)


def test_wsgi_app_negotiates(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    client = Client(make_wsgi_app(registry))
    plain = client.get("/metrics", buffered=True)
    check(plain.headers["Content-Type"], plain.data, openmetrics=False)
    om = client.get("/metrics", headers={"Accept": OPENMETRICS}, buffered=True)
    check(om.headers["Content-Type"], om.data, openmetrics=True)


def test_standalone_server_negotiates(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    port = free_port()
    server, thread = start_http_server(port, registry=registry)
    try:
        for accept, openmetrics in ((None, False), (OPENMETRICS, True)):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
            if accept:
                request.add_header("Accept", accept)
            with urllib.request.urlopen(request, timeout=5) as resp:
                check(resp.headers["Content-Type"], resp.read(), openmetrics)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_the_files_of_processes_no_longer_running_are_removed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "multiproc" / "not-yet-made"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    assert remove_dead_process_files() == 0 and directory.is_dir()
    gone, alive = dead_pid(), os.getpid()
    stale = [f"counter_{gone}.db", f"histogram_{gone}.db", f"gauge_livesum_{gone}.db", f"gauge_max_{gone}.db",
             f"counter_{2**70}.db", "gauge_all_0.db"]  # no pid can be these (os.kill: OverflowError; 0 is our group)
    kept = [f"counter_{alive}.db", f"gauge_livesum_{alive}.db", "counter_worker-a.db", f"notes-{gone}.txt",
            f"counter_{gone}.db.bak"]
    for name in stale + kept:
        (directory / name).write_bytes(b"x")
    (directory / f"summary_{gone}.db").mkdir()  # not prometheus_client's: left alone, and no error
    kept.append(f"summary_{gone}.db")
    assert remove_dead_process_files() == len(stale)
    assert sorted(p.name for p in directory.iterdir()) == sorted(kept)


def test_the_live_gauges_of_processes_gone_are_dropped_when_this_process_writes_the_directory(
        tmp_path: Path) -> None:
    """What mark_process_dead(pid) removes (gauge_live*_<pid>.db), for every pid no longer running, and nothing
    else: their counters, histograms and other gauges keep their counts, a running process keeps its live gauges."""
    gone, alive = dead_pid(), os.getpid()
    dropped = [f"gauge_livemin_{gone}.db", f"gauge_livemax_{gone}.db", f"gauge_livesum_{gone}.db"]
    kept = [f"counter_{gone}.db", f"gauge_max_{gone}.db", f"gauge_all_{gone}.db", f"gauge_livemin_{alive}.db",
            f"counter_{alive}.db", f"gauge_livemin_{gone}.db.bak"]
    for name in dropped + kept:
        (tmp_path / name).write_bytes(b"x")
    assert drop_dead_live_gauges(str(tmp_path)) == len(dropped)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_process_that_writes_no_sample_file_in_the_directory_drops_no_live_gauge(tmp_path: Path) -> None:
    """An exporter that is not one of the directory's writers (a sidecar sharing the volume, in its own pid
    namespace) cannot tell a running worker from a gone one by its pid: it removes nothing."""
    gone = dead_pid()
    names = [f"gauge_livemin_{gone}.db", f"counter_{gone}.db", f"gauge_livemax_{os.getpid() + 1}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert drop_dead_live_gauges(str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_live_gauge_file_that_cannot_be_dropped_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dead_pid()
    for name in (f"gauge_livemin_{gone}.db", f"gauge_livemax_{gone}.db", f"counter_{os.getpid()}.db"):
        (tmp_path / name).write_bytes(b"x")
    remove = os.remove

    def refusing(path: str) -> None:
        if "livemin" in path:
            raise PermissionError(1, "Operation not permitted", path)
        remove(path)

    monkeypatch.setattr(os, "remove", refusing)
    before = default_errors("multiprocess")
    assert drop_dead_live_gauges(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{os.getpid()}.db", f"gauge_livemin_{gone}.db"]
    assert default_errors("multiprocess") == before + 1


def test_a_sample_file_that_cannot_be_removed_leaves_the_others_removed_and_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the first file unlink refused (another user's, in a shared directory) ended the cleanup: the rest stayed
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = dead_pid()
    names = [f"counter_{gone}.db", f"histogram_{gone}.db", f"gauge_livesum_{gone}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    refused = sorted(names)[0]
    unlink = Path.unlink

    def refusing(path: Path, missing_ok: bool = False) -> None:
        if path.name == refused:
            raise PermissionError(1, "Operation not permitted", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refusing)
    before = default_errors("multiprocess")
    assert remove_dead_process_files() == 2
    assert [p.name for p in tmp_path.iterdir()] == [refused]
    assert default_errors("multiprocess") == before + 1


def test_the_old_lowercase_multiprocess_variable_is_read_as_prometheus_client_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # prometheus_client still runs in multiprocess mode under `prometheus_multiproc_dir` (the name older guides
    # give): aiwatch ignored it, so /metrics served the one worker that answered and on_starting removed nothing
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
    (tmp_path / f"counter_{dead_pid()}.db").write_bytes(b"x")
    assert multiprocess_enabled()
    assert remove_dead_process_files() == 1
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "upper"))  # the upper-case name wins
    assert multiprocess_dir() == str(tmp_path / "upper")


@pytest.mark.parametrize("name", ["PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"])
def test_a_multiprocess_variable_set_but_empty_is_logged_and_counted_at_start(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # set but empty, prometheus_client is in multiprocess mode writing its files into each worker's working
    # directory, and there is nothing to merge: each scrape sees one worker. aiwatch took it as "off", silently
    for variable in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(name, "")
    logged: list[tuple[object, ...]] = []
    server = SimpleNamespace(log=SimpleNamespace(info=lambda *args: logged.append(args),
                                                 error=lambda *args: logged.append(args)))
    before = default_errors("multiprocess")
    on_starting(server)
    assert default_errors("multiprocess") == before + 1
    assert len(logged) == 1 and name in str(logged[0][1]) and "set but empty" in str(logged[0][1])
    assert not multiprocess_enabled()


def default_errors(component: str) -> float:
    return default_metrics().registry.get_sample_value("aiwatch_instrumentation_errors_total",
                                                       {"component": component}) or 0.0


def test_the_starting_hook_logs_what_it_removed_and_does_nothing_without_multiprocess_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[object, ...]] = []
    server = SimpleNamespace(log=SimpleNamespace(info=lambda *args: logged.append(args)))
    (tmp_path / f"counter_{dead_pid()}.db").write_bytes(b"x")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    on_starting(server)
    assert len(list(tmp_path.iterdir())) == 1 and logged == []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    on_starting(server)
    assert list(tmp_path.iterdir()) == [] and logged[0][1] == 1
