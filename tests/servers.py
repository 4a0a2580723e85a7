"""Real servers for tests, all on loopback: Prometheus, Alertmanager, Redis, and any Python app in a subprocess.

Each starts on a free port in a temporary directory, waits until it answers, and stops (terminate, then kill) on
exit. Tests that need a binary that is not installed are skipped with the install command in the reason; CI
installs every one through scripts/setup-system.sh.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# one picker of free ports for the demo and every test server: below the ephemeral range (see its docstring)
from aiwatch.demo.processes import free_port

REPO = Path(__file__).resolve().parent.parent




def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: scripts/setup-system.sh should have installed it")
        pytest.skip(f"{name} is not installed (run scripts/setup-system.sh)")
    return path


def require_module(name: str) -> Any:
    """``pytest.importorskip(name)``, except under CI (``$CI`` set), where a module of the dev extra that cannot be
    imported is a failure: a broken install must not turn into silent skips."""
    if os.environ.get("CI"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            pytest.fail(f"{name} cannot be imported ({exc}): scripts/setup-venv.sh dev should have installed it")
    return pytest.importorskip(name)


def wait_until(check: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ProcessExited as exc:
            raise TimeoutError(str(exc)) from exc
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def get_with_repeated_headers(port: int, headers: Sequence[tuple[str, str]], path: str = "/items") -> int:
    """GET ``path`` on 127.0.0.1:``port`` with ``headers`` sent as given, a name repeated as often as it comes (which
    ``http.client``'s dict of headers cannot do); the response's status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a Python subprocess that must import this checkout's aiwatch."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class ProcessExited(RuntimeError):
    pass


class Process:
    """A subprocess whose output goes to a log file that failures can show."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = list(args)
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                     cwd=cwd, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        """True while running; raises (ending any wait at once) when the process has exited."""
        if self.proc.poll() is not None:
            raise ProcessExited(f"{self.args[0]} exited with {self.proc.returncode}")
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self._log_file.closed:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        self._log_file.close()


@contextmanager
def running(proc: Process, ready: Callable[[], bool], timeout: float, what: str) -> Iterator[Process]:
    """``proc`` once ``ready()`` is true, stopped on the way out. When it exits or is not ready within ``timeout``
    seconds, it is stopped and the test fails with ``what`` and the process's output."""
    try:
        wait_until(lambda: proc.alive() and ready(), timeout, what=what)
    except TimeoutError:
        proc.stop()
        raise AssertionError(f"{what} did not start:\n{proc.output()}") from None
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def python_app(module_or_args: Sequence[str], ready_url: str, timeout: float = 30.0,
               env: dict[str, str] | None = None) -> Iterator[Process]:
    """Run ``python ARGS`` (e.g. ``["-m", "uvicorn", "app:app", "--port", "8000"]``) until ``ready_url`` answers."""
    with tempfile.TemporaryDirectory(prefix="aiwatch-app-") as tmp:
        proc = Process([sys.executable, *module_or_args], Path(tmp) / "app.log", env=env or python_env())
        with running(proc, lambda: http_get(ready_url)[0] < 500, timeout, f"{module_or_args} (at {ready_url})"):
            yield proc


LANDED = 2.0
"""Seconds a scrape of the test Prometheus may still land after the instant its samples are stamped with (its start):
the scrapes' timeout is at most 1 s."""


class Prometheus:
    """A real Prometheus with a generated config; query it with :meth:`query`."""

    def __init__(self, url: str, config_path: Path, proc: Process) -> None:
        self.url = url
        self.config_path = config_path
        self.proc = proc

    def api(self, path: str, **params: str) -> Any:
        status, body = http_get(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params} failed: {status} {body[:500]!r}")
        return data["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query (at now, or at the Unix time ``at``); returns the result vector."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        result: list[dict[str, Any]] = self.api("/api/v1/query", **params)["result"]
        return result

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an instant query (at now, or at ``at``) with at most one series (None when empty)."""
        result = self.query(promql, at)
        if not result:
            return None
        assert len(result) == 1, f"{promql} returned {len(result)} series"
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, predicate: Callable[[list[dict[str, Any]]], bool] = bool,
                 timeout: float = 60.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal found
            found = self.query(promql)
            return predicate(found)

        wait_until(check, timeout, 0.5, what=f"PromQL {promql}")
        return found

    def settled_for(self, promql: str, predicate: Callable[[list[dict[str, Any]]], bool] = bool,
                    timeout: float = 60.0) -> float:
        """An instant :data:`LANDED` seconds ago at which ``promql``'s answer satisfies ``predicate``, waited for: every
        scrape begun before it has landed (the scrape timeout is at most 1 s here), so the questions a test asks
        there are answered as they were. Asked at now instead, a scrape failed since (its timeout on a loaded
        machine) reads the gauges stale, and their queries empty."""
        found: list[float] = []

        def check() -> bool:
            at = time.time() - LANDED
            if predicate(self.query(promql, at)):
                found.append(at)
            return bool(found)

        wait_until(check, timeout, 0.25, what=f"PromQL {promql} (settled)")
        return found[0]

    def alerts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("/api/v1/alerts")["alerts"]
        return result


@contextmanager
def prometheus(scrape_targets: Sequence[str] = (), rule_files: Sequence[Path] = (), scrape_interval: str = "1s",
               evaluation_interval: str = "1s", alertmanager_url: str | None = None,
               extra_config: str = "", flags: Sequence[str] = ()) -> Iterator[Prometheus]:
    """Start a real Prometheus scraping ``scrape_targets`` (host:port) with ``rule_files`` loaded; ``flags``: more
    command-line flags (``--enable-feature=exemplar-storage``)."""
    binary = require_binary("prometheus")
    with tempfile.TemporaryDirectory(prefix="aiwatch-prom-") as tmp:
        tmpdir = Path(tmp)
        port = free_port()
        lines = ["global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {evaluation_interval}"]
        if rule_files:
            lines.append("rule_files:")
            lines += [f"  - {Path(p).resolve()}" for p in rule_files]
        if alertmanager_url:
            host = urllib.parse.urlparse(alertmanager_url).netloc
            lines += ["alerting:", "  alertmanagers:", "    - static_configs:", f"        - targets: ['{host}']"]
        lines += ["scrape_configs:", "  - job_name: aiwatch", "    static_configs:",
                  f"      - targets: {json.dumps(list(scrape_targets))}"]
        config = tmpdir / "prometheus.yml"
        config.write_text("\n".join(lines) + "\n" + extra_config)
        proc = Process([binary, f"--config.file={config}", f"--storage.tsdb.path={tmpdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
                        "--storage.tsdb.retention.time=1h", *flags], tmpdir / "prometheus.log")
        url = f"http://127.0.0.1:{port}"
        with running(proc, lambda: http_get(f"{url}/-/ready")[0] == 200, 30, "Prometheus"):
            yield Prometheus(url, config, proc)


@contextmanager
def alertmanager(config_yaml: str) -> Iterator[str]:
    """Start a real Alertmanager with ``config_yaml``; yields its URL."""
    binary = require_binary("prometheus-alertmanager")
    with tempfile.TemporaryDirectory(prefix="aiwatch-am-") as tmp:
        tmpdir = Path(tmp)
        port = free_port()
        config = tmpdir / "alertmanager.yml"
        config.write_text(config_yaml)
        proc = Process([binary, f"--config.file={config}", f"--storage.path={tmpdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                       tmpdir / "alertmanager.log")
        url = f"http://127.0.0.1:{port}"
        with running(proc, lambda: http_get(f"{url}/-/ready")[0] == 200, 30, "Alertmanager"):
            yield url


@contextmanager
def uvicorn_in_thread(app: Any, lifespan: str = "off", http: str = "h11",
                      **config: Any) -> Iterator[tuple[int, threading.Thread]]:
    """Serve the ASGI ``app`` with uvicorn (h11 unless ``http`` says otherwise: ``http="zttp", http2=True`` serves
    HTTP/2 too) on a loopback port, in a thread of this process (so the test reads the app's metrics and spans
    directly); yields the port and the server's thread, which has ended on the way out. ``config``: more of
    ``uvicorn.Config``'s arguments."""
    uvicorn = require_module("uvicorn")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, http=http, lifespan=lifespan, log_level="critical", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn started")
    try:
        yield sock.getsockname()[1], thread
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def hypercorn_in_thread(app: Any) -> Iterator[int]:
    """Serve the ASGI ``app`` with Hypercorn (HTTP/1.1, and HTTP/2 on a cleartext connection that opens with the
    HTTP/2 preface) on a loopback port, in a thread of this process with its own event loop; yields the port once
    the app's lifespan startup is done. The server shuts down gracefully on the way out and its thread has ended."""
    require_module("hypercorn")
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # Hypercorn owns (and closes) the duplicate
    config.errorlog = None  # its "Running on" line
    started = threading.Event()
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def with_startup_signal(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def startup_signalling_send(message: Any) -> None:
            await send(message)
            if message.get("type", "").startswith("lifespan.startup."):
                started.set()

        try:
            await app(scope, receive, startup_signalling_send)
        finally:
            started.set()  # an app without lifespan support: Hypercorn serves without it

    async def main() -> None:
        nonlocal loop, stop
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        await serve(with_startup_signal, config, shutdown_trigger=stop.wait)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(started.is_set, what="Hypercorn's lifespan startup")
        if failure:
            raise AssertionError(f"Hypercorn did not start: {failure[0]!r}")
        yield sock.getsockname()[1]
    finally:
        if loop is not None and stop is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        sock.close()


@contextmanager
def registry_endpoint(registry: Any) -> Iterator[str]:
    """prometheus_client's own exposition server for ``registry`` on a free loopback port, from a thread; yields
    its ``host:port`` (append ``/metrics`` for the URL)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def prometheus_scraping(registry: Any, rule_files: Sequence[Path] = (),
                        scrape_interval: str = "1s") -> Iterator[Prometheus]:
    """A real Prometheus scraping ``registry`` (served by :func:`registry_endpoint`) with ``rule_files`` loaded;
    yields the Prometheus. Both are shut down after, the Prometheus first."""
    with registry_endpoint(registry) as target, \
            prometheus([target], rule_files, scrape_interval=scrape_interval) as prom:
        yield prom


def exposition_handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with ``body`` as a Prometheus text exposition (a stand-in exporter's
    ``/metrics``: dcgm-exporter's recorded payload, or series written out by a test)."""

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Exporter


@contextmanager
def handler_server(handler: type[BaseHTTPRequestHandler], release: threading.Event | None = None) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port from a thread; yields its base URL, ``http://127.0.0.1:PORT``.
    ``release`` is set on the way out, before the server stops, so that handlers waiting on it return."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if release is not None:
            release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def redis_server() -> Iterator[str]:
    """Start a real redis-server (no persistence); yields ``redis://127.0.0.1:PORT/0``."""
    with redis_server_process() as (url, _proc):
        yield url


@contextmanager
def redis_server_process() -> Iterator[tuple[str, Process]]:
    """:func:`redis_server`, yielding its :class:`Process` too (fault injection stops or freezes it)."""
    binary = require_binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="aiwatch-redis-") as tmp:
        port = free_port()
        proc = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", tmp], Path(tmp) / "redis.log")

        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        with running(proc, ready, 15, "redis-server"):
            try:
                yield f"redis://127.0.0.1:{port}/0", proc
            finally:
                with suppress(ProcessLookupError):
                    os.killpg(proc.proc.pid, signal.SIGCONT)  # a frozen server must be able to stop


#: How long :func:`assert_exits_while_a_call_hangs` waits for the exit: half the hung call's timeout given to the
#: script (120 s), so a process that exits only when its call times out fails, and far more than an exit takes.
HUNG_CALL_TIMEOUT = 120.0
EXIT_WAIT = 60.0


def assert_exits_while_a_call_hangs(script: str, path: str, request: bytes, *args: str) -> None:
    """Run ``script`` (``python -c``) with ``argv[1]`` the URL (``path`` appended) of a server that accepts a
    connection and never answers it, ``argv[2]`` :data:`HUNG_CALL_TIMEOUT`, then ``args``. The script prints
    "started", starts its call, reads a line from stdin, and prints "script ends". Once the server holds a request
    holding ``request``, the test sends that line and asserts the process exits within :data:`EXIT_WAIT` s: the
    interpreter does not wait out the hung call (as it joins a ThreadPoolExecutor's workers)."""
    with socket.create_server(("127.0.0.1", 0), backlog=32) as server:
        server.settimeout(30.0)
        url = f"http://127.0.0.1:{server.getsockname()[1]}{path}"
        proc = subprocess.Popen([sys.executable, "-c", script, url, str(HUNG_CALL_TIMEOUT), *args], env=python_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            conn, _ = server.accept()  # the call is under way, and gets no answer
            with conn:
                conn.settimeout(30.0)
                assert request in conn.recv(4096)
                assert proc.stdin is not None
                proc.stdin.write("end\n")
                proc.stdin.flush()
                try:
                    out, _ = proc.communicate(timeout=EXIT_WAIT)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the process did not exit within {EXIT_WAIT:g} s of its script's end: it waits for "
                                f"the hung call ({HUNG_CALL_TIMEOUT:g} s timeout)")
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert out.splitlines() == ["started", "script ends"], out
