"""The per-request timeline and the phase API that splits a request's latency.

A request's timeline lives in a :mod:`contextvars` variable, so concurrent requests (threads or asyncio tasks)
never mix. Inside a request, code marks phases::

    import aiwatch

    @aiwatch.phase("features")
    async def fetch_features(user_id): ...

    with aiwatch.phase("inference", model="ranker"):
        scores = model(batch)

    aiwatch.record_phase("queue", 0.012)   # a duration measured elsewhere, in seconds

Semantics:

* **Nested phases** are exclusive: a phase's recorded time excludes the time of phases opened inside it, so the named
  phases partition the request and ``overhead = total - sum(phases)`` is the time outside all of them.
* **Repeated phases** with the same name (and model) in one request add up into one observation per request.
* **The model label** of a phase that names no model is the request's model when the request finishes (phases
  recorded before :func:`set_model` included), as for the overhead; a phase that names its model keeps it.
* **Concurrent phases** (two tasks of one request in a phase at once, e.g. ``asyncio.gather``) each record their own
  wall time, so the phases can add up to more than the request's total; the overhead is then clamped at 0 and
  ``aiwatch_overhead_clamped_total`` counts it.
* **Outside a request** (a background worker, a batch job) a phase is observed directly into
  ``aiwatch_background_phase_duration_seconds`` for the default service: not into
  ``aiwatch_phase_duration_seconds``, whose phases partition requests (a job's time there would read as request
  time in the latency split and the phase alerts). A :class:`~aiwatch.signals.batcher.MicroBatcher`'s batch
  function is the exception: it works for the requests of its batch, and each of them gets its phases.
* **A phase that ends after its request was recorded** (an async generator holding it, dropped without
  ``aclose()``: asyncio closes it later in a task of its own; a generator dropped unclosed, which the garbage
  collector closes later) is in no histogram; its span is ended and it is counted as aiwatch's error (component
  ``phase``). So is one that ends outside its request while that runs (the garbage collector's, in another thread
  or another request), its end being the collection's time. A phase ending in another copy of its request's
  context than it began in (a sync generator streamed by Starlette, each step in a worker thread) is its request's.
* **Traced requests**: a phase's span is current while the phase runs, so the CLIENT spans of calls made in it
  (aiwatch's clients, OpenTelemetry's instrumentations) and the spans the app starts in it are its children.

A phase's own failures (metrics, tracing) are counted and swallowed; exceptions of the code inside the phase pass
through untouched.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context, trace

from aiwatch.amounts import (
    MAX_COUNT,
    MAX_SECONDS,
    as_count,
    as_elapsed,
    as_seconds,
    period,
    shown,
    warn_implausible,
)
from aiwatch.amounts import seconds as seconds_of
from aiwatch.cardinality import MAX_VALUE_LENGTH, OVERFLOW, LabelGuard, guard_for
from aiwatch.env import SLOW_THRESHOLD, service_label
from aiwatch.eventloop import loop_interval, watch
from aiwatch.fastpath import adder, observe
from aiwatch.forksafe import at_fork_in_child, renew_at_fork
from aiwatch.metrics import LATENCY_BUCKETS, Metrics, default_metrics
from aiwatch.safety import logger, record_error
from aiwatch.servertiming import MAX_LENGTH, OVERHEAD, TOTAL, fit, is_token, timing_tail
from aiwatch.status import is_error_status
from aiwatch.traffic import TrafficClasses
from aiwatch.utf8 import text_or_value

F = TypeVar("F", bound=Callable[..., Any])

RESERVED_PHASES = frozenset({OVERHEAD, TOTAL})

_clock = time.perf_counter
_told_of_background = False  # whether the first phase recorded outside any request was logged
_MAX_CACHED_CHILDREN = 10_000


class RequestTimeline:
    """What aiwatch knows about one request while it runs."""

    __slots__ = ("__weakref__", "busy", "calls", "degraded", "finished", "held", "lock", "model", "model_name",
                 "named", "owner", "owns_span", "phases", "recorder", "route_of", "service", "span", "start",
                 "tokens", "trace_id", "tracer", "traffic_class", "version")

    def __init__(self, recorder: RequestRecorder, start: float, model: str) -> None:
        self.recorder = recorder
        self.service = recorder.service
        self.start = start
        self.model = model
        #: The request's model as the app named it (``model`` is its label, which the cardinality guard may have
        #: folded), for its span.
        self.model_name: Any = recorder.model_name
        #: The version of ``model`` (``set_model(model, version)``; ``""``: none).
        self.version = recorder.model_version
        #: The request's traffic class: from its header when the integration read one, else the default.
        self.traffic_class = recorder.traffic.default
        #: The request's route as the integration sees it so far (``None``: unknown until it finishes), for the route
        #: rules of the traffic class forwarded by the request's outgoing calls (:func:`traffic_class_to_forward`).
        self.route_of: Callable[[], str | None] | None = None
        #: ``(phase name, model) -> seconds``. A phase that names no model is under the request's model, moved by
        #: :func:`set_model` when it changes, so that each phase is labelled with the model the request ends with.
        self.phases: dict[tuple[str, str], float] = {}
        #: The keys of ``phases`` whose phases named the request's model of the moment themselves (``phase(name,
        #: model=...)``): :func:`set_model` leaves them (``None`` until one is recorded).
        self.named: set[tuple[str, str]] | None = None
        #: Token usage and timing (:class:`aiwatch.genai.TokenUsage`), once ``aiwatch.record_tokens`` is called.
        self.tokens: Any = None
        #: ``(reason, model)`` of each fallback that served the response (``aiwatch.degraded``), or ``None``; a
        #: ``None`` model is the request's model at its end.
        self.degraded: list[tuple[str, str | None]] | None = None
        #: The request's SERVER span; phase spans are in its trace, under it.
        self.span: Any = None
        #: Whether aiwatch started ``span`` (and so renames and ends it when the request finishes).
        self.owns_span = False
        #: The tracer of phase spans (``None``: no phase spans).
        self.tracer: Any = None
        self.trace_id: str | None = None
        #: Outgoing calls made by this request: ``(peer, caller's phase) -> [client seconds, network seconds]``,
        #: kept for the slow-request counters (``None`` until the first call).
        self.calls: dict[tuple[str, str], list[float]] | None = None
        #: Whether the request was recorded (:meth:`RequestRecorder.finish`): a phase of it that ends later is not
        #: added (its time would be lost unseen)
        self.finished = False
        #: The open phases a sync generator opened (``None`` until one is), for the phases opened in its later steps
        #: (:func:`_held_parent`)
        self.held: list[_Frame] | None = None
        # Who may change what is above without a lock (see _shared_lock). A request's phases end in several threads
        # at once when its work fans out (contextvars.copy_context().run in a pool, asyncio.to_thread): their
        # read-add-writes lost time, and a thread the request left running broke finish()'s reading of them. The
        # thread that began the request (``owner``) changes and reads them with no lock while no other thread has
        # touched the request (``lock`` None), only marking that it does (``busy``); the first other thread gives
        # the request its lock, waits for the owner's unmarked, and from then on every thread takes the lock.
        #: The thread that began the request (-1 on a build without the GIL: every thread takes the lock)
        self.owner = _OWNER_OF_NONE if _FREE_THREADED else _get_ident()
        #: The request's lock, once a thread other than its owner touched it
        self.lock: Any = None
        #: Whether the owner is changing or reading the request's phases with no lock
        self.busy = False

    def add(self, name: str, model: str | None, seconds: float) -> None:
        if self.owner == _get_ident():
            busy = self.busy
            self.busy = True
            if self.lock is None:  # the common case: the request's own thread, alone
                try:
                    self._add(name, model, seconds)
                finally:
                    self.busy = busy
                return
            self.busy = busy
        with _shared_lock(self):
            self._add(name, model, seconds)

    def _add(self, name: str, model: str | None, seconds: float) -> None:
        # refused once recorded (a thread the request left running, asyncio.to_thread past a wait_for timeout): a key
        # added while finish() read the phases raised there and lost the rest of the request's signals
        if self.finished:
            return
        if model is None:
            key = (name, self.model)
        else:
            key = (name, model)
            if model == self.model:
                self._keep(key)
        phases = self.phases
        phases[key] = phases.get(key, 0.0) + seconds

    def _keep(self, key: tuple[str, str]) -> None:
        """Leave the phase of ``key`` (one that named its model) under its model when :func:`set_model` changes the
        request's (with the phases' lock, when one is needed)."""
        if self.named is None:
            self.named = set()
        self.named.add(key)

    def add_call(self, peer: str, phase: str, client: float, network: float | None) -> None:
        """Remember an outgoing call's client-observed and network time (``None``: the peer reported no time)."""
        _guarded(self, self._add_call, peer, phase, client, network)

    def _add_call(self, peer: str, phase: str, client: float, network: float | None) -> None:
        if not self.finished:
            calls = self.calls
            if calls is None:
                calls = self.calls = {}
            found = calls.get((peer, phase))
            if found is None:
                found = calls[(peer, phase)] = [0.0, 0.0]
            found[0] += client
            found[1] += network or 0.0

    def _renew_after_fork(self) -> None:
        # a process forked in the request (multiprocessing's fork from its thread, or from a pool thread of its
        # fanned-out work) runs on in a copy of the request's context, and what it records there takes this lock:
        # held at the fork by a thread the child does not have, it hung the child's first phase
        if self.lock is not None:
            self.lock = threading.RLock()
        self.busy = False

    def _phases_now(self) -> list[tuple[tuple[str, str], float]]:
        return list(self.phases.items())

    def elapsed(self, now: float | None = None) -> float:
        return (_clock() if now is None else now) - self.start

    def server_timing(self, now: float | None = None, tail: str | None = None,
                      limit: int = MAX_LENGTH) -> tuple[str, str | None]:
        """The Server-Timing value for the request so far (the format of
        :func:`aiwatch.servertiming.format_server_timing`, written out here because it runs on every request), and
        why it was cut short (``None``: it was not; the integration counts it). ``tail``: the overhead and total
        entries to fill in (default: the recorder's :attr:`~RequestRecorder.timing_tail`). At most ``limit``
        characters: phase entries that would pass it are left out (:func:`aiwatch.servertiming.fit`), the overhead
        and total kept as they are."""
        total = (_clock() if now is None else now) - self.start
        head = ""
        named = 0.0
        # a copy: a phase ending in another thread meanwhile raised "changed size during iteration"
        phases = _guarded(self, self._phases_now)
        for (name, _model), secs in phases:
            # %-formatting and += (a handful of phases): cheaper than f-strings and a list joined
            head += "%s;dur=%.3f, " % (name, secs * 1000.0)  # noqa: UP031
            named += secs
        overhead = total - named
        value = head + (self.recorder.timing_tail if tail is None else tail) % (
            (overhead if overhead > 0.0 else 0.0) * 1000.0, (total if total > 0.0 else 0.0) * 1000.0)
        if len(value) <= limit:  # the common case: one length check
            return value, None
        value, left_out = fit(head, value[len(head):], limit)
        return value, f"over {limit} characters: {left_out} of {head.count(', ')} phase entries left out"

