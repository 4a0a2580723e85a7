"""Knowing when the app is imported by a pre-fork server that will copy aiwatch's objects into its workers.

gunicorn has hooks of its own (:mod:`aiwatch.gunicorn`). uWSGI loads the app in the first process (the master, with
``master``) and forks the workers from it, by default *without* Python's fork hooks (``os.register_at_fork``), which
aiwatch relies on to renew a forked child's locks, threads and ids (:mod:`aiwatch.forksafe`). Its workers then get
copies of a prediction log whose writer thread does not exist in them (records queue, then are dropped, none
written), of drift monitors and a GPU poller that never run, and every worker repeats the master's request-id
sequence. uWSGI runs the hooks with ``py-call-uwsgi-fork-hooks = true``; with ``lazy-apps = true`` each worker
imports the app itself.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

__all__ = ["check_fork_hooks", "uwsgi_master"]

#: what to set, named in the error
FIX = "set py-call-uwsgi-fork-hooks = true (or lazy-apps = true) in uWSGI's configuration"

_reported = threading.Lock()  # held for ever once the problem is reported: once per process


def _uwsgi() -> Any:
    try:
        import uwsgi  # only inside uWSGI (its embedded module)
    except ImportError:
        return None
    return uwsgi if hasattr(uwsgi, "opt") and hasattr(uwsgi, "worker_id") else None


def _forking(uwsgi: Any) -> bool:
    """This process imports the app before uWSGI forks workers from it: worker 0 (not yet a worker: ``lazy-apps``
    imports in each worker) that is the master, or, without a master (``masterpid()`` 0), the first of several
    workers, which forks the others. Not a mule or spooler (worker 0 too, forked by the master)."""
    master = uwsgi.masterpid()
    return bool(uwsgi.worker_id() == 0 and (master == os.getpid() or (master == 0 and uwsgi.numproc > 1)))


def _on(value: Any) -> bool:
    """A uWSGI flag as uWSGI reads it: ``True`` from the command line; from an ini or env, text that is not
    false/off/no/0 (``b"false"`` is off; an empty value, a bare ini line, is on); the last of a repeated one."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "off", "no", "0")
    return bool(value)


def uwsgi_master() -> bool:
    """This process is uWSGI's master importing the app for the workers it forks: it serves no request."""
    uwsgi = _uwsgi()
    try:
        return uwsgi is not None and uwsgi.worker_id() == 0 and uwsgi.masterpid() == os.getpid()
    except Exception:  # an odd uwsgi build: take it for no pre-fork server
        return False


def fork_hooks_problem() -> str | None:
    """Why aiwatch's objects made now will not work in the processes forked from this one, or ``None``."""
    uwsgi = _uwsgi()
    if uwsgi is None:
        return None
    try:
        if not _forking(uwsgi):
            return None
        options = uwsgi.opt
        if _on(options.get("py-call-uwsgi-fork-hooks")) or _on(options.get("py-call-osafterfork")):
            return None
    except Exception:
        return None
    return ("uWSGI forks its workers from the process that imported the app without Python's fork hooks: the "
            "prediction logs, drift monitors and GPU pollers made at import do not run in the workers (records are "
            f"queued, then dropped; nothing is written) and every worker repeats the same request ids; {FIX}")


def check_fork_hooks(what: str, metrics: Metrics | None = None) -> None:
    """Report (once per process, as aiwatch's error under ``component="multiprocess"``, in ``metrics``) that
    ``what``, made now, will not work in the workers a pre-fork server forks from this process. Never raises."""
    try:
        problem = fork_hooks_problem()
        if problem is None or not _reported.acquire(blocking=False):
            return
        from aiwatch.safety import record_problem

        record_problem("multiprocess", f"{what}: {problem}", metrics)
    except Exception:
        pass
