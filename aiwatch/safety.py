"""aiwatch's own failures are counted and logged, never raised into the host app.

:func:`record_error` is the one place such a failure goes: it increments
``aiwatch_instrumentation_errors_total{component}`` and logs the first failure of a burst per component and
exception type (with the traceback), then stays quiet until ``burst_seconds`` have passed, when it logs again with how
many were suppressed; a burst that stops instead is summed up in a line of its own once none has come for
``burst_seconds`` (how many, over how long), else the log never told them. An instance of which a process may have
several (a queue, a feature cache, a drift monitor, a prediction log) names itself in that line (:func:`errors_of`),
the counter keeping ``component`` alone.
:func:`warn_rate_limited` logs other conditions that traffic can repeat (a label over its bound, an unknown drift
feature) the same way, so no client can fill the log.
"""

from __future__ import annotations

import atexit
import errno
import functools
import heapq
import inspect
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from aiwatch.forksafe import renew_at_fork

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

logger = logging.getLogger("aiwatch")

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H")


class _BurstLog:
    def __init__(self, burst_seconds: float = 60.0) -> None:
        self.burst_seconds = burst_seconds
        self._renew_after_fork()
        renew_at_fork(self)

    def _renew_after_fork(self) -> None:
        # reentrant: a garbage collection inside the block can run a finalizer that records a failure in the same
        # thread (an instrumented queue's, whose gauge fails), which waited on this lock for ever with a plain one
        self._lock = threading.RLock()
        # The parent's bursts are the parent's: a worker's log may be a stream of its own, and its first warning of
        # a kind the master logged a moment before (a drift monitor's unknown feature) was silenced for a burst.
        # Its pending summaries too: the parent logs them.
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._latest: dict[str, float] = {}  # the latest suppressed one per key, while any is
        self._about: dict[str, str] = {}  # what the burst's first line was about, for its summary
        self._pending: set[str] = set()  # keys with a summary scheduled

    def should_log(self, component: str, about: Callable[[], str] | None = None) -> tuple[bool, int]:
        """Whether to log this one of ``component``'s burst, and how many were not since the last that was.
        ``about()`` (called when it is logged) names the burst in the line that sums it up if it stops."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(component)
            if last is None or now - last >= self.burst_seconds:
                self._last[component] = now
                self._latest.pop(component, None)
                if about is not None:
                    try:
                        self._about[component] = about()
                    except Exception:  # a message whose arguments cannot be formatted: its key names it
                        self._about.pop(component, None)
                return True, self._suppressed.pop(component, 0)
            self._suppressed[component] = self._suppressed.get(component, 0) + 1
            self._latest[component] = now
            if component in self._pending:
                return False, 0
            self._pending.add(component)
            due = now + self.burst_seconds
        _summaries.schedule(self, component, due)
        return False, 0

    def summarise(self, key: str, final: bool = False) -> None:
        """Log how many of ``key``'s burst were suppressed, once none has come for ``burst_seconds`` (a burst that
        goes on is told by its next line, as before); ``final``: now, the process exiting."""
        now = time.monotonic()
        with self._lock:
            count = self._suppressed.get(key, 0)
            latest = self._latest.get(key, now)
            due = latest + self.burst_seconds
            if count and due > now and not final:
                reschedule = True
            else:
                reschedule = False
                self._pending.discard(key)
                if not count:  # told by the burst's next line meanwhile
                    return
                del self._suppressed[key]
                self._latest.pop(key, None)
                span = latest - self._last.get(key, latest)
                about = self._about.get(key, f"aiwatch: {key}")
        if reschedule:
            _summaries.schedule(self, key, due)
            return
        tail = "the process exiting" if final else f"then none for {_seconds(self.burst_seconds)} s"
        logger.warning("%s (%d more in the %s s after the last report, %s)", about, count, _seconds(span), tail)


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"


class _Summaries:
    """One daemon thread for every burst log's summaries: started when the first line of a burst is suppressed,
    woken at the earliest one due, ended when none is pending. A summary still pending when the interpreter exits
    is logged then (by the atexit hook, before logging shuts down)."""

    def __init__(self) -> None:
        self._renew_after_fork()
        renew_at_fork(self)

    def _renew_after_fork(self) -> None:
        # the child has no thread and none of the parent's pending summaries (its burst logs dropped their counts)
        # reentrant: the weak references' callback takes it, and a collection can run it where it is held
        self._cond = threading.Condition(threading.RLock())
        self._due: list[tuple[float, int, weakref.ref[_BurstLog], str]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._exiting = False

    def schedule(self, log: _BurstLog, key: str, due: float) -> None:
        with self._cond:
            if self._exiting:
                return
            # weakly: a burst log dropped (each test makes its own) has no summary to give, and its entries go then
            heapq.heappush(self._due, (due, next(self._order), weakref.ref(log, self._dropped), key))
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="aiwatch-burst-summaries", daemon=True)
                thread.start()
                self._thread = thread
            else:
                self._cond.notify()

    def _dropped(self, _: object) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                if self._thread is not me:
                    return
                now = time.monotonic()
                while self._due and self._due[0][0] > now and not self._exiting:
                    self._cond.wait(self._due[0][0] - now)
                    now = time.monotonic()
                    if any(ref() is None for _, _, ref, _ in self._due):
                        self._due = [entry for entry in self._due if entry[2]() is not None]
                        heapq.heapify(self._due)
                if not self._due or self._exiting:
                    self._thread = None
                    return
                ready = []
                while self._due and self._due[0][0] <= now:
                    ready.append(heapq.heappop(self._due))
            for _, _, ref, key in ready:
                log = ref()
                if log is not None:
                    with suppress(Exception):
                        log.summarise(key)

    def at_exit(self) -> None:
        with self._cond:
            self._exiting = True
            due, self._due = self._due, []
            self._cond.notify()
        for _, _, ref, key in sorted(due):
            log = ref()
            if log is not None:
                with suppress(Exception):
                    log.summarise(key, final=True)


_summaries = _Summaries()
atexit.register(_summaries.at_exit)


_burst = _BurstLog()


def set_burst_seconds(seconds: float) -> None:
    """How long to stay quiet after logging a component's failure (default 60 s)."""
    _burst.burst_seconds = seconds


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, is a full disk (ENOSPC) or quota
    (EDQUOT)."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _count(component: str, metrics: Metrics | None, exc: BaseException | None = None) -> None:
    try:
        if metrics is None:
            from aiwatch import metrics as known

            if known._default is None and known._file_backed() and disk_full(exc):
                # Making the process's metrics now writes new sample files through prometheus_client's mmap, which
                # on a full disk is a SIGBUS: it killed gunicorn's master (no --preload: no metrics yet) at the first
                # fold that found the disk full. Logged only.
                return
            metrics = known.default_metrics()
        metrics.child(metrics.instrumentation_errors, (component,)).inc()
    except Exception:  # the counter itself failed: logging is all that is left
        pass