_timeline: ContextVar[RequestTimeline | None] = ContextVar("aiwatch_timeline", default=None)
_frame: ContextVar[_Frame | None] = ContextVar("aiwatch_phase_frame", default=None)


class SharedWork:
    """What code run once for several requests records outside each of them (a
    :class:`~aiwatch.signals.batcher.MicroBatcher`'s batch function): its phases and fallbacks, which each of those
    requests takes into its own timeline when its result arrives (:func:`share_work`)."""

    __slots__ = ("degraded", "open", "phases")

    def __init__(self) -> None:
        #: ``(phase name, model or None) -> seconds``, as :class:`RequestTimeline` keeps them before the model is known
        self.phases: dict[tuple[str, str | None], float] = {}
        #: ``(reason, model or None)`` of each :func:`aiwatch.degraded` call, once each
        self.degraded: list[tuple[str, str | None]] = []
        #: Still taking what is recorded: once closed, a late phase (a task the batch left running) is background work
        self.open = True


_shared: ContextVar[SharedWork | None] = ContextVar("aiwatch_shared_work", default=None)


def shared_work() -> SharedWork | None:
    """The shared work being recorded in this context (outside any request), if any."""
    work = _shared.get()
    return work if work is not None and work.open else None


def share_work(work: SharedWork | None) -> Any:
    """Make ``work`` receive the phases and fallbacks recorded outside a request in this context; returns the token
    that :func:`end_shared_work` takes."""
    return _shared.set(work)


def end_shared_work(work: SharedWork, token: Any) -> None:
    """Stop recording into ``work`` (what is recorded later goes where it would outside any request)."""
    work.open = False
    _shared.reset(token)


def current_timeline() -> RequestTimeline | None:
    """The timeline of the request being handled in this context, if any."""
    return _timeline.get()


def traffic_class_to_forward() -> str | None:
    """The traffic class an outgoing call made now carries to the service it calls (the ``aiwatch-traffic-class``
    header or gRPC metadata): the current request's, when it is not its service's default class (a route rule's
    class once the request is routed, as it is recorded); ``None`` outside a request or for default-class requests,
    which need no header."""
    tl = _timeline.get()
    if tl is None:
        return None
    traffic_class = tl.traffic_class
    traffic = tl.recorder.traffic
    if traffic.has_routes and tl.route_of is not None:
        # a route rule names the class from the moment the request is routed, not only once it finishes
        try:
            route = tl.route_of()
            if route:
                traffic_class = traffic.for_route(route, traffic_class)
        except Exception as exc:
            record_error("route", exc, tl.recorder.metrics)
    return None if traffic_class == traffic.default else traffic_class


def call_site() -> tuple[RequestTimeline | None, str]:
    """Where an outgoing call is made from: the current request's timeline and the innermost open phase's name
    (``overhead`` when no phase is open; ``(None, "")`` outside a request). Client integrations label their calls
    with it, so that ``aiwatch diagnose`` can split that phase into the network and the callee's own time."""
    tl = _timeline.get()
    if tl is None:
        return None, ""
    frame = _frame.get()
    return tl, frame[0] if frame is not None else OVERHEAD


