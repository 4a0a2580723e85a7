"""/metrics as an ASGI app, a WSGI app and a standalone server, with Prometheus text / OpenMetrics negotiation."""

from __future__ import annotations

import itertools
import logging
import math
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from werkzeug.test import Client

from aiwatch.exposition import (
    drop_dead_live_gauges,
    fold_dead_at_scrape,
    fold_dead_process_files,
    make_asgi_app,
    make_wsgi_app,
    multiprocess_dir,
    multiprocess_enabled,
    remove_dead_process_files,
    serving_registry,
    start_http_server,
)
from aiwatch.gunicorn import on_starting
from aiwatch.metrics import Metrics, default_metrics
from tests.http.asgi_driver import call
from tests.servers import free_port

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: the lock files folds, merges and the starting cleanup take (the gate, the lock)
FOLD_LOCKS = [".aiwatch-fold.gate", ".aiwatch-fold.lock"]


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


@contextmanager
def mapped_for_writing(path: Path) -> Iterator[None]:
    """``path`` mapped shared and writable by this process, as prometheus_client's MmapedDict maps its values."""
    with open(path, "a+b") as file, mmap.mmap(file.fileno(), path.stat().st_size, access=mmap.ACCESS_WRITE):
        yield


def sample_files(directory: Path, names: Iterable[str]) -> None:
    """A one-byte file for each of ``names`` in ``directory``."""
    for name in names:
        (directory / name).write_bytes(b"x")


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
    sample_files(directory, stale + kept)
    (directory / f"summary_{gone}.db").mkdir()  # not prometheus_client's: left alone, and no error
    kept.append(f"summary_{gone}.db")
    assert remove_dead_process_files() == len(stale)
    assert sorted(p.name for p in directory.iterdir()) == sorted([*kept, *FOLD_LOCKS])


