"""The demo's child processes: each in its own session, logged to a file, stopped with its whole process group.

The runner starts the services (and the console, Prometheus and Alertmanager when they are installed) through one
:class:`Supervisor`, which stops every child on the way out.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A port free on :data:`HOST` now, below the kernel's ephemeral range and not handed out before by this
    process. Port 0 would pick one *in* the ephemeral range, which every outgoing connection also draws from: with a
    dozen services and their load running, a connection could take the port before the service bound it."""
    low = _ephemeral_low()
    while True:
        port = random.randrange(_LOWEST_PORT, low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


_LOWEST_PORT = 10000
_handed_out: set[int] = set()


def port_in_use(port: int) -> str | None:
    """Why :data:`HOST`:``port`` cannot be bound now (the OS's reason), or ``None`` when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as uvicorn binds: a connection of an earlier run in TIME_WAIT does not hold the port, a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def claim_port(port: int, flag: str) -> None:
    """Check that a port given on the command line is free on :data:`HOST`, and keep :func:`free_port` off it.

    A taken port was not noticed: the service that could not bind it exited, but whatever held the port answered the
    readiness check (an earlier demo, the FastAPI example on 8000), and the demo failed on with a traceback."""
    why = port_in_use(port)
    if why is not None:
        raise DemoFailed(f"{flag} {port}: {HOST}:{port} is in use ({why}): stop what listens there, or leave {flag} "
                         "out for a free port")
    _handed_out.add(port)


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 where it cannot be read)."""
    with suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        if low > _LOWEST_PORT + 1000:
            return low
    return 32768


def _die_with_parent() -> None:
    """In the child, before it runs: ask Linux for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Child:
    """A child process in its own session (the terminal's Ctrl-C reaches only the runner, which stops it, with
    every process of its group). An ``essential`` child that stops on its own stops the demo.

    The demo's own services exit when the runner goes away (they watch their parent); a program that cannot
    (Prometheus, Alertmanager) is started with ``die_with_parent``: on Linux the kernel sends it SIGTERM when the
    runner dies, even of SIGKILL."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str],
                 essential: bool = True, die_with_parent: bool = False) -> None:
        self.name = name
        self.essential = essential
        self.log = log_dir / f"{name}.log"
        watch = _die_with_parent if die_with_parent and sys.platform.startswith("linux") else None
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=watch)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


class DemoFailed(RuntimeError):
    """A part of the demo could not start or stopped on its own; the message has its log's tail."""


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._on_stop: list[Callable[[], None]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="aiwatch-demo-")
        self.log_dir = Path(self._tmp.name)
        self.env = dict(os.environ)
        # One BLAS thread: the model's time stays steady and the demo stays within one core for the model.
        self.env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_root(), self.env.get("PYTHONPATH", "")]))

    def start(self, name: str, args: Sequence[str], essential: bool = True, die_with_parent: bool = False) -> Child:
        child = Child(name, args, self.log_dir, self.env, essential, die_with_parent)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise DemoFailed(f"the {child.name} service exited with {child.proc.returncode}:\n{child.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise DemoFailed(f"the {child.name} service did not answer {url} within {timeout:.0f}s:\n{child.tail()}")

    def check_alive(self) -> None:
        for child in self.children:
            if child.essential and child.proc.poll() is not None:
                raise DemoFailed(f"the {child.name} service stopped (exit {child.proc.returncode}):\n{child.tail()}")

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the supervisor stops (before the children are stopped)."""
        self._on_stop.append(callback)

    def stop(self) -> None:
        for callback in reversed(self._on_stop):
            with suppress(Exception):
                callback()
        for child in reversed(self.children):
            child.stop()
        self._tmp.cleanup()


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)