def set_model(model: str, version: str = "") -> None:
    """Set the model label for the current request's phases (and its overhead), and that model's ``version`` (the
    ``model_version`` label of those phases, ``""`` for none), so that two versions serving side by side (a canary)
    can be told apart. The request's phases that name no model are labelled with the model it ends with, those
    recorded before the call included (as its overhead, tokens and fallbacks). Both pass the cardinality guard like
    every label that comes from traffic. Phases that name a model (``phase(name, model=...)``) keep it, and get no
    version unless it is the request's. No-op outside a request, and once it is recorded (another thread's call, as
    its ``finish()`` runs). Never raises: a value the guard cannot take (a list)
    is counted as aiwatch's error (component ``metrics``) and the labels stay as they were."""
    tl = _timeline.get()
    if tl is not None:
        guard = tl.recorder.guard
        try:
            model_label = guard.fold("model", model)
            version_label = guard.fold("model_version", version) if version else ""
        except Exception as exc:  # TypeError: unhashable
            record_error("metrics", exc, tl.recorder.metrics)
            return
        _guarded(tl, _set_model, tl, model_label, version_label, model)


def _set_model(tl: RequestTimeline, label: str, version: str, name: Any) -> None:
    # in one guarded step with the phases' move, and not once finished: another thread's set_model (a request's
    # context copied into a pool) changed tl.model while finish() read it, which recorded the request's phases under
    # one model and its overhead (or fallbacks, or version errors) under the other
    if tl.finished:
        return
    phases = tl.phases
    if phases and label != tl.model:
        # the phases under the request's model without naming it go to the new one, adding up with those there
        named, old = tl.named or (), tl.model
        for key in [key for key in phases if key[1] == old and key not in named]:
            moved = (key[0], label)
            phases[moved] = phases.get(moved, 0.0) + phases.pop(key)
    tl.model, tl.version, tl.model_name = label, version, name


#: An open phase: ``[name, model, parent frame, start, time of the phases inside it, span, (token of the context
#: that made the span current, token of _entered), the request it was opened in, the phase object that opened
#: it, the sync generator's Python frame that opened it (else None)]``. A list rather than an object: built on every
#: phase entry, a list literal costs a third of a class's ``__init__``.
_Frame = list[Any]
_NAME, _MODEL, _PARENT, _START, _CHILD, _SPAN, _TOKEN, _TIMELINE, _OPENER, _GENERATOR = range(10)
_CO_GENERATOR = inspect.CO_GENERATOR
_getframe = sys._getframe
#: A phase object's ``_open`` once it was entered again while open (one object shared by concurrent uses): which
#: of its frames an exit in another context ends cannot be told, so none is
_SHARED: _Frame = []

#: Set where a phase span is made current, so that the phase's end can tell whether it runs in that same context
#: (its token resets there only), before it detaches the span there
_entered: ContextVar[None] = ContextVar("aiwatch_phase_entered", default=None)


_valid_names: set[str] = set()
_valid_lock = threading.Lock()

#: Held while a phase recorded outside any request (a batch's shared work, background work) is added up, or its
#: enclosing phase's child time: a batch's phases end in several threads at once too. A request's phases have their
#: own lock (:func:`_shared_lock`). Reentrant: a garbage collection in the block can end a phase (a generator's).
_add_lock = threading.RLock()
#: Held while a request's own lock is made (:func:`_shared_lock`)
_lock_lock = threading.Lock()
_get_ident = threading.get_ident
#: A build without the GIL (3.13t): the owner's unlocked read-add-writes and the other threads' could then run at the
#: same time, so every thread takes the request's lock
_FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
_OWNER_OF_NONE = -1  # no thread's ident (threading.get_ident() is never negative)


def _renew_valid_lock() -> None:
    global _valid_lock, _add_lock, _lock_lock
    _valid_lock = threading.Lock()
    _add_lock = threading.RLock()
    _lock_lock = threading.Lock()


def _shared_lock(tl: RequestTimeline) -> Any:
    """The lock of ``tl`` for this thread, made when a thread other than its owner first needs it. From then on its
    owner takes it too; a thread other than the owner first waits for what the owner began with no lock: the owner
    marks ``busy`` and then reads ``lock``, the others set ``lock`` and then read ``busy``, so (with the GIL: one
    order of all reads and writes) when the owner saw no lock, the other thread sees its mark until it is done."""
    lock = tl.lock
    if lock is None:
        with _lock_lock:
            lock = tl.lock
            if lock is None:
                # reentrant: a garbage collection inside it can end a phase of the same request (a generator's)
                lock = tl.lock = threading.RLock()
                renew_at_fork(tl)  # (RequestTimeline._renew_after_fork)
    if tl.busy and tl.owner != _get_ident():  # (the owner's own mark, in a collection inside it: not waited for)
        while tl.busy:
            # a child forked while the owner was marked has no owner thread to unmark: waiting hung it
            if tl.owner not in sys._current_frames():
                tl.busy = False
                break
            time.sleep(0)  # a few bytecodes of the owner's: let it run
    return lock


R = TypeVar("R")