def test_the_live_gauges_of_processes_gone_are_dropped_when_this_process_holds_its_own_file_open(
        tmp_path: Path) -> None:
    """What mark_process_dead(pid) removes (gauge_live*_<pid>.db), for every pid no longer running, and nothing
    else: their counters, histograms and other gauges keep their counts, a running process keeps its live gauges."""
    gone, alive = dead_pid(), os.getpid()
    dropped = [f"gauge_livemin_{gone}.db", f"gauge_livemax_{gone}.db", f"gauge_livesum_{gone}.db"]
    kept = [f"counter_{gone}.db", f"gauge_max_{gone}.db", f"gauge_all_{gone}.db", f"gauge_livemin_{alive}.db",
            f"counter_{alive}.db", f"gauge_livemin_{gone}.db.bak"]
    sample_files(tmp_path, dropped + kept)
    with mapped_for_writing(tmp_path / f"counter_{alive}.db"):
        assert drop_dead_live_gauges(str(tmp_path)) == len(dropped)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_file_named_with_this_pid_but_not_held_open_by_this_process_drops_no_live_gauge(tmp_path: Path) -> None:
    """Pid numbers repeat across pid namespaces: a sidecar exporter that is pid 2 in its container finds the
    counter_2.db of the app container's worker 2. Its name is no proof that this process writes the directory, and
    its pid not running here no proof that the worker is gone: nothing is removed."""
    gone = dead_pid()
    names = [f"gauge_livemin_{gone}.db", f"counter_{os.getpid()}.db", f"gauge_livemax_{os.getpid()}.db"]
    sample_files(tmp_path, names)
    assert drop_dead_live_gauges(str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def assert_nothing_dropped_while_mapped(tmp_path: Path, names: list[str], mapped: str) -> None:
    """The sample files ``names``, ``mapped`` among them mapped shared and writable as a writer maps its own: the
    drop removes none of them."""
    sample_files(tmp_path, names)
    with mapped_for_writing(tmp_path / mapped):
        assert drop_dead_live_gauges(str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_file_held_open_but_named_with_another_pid_drops_no_live_gauge(tmp_path: Path) -> None:
    """A file of the directory this process holds open that is not its own (inherited from the parent across a fork,
    or opened by a reader): it does not make this process one of the directory's writers."""
    gone = dead_pid()
    assert_nothing_dropped_while_mapped(tmp_path, [f"gauge_livemin_{gone}.db", f"counter_{gone}.db"],
                                        f"counter_{gone}.db")


def test_its_own_file_open_but_not_mapped_for_writing_drops_no_live_gauge(tmp_path: Path) -> None:
    """A scrape's merge opens every process's sample file to read it: in a sidecar exporter whose pid number is a
    worker's, a second scrape in another thread had that worker's file open, named with its own pid, and a
    descriptor's number is reused at once (a socket's by the time its flags were read). Only a shared writable
    mapping of its own file, as prometheus_client keeps its values, makes this process one of the writers."""
    gone = dead_pid()
    own = tmp_path / f"counter_{os.getpid()}.db"
    names = [f"gauge_livemin_{gone}.db", own.name]
    sample_files(tmp_path, names)
    for mode in ("rb", "r+b", "a+b"):
        with open(own, mode):
            assert drop_dead_live_gauges(str(tmp_path)) == 0
    with open(own, "rb") as file, mmap.mmap(file.fileno(), 1, access=mmap.ACCESS_READ):
        assert drop_dead_live_gauges(str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    with mapped_for_writing(own):
        assert drop_dead_live_gauges(str(tmp_path)) == 1


def test_where_the_open_files_cannot_be_listed_no_live_gauge_is_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc/self/maps (not Linux) this process cannot tell that it maps its own file: nothing goes."""
    import aiwatch.exposition as exposition

    monkeypatch.setattr(exposition, "_MAPPED_FILES", str(tmp_path / "no-such-file"))
    gone = dead_pid()
    assert_nothing_dropped_while_mapped(tmp_path, [f"gauge_livemin_{gone}.db", f"counter_{os.getpid()}.db"],
                                        f"counter_{os.getpid()}.db")


def test_multiprocess_drop_dead_off_drops_no_live_gauge_at_a_scrape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The opt-out for a directory shared across pid namespaces with an exporter that writes it too."""
    gone, left = scrape_with_drop_dead(tmp_path, monkeypatch, "off")
    assert left == [f"counter_{os.getpid()}.db", f"gauge_livemin_{gone}.db"]


def test_with_multiprocess_drop_dead_on_a_scrape_drops_a_gone_pids_live_gauges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, left = scrape_with_drop_dead(tmp_path, monkeypatch, "on")
    assert left == [f"counter_{os.getpid()}.db"]


def scrape_with_drop_dead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str) -> tuple[int, list[str]]:
    """The pid gone and the files left after one scrape of the merged registry with
    AIWATCH_MULTIPROCESS_DROP_DEAD=setting, by a process holding its own sample file open (prometheus_client's
    MmapedDict, as its values do) beside the live gauge of a pid gone."""
    from prometheus_client.mmap_dict import MmapedDict

    from aiwatch.exposition import serving_registry

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("AIWATCH_MULTIPROCESS_DROP_DEAD", setting)
    gone = dead_pid()
    MmapedDict(str(tmp_path / f"gauge_livemin_{gone}.db")).close()
    own = MmapedDict(str(tmp_path / f"counter_{os.getpid()}.db"))
    try:
        list(serving_registry().collect())
    finally:
        own.close()
    return gone, sorted(p.name for p in tmp_path.iterdir() if p.name not in FOLD_LOCKS)  # the merge's lock


def test_a_bad_multiprocess_drop_dead_is_an_error_when_the_app_is_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("AIWATCH_MULTIPROCESS_DROP_DEAD", "sometimes")
    from aiwatch.exposition import serving_registry

    with pytest.raises(ValueError, match=r"AIWATCH_MULTIPROCESS_DROP_DEAD must be on or off, got 'sometimes'"):
        serving_registry()


def test_a_bad_multiprocess_drop_dead_is_an_error_when_the_app_is_instrumented(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A middleware makes its /metrics app at the first scrape: a bad value failed every scrape (500, the target
    down) while the app served. aiwatch.instrument() and the WSGI middleware refuse it at once; the ASGI middleware
    itself does not (Starlette makes it at the lifespan call, and under uvicorn's lifespan "auto" an error there is
    raised again at every request), and nothing reads it without a /metrics path."""
    from starlette.applications import Starlette

    import aiwatch
    from aiwatch.middleware.asgi import AiwatchMiddleware
    from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("AIWATCH_MULTIPROCESS_DROP_DEAD", "sometimes")
    refused = r"AIWATCH_MULTIPROCESS_DROP_DEAD must be on or off, got 'sometimes'"
    with pytest.raises(ValueError, match=refused):
        aiwatch.instrument(Starlette(), service="svc", registry=CollectorRegistry())
    with pytest.raises(ValueError, match=refused):
        AiwatchWSGIMiddleware(lambda *_: [], service="svc", registry=CollectorRegistry())
    AiwatchMiddleware(lambda *_: None, service="svc", registry=CollectorRegistry())
    aiwatch.instrument(Starlette(), service="svc", registry=CollectorRegistry(), metrics_path=None)
    AiwatchWSGIMiddleware(lambda *_: [], service="svc", registry=CollectorRegistry(), metrics_path=None)


def test_a_live_gauge_file_that_cannot_be_dropped_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = dead_pid()
    sample_files(tmp_path, (f"gauge_livemin_{gone}.db", f"gauge_livemax_{gone}.db", f"counter_{os.getpid()}.db"))
    remove = os.remove

    def refusing(path: str) -> None:
        if "livemin" in path:
            raise PermissionError(1, "Operation not permitted", path)
        remove(path)

    monkeypatch.setattr(os, "remove", refusing)
    before = default_errors("multiprocess")
    with mapped_for_writing(tmp_path / f"counter_{os.getpid()}.db"):
        assert drop_dead_live_gauges(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{os.getpid()}.db", f"gauge_livemin_{gone}.db"]
    assert default_errors("multiprocess") == before + 1


def test_a_sample_file_that_cannot_be_removed_leaves_the_others_removed_and_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the first file unlink refused (another user's, in a shared directory) ended the cleanup: the rest stayed
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = dead_pid()
    names = [f"counter_{gone}.db", f"histogram_{gone}.db", f"gauge_livesum_{gone}.db"]
    sample_files(tmp_path, names)
    refused = sorted(names)[0]
    unlink = Path.unlink

    def refusing(path: Path, missing_ok: bool = False) -> None:
        if path.name == refused:
            raise PermissionError(1, "Operation not permitted", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refusing)
    before = default_errors("multiprocess")
    assert remove_dead_process_files() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([refused, *FOLD_LOCKS])
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


def gunicorn_server(logged: list[tuple[object, ...]]) -> Any:
    """What gunicorn's hooks use of its arbiter: a logger whose ``info`` and ``error`` calls land in ``logged``."""
    return SimpleNamespace(log=SimpleNamespace(info=lambda *args: logged.append(args),
                                               error=lambda *args: logged.append(args)))


@pytest.mark.parametrize("name", ["PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"])
def test_a_multiprocess_variable_set_but_empty_is_logged_and_counted_at_start(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # set but empty, prometheus_client is in multiprocess mode writing its files into each worker's working
    # directory, and there is nothing to merge: each scrape sees one worker. aiwatch took it as "off", silently
    for variable in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(name, "")
    logged: list[tuple[object, ...]] = []
    server = gunicorn_server(logged)
    before = default_errors("multiprocess")
    on_starting(server)
    assert default_errors("multiprocess") == before + 1
    assert len(logged) == 1 and name in str(logged[0][1]) and "set but empty" in str(logged[0][1])
    assert not multiprocess_enabled()


def test_a_multiprocess_directory_that_is_a_file_is_logged_and_counted_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the master logged a bare FileExistsError(17, 'File exists') (its removal of dead files makes the directory)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "a-file"))
    logged: list[tuple[object, ...]] = []
    server = gunicorn_server(logged)
    before = default_errors("multiprocess")
    on_starting(server)
    assert default_errors("multiprocess") == before + 1
    assert len(logged) == 1 and str(logged[0][1]).startswith(
        f"PROMETHEUS_MULTIPROC_DIR is {str(tmp_path / 'a-file')!r}, which is not a directory"), logged

def default_errors(component: str) -> float:
    return default_metrics().registry.get_sample_value("aiwatch_instrumentation_errors_total",
                                                       {"component": component}) or 0.0


def test_the_starting_hook_logs_what_it_removed_and_does_nothing_without_multiprocess_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[object, ...]] = []
    server = gunicorn_server(logged)
    (tmp_path / f"counter_{dead_pid()}.db").write_bytes(b"x")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    on_starting(server)
    assert len(list(tmp_path.iterdir())) == 1 and logged == []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    on_starting(server)
    assert sorted(p.name for p in tmp_path.iterdir()) == FOLD_LOCKS and logged[0][1] == 1


def test_child_exit_racing_a_scrape_that_removed_a_live_gauge_first_counts_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """child_exit lists the exited worker's live gauges, then removes them; a scrape's drop of the same gone pid may
    remove one in between. That file is gone as wanted: no `multiprocess` error (AiwatchInstrumentationErrors fired),
    and the worker's other live gauges still go (its counter is folded into the master's archive)."""
    from prometheus_client.mmap_dict import MmapedDict

    from aiwatch.gunicorn import child_exit

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = dead_pid()
    live = [f"gauge_{mode}_{gone}.db" for mode in ("livesum", "livemin", "livemax", "liveall", "livemostrecent")]
    sample_files(tmp_path, live)
    MmapedDict(str(tmp_path / f"counter_{gone}.db")).close()
    remove = os.remove

    def scrape_first(path: str) -> None:
        if path.endswith(f"gauge_livesum_{gone}.db"):
            remove(path)  # the scrape's
        remove(path)

    monkeypatch.setattr(os, "remove", scrape_first)
    before = default_errors("multiprocess")
    child_exit(SimpleNamespace(log=None), SimpleNamespace(pid=gone))
    assert default_errors("multiprocess") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [*FOLD_LOCKS, f"counter_archive-{os.getpid()}.db"]


def test_once_found_mapping_its_own_file_a_process_does_not_read_its_mappings_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_client keeps its values mapped for the process's life: /proc/self/maps is read until this process
    is first found mapping its own file, not at every scrape."""
    import builtins

    import aiwatch.exposition as exposition

    real_open, reads = builtins.open, []

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        if file == exposition._MAPPED_FILES:
            reads.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    own = tmp_path / f"counter_{os.getpid()}.db"
    own.write_bytes(b"x")
    assert not exposition._holds_own_sample_file(str(tmp_path))
    assert not exposition._holds_own_sample_file(str(tmp_path))
    with mapped_for_writing(own):
        assert exposition._holds_own_sample_file(str(tmp_path))
        assert exposition._holds_own_sample_file(str(tmp_path))
    assert len(reads) == 3


def test_a_scrape_with_headers_that_are_not_utf8_is_answered(metrics: Metrics) -> None:
    # prometheus_client's ASGI app decodes Accept, Accept-Encoding and the query as UTF-8: such a request, which any
    # client can send to the app's port, was answered 500 with a traceback logged each time
    import socket

    import aiwatch
    from tests.servers import uvicorn_in_thread

    populate(metrics)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the middleware serves /metrics")

    # (uvicorn answers a query that is not UTF-8 400 itself; the next test gives the app one)
    requests = [b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: \xff\xfe\r\nAccept-Encoding: gz\xe9\r\n"
                b"Connection: close\r\n\r\n"]
    answers = []
    with uvicorn_in_thread(aiwatch.instrument(app, metrics=metrics, service="svc")) as (port, _):
        for request in requests:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                answers.append(b"".join(iter(lambda s=sock: s.recv(65536), b"")))
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        content_type = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-type:"))
        check(content_type, body, openmetrics=False)


async def test_a_query_that_is_not_utf8_gets_every_metric(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"name[]=\xe9",
             "headers": [(b"accept", b"text/plain")]}
    await make_asgi_app(registry)(scope, receive, send)
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 200
    check(headers[b"Content-Type"].decode(), sent[1]["body"], openmetrics=False)


# prometheus_client gzips for any Accept-Encoding naming gzip; RFC 9110 reads q=0 as "not acceptable"
@pytest.mark.parametrize(("accept_encoding", "gzipped"), [
    ("gzip", True), ("gzip;q=0.5", True), ("*;q=0, gzip", True), ("gzip;q=0", False), ("GZIP ; Q=0.000", False),
    ("identity, gzip;q=0", False), ("x-gzip;q=0, gzip", False), ("br, *;q=0", False)])
def test_metrics_are_gzipped_only_for_a_scraper_that_accepts_gzip(
        metrics: Metrics, registry: CollectorRegistry, accept_encoding: str, gzipped: bool) -> None:
    import gzip

    import aiwatch
    from tests.servers import uvicorn_in_thread

    populate(metrics)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the middleware serves /metrics")

    def scrape(port: int) -> tuple[str | None, str, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Accept-Encoding": accept_encoding})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.headers["Content-Encoding"], resp.headers["Content-Type"], resp.read()

    answers = []
    with uvicorn_in_thread(aiwatch.instrument(app, metrics=metrics, service="svc")) as (port, _):
        answers.append(scrape(port))
    port = free_port()
    server, thread = start_http_server(port, registry=registry)
    try:
        answers.append(scrape(port))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    wsgi = Client(make_wsgi_app(registry)).get("/metrics", headers={"Accept-Encoding": accept_encoding},
                                               buffered=True)
    answers.append((wsgi.headers.get("Content-Encoding"), wsgi.headers["Content-Type"], wsgi.data))
    for encoding, content_type, body in answers:
        assert encoding == ("gzip" if gzipped else None)
        check(content_type, gzip.decompress(body) if gzipped else body, openmetrics=False)


def counter_file(path: Path, count: float) -> None:
    """A counter's sample file as prometheus_client writes it, holding ``count`` for one series."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    values = MmapedDict(str(path))
    values.write_value(mmap_key("t_total", "t_total", [], [], "a counter"), count, 0.0)
    values.close()


def merged_value(name: str) -> float | None:
    return serving_registry().get_sample_value(name)


def test_a_fold_waits_for_a_merge_reading_the_files_and_folds_what_it_could_not_at_the_next_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge reads the files under the fold lock, shared: a fold (gunicorn's master, at a worker's exit) waits for
    it, or a scrape could read the dead worker's counts both in its file and in the archive, or in neither. A fold
    that cannot have the lock in time folds nothing and says so (child_exit counts it), and that worker is folded at
    the next call."""
    from aiwatch import exposition

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(exposition, "FOLD_LOCK_SECONDS", 0.2)
    first, second = dead_pid(), dead_pid()
    counter_file(tmp_path / f"counter_{first}.db", 3)
    counter_file(tmp_path / f"counter_{second}.db", 4)
    with exposition._fold_lock(str(tmp_path), exclusive=False):  # as a merge holds it
        with pytest.raises(TimeoutError, match="1 exited worker"):
            fold_dead_process_files([first], str(tmp_path))
        assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted([f"counter_{first}.db", f"counter_{second}.db"])
    assert merged_value("t_total") == 7
    assert fold_dead_process_files([second], str(tmp_path)) == 2  # the first one's too
    assert [p.name for p in tmp_path.glob("*.db")] == [f"counter_archive-{os.getpid()}.db"]
    assert merged_value("t_total") == 7


def test_the_starting_hook_removes_the_archives_of_masters_gone_and_a_previous_runs_of_its_own_pid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A master's archive (what child_exit folded its exited workers into) holds that run's counts: a restart must
    not add them to the new run's, even when the new master has the old one's pid (pid 1 in a container). A running
    master's (the old one during a USR2 upgrade) stays."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone, own, running = dead_pid(), os.getpid(), os.getppid()
    stale = [f"counter_archive-{gone}.db", f"histogram_archive-{gone}.db.intent", f"counter_archive-{gone}.db.new",
             f"gauge_mostrecent_archive-{own}.db"]
    kept = [f"counter_archive-{running}.db", f"gauge_max_archive-{running}.db.intent"]
    sample_files(tmp_path, stale + kept)
    assert remove_dead_process_files(parent=False) == len(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, *FOLD_LOCKS])


def test_the_cleanup_before_another_server_starts_removes_the_archive_of_its_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape folds dead workers into the archive of the uvicorn (or Hypercorn) supervisor's pid. The cleanup run
    in the entrypoint before the server starts is that supervisor's child when the shell then execs the server: pid
    1 in a container, running at the cleanup and again in the next run, whose counts would start from the previous
    run's. A running process's other archive stays."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    parent = os.getppid()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [f"counter_archive-{parent}.db", f"histogram_archive-{parent}.db"]
        kept = [f"counter_archive-{other.pid}.db"]
        sample_files(tmp_path, stale + kept)
        assert remove_dead_process_files() == len(stale)
    finally:
        other.kill()
        other.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, *FOLD_LOCKS])


def test_a_scrape_folds_the_files_of_processes_gone_into_its_parents_archive_once_it_can_lock_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn --workers and Hypercorn have no exit hook: every worker recycled or respawned left its files, and
    every scrape merged them all until the next start. /metrics folds them into the supervisor's (its parent's)
    archive, which outlives the worker folding, without waiting for the lock (a merge holds it shared: the next
    scrape folds), and only in a process that writes the directory (pid namespaces, as the drop of live gauges).
    The merged count does not change."""
    from aiwatch import exposition

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    own, gone = tmp_path / f"counter_{os.getpid()}.db", f"counter_{dead_pid()}.db"
    counter_file(own, 2)
    counter_file(tmp_path / gone, 3)
    names = sorted([own.name, gone])
    assert fold_dead_at_scrape(str(tmp_path)) == 0  # this process writes nothing there
    with mapped_for_writing(own):
        with exposition._fold_lock(str(tmp_path), exclusive=False):
            assert fold_dead_at_scrape(str(tmp_path)) == 0
        assert sorted(p.name for p in tmp_path.glob("*.db")) == names
        assert merged_value("t_total") == 5  # this scrape folded
        assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted([own.name,
                                                                        f"counter_archive-{os.getppid()}.db"])
        assert merged_value("t_total") == 5


def test_a_scrape_with_no_process_gone_takes_no_fold_lock(tmp_path: Path) -> None:
    own = tmp_path / f"counter_{os.getpid()}.db"
    counter_file(own, 2)
    with mapped_for_writing(own):
        assert fold_dead_at_scrape(str(tmp_path)) == 0
    assert [p.name for p in tmp_path.iterdir()] == [own.name]  # no lock file made: no lock taken


def test_a_killed_folds_source_named_with_a_running_pid_is_not_removed_by_the_next_fold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold killed after putting its archive in place leaves an intent naming the files the archive holds; the
    next fold removes them. One named with the pid of a process running by then belongs to that process (the pid
    reused): removed, every count it made from then on was lost for its life."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = dead_pid()
    counter_file(tmp_path / f"counter_{gone}.db", 3)
    assert fold_dead_process_files([gone], str(tmp_path)) == 1
    archive = tmp_path / f"counter_archive-{os.getpid()}.db"
    reused, left = f"counter_{os.getpid()}.db", f"counter_{dead_pid()}.db"
    counter_file(tmp_path / reused, 5)
    counter_file(tmp_path / left, 3)
    (tmp_path / f"{archive.name}.intent").write_text(f'{{"inode": {archive.stat().st_ino}, '
                                                     f'"sources": ["{reused}", "{left}"]}}')
    assert fold_dead_process_files([], str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted([archive.name, reused])


def histogram_file(path: Path, total: float, count: int) -> None:
    """A histogram's sample file as prometheus_client writes it, holding ``count`` observations summing to
    ``total`` for one series (all in the +Inf bucket)."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    values = MmapedDict(str(path))
    values.write_value(mmap_key("t_seconds", "t_seconds_sum", [], [], "a histogram"), total, 0.0)
    values.write_value(mmap_key("t_seconds", "t_seconds_bucket", ["le"], ["+Inf"], "a histogram"), count, 0.0)
    values.close()


@pytest.fixture(scope="module")
def dead_pids() -> list[int]:
    return [dead_pid() for _ in range(6)]


# a histogram's _sum in a worker's file, from a nanosecond up: every total under 2^54 times the smallest, where an
# archive's value and residual hold its files' sum exactly
DURATION_SUMS = st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1e5))


@settings(max_examples=150, deadline=None)
@given(totals=st.lists(DURATION_SUMS, min_size=6, max_size=6), data=st.data())
def test_a_histograms_merged_sum_is_the_same_float_whatever_was_folded_in_which_order_and_listing(
        dead_pids: list[int], totals: list[float], data: st.DataObject) -> None:
    """The merge added the files' _sum values in the order it listed them, and a fold added some of them first: the
    same observations summed to floats a last bit apart, lower as often as higher (116 of 600 folds of six workers
    lowered it, 22.153990163149324 to 22.15399016314932), and Prometheus read each decrease as a counter reset, a
    spike in rate(_sum). The merged _sum is their exact sum correctly rounded, whatever the folds (into one master's
    archive or two), their order, and the order the files are listed in."""
    from aiwatch import exposition

    expected = math.fsum(totals)
    order = data.draw(st.permutations(range(len(totals))), label="fold order")
    cuts = sorted(data.draw(st.sets(st.integers(1, len(totals) - 1), max_size=3), label="cuts"))
    masters = data.draw(st.lists(st.sampled_from([os.getpid(), os.getppid()]), min_size=len(cuts) + 1,
                                 max_size=len(cuts) + 1), label="masters")
    with tempfile.TemporaryDirectory() as directory, \
            mock.patch.dict(os.environ, {"PROMETHEUS_MULTIPROC_DIR": directory}):
        for pid, total in zip(dead_pids, totals, strict=True):
            histogram_file(Path(directory, f"histogram_{pid}.db"), total, 1)
        merged = [merged_value("t_seconds_sum")]
        for (start, end), master in zip(itertools.pairwise([0, *cuts, len(totals)]), masters, strict=True):
            with exposition._fold_lock(directory, exclusive=True):
                exposition._fold_locked(directory, {dead_pids[i] for i in order[start:end]}, master)
            merged.append(merged_value("t_seconds_sum"))
            files = data.draw(st.permutations(sorted(str(p) for p in Path(directory).glob("*.db"))), label="listing")
            (family,) = exposition._MergedCollector.merge(files)
            merged.append(next(s.value for s in family.samples if s.name == "t_seconds_sum"))
        assert merged == [expected] * len(merged)
        assert merged_value("t_seconds_count") == len(totals)


def test_the_starting_cleanup_waits_for_a_merge_reading_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a USR2 upgrade the new master's on_starting removes the files of processes gone while the old master's
    workers still merge the directory: a file removed between a merge's listing and its read failed that merge,
    answered without the file and counted as an error (AiwatchInstrumentationErrors). The cleanup takes the fold
    lock, exclusively, as a fold does: it waits for the merge, then removes the file."""
    from prometheus_client.mmap_dict import MmapedDict

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    counter_file(tmp_path / f"counter_{os.getpid()}.db", 2)
    gone = tmp_path / f"counter_{dead_pid()}.db"
    counter_file(gone, 3)
    read, cleanups = MmapedDict.read_all_values_from_file, []

    def starting_meanwhile(path: str) -> Any:
        if not cleanups:  # the new master starts once the merge has listed the files
            cleanups.append(threading.Thread(target=on_starting, args=(SimpleNamespace(log=logging.getLogger()),)))
            cleanups[0].start()
            cleanups[0].join(0.5)
        return read(path)

    monkeypatch.setattr(MmapedDict, "read_all_values_from_file", staticmethod(starting_meanwhile))
    before = default_errors("multiprocess")
    assert merged_value("t_total") == 5
    cleanups[0].join()
    assert default_errors("multiprocess") == before
    assert not gone.exists()


def test_a_fold_is_not_starved_by_scrapes_that_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each merge holds the fold lock shared, and a shared lock is granted while another is held: with scrapes that
    overlap without a gap (workers each answering their own scraper), gunicorn's master waited FOLD_LOCK_SECONDS at
    every exit, blocked (4 processes merging back to back: 2 of 3 folds in 15 s timed out, 5 s each), and folded
    nothing. A fold waiting shuts the gate to new merges: those in progress end, the fold runs, then the next."""
    from aiwatch import exposition

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = dead_pid()
    counter_file(tmp_path / f"counter_{gone}.db", 3)
    folded: list[int | Exception] = []
    merges: list[bool | None] = []

    def scrapes(offset: float) -> None:  # each merge 20 ms long, the two scrapers 10 ms apart: always one merging
        time.sleep(offset)
        while not folded:
            with exposition._fold_lock(str(tmp_path), exclusive=False) as held:
                merges.append(held)
                time.sleep(0.02)

    def fold() -> None:
        try:
            folded.append(fold_dead_process_files([gone], str(tmp_path)))
        except Exception as exc:
            folded.append(exc)

    scrapers = [threading.Thread(target=scrapes, args=(offset,)) for offset in (0.0, 0.01)]
    for scraper in scrapers:
        scraper.start()
    time.sleep(0.05)
    fold()
    for scraper in scrapers:
        scraper.join()
    assert folded == [1]
    assert merges and all(merges)  # every merge had the lock: it waited for the fold at the gate
    assert merged_value("t_total") == 3
