"""The lock scheme of a request's timeline (aiwatch.timing: ``owner``, ``busy`` and ``lock``, :func:`_shared_lock`,
:func:`_guarded`, a phase exit's inline owner branch), rule by rule, in interleavings made deterministic: the request's
own thread stops inside its unlocked section (a read of the request's ``phases``, ``calls`` or ``held`` pauses it)
while another thread of the request records, and the other thread's wait is seen where it happens (its
``time.sleep(0)`` in :func:`_shared_lock`, counted). Nothing is timed: each test waits for a state, and a state that
never comes fails it after ``HANG`` seconds (the code under test is then wrong)."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import timing
from aiwatch.metrics import Metrics, default_metrics
from aiwatch.timing import RequestRecorder, RequestTimeline, record_phase, set_model
from tests.test_timing import ManualClock

HANG = 30.0
#: the tests of the owner's unlocked section: a build without the GIL has no owner (every thread takes the lock)
with_an_owner = pytest.mark.skipif(timing._FREE_THREADED, reason="no owner without the GIL: every thread locks")


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, "the state waited for never came"
        time.sleep(0.001)


class Spins:
    """``aiwatch.timing``'s ``time`` module, whose ``sleep`` (called by a thread waiting in :func:`_shared_lock` for
    the owner's unlocked section to end) is counted. A sleep in the request's own thread would be the owner waiting
    for itself, for ever: it raises instead."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.count = 0

    def sleep(self, seconds: float) -> None:
        if threading.get_ident() == self.owner:
            raise AssertionError("the request's own thread waits for its own unlocked section")
        self.count += 1
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Other(threading.Thread):
    """``fn`` run in another thread of the request: in a copy of the context it is made in, as
    ``contextvars.copy_context().run`` in a pool (or ``asyncio.to_thread``) runs the request's fanned-out work."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.context = contextvars.copy_context()
        self.fn = fn
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.context.run(self.fn)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def finished(self) -> None:
        assert self.done.wait(HANG)
        self.join(HANG)
        assert self.error is None


class Pausing:
    """Mixed into the request's ``phases``, ``calls`` or ``held``: the first read of it in the request's own thread
    (inside the owner's section, the one being checked) calls ``pause`` first. The owner's sections move the clock
    before they pause, never after: the other thread's phases run meanwhile."""

    owner = 0
    pause: Callable[[], None] | None = None

    def _paused(self) -> None:
        if self.pause is not None and threading.get_ident() == self.owner:
            pause, self.pause = self.pause, None
            pause()


class PausingDict(Pausing, dict):  # type: ignore[type-arg]
    def get(self, key: Any, default: Any = None) -> Any:
        self._paused()
        return super().get(key, default)

    def items(self) -> Any:
        self._paused()
        return super().items()

    def __iter__(self) -> Iterator[Any]:
        self._paused()
        return super().__iter__()


class PausingList(Pausing, list):  # type: ignore[type-arg]
    # (its reads only: at a generator phase's end, after the clock moved, not at its start, before the clock moves)
    def __iter__(self) -> Iterator[Any]:
        self._paused()
        return super().__iter__()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    manual = ManualClock()
    monkeypatch.setattr(timing, "_clock", manual)
    return manual


@pytest.fixture
def recorder() -> RequestRecorder:
    return RequestRecorder(Metrics(CollectorRegistry()), service="svc")


@pytest.fixture
def spins(monkeypatch: pytest.MonkeyPatch) -> Spins:
    counted = Spins(threading.get_ident())  # the tests begin their requests in this thread: it is the owner
    monkeypatch.setattr(timing, "time", counted)
    return counted


def phase_sum(recorder: RequestRecorder, phase: str, model: str = "") -> float | None:
    return recorder.metrics.registry.get_sample_value(
        "aiwatch_phase_duration_seconds_sum", {"service": "svc", "model": model, "model_version": "", "phase": phase})


def call_seconds(tl: RequestTimeline) -> dict[tuple[str, str], list[float]]:
    return dict(tl.calls or {})


def pause_in(tl: RequestTimeline, where: str, pause: Callable[[], None]) -> None:
    """Make the request's own thread run ``pause`` at its next read of ``tl.<where>`` (its unlocked section)."""
    found: Pausing = PausingList(tl.held or ()) if where == "held" else PausingDict(getattr(tl, where) or {})
    found.owner, found.pause = tl.owner, pause
    setattr(tl, where, found)


def owner_record_phase(tl: RequestTimeline, clock: ManualClock) -> None:
    record_phase("a", 0.5)


def owner_phase_exit(tl: RequestTimeline, clock: ManualClock) -> None:
    with aiwatch.phase("a"):
        clock.advance(0.5)


def owner_set_model(tl: RequestTimeline, clock: ManualClock) -> None:
    set_model("m2")


def owner_server_timing(tl: RequestTimeline, clock: ManualClock) -> None:
    tl.server_timing()


def owner_add_call(tl: RequestTimeline, clock: ManualClock) -> None:
    tl.add_call("peer:1", "outer", 0.5, 0.25)


def owner_generator_phase(tl: RequestTimeline, clock: ManualClock) -> None:
    def gen() -> Iterator[int]:
        with aiwatch.phase("a"):
            clock.advance(0.5)
            yield 1

    assert list(gen()) == [1]


OWNER_SECTIONS = {
    # the request's own thread, alone in it so far (no lock): what it does, and the read that pauses it inside
    "record_phase": (owner_record_phase, "phases"),
    "phase exit": (owner_phase_exit, "phases"),
    "set_model": (owner_set_model, "phases"),
    "server_timing": (owner_server_timing, "phases"),
    "add_call": (owner_add_call, "calls"),
    "generator phase": (owner_generator_phase, "held"),
}


def other_record_phase(clock: ManualClock) -> float:
    record_phase("b", 0.25)
    return 0.0


def other_phase_exit(clock: ManualClock) -> float:
    # first a phase's end (the other thread's first touch of the request), shorter than a second; then a phase that
    # names its model, with a longer phase inside it (its own time clamped at 0)
    with aiwatch.phase("d"):
        clock.advance(0.25)
    with aiwatch.phase("b", model="m-b"):
        clock.advance(0.25)
        record_phase("c", 0.5)
    return 0.5


OTHER_THREADS = {
    # what another thread of the request records, and how far it moves the clock
    "record_phase": other_record_phase,
    "phase exit": other_phase_exit,
}


@with_an_owner
@pytest.mark.parametrize("other_does", OTHER_THREADS)
@pytest.mark.parametrize("section", OWNER_SECTIONS)
def test_another_threads_phase_waits_while_the_requests_own_thread_is_in_its_unlocked_section(
        section: str, other_does: str, recorder: RequestRecorder, clock: ManualClock, spins: Spins) -> None:
    # the owner changes and reads its request with no lock while no other thread touched it, marking that it does
    # (busy): a thread of the request recording meanwhile (a phase, and the enclosing phase's child time) must wait
    # for the owner's section to end, not change the request inside it
    run, where = OWNER_SECTIONS[section]
    tl = recorder.begin()
    seen: dict[str, Any] = {}
    moved: list[float] = []
    with aiwatch.phase("outer"):
        outer = timing._frame.get()
        assert outer is not None
        record_phase("first", 0.125)  # a phase for set_model to move, whose entry another thread could change
        other = Other(lambda: moved.append(OTHER_THREADS[other_does](clock)))

        def pause() -> None:
            child, phases = outer[timing._CHILD], dict(tl.phases)
            other.start()
            wait_until(lambda: spins.count > 0 or other.done.is_set())
            seen["waited"] = not other.done.is_set()
            seen["child unchanged"] = outer[timing._CHILD] == child
            seen["phases unchanged"] = dict(tl.phases) == phases

        pause_in(tl, where, pause)
        run(tl, clock)
        other.finished()
        clock.advance(2.0)
    assert seen == {"waited": True, "child unchanged": True, "phases unchanged": True}
    assert tl.lock is not None  # the other thread gave the request its lock
    recorder.finish(tl, "/", "GET", "200")
    model = "m2" if section == "set_model" else ""
    assert phase_sum(recorder, "first", model) == 0.125

    def other_sum(phase: str) -> float:
        # set_model moves the phases and changes the model in one section: the other thread's phases, which waited
        # for it, are the new model's
        return phase_sum(recorder, phase, model) or 0.0

    if other_does == "record_phase":
        assert other_sum("b") == 0.25
    else:
        assert (phase_sum(recorder, "b", "m-b"), other_sum("c"), other_sum("d")) == (0.0, 0.5, 0.25)
    # the outer phase is exclusive of the phases recorded inside it, in either thread
    inside = 0.125 + (0.25 if other_does == "record_phase" else 0.5)
    inside += 0.5 if section in ("record_phase", "phase exit", "generator phase") else 0.0
    outer_time = 2.0 + moved[0] + (0.5 if section in ("phase exit", "generator phase") else 0.0)
    assert phase_sum(recorder, "outer", model) == outer_time - inside


class CountingLock:
    """The request's lock, counting the attempts to take it (before waiting for it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.attempts = 0

    def __enter__(self) -> Any:
        self.attempts += 1
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.inner.__exit__(*exc)


@pytest.mark.parametrize("section", OWNER_SECTIONS)
def test_the_requests_own_thread_takes_the_lock_once_another_thread_made_it(
        section: str, recorder: RequestRecorder, clock: ManualClock, spins: Spins) -> None:
    # once another thread gave the request its lock, the owner's sections take it too: while another thread holds
    # it, the owner's section waits (released here only once the owner was seen trying to take the lock)
    run, where = OWNER_SECTIONS[section]
    tl = recorder.begin()
    with aiwatch.phase("outer"):
        record_phase("first", 0.125)
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with timing._shared_lock(tl):
                holding.set()
                assert release.wait(HANG)

        holder = Other(hold)
        holder.start()
        assert holding.wait(HANG)
        counted = tl.lock = CountingLock(tl.lock)
        released_when_inside: list[bool] = []
        pause_in(tl, where, lambda: released_when_inside.append(release.is_set()))

        def release_once_the_owner_tries() -> None:
            wait_until(lambda: counted.attempts > 0 or bool(released_when_inside))
            release.set()

        releaser = threading.Thread(target=release_once_the_owner_tries, daemon=True)
        releaser.start()
        run(tl, clock)
        releaser.join(HANG)
        holder.finished()
        clock.advance(2.0)
    assert released_when_inside == [True]  # the owner's section ran once the holder let the lock go
    recorder.finish(tl, "/", "GET", "200")
    assert phase_sum(recorder, "first", "m2" if section == "set_model" else "") == 0.125


def nested_record_phase() -> None:
    record_phase("nested", 0.0625)


def nested_phase_exit() -> None:
    with aiwatch.phase("nested"):
        pass


def nested_server_timing() -> None:
    tl = timing.current_timeline()
    assert tl is not None
    tl.server_timing()


NESTED = {"record_phase": nested_record_phase, "phase exit": nested_phase_exit, "server_timing": nested_server_timing}


@with_an_owner
@pytest.mark.parametrize("nested", NESTED)
@pytest.mark.parametrize("other_waiting", [False, True], ids=["before another thread came", "while another waits"])
@pytest.mark.parametrize("section", ["record_phase", "phase exit"])
def test_a_section_the_requests_own_thread_runs_inside_its_section_leaves_it_marked(
        section: str, nested: str, other_waiting: bool, recorder: RequestRecorder, clock: ManualClock,
        spins: Spins) -> None:
    # a garbage collection inside the owner's unlocked section can end a phase of the same request (a generator's)
    # or run a finaliser that records one: that inner section must not wait for its own thread's mark (it would for
    # ever), and must leave the mark as it found it, set, when it ends: another thread must still wait
    tl = recorder.begin()
    seen: dict[str, Any] = {}
    with aiwatch.phase("outer"):
        other = Other(lambda: record_phase("b", 0.25))

        def pause() -> None:
            if other_waiting:
                other.start()
                wait_until(lambda: spins.count > 0 or other.done.is_set())
            NESTED[nested]()
            before = spins.count
            if not other_waiting:
                other.start()
            # two more spins: the second checked the mark after the inner section ended (or the other thread is done)
            wait_until(lambda: spins.count >= before + 2 or other.done.is_set())
            seen["waited"] = not other.done.is_set()
            seen["b"] = ("b", "") in dict(tl.phases)

        pause_in(tl, "phases", pause)
        OWNER_SECTIONS[section][0](tl, clock)
        other.finished()
    assert seen == {"waited": True, "b": False}
    recorder.finish(tl, "/", "GET", "200")
    assert phase_sum(recorder, "b") == 0.25
    assert phase_sum(recorder, "a") == 0.5


class CountingGate:
    """:data:`aiwatch.timing._lock_lock`, counting the threads that came to it, held shut until ``open()``."""

    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.arrived = 0
        self.inner.acquire()

    def open(self) -> None:
        self.inner.release()

    def __enter__(self) -> Any:
        self.arrived += 1
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.inner.__exit__(*exc)


def test_threads_that_find_the_request_without_a_lock_at_once_all_get_the_one_lock_made(
        recorder: RequestRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    # two threads of the request that both saw it without a lock make it one after the other (under _lock_lock):
    # the second must take the lock the first made, not make another (each would then hold a lock of its own)
    gate = CountingGate()
    monkeypatch.setattr(timing, "_lock_lock", gate)
    tl = recorder.begin()
    locks: list[Any] = []
    others = [Other(lambda: locks.append(timing._shared_lock(tl))) for _ in range(2)]
    for other in others:
        other.start()
    wait_until(lambda: gate.arrived == 2)
    gate.open()
    for other in others:
        other.finished()
    assert len(locks) == 2
    assert locks[0] is locks[1] is tl.lock


@pytest.mark.parametrize("thread", ["own", "other"])
def test_a_phase_recorded_by_hand_with_its_model_keeps_it_in_any_thread_of_the_request(
        thread: str, recorder: RequestRecorder) -> None:
    # in the request's own thread (no lock) and in another one (under the request's lock)
    tl = recorder.begin()
    set_model("ranker")

    def record() -> None:
        record_phase("rerank", 0.5, model="reranker")
        record_phase("fetch", 0.25)

    if thread == "own":
        record()
    else:
        other = Other(record)
        other.start()
        other.finished()
    recorder.finish(tl, "/", "GET", "200")
    assert (phase_sum(recorder, "rerank", "reranker"), phase_sum(recorder, "rerank", "ranker")) == (0.5, None)
    assert phase_sum(recorder, "fetch", "ranker") == 0.25


def test_a_phase_outside_any_request_is_exclusive_of_each_phase_inside_it(
        recorder: RequestRecorder, clock: ManualClock) -> None:
    # background work: the enclosing phase's time of the phases inside it adds up over each of them
    timing.set_default_recorder(recorder)
    with aiwatch.phase("job"):
        clock.advance(1.0)
        with aiwatch.phase("load"):
            clock.advance(2.0)
        with aiwatch.phase("save"):
            clock.advance(4.0)
        clock.advance(8.0)
    assert background_sum(recorder, "job") == 9.0
    assert (background_sum(recorder, "load"), background_sum(recorder, "save")) == (2.0, 4.0)


def background_sum(recorder: RequestRecorder, phase: str) -> float | None:
    return recorder.metrics.registry.get_sample_value(
        "aiwatch_background_phase_duration_seconds_sum", {"service": "svc", "model": "", "phase": phase})


# ------------------------------------------------------------------------------------------ a phase exit's other paths


def errors(metrics: Metrics, component: str) -> float:
    return metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": component}) or 0.0


@pytest.mark.parametrize("lock", ["no lock", "the request's lock made"])
def test_a_phase_ending_after_its_request_was_recorded_is_counted_not_added(
        lock: str, recorder: RequestRecorder, caplog: pytest.LogCaptureFixture) -> None:
    # ended in the request's own thread, with no lock (the inline branch) and once another thread made the lock;
    # the error says why its time is lost and what to do
    tl = recorder.begin()
    if lock != "no lock":
        other = Other(lambda: record_phase("fanned", 0.25))
        other.start()
        other.finished()
        assert tl.lock is not None
    with caplog.at_level(logging.WARNING, logger="aiwatch"), aiwatch.phase("late"):
        recorder.finish(tl, "/", "GET", "200")
    assert ("late", "") not in tl.phases
    assert errors(recorder.metrics, "phase") == 1
    message = ("phase 'late' ended after its request was recorded, so its time is in no request: was it in a "
               "generator dropped without close() or an async generator dropped without aclose() (the garbage "
               "collector or asyncio then closes it later, maybe in another thread)? Close it (contextlib.closing, "
               "contextlib.aclosing) so that the phase ends with the response")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiwatch")] == [
        f"aiwatch: phase failed and was skipped: {RuntimeError(message)!r}"]


def test_a_phase_object_used_again_once_its_first_use_ended_is_ended_from_another_context(
        recorder: RequestRecorder) -> None:
    # a module's phase object ends its first use where it began; its next use, held by a generator each step of
    # which runs in a fresh copy of the request's context (Starlette), ends from another context: it is the request's
    # phase, not one "out of order" (the object forgot its first use's frame when that ended)
    reused = aiwatch.phase("generate")

    def once() -> None:
        with reused:
            pass

    def tokens() -> Iterator[int]:
        with reused:
            yield 1

    task = contextvars.copy_context()
    tl = task.run(recorder.begin)
    task.run(once)
    stream = tokens()
    before = errors(default_metrics(), "phase")
    assert task.copy().run(next, stream) == 1
    with pytest.raises(StopIteration):
        task.copy().run(next, stream)
    assert errors(default_metrics(), "phase") == before
    assert ("generate", "") in tl.phases
    task.run(recorder.finish, tl, "/", "GET", "200")


def failing_generator_after_its_first_step(
        recorder: RequestRecorder) -> tuple[contextvars.Context, RequestTimeline, Iterator[int]]:
    """A request begun in its own context, and a generator of its that holds the phase ``generate``, stepped once
    in a copy of that context; its next step raises a ValueError inside the phase."""
    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            yield 1
            raise ValueError("no more tokens")

    task = contextvars.copy_context()
    tl = task.run(recorder.begin)
    stream = tokens()
    assert task.copy().run(next, stream) == 1
    return task, tl, stream


def test_a_generator_phase_ended_by_an_exception_in_a_later_step_has_its_span_marked_failed(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(Metrics(CollectorRegistry()), service="svc", tracer_provider=provider)
    task, tl, stream = failing_generator_after_its_first_step(recorder)
    with pytest.raises(ValueError):
        task.copy().run(next, stream)  # the phase ends in this step's context, not the one it began in
    task.run(recorder.finish, tl, "/", "GET", "200")
    span = {span.name: span for span in exporter.get_finished_spans()}["generate"]
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize("current", ["made current", "could not be made current"])
def test_a_phase_another_thread_of_a_traced_request_ends_has_its_span_ended_with_its_exception(
        current: str, provider: TracerProvider, exporter: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RequestRecorder(Metrics(CollectorRegistry()), service="svc", tracer_provider=provider)
    tl = recorder.begin()

    def fail() -> None:
        if current != "made current":  # OpenTelemetry failing to attach the phase's span: counted, the span kept
            def refuse(ctx: Any) -> Any:
                raise RuntimeError("no context")

            monkeypatch.setattr(context, "attach", refuse)
        with aiwatch.phase("b"):
            raise ValueError("failed")

    other = Other(fail)
    other.start()
    assert other.done.wait(HANG)
    other.join(HANG)
    monkeypatch.undo()
    assert isinstance(other.error, ValueError)
    recorder.finish(tl, "/", "GET", "200")
    span = {span.name: span for span in exporter.get_finished_spans()}["b"]
    assert span.status.status_code is StatusCode.ERROR
    assert phase_sum(recorder, "b") is not None


# ------------------------------------------------------------------------------------------ a phase ended elsewhere


def test_a_generator_phase_ended_in_a_later_step_is_its_requests_and_its_parents_child(
        recorder: RequestRecorder, clock: ManualClock) -> None:
    # Starlette's StreamingResponse: each step of a sync generator in a fresh copy of the request's context. The
    # phase the generator holds ends in the last step's copy, where the phase it was opened under is open (the app's
    # own, around the stream), not it: it is the request's phase all the same, exclusive of the phase recorded inside
    # it (clamped at 0: 4 s recorded in its 3 s), its time that open phase's child, and it is no longer held
    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            clock.advance(1.0)
            record_phase("tokenize", 4.0)
            yield 1

    task = contextvars.copy_context()
    tl = task.run(recorder.begin)

    def respond() -> None:
        with aiwatch.phase("stream"):
            stream = tokens()
            assert contextvars.copy_context().run(next, stream) == 1
            clock.advance(2.0)
            with pytest.raises(StopIteration):
                contextvars.copy_context().run(next, stream)
            clock.advance(0.5)

    before = errors(default_metrics(), "phase")
    task.run(respond)
    assert errors(default_metrics(), "phase") == before
    assert tl.held == []
    task.run(recorder.finish, tl, "/", "GET", "200")
    assert (phase_sum(recorder, "generate"), phase_sum(recorder, "tokenize")) == (0.0, 4.0)
    assert phase_sum(recorder, "stream") == 0.5  # open 3.5 s, generate's 3 s inside it


def test_a_phase_object_ended_elsewhere_twice_in_a_row_is_each_times_request_phase(
        recorder: RequestRecorder) -> None:
    # one object (a module's) held by a generator of one request, then of the next: each ended from another context,
    # each the request's phase (the object forgot the first use's frame when it ended)
    reused = aiwatch.phase("generate")

    def tokens() -> Iterator[int]:
        with reused:
            yield 1

    before = errors(default_metrics(), "phase")
    for _ in range(2):
        task = contextvars.copy_context()
        tl = task.run(recorder.begin)
        stream = tokens()
        assert task.copy().run(next, stream) == 1
        with pytest.raises(StopIteration):
            task.copy().run(next, stream)
        assert ("generate", "") in tl.phases
        task.run(recorder.finish, tl, "/", "GET", "200")
    assert errors(default_metrics(), "phase") == before


def test_a_phase_a_generator_opens_in_a_helper_in_a_later_step_nests_under_the_one_it_holds(
        recorder: RequestRecorder, clock: ManualClock) -> None:
    # the phase is opened by a function the generator calls, not by the generator's own frame: the generator is
    # further up the stack, and its held phase is the parent all the same
    def decode() -> None:
        with aiwatch.phase("decode"):
            clock.advance(0.25)

    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            for i in range(2):
                decode()
                clock.advance(0.5)
                yield i

    tl = recorder.begin()
    steps = tokens()
    for _ in range(2):
        contextvars.copy_context().run(next, steps)
    assert contextvars.copy_context().run(next, steps, None) is None
    recorder.finish(tl, "/", "GET", "200")
    assert (phase_sum(recorder, "decode"), phase_sum(recorder, "generate")) == (0.5, 1.0)


def test_a_generator_phase_that_fails_outside_its_running_request_is_counted_with_the_whole_message(
        provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture) -> None:
    # stepped to its end in a thread without the request's context (not the garbage collector here: it raises), while
    # the request runs: in no histogram, its span ended as failed, and the error says where and what to do
    recorder = RequestRecorder(Metrics(CollectorRegistry()), service="svc", tracer_provider=provider)
    task, tl, stream = failing_generator_after_its_first_step(recorder)
    failed: list[BaseException] = []

    def elsewhere() -> None:
        try:
            next(stream)
        except ValueError as exc:
            failed.append(exc)

    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(HANG)
    assert len(failed) == 1
    assert ("generate", "") not in tl.phases
    assert errors(recorder.metrics, "phase") == 1
    message = ("phase 'generate' ended outside its request while that ran (in another thread, or another request), "
               "so its time is in no request: was it in a generator dropped without close(), which the garbage "
               "collector closed there? Close it (contextlib.closing) so that the phase ends with the response")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiwatch")] == [
        f"aiwatch: phase failed and was skipped: {RuntimeError(message)!r}"]
    task.run(recorder.finish, tl, "/", "GET", "200")
    span = {span.name: span for span in exporter.get_finished_spans()}["generate"]
    assert span.status.status_code is StatusCode.ERROR


def test_a_phase_recorded_by_hand_in_shared_work_is_taken_out_of_the_enclosing_phase(clock: ManualClock) -> None:
    # a MicroBatcher's batch function, outside any request: its phases go to the shared work, each exclusive of the
    # phases inside it, those recorded by hand included
    work = timing.SharedWork()
    token = timing.share_work(work)
    try:
        with aiwatch.phase("batch"):
            clock.advance(3.0)
            record_phase("queue", 1.0)
    finally:
        timing.end_shared_work(work, token)
    assert work.phases == {("batch", None): 2.0, ("queue", None): 1.0}