def _guarded(tl: RequestTimeline, fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)``, changing or reading ``tl``'s phases, calls or named phases: with no lock in its owner's thread
    while no other thread touched it, else under its lock (:func:`_shared_lock`).

    Where a function call costs on the request path, at every phase or chunk, the owner's branch below is written
    out in place (a phase's exit, :meth:`RequestTimeline.add`, :func:`aiwatch.genai.record_tokens`): a change to the
    scheme changes them all."""
    if tl.owner == _get_ident():
        busy = tl.busy
        tl.busy = True
        try:
            if tl.lock is None:
                return fn(*args)
        finally:
            tl.busy = busy
    with _shared_lock(tl):
        return fn(*args)


def _add_child(frame: _Frame, seconds: float) -> None:
    """Add ``seconds`` to the time of the phases inside the open phase ``frame`` (that of its request's phases)."""
    tl = frame[_TIMELINE]
    if tl is None:
        with _add_lock:
            frame[_CHILD] += seconds
    else:
        _guarded(tl, _add_to_child, frame, seconds)


def _add_to_child(frame: _Frame, seconds: float) -> None:
    frame[_CHILD] += seconds


at_fork_in_child(_renew_valid_lock)


def _check_phase_name(name: str) -> None:
    if name in _valid_names:
        return
    if not isinstance(name, str) or not is_token(name):
        raise ValueError(f"phase name must be a non-empty token of letters, digits and !#$%&'*+-.^_`|~, "
                         f"got {name!r}")
    if name in RESERVED_PHASES:
        raise ValueError(f"phase name {name!r} is reserved: aiwatch computes it")
    # names made from data are checked again, not remembered, past the bound; and a name longer than a label value
    # can be never is: 10 000 tool names of 50 kB from request bodies held 500 MB for the process's life
    if len(name) <= MAX_VALUE_LENGTH:
        with _valid_lock:
            if len(_valid_names) < _MAX_CACHED_CHILDREN:
                _valid_names.add(name)


class phase:
    """Time a block as a named phase of the current request.

    Works as a context manager (``with`` / ``async with``) and as a decorator on sync and async functions. One
    instance may be reused and shared between concurrent requests: its per-use state lives in the context.
    """

    __slots__ = ("_open", "model", "name")

    def __init__(self, name: str, model: str | None = None) -> None:
        if name not in _valid_names:  # the common case inlined: a name already checked (one per call site)
            _check_phase_name(name)
        self.name = name
        self.model = model if model is None or model.__class__ is str else _label_or_none(name, model)
        #: the frame this object opened last, for an exit in another context than its entry (below)
        self._open: _Frame | None = None

    # not mutated by mutmut (scripts/mutation.sh): its trampoline would be _getframe(1) below, so no phase would be
    # seen opened by a generator and the generator tests failed with no mutant active
    def __enter__(self) -> phase:  # pragma: no mutate block
        tl = _timeline.get()
        parent = _frame.get()
        if tl is None:
            frame = [self.name, self.model, parent, _clock(), 0.0, None, None, tl, self, None]
        else:
            caller = _getframe(1)
            if tl.held:  # (rare: a sync generator of the request holds a phase open; ``held`` may change in
                # another thread, one stepping another generator of the request: read under the scheme's lock)
                parent = _guarded(tl, _held_parent, tl, parent, caller)
            if caller.f_code.co_flags & _CO_GENERATOR:
                frame = [self.name, self.model, parent, _clock(), 0.0, None, None, tl, self, caller]
                _guarded(tl, _hold, tl, frame)
            else:
                frame = [self.name, self.model, parent, _clock(), 0.0, None, None, tl, self, None]
            if tl.tracer is not None:
                _start_phase_span(tl, frame)
        _frame.set(frame)
        self._open = frame if self._open is None else _SHARED
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        end = _clock()
        frame = _frame.get()
        if frame is None or frame[8] is not self:  # literal indexes here (_NAME...): no global look-ups
            self._exit_elsewhere(end, exc)
            return
        if self._open is frame:
            self._open = None
        if frame[9] is not None:
            _release(frame)
        parent = frame[2]
        _frame.set(parent)
        elapsed = end - frame[3]
        tl = frame[7]
        if tl is not None and (parent is None or parent[7] is tl) and tl.owner == _get_ident():
            # the common case, inlined: the request's own thread, alone in it (RequestTimeline.add)
            busy = tl.busy
            tl.busy = True
            if tl.lock is None:
                try:
                    if parent is not None:
                        parent[4] += elapsed
                    exclusive = elapsed - frame[4]
                    if exclusive < 0.0:
                        exclusive = 0.0
                    if frame[5] is None and not tl.finished:  # add to the request it was opened in
                        model = self.model
                        if model is None:
                            key = (self.name, tl.model)
                        else:
                            key = (self.name, model)
                            if model == tl.model:
                                tl._keep(key)
                        phases = tl.phases
                        phases[key] = phases.get(key, 0.0) + exclusive
                        return
                finally:
                    tl.busy = busy
                _finish_phase(frame, exclusive, exc)
                return
            tl.busy = busy
        if parent is not None:
            _add_child(parent, elapsed)
        exclusive = elapsed - frame[4]
        if exclusive < 0.0:
            exclusive = 0.0
        if frame[5] is None and tl is not None and not tl.finished:
            tl.add(self.name, self.model, exclusive)
            return
        _finish_phase(frame, exclusive, exc)

    def _exit_elsewhere(self, end: float, exc: BaseException | None) -> None:
        """End the phase this object opened from a context whose open phase is not this one: a generator holding it,
        iterated by Starlette's StreamingResponse (each step in a thread of its own, in a copy of the request's
        context), or dropped unclosed and closed by the garbage collector in another thread. That context's open
        phases are left as they are: before, one of the same name was taken for this one (and this one's span was
        never ended). Still "out of order" when this phase is open in this very context, was opened outside any
        request (its time would go to the request now current), or this object was entered again while open (a
        shared one: which of its uses ends cannot be told)."""
        frame = self._open
        current = _frame.get()
        while current is not None and current is not frame:
            current = current[_PARENT]
        tl = frame[_TIMELINE] if frame else None
        if not frame or tl is None or current is not None:
            record_error("phase", RuntimeError(f"phase {self.name!r} exited out of order"))
            return
        self._open = None
        if frame[_GENERATOR] is not None:
            _release(frame)
        # the context it made current is left as it is: it was undone with the step or request it began in, and
        # restoring it here could make a finished request's span current in this thread's request
        frame[_TOKEN] = None
        elapsed = end - frame[_START]
        parent = frame[_PARENT]
        if parent is not None:
            _add_child(parent, elapsed)
        exclusive = elapsed - frame[_CHILD]
        if tl.finished or _timeline.get() is tl:
            _finish_phase(frame, exclusive if exclusive > 0.0 else 0.0, exc)
            return
        # outside its request while that still runs (another thread, or another request in its thread): a generator
        # dropped unclosed, collected there; its end is the collection's time, not the work's: in no histogram
        _end_phase_span(frame, exc, tl)
        record_error("phase", RuntimeError(
            f"phase {self.name!r} ended outside its request while that ran (in another thread, or another "
            "request), so its time is in no request: was it in a generator dropped without close(), which the "
            "garbage collector closed there? Close it (contextlib.closing) so that the phase ends with the "
            "response"), tl.recorder.metrics)

    async def __aenter__(self) -> phase:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return cast(F, wrapper)


def _held_parent(tl: RequestTimeline, parent: _Frame | None, caller: Any) -> _Frame | None:
    """The parent of a phase opened by ``caller`` (a Python frame) where ``parent`` is open: the innermost phase a
    sync generator running on this stack holds open under ``parent``, else ``parent``. Starlette's StreamingResponse
    runs each step of a sync generator in a fresh copy of the request's context: a phase the generator holds across
    its yields is open only in the copy of the step that opened it, so one opened inside it in a later step was not
    nested under it (its time counted in both, the overhead clamped at 0)."""
    held = tl.held or ()
    found = parent
    while True:
        for frame in held:
            if frame[_PARENT] is found and _on_stack(frame[_GENERATOR], caller):
                found = frame
                break
        else:
            return found


def _on_stack(generator: Any, caller: Any) -> bool:
    while caller is not None:
        if caller is generator:
            return True
        caller = caller.f_back
    return False


def _hold(tl: RequestTimeline, frame: _Frame) -> None:
    """Remember a phase a sync generator opened (:func:`_held_parent`), under the request's lock when one is needed:
    generators of one request stepped in several threads at once lost a frame made or removed meanwhile (the list
    made twice; another frame deleted by a stale index: 1 in 48 000 left held)."""
    held = tl.held
    if held is None:
        held = tl.held = []
    held.append(frame)


def _release(frame: _Frame) -> None:
    """Forget a phase a sync generator held (:func:`_held_parent`), once it ends."""
    tl = frame[_TIMELINE]
    _guarded(tl, _unhold, tl, frame)


def _unhold(tl: RequestTimeline, frame: _Frame) -> None:
    # by identity: list.remove compares the other frames, lists, item by item
    held = tl.held
    if held is None:
        return
    for i, other in enumerate(held):
        if other is frame:
            del held[i]
            return


def _start_phase_span(tl: RequestTimeline, frame: _Frame) -> None:
    try:
        parent = frame[_PARENT]
        parent_span = parent[_SPAN] if parent is not None and parent[_SPAN] else tl.span
        if parent_span is None:
            return
        current = trace.get_current_span()
        # (not for the phase a sync generator holds, its parent in a later step: its span is not current there)
        if (current is not parent_span and parent is _frame.get() and current.is_recording()
                and current.get_span_context().trace_id == parent_span.get_span_context().trace_id):
            # a span opened in the request's trace since (the app's own, FastAPI's "fastapi.endpoint"): the phase
            # runs inside it, so it is the phase's parent, as for any span started there
            parent_span = current
        span = frame[_SPAN] = tl.tracer.start_span(frame[_NAME], context=trace.set_span_in_context(parent_span))
        # the name the app gave, not the label the cardinality guard may have folded it to (as gen_ai.request.model)
        model = frame[_MODEL] or tl.model_name or tl.model
        if model:
            span.set_attribute("aiwatch.model", text_or_value(model))
        # current while the phase runs: the spans of calls made in it (aiwatch's clients, OpenTelemetry's
        # instrumentations) and the app's own spans are its children
        frame[_TOKEN] = (context.attach(trace.set_span_in_context(span)), _entered.set(None))
    except Exception as exc:
        record_error("tracing", exc, tl.recorder.metrics)


def _end_phase_span(frame: _Frame, exc: BaseException | None, tl: RequestTimeline | None) -> None:
    span = frame[_SPAN]
    if span is not None:
        try:
            tokens = frame[_TOKEN]
            if tokens is not None and _in_entering_context(tokens[1]):
                context.detach(tokens[0])
            # an Exception only, as OpenTelemetry's use_span: a GeneratorExit or CancelledError is a phase cut
            # short (a streamed response the client left, a generator closed early), not one that failed
            if isinstance(exc, Exception):
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
        except Exception as span_exc:
            record_error("tracing", span_exc, tl.recorder.metrics if tl else None)


def _finish_phase(frame: _Frame, exclusive: float, exc: BaseException | None) -> None:
    tl = frame[_TIMELINE]
    _end_phase_span(frame, exc, tl)
    if tl is None:
        _record(_timeline.get(), frame[_NAME], frame[_MODEL], exclusive)
    elif not tl.finished:
        _record(tl, frame[_NAME], frame[_MODEL], exclusive)
    else:
        record_error("phase", RuntimeError(
            f"phase {frame[_NAME]!r} ended after its request was recorded, so its time is in no request: was it "
            "in a generator dropped without close() or an async generator dropped without aclose() (the garbage "
            "collector or asyncio then closes it later, maybe in another thread)? Close it (contextlib.closing, "
            "contextlib.aclosing) so that the phase ends with the response"), tl.recorder.metrics)


def _mark_finished(tl: RequestTimeline) -> None:
    tl.finished = True


def _in_entering_context(token: Any) -> bool:
    """Whether this runs in the context where the phase of ``token`` (of :data:`_entered`) made its span current;
    not in the task asyncio closes a dropped async generator in, which runs in a copy of a context: there the span's
    token cannot be detached (OpenTelemetry logs a traceback), and it need not be (the copy goes with the task)."""
    try:
        _entered.reset(token)
    except ValueError:
        return False
    return True


def record_phase(name: str, seconds: float, model: str | None = None) -> None:
    """Record a duration measured elsewhere (in seconds) as a phase of the current request.

    Outside a request it is observed directly for the default service, into
    ``aiwatch_background_phase_duration_seconds``. ``seconds`` is a real number (``float``,
    ``int``, a numpy number, ``Decimal``, ``Fraction``) from 0 to 1e9 (about 32 years: a Unix timestamp is not a
    duration). Anything else (negative, NaN, infinite, past 1e9, a ``bool``, a string, ``None``) is a bug in the
    caller's clock arithmetic: it is counted as aiwatch's error (component ``phase``, in the request's metrics) and
    skipped; nothing is raised, and the request's other signals are kept. A bad ``name`` raises ValueError.
    """
    _check_phase_name(name)
    tl = _timeline.get()
    if seconds.__class__ is not float or not 0.0 <= seconds <= MAX_SECONDS:  # the common case: one test
        checked = as_seconds(seconds)
        if checked is None:
            record_error("phase", ValueError(f"phase {name!r} got an invalid duration {shown(seconds)}"),
                         metrics_of(tl))
            return
        seconds = checked
    if model is not None and model.__class__ is not str:
        model = _label_or_none(name, model)
    frame = _frame.get()
    if frame is not None and (tl is not None or shared_work() is not None):
        _add_child(frame, seconds)  # keep the enclosing phase exclusive of this one
    _record(tl, name, model, seconds)


def add_measured_phase(tl: RequestTimeline, name: str, seconds: float) -> None:
    """:func:`record_phase` of the current request ``tl`` for an integration's own phase (a gRPC message's
    (de)serialization), timed on this module's clock: ``name`` is a valid phase name and ``seconds`` the difference of
    two readings of that clock, so neither is checked again. Under the request's model, and exclusive of a phase the
    app has open."""
    frame = _frame.get()
    if frame is not None:
        _add_child(frame, seconds)  # keep the enclosing phase exclusive of this one
    tl.add(name, None, seconds)


def _label_or_none(name: str, model: Any) -> Any:
    """A phase's ``model`` that is not a str: itself when a label can be made of it (an int), else ``None`` (the
    request's model) and aiwatch's error (component ``phase``): a list raised TypeError (unhashable) into the app."""
    try:
        hash(model)
    except Exception:
        tl = _timeline.get()
        record_error("phase", TypeError(f"phase {name!r} got a model that is no label: {shown(model)}"),
                     metrics_of(tl))
        return None
    return model


def _record(tl: RequestTimeline | None, name: str, model: str | None, seconds: float) -> None:
    if tl is not None:
        tl.add(name, model, seconds)
        return
    work = shared_work()
    if work is not None:  # a batch's: each of its requests takes it (MicroBatcher), no background work
        key = (name, model)
        with _add_lock:
            work.phases[key] = work.phases.get(key, 0.0) + seconds
        return
    recorder = recorder_outside_requests("phase")
    if recorder is None:
        return
    try:
        m = recorder.metrics
        guard = recorder.guard
        model_label = guard.fold("model", model) if model else recorder.model
        m.child(m.background_phase_duration, (recorder.service, model_label, guard.fold("phase", name))
                ).observe(seconds)
    except Exception as exc:
        record_error("metrics", exc, recorder.metrics)
    global _told_of_background
    if not _told_of_background:
        _told_of_background = True
        logger.warning(
            "aiwatch: phase %r was recorded outside any request, into aiwatch_background_phase_duration_seconds, "
            "not into a request's phases. If it ran for a request: code run by loop.run_in_executor() or a "
            "ThreadPoolExecutor does not see the request (context variables do not follow it); run it with "
            "asyncio.to_thread() or loop.run_in_executor(None, contextvars.copy_context().run, fn). This is said "
            "once.", name[:100])


class RequestRecorder:
    """Starts and finishes request timelines and turns them into metrics; shared by every server integration
    (which get theirs from :func:`aiwatch.recording.make_recorder`).

    Defaults: the global registry's metrics, ``$AIWATCH_SERVICE`` / ``$OTEL_SERVICE_NAME`` / ``app``, a new guard
    from :func:`aiwatch.cardinality.guard_for`, and the global tracer provider (see :mod:`aiwatch.tracing`).
    ``begin*`` and ``finish`` never raise: aiwatch's failures are counted and the request goes on.
    """

    def __init__(self, metrics: Metrics | None = None, service: str | None = None, model: str = "",
                 guard: LabelGuard | None = None, tracer_provider: Any = None,
                 slow_threshold: float | None = None, model_version: str = "",
                 traffic_classes: TrafficClasses | None = None) -> None:
        from aiwatch.tracing import TracerSource

        self.metrics = metrics if metrics is not None else default_metrics()
        self.service = service_label(service)
        given = SLOW_THRESHOLD.seconds() if slow_threshold is None else slow_threshold
        # a float: compared with every request's duration
        threshold = period(given, "slow_threshold" if slow_threshold is not None else SLOW_THRESHOLD.name)
        warn_implausible(threshold, "slow_threshold" if slow_threshold is not None else SLOW_THRESHOLD.name,
                         above=LATENCY_BUCKETS[-1],
                         effect="the largest bucket of aiwatch_request_duration_seconds, so the slow-request "
                                "counters count almost nothing, and no latency SLO of the rules can be set that high")
        #: Requests slower than this count in the slow-request counters (the tail diagnose splits).
        self.slow_threshold = threshold
        #: The end of every Server-Timing value: overhead, and the total with this service's name as its ``desc``.
        self.timing_tail = timing_tail(self.service)
        try:
            self.metrics.child(self.metrics.slow_threshold, (self.service,)).set(threshold)
        except Exception as exc:
            record_error("metrics", exc, self.metrics)
        self.guard = guard if guard is not None else guard_for(self.metrics)
        self.model = self.guard.fold("model", model) if model else ""
        self.model_name: Any = model
        self.model_version = self.guard.fold("model_version", model_version) if model_version else ""
        #: The traffic classes requests are told apart by (the ``traffic_class`` label).
        self.traffic = traffic_classes if traffic_classes is not None else TrafficClasses()
        #: Seconds between two samples of an event loop's delay (:meth:`watch_loop`); ``None``: not sampled.
        self.loop_interval = loop_interval()
        self._loop_seen: weakref.ref[asyncio.AbstractEventLoop] | None = None
        #: Every loop this recorder had watched (not kept alive): requests served by turns on two loops (two threads
        #: each running one, sharing the app) asked the samplers' table, under its lock, on every request
        self._loops_watched: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.tracing = TracerSource(tracer_provider)
        try:
            self._in_flight = adder(self.metrics.child(self.metrics.requests_in_flight, (self.service,)))
        except Exception as exc:  # never fail the app's start-up: requests are served, in-flight goes unrecorded
            record_error("metrics", exc, self.metrics)
            self._in_flight = _ignore
        # Histogram children by label values, for this recorder's service (bounded: labels pass the guard).
        self._request_children: dict[tuple[str, str, str, str], Any] = {}
        self._phase_children: dict[tuple[str, str], Any] = {}
        #: (model version, the request's model) -> that version's phase children (only while versions are set)
        self._versioned_children: dict[tuple[str, str], dict[tuple[str, str], Any]] = {}
        self._size_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._stream_children: dict[str, tuple[Any, Any]] = {}

    def watch_loop(self) -> None:
        """Have the running event loop's delay sampled into ``aiwatch_event_loop_delay_seconds{service}``, and the time
        watched into ``aiwatch_event_loop_sampled_seconds_total{service}``, and the time of its last sample into
        ``aiwatch_event_loop_last_sample_timestamp_seconds{service}``, and the share of the last 5 minutes it stood
        still in stalls that ended in them into ``aiwatch_event_loop_stalled_ratio{service}``
        (:mod:`aiwatch.eventloop`): an asyncio integration calls it on every request; only the first on a loop does
        more than two lookups. Never raises."""
        if self.loop_interval is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop
            return
        seen = self._loop_seen
        if seen is not None and seen() is loop:
            return
        try:
            if loop in self._loops_watched:
                self._loop_seen = weakref.ref(loop)
                return
        except TypeError:  # a loop type that cannot be weakly referenced (below)
            pass
        try:
            child = self.metrics.child(self.metrics.event_loop_delay, (self.service,))
            sampled = self.metrics.child(self.metrics.event_loop_sampled, (self.service,))
            stamp = self.metrics.child(self.metrics.event_loop_last_sample, (self.service,))
            share = self.metrics.child(self.metrics.event_loop_stalled, (self.service,))
        except Exception as exc:
            record_error("event_loop", exc, self.metrics)
            return
        watch(loop, self.loop_interval, self.metrics, child, sampled, stamp, share)
        try:
            self._loop_seen = weakref.ref(loop)
            self._loops_watched.add(loop)
        except TypeError as exc:  # a loop type that cannot be weakly referenced: asked again next request
            record_error("event_loop", exc, self.metrics)

    def begin(self, span_name: str = "request", parent_context: Any = None,
              attributes: dict[str, Any] | None = None, start: float | None = None) -> RequestTimeline:
        """Start a request: a new timeline set as current in this context, and a SERVER span if tracing is on."""
        return self.begin_with(self.tracing.tracer(), span_name, parent_context, attributes, start)

    def begin_with(self, tracer: Any, span_name: str = "request", parent_context: Any = None,
                   attributes: dict[str, Any] | None = None, start: float | None = None,
                   span_start: float | None = None) -> RequestTimeline:
        """:meth:`begin` with the tracer already looked up (``self.tracing.tracer()``; ``None``: no span), for an
        integration that builds the span's parent context and attributes only when tracing is on. ``span_start``:
        when the request arrived (a ``perf_counter`` time before now), the span's start, when it began before its
        timeline (a thread-pool server's call waited for a worker)."""
        tl = RequestTimeline(self, _clock() if start is None else start, self.model)
        try:
            self._in_flight(1)
        except Exception as exc:
            record_error("metrics", exc, self.metrics)
        if tracer is not None:
            try:
                start_time = None
                if span_start is not None:
                    start_time = time.time_ns() - int(max(_clock() - span_start, 0.0) * 1e9)
                span = tl.span = tracer.start_span(span_name, context=parent_context, kind=trace.SpanKind.SERVER,
                                                   attributes=attributes, start_time=start_time)
                tl.owns_span = True
                tl.tracer = tracer
                _take_trace_id(tl, span)
            except Exception as exc:
                record_error("tracing", exc, self.metrics)
        _timeline.set(tl)
        if _frame.get() is not None:  # a phase left open in this context: the new request starts outside it
            _frame.set(None)
        return tl

    def begin_in_span(self, span: Any, start: float | None = None) -> RequestTimeline:
        """Start a request whose SERVER span was started by someone else (OpenTelemetry's instrumentation) and is
        ended by them: aiwatch's phase spans become its children when aiwatch traces, the exemplars carry its trace
        id, and :meth:`finish` neither renames nor ends it."""
        tl = self.begin_with(None, start=start)
        try:
            tracer = self.tracing.tracer()
            if tracer is not None:
                tl.span = span
                tl.tracer = tracer
            _take_trace_id(tl, span)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)
        return tl

    def _phase_child(self, key: tuple[str, str], version: str = "",
                     children: dict[tuple[str, str], Any] | None = None) -> Any:
        """The phase histogram's child of ``key`` (phase name, model) with the ``model_version`` label ``version``,
        cached in ``children`` (default: the unversioned children)."""
        if children is None:
            children = self._phase_children
        child = children.get(key)
        if child is None:
            name, model = key
            # phase names and models (phase(..., model=)) pass the cardinality guard here, once per admitted value;
            # values folded into the overflow are not cached, so names made from data cannot grow the cache
            labels = (self.guard.fold("model", model) if model else model,
                      name if name == OVERHEAD else self.guard.fold("phase", name))
            child = self.metrics.child(self.metrics.phase_duration, (self.service, labels[0], version, labels[1]))
            if labels == key[::-1] and len(children) < _MAX_CACHED_CHILDREN:
                children[key] = child
        return child

    def _observe_versioned(self, tl: RequestTimeline, overhead_key: tuple[str, str],
                           exemplar: dict[str, str] | None) -> tuple[float, Any]:
        """Observe the phases of a request whose model has a version (the version labels the phases of the request's
        own model only); returns their sum and the overhead's child."""
        found = self._versioned_children.get((tl.version, tl.model))
        if found is None:
            found = {}
            if len(self._versioned_children) < _MAX_CACHED_CHILDREN:
                self._versioned_children[(tl.version, tl.model)] = found
        named = 0.0
        for phase_key, seconds in tl.phases.items():
            if phase_key[1] == tl.model:
                child = found.get(phase_key) or self._phase_child(phase_key, tl.version, found)
            else:
                child = self._phase_children.get(phase_key) or self._phase_child(phase_key)
            observe(child, seconds, exemplar)
            named += seconds
        return named, found.get(overhead_key) or self._phase_child(overhead_key, tl.version, found)

    def observe_late_phase(self, tl: RequestTimeline, name: str, seconds: float) -> None:
        """Record a phase of the request's model that ran after ``tl`` finished (a unary gRPC response serialized
        after its caller cancelled and the RPC was recorded): in the phase histogram only, outside the request's
        total and overhead."""
        try:
            key = (name, tl.model)
            if tl.version:
                children = self._versioned_children.get((tl.version, tl.model))
                child = self._phase_child(key, tl.version, children if children is not None else {})
            else:
                child = self._phase_children.get(key) or self._phase_child(key)
            if seconds.__class__ is not float or not 0.0 <= seconds <= MAX_SECONDS:
                seconds = seconds_of(seconds, f"phase {name!r}'s duration")  # ValueError: counted below
            observe(child, seconds)
        except Exception as exc:
            record_error("metrics", exc, self.metrics)

    def stream_children(self, route: str) -> tuple[Any, Any]:
        """The time-to-first-chunk and time-between-chunks children of ``route``, for
        :class:`aiwatch.streaming.ChunkTimer`."""
        label = self.guard.fold("route", route)
        found = self._stream_children.get(label)
        if found is None:
            m = self.metrics
            found = (m.child(m.time_to_first_chunk, (self.service, label)),
                     m.child(m.time_between_chunks, (self.service, label)))
            if len(self._stream_children) < _MAX_CACHED_CHILDREN:
                self._stream_children[label] = found
        return found

    def _observe_sizes(self, route: str, method: str, request_bytes: int | None,
                       response_bytes: int | None) -> None:
        children = self._size_children.get((route, method))
        if children is None:
            m = self.metrics
            children = (m.child(m.request_size, (self.service, route, method)),
                        m.child(m.response_size, (self.service, route, method)))
            if len(self._size_children) < _MAX_CACHED_CHILDREN:
                self._size_children[(route, method)] = children
        # a size is an int from 0 to 2**53: one past float64's range failed the request's other metrics
        if request_bytes is not None:
            if request_bytes.__class__ is not int or not 0 <= request_bytes <= MAX_COUNT:
                request_bytes = self._size(request_bytes, "request_bytes")
            if request_bytes is not None:
                observe(children[0], request_bytes)
        if response_bytes is not None:
            if response_bytes.__class__ is not int or not 0 <= response_bytes <= MAX_COUNT:
                response_bytes = self._size(response_bytes, "response_bytes")
            if response_bytes is not None:
                observe(children[1], response_bytes)

    def _size(self, size: Any, what: str) -> int | None:
        """A body size that is not a plain int within 0 to 2**53 as a count of bytes (a numpy integer), or
        ``None`` and aiwatch's error (component ``metrics``) when it is none."""
        number = as_count(size)
        if number is None:
            record_error("metrics", ValueError(f"{what} must be an integer from 0 to 2**53, got {shown(size)}"),
                         self.metrics)
        return number

    def _duration(self, start: Any, end: Any) -> float | None:
        """A request's duration that is not a plain float from 0 to 1e9 s: as seconds (from numpy clock readings),
        or ``None`` and aiwatch's error (component ``metrics``) when ``end - start`` is none."""
        total = as_elapsed(start, end)
        if total is None:
            record_error("metrics", ValueError(f"a request's duration must be 0 to 1e9 seconds; it started at "
                                               f"{shown(start)} and ended at {shown(end)}"), self.metrics)
        return total

    def finish(self, tl: RequestTimeline, route: str, method: str, status: str,
               error: BaseException | None = None, end: float | None = None, request_bytes: int | None = None,
               response_bytes: int | None = None, end_span: bool = True) -> None:
        """Record the request's duration, its phases and its overhead, end its span (when aiwatch started it) and
        leave the context. The integration describes the span first (:mod:`aiwatch.semconv`); ``error`` is for the
        metrics' caller, not recorded on the span here. ``request_bytes`` / ``response_bytes``: the HTTP bodies'
        sizes, when the integration measured them: a size that is not an integer from 0 to 2**53 (a negative one,
        a float: the integration's mistake) is counted as aiwatch's error (component ``metrics``) and left out. So is
        a duration (``end``, default now, minus the start) that is no number of seconds from 0 to 1e9 (a NaN, an
        ``end`` from another clock): the request's duration and overhead are left out, its phases and other signals
        recorded. ``end_span`` false: a span aiwatch started is left for the integration to end (it may still
        learn of an exception)."""
        now = _clock() if end is None else end
        # from here no thread changes tl.phases (RequestTimeline.add refuses), which are read below
        _guarded(tl, _mark_finished, tl)
        m = self.metrics
        try:
            self._in_flight(-1)
            try:
                total: float | None = now - tl.start
            except Exception:  # a start or an end that is no number (TypeError), or past float64 (OverflowError)
                total = None
            if total.__class__ is not float or not 0.0 <= total <= MAX_SECONDS:
                total = self._duration(tl.start, now)  # rare: NaN, numpy, a start and an end from two clocks
            exemplar = {"trace_id": tl.trace_id} if tl.trace_id else None
            traffic_class = tl.traffic_class
            child = None
            if self.traffic.has_routes:
                # the rule of the route itself, also once its label folds into the overflow value
                traffic_class = tl.traffic_class = self.traffic.for_route(route, traffic_class)
                route = self.guard.fold("route", route)
            else:
                # the common case: a known route's child, cached under the route as the guard admitted it (a value
                # the guard admitted stays admitted, so folding it again would give it back unchanged)
                child = self._request_children.get((route, method, status, traffic_class))
                if child is None or route == OVERFLOW:  # a route named as the fold's: counted as a fold, as before
                    child = None
                    route = self.guard.fold("route", route)
            if child is None:
                key = (route, method, status, traffic_class)
                child = self._request_children.get(key)
                if child is None:
                    child = m.child(m.request_duration, (self.service, *key))
                    if len(self._request_children) < _MAX_CACHED_CHILDREN:
                        self._request_children[key] = child
            if total is not None:
                observe(child, total, exemplar)
            overhead_key = (OVERHEAD, tl.model)
            if not tl.version:
                named = 0.0
                phase_children = self._phase_children
                for phase_key, seconds in tl.phases.items():
                    observe(phase_children.get(phase_key) or self._phase_child(phase_key), seconds, exemplar)
                    named += seconds
                overhead_child = phase_children.get(overhead_key) or self._phase_child(overhead_key)
            else:
                named, overhead_child = self._observe_versioned(tl, overhead_key, exemplar)
            if total is not None:
                overhead = total - named
                if overhead < 0.0:
                    overhead = 0.0
                    m.child(m.overhead_clamped, (self.service,)).inc()
                observe(overhead_child, overhead, exemplar)
                if total > self.slow_threshold:
                    self._count_slow(tl, overhead)
            if request_bytes is not None or response_bytes is not None:
                self._observe_sizes(route, method, request_bytes, response_bytes)
            if tl.tokens is not None:
                tl.tokens.observe(self, tl, status)
            if tl.version and is_error_status(status):
                m.child(m.model_version_errors, (self.service, tl.model, tl.version)).inc()
            if tl.degraded:
                self._count_degraded(tl.degraded, tl.model)
        except Exception as exc:
            record_error("metrics", exc, m)
        if tl.span is not None and (tl.tokens is not None or tl.degraded or tl.version
                                    or tl.traffic_class != self.traffic.default):
            self._describe_extras(tl)
        if tl.span is not None and tl.owns_span and end_span:
            try:
                self.tracing.end_server_span(tl.span)
            except Exception as exc:
                record_error("tracing", exc, m)
        if _timeline.get() is tl:
            _timeline.set(None)

    def _count_degraded(self, degraded: list[tuple[str, str | None]], model: str) -> None:
        """Count a response's fallbacks once per ``(reason, model)``, ``model`` standing for the unnamed ones."""
        m = self.metrics
        for reason, label in dict.fromkeys((reason, model if label is None else label) for reason, label in degraded):
            m.child(m.degraded_responses, (self.service, label, reason)).inc()

    def _describe_extras(self, tl: RequestTimeline) -> None:
        """Give the request's span what aiwatch knows beyond the transport's conventions: a traffic class other
        than the default, the model version, fallbacks (``aiwatch.degraded``) and GenAI usage."""
        span = tl.span
        try:
            if not span.is_recording():
                return
            if tl.traffic_class != self.traffic.default:
                span.set_attribute("aiwatch.traffic_class", tl.traffic_class)
            if tl.version:
                span.set_attribute("aiwatch.model.version", tl.version)
            if tl.degraded:
                span.set_attribute("aiwatch.degraded.reason", list(dict.fromkeys(reason for reason, _ in tl.degraded)))
            if tl.tokens is not None:
                tl.tokens.describe(span, tl)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)

    def _count_slow(self, tl: RequestTimeline, overhead: float) -> None:
        """Add a slow request's phases and calls to the slow-request counters (the tail's split)."""
        m, service = self.metrics, self.service
        m.child(m.slow_requests, (service,)).inc()
        by_phase: dict[str, float] = {}
        fold = self.guard.fold  # phase names may come from data: the same bound as the phase histogram's
        for (name, _model), seconds in tl.phases.items():
            label = fold("phase", name)
            by_phase[label] = by_phase.get(label, 0.0) + seconds
        by_phase[OVERHEAD] = overhead
        for name, seconds in by_phase.items():
            m.child(m.slow_phase_seconds, (service, name)).inc(seconds)
        for (peer, phase), (client, network) in (tl.calls or {}).items():
            m.child(m.slow_call_seconds, (service, peer, phase)).inc(client)
            m.child(m.slow_network_seconds, (service, peer, phase)).inc(network)