def count_error(component: str, metrics: Metrics | None = None) -> None:
    """Count a failure inside aiwatch without logging it: one that goes on (the same condition at every poll) and
    was logged when it started. Never raises."""
    _count(component, metrics)


def record_problem(component: str, message: str, metrics: Metrics | None = None) -> None:
    """Count (as aiwatch's error under ``component``) and log (rate-limited, as ``"aiwatch: " + message``, without
    a traceback) a problem that is no exception: a setting that keeps part of aiwatch from working. Never raises."""
    _count(component, metrics)
    warn_rate_limited(component, "aiwatch: %s", message)


def record_cut(component: str, what: str, metrics: Metrics | None = None) -> None:
    """Count and (rate-limited) log a size cap at work: a header or trailer sent shorter than it would have been
    (``component`` one of :data:`aiwatch.metrics.SIZE_CAP_COMPONENTS`, which no alert reads as a failure). Counted
    in the same counter as a failure; logged as ``what`` (what was left out, and what was sent), not as a failure.
    Never raises."""
    record_problem(component, f"{component} capped: {what}", metrics)


#: Distinct (component, exception type) bursts kept apart at most; past it, a new type shares its component's burst.
MAX_BURST_KINDS = 256


def _burst_key(component: str, exc: BaseException, subject: str | None = None) -> str:
    # per exception type: keyed by the component alone, a failure repeating all the time (a record that cannot be
    # read, per request) took every burst's one log line, and a new one in the same component (the disk full) was
    # never logged, only counted with the other
    kind = type(exc)
    key = f"{component}:{kind.__module__}.{kind.__qualname__}"
    # and per instance, while half the table is free: keyed by the type alone, a second queue failing as the first
    # one did was never named (and its failures were told as the first one's "more since the last report"). Named
    # keys stop at half, so that instances made from data (a queue per tenant) leave room for new types.
    if subject is not None:
        named = f"{key}:{subject}"
        if named in _burst._last or len(_burst._last) < MAX_BURST_KINDS // 2:
            return named
    if key in _burst._last or len(_burst._last) < MAX_BURST_KINDS:
        return key
    return component