def _ignore(amount: float) -> None:
    pass


def sampled_trace_id(span: Any) -> str | None:
    """The ``trace_id`` the exemplars of what ``span`` times carry: its trace's id as 32 lowercase hex digits, when
    it is sampled; ``None`` otherwise (an unsampled span, no span: such an exemplar would lead to no stored trace)."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.trace_flags.sampled else None


def _take_trace_id(tl: RequestTimeline, span: Any) -> None:
    """The exemplars' trace id: ``span``'s, when it is sampled."""
    trace_id = sampled_trace_id(span)
    if trace_id is not None:
        tl.trace_id = trace_id


_default_recorder: RequestRecorder | None = None


def default_recorder() -> RequestRecorder:
    """The recorder used for phases recorded outside any request (created on first use)."""
    global _default_recorder
    if _default_recorder is None:
        _default_recorder = RequestRecorder()
    return _default_recorder


def recorder_outside_requests(component: str) -> RequestRecorder | None:
    """:func:`default_recorder` for what is recorded outside a request, which never raises: ``None`` when it cannot
    be made (a malformed ``AIWATCH_*`` variable), counted as ``component``'s failure in the default metrics."""
    try:
        return default_recorder()
    except Exception as exc:
        record_error(component, exc)
        return None


def metrics_of(tl: RequestTimeline | None) -> Metrics | None:
    """Where an error of the current request (or outside one) is counted: ``None`` is the default metrics."""
    if tl is not None:
        return tl.recorder.metrics
    recorder = _default_recorder
    return recorder.metrics if recorder is not None else None


def set_default_recorder(recorder: RequestRecorder | None) -> None:
    """Make ``recorder`` receive phases recorded outside a request (``instrument()`` does this)."""
    global _default_recorder
    _default_recorder = recorder