def record_error(component: str, exc: BaseException, metrics: Metrics | None = None, *,
                 subject: str | None = None) -> None:
    """Count and (rate-limited) log a failure inside aiwatch: the first of a burst per component, exception type and
    ``subject`` is logged with its traceback, the next one after ``burst_seconds`` with how many were not (or, when
    they stop, a line of their own says how many, once ``burst_seconds`` have passed without one).
    ``subject`` names the instance that failed in the log line, after the component (``queue 'ranker'``); the
    counter keeps ``component`` alone. Never raises."""
    _count(component, metrics, exc)
    try:
        what = component if subject is None else f"{component} {subject}"
        key = _burst_key(component, exc, subject)
        # past MAX_BURST_KINDS the component's burst holds every type: its summary names none
        kind = "" if key == component else f" with {type(exc).__qualname__}"
        log_now, suppressed = _burst.should_log(key, lambda: f"aiwatch: {what} failed{kind}")
        if log_now:
            extra = f" ({suppressed} more since the last report)" if suppressed else ""
            logger.warning("aiwatch: %s failed and was skipped%s: %r", what, extra, exc, exc_info=exc)
    except Exception:
        pass


def errors_of(component: str, subject: str, metrics: Metrics | None = None) -> Callable[[BaseException], None]:
    """:func:`record_error` for one instance: ``errors_of("queue", "'ranker'", metrics)(exc)`` counts ``exc`` under
    ``queue`` and logs it as ``aiwatch: queue 'ranker' failed ...``. For a kind of which a process may have several,
    whose failures were logged alike whichever one failed."""
    return functools.partial(record_error, component, metrics=metrics, subject=subject)


def warn_rate_limited(key: str, message: str, *args: object) -> None:
    """Log ``message % args`` as a warning, at most once per burst (``set_burst_seconds``) for ``key``; the next
    one says how many were not logged, or, when none comes for ``burst_seconds``, a line that repeats the first
    one's message with how many. Never raises."""
    try:
        log_now, suppressed = _burst.should_log(key, lambda: message % args)
        if log_now:
            extra = f" ({suppressed} more since the last report)" if suppressed else ""
            logger.warning(message + "%s", *args, extra)
    except Exception:
        pass


@contextmanager
def guarded(component: str, metrics: Metrics | None = None) -> Iterator[None]:
    """Run a block of aiwatch's own work; an exception in it is recorded and swallowed."""
    try:
        yield
    except Exception as exc:
        record_error(component, exc, metrics)


def sync_hook(option: str, hook: H) -> H:
    """``hook`` itself (``None`` included) when aiwatch can call it: it calls its hooks synchronously, so an ``async
    def`` one (or an object whose ``__call__`` is) is a ``TypeError`` naming ``option``; it would hand back a
    coroutine that nothing awaits, and its body would never run."""
    call = getattr(hook, "__call__", None)  # noqa: B004 - an object's __call__, not callable()
    if hook is not None and any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (hook, call)):
        raise TypeError(f"{option}={_name(hook)} is an async function, but aiwatch calls {option} synchronously "
                        "(it cannot await it): pass a plain function")
    return hook


def _name(hook: Any) -> str:
    return str(getattr(hook, "__qualname__", None) or repr(hook))


def resolve_route(resolver: Callable[..., Any], metrics: Metrics | None, *args: Any) -> str | None:
    """The route label a user's ``route_resolver`` gives for a request: ``None`` (the request is unmatched) when it
    raises or returns something that is no str. A coroutine (a plain function that returns one, which the check at
    setup cannot see) is closed: as a label it was a new ``<coroutine object ...>`` series for every request."""
    try:
        route = resolver(*args)
    except Exception as exc:
        record_error("route", exc, metrics)
        return None
    if route is None or isinstance(route, str):
        return route
    if inspect.iscoroutine(route):
        route.close()
    record_error("route", TypeError(f"route_resolver {_name(resolver)} returned {type(route).__name__}, not a str "
                                    "route (or None)"), metrics)
    return None


def call_hook(component: str, hook: Callable[P, R], metrics: Metrics | None, *args: P.args,
              **kwargs: P.kwargs) -> R | None:
    """Call a user hook; if it raises or returns an awaitable (which aiwatch cannot await: a coroutine is closed),
    record the failure and return ``None``."""
    try:
        result = hook(*args, **kwargs)
    except Exception as exc:
        record_error(component, exc, metrics)
        return None
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never to run: no "coroutine was never awaited" warning at its collection
        record_error(component, TypeError(f"{_name(hook)} returned {type(result).__name__}, which aiwatch "
                                          "cannot await: hooks must be plain functions"), metrics)
        return None
    return result
