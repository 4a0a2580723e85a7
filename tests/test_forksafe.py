"""A process forked while another of its threads holds one of aiwatch's locks (gunicorn's master, with ``--preload``,
runs aiwatch's threads and forks workers at any time): the child has no thread to release it, so the child must not
find it held when it next takes it (on the request path, on the error path, or when it closes down).

Each test holds the lock on a thread, forks, and has the child do what takes that lock; the child's exit status is
the verdict. A child that hangs is killed after :data:`HANG` seconds: that is the bug, not a timing bound."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from aiwatch import cardinality, forksafe, metrics, safety, timing
from aiwatch.cardinality import LabelGuard, guard_for
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.drift.monitor import hand_over_schedules
from aiwatch.feedback import ParquetSink, PredictionLog, journal
from aiwatch.feedback.parquet_sink import TEMP_SUFFIX
from aiwatch.feedback.sampling import SamplingPolicy
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.signals.gpu import GpuCollector, GpuPoller, GpuSnapshot
from tests.servers import REPO, python_env
from tests.signals.fake_pynvml import FakeNVML

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")

#: How long a child may take before it counts as hung (it needs milliseconds).
HANG = 30.0


@contextmanager
def held(locks: Sequence[AbstractContextManager[Any]]) -> Iterator[None]:
    """``locks`` held by another thread (blocked inside their locked section) until the block ends."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            holding.set()
            release.wait()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert holding.wait(HANG)
        yield
    finally:
        release.set()
        holder.join(HANG)


def forked_child(action: Callable[[], bool]) -> str:
    """Fork; the child runs ``action`` and exits. ``"done"`` when ``action`` returned true, ``"failed"`` when it
    returned false or raised, ``"hung"`` when the child had not exited after :data:`HANG` seconds (then killed)."""
    pid = os.fork()
    if pid == 0:  # the child: nothing but the action, then out without running the parent's exit handlers
        code = 1
        try:
            code = 0 if action() else 1
        finally:
            os._exit(code)
    code = exit_code_or_kill(pid, HANG)
    return "hung" if code is None else "done" if code == 0 else "failed"


def exit_code_or_kill(pid: int, seconds: float) -> int | None:
    """The child's exit code once it exits; ``None`` when it had not within ``seconds`` (then killed and reaped)."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.05)


def child_reports(action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; the child runs ``action`` and sends what it returns back over a pipe (as JSON). The child must exit 0."""
    read, write = os.pipe()

    def report() -> bool:
        os.close(read)
        with os.fdopen(write, "w") as out:
            json.dump(action(), out)
        return True

    try:
        verdict = forked_child(report)
    finally:
        os.close(write)
    with os.fdopen(read) as sent:
        text = sent.read()
    assert verdict == "done", f"the child {verdict}: {text!r}"
    reported: dict[str, Any] = json.loads(text)
    return reported


def child_while_held(locks: Sequence[AbstractContextManager[Any]], action: Callable[[], bool]) -> str:
    with held(locks):
        return forked_child(action)


# --- the request and error paths --------------------------------------------------------------------------------
def test_a_child_records_an_error_while_the_burst_log_was_locked_at_the_fork(metrics: Metrics) -> None:
    def record() -> bool:
        safety.record_error("metrics", RuntimeError("in the child"), metrics)
        safety.warn_rate_limited("forked", "aiwatch: the child warns")
        return True

    assert child_while_held([safety._burst._lock], record) == "done"


def test_a_child_makes_a_new_child_series_while_the_cache_was_locked_at_the_fork(metrics: Metrics) -> None:
    def new_series() -> bool:
        metrics.child(metrics.instrumentation_errors, ("made_in_the_child",)).inc()
        return True

    assert child_while_held([metrics._children_lock], new_series) == "done"


def test_a_child_gets_the_metrics_of_a_registry_while_their_lock_was_held_at_the_fork() -> None:
    def get() -> bool:
        registry = CollectorRegistry()
        return get_metrics(registry).registry is registry

    assert child_while_held([metrics._default_lock], get) == "done"


def test_a_child_folds_a_new_label_value_while_the_guard_was_locked_at_the_fork(metrics: Metrics) -> None:
    shared, own = guard_for(metrics), LabelGuard(max_values=5)

    def fold() -> bool:
        return shared.fold("route", "/new") == "/new" and own.fold("route", "/new") == "/new"

    assert child_while_held([shared._lock, own._lock], fold) == "done"


def test_a_child_gets_a_registry_guard_while_the_guards_were_locked_at_the_fork() -> None:
    def guard() -> bool:
        return guard_for(Metrics(CollectorRegistry())).fold("route", "/a") == "/a"

    assert child_while_held([cardinality._guards_lock], guard) == "done"


def test_a_child_names_a_new_phase_while_the_phase_names_were_locked_at_the_fork() -> None:
    name = f"forked_{uuid.uuid4().hex}"  # a name never checked before: its check takes the lock

    def new_phase() -> bool:
        return timing.phase(name).name == name

    assert child_while_held([timing._valid_lock], new_phase) == "done"


def test_a_child_nests_phases_outside_any_request_while_their_lock_was_held_at_the_fork() -> None:
    # background work's enclosing phase is made exclusive of the phases inside it under a module lock (_add_lock)
    def nested() -> bool:
        with timing.phase("job"), timing.phase("step"):
            pass
        return True

    assert child_while_held([timing._add_lock], nested) == "done"


def test_a_child_gives_a_request_its_lock_while_the_locks_maker_was_held_at_the_fork() -> None:
    # the first thread other than a request's own makes the request's lock under a module lock (_lock_lock)
    import contextvars

    recorder = timing.RequestRecorder(Metrics(CollectorRegistry()), service="svc")
    tl = recorder.begin()
    try:
        def record() -> bool:
            worker = threading.Thread(target=contextvars.copy_context().run, args=(timing.record_phase, "step", 0.25),
                                      daemon=True)
            worker.start()
            worker.join(HANG)
            return not worker.is_alive() and tl.lock is not None and tl.phases.get(("step", "")) == 0.25

        assert child_while_held([timing._lock_lock], record) == "done"
    finally:
        recorder.finish(tl, "/", "GET", "200")


def test_a_child_forked_in_a_request_records_a_phase_while_the_requests_lock_was_held_at_the_fork() -> None:
    # a process forked in a request whose work fanned out to threads (the request's lock made): the child runs on in
    # a copy of the request's context, and its phases take that lock, which a pool thread held at the fork
    recorder = timing.RequestRecorder(Metrics(CollectorRegistry()), service="svc")
    tl = recorder.begin()
    try:
        def record() -> bool:
            timing.record_phase("step", 0.001)
            return True

        assert child_while_held([timing._shared_lock(tl)], record) == "done"
    finally:
        recorder.finish(tl, "/", "GET", "200")


def test_a_child_forked_by_a_pool_thread_of_a_request_records_a_phase_while_its_thread_was_adding_one() -> None:
    # forked from a pool thread of the request while the request's own thread was adding a phase with no lock (its
    # mark, busy, set: the state at that moment, set here by hand): the child, which has no such thread to unmark
    # it, waited for it for ever
    recorder = timing.RequestRecorder(Metrics(CollectorRegistry()), service="svc")
    begun, release = threading.Event(), threading.Event()
    timelines: list[timing.RequestTimeline] = []

    def request() -> None:
        tl = recorder.begin()
        timelines.append(tl)
        tl.busy = True
        begun.set()
        release.wait(HANG)
        tl.busy = False
        recorder.finish(tl, "/", "GET", "200")

    owner = threading.Thread(target=request, daemon=True)
    owner.start()
    try:
        assert begun.wait(HANG)
        tl = timelines[0]

        def record() -> bool:
            tl.add("step", None, 0.001)
            # and the mark cleared, not only passed: a thread the child starts later may get the dead owner's ident
            # (glibc reuses a dead thread's stack, and the ident is its address), and would then keep a mark it never
            # set, which every other thread of the request waits for
            return tl.phases.get(("step", "")) == 0.001 and tl.busy is False

        assert forked_child(record) == "done"
    finally:
        release.set()
        owner.join(HANG)


def test_a_child_forked_by_a_requests_own_thread_records_phases_of_it_in_a_thread_of_its_own() -> None:
    # forked from the request's own thread once another thread had given the request its lock: in the child, that
    # thread is still the request's owner, and nothing runs an owner's section there, so a thread the child starts
    # for the request's work must not wait for one (the child's copy of the request is left unmarked)
    import contextvars

    recorder = timing.RequestRecorder(Metrics(CollectorRegistry()), service="svc")
    tl = recorder.begin()
    try:
        other = threading.Thread(target=contextvars.copy_context().run, args=(timing.record_phase, "fanned", 0.5))
        other.start()
        other.join(HANG)
        assert tl.lock is not None

        def record() -> bool:
            worker = threading.Thread(target=contextvars.copy_context().run, args=(timing.record_phase, "step", 0.25),
                                      daemon=True)
            worker.start()
            worker.join(HANG)
            timing.record_phase("own", 0.125)
            return not worker.is_alive() and (tl.phases.get(("step", "")), tl.phases.get(("own", ""))) == (0.25, 0.125)

        assert forked_child(record) == "done"
    finally:
        recorder.finish(tl, "/", "GET", "200")


def test_a_child_records_a_held_grpc_rpc_while_the_servers_end_lock_was_held_at_the_fork() -> None:
    # the gRPC server's one lock for every RPC's end (aiwatch.grpc.server._done_lock), which each RPC's end takes
    from aiwatch.grpc import server

    held_rpc = server._Unserializable()  # an RPC whose record waits for its response's serialization
    recorded: list[bool] = []
    held_rpc.pending = lambda serialized, seconds: recorded.append(serialized)

    def release() -> bool:
        held_rpc.release()
        return recorded == [False]

    assert child_while_held([server._done_lock], release) == "done"


def test_a_child_sets_a_gauge_while_prometheus_client_held_its_locks_at_the_fork(metrics: Metrics) -> None:
    # a drift monitor's thread in the master sets its gauges (in memory here: one worker, no PROMETHEUS_MULTIPROC_DIR)
    gauge = metrics.drift_window_samples
    series = metrics.labels(gauge, ("m", "x"))

    def set_gauges() -> bool:
        metrics.labels(gauge, ("m", "y")).set(2)  # a new series: the metric's lock
        series.set(3)  # the series' value lock
        return metrics.registry.get_sample_value("aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 3

    assert child_while_held([gauge._lock, series._value._lock], set_gauges) == "done"


def test_a_child_makes_new_only_the_prometheus_client_locks_held_at_the_fork(metrics: Metrics) -> None:
    # The renewal runs in every forked child (each gunicorn worker, each subprocess with preexec_fn, each fork of a
    # multiprocessing pool), on every series aiwatch made: a new lock for each of 20k series cost about 50 ms per fork.
    # A lock no thread held at the fork is free in the child: it is kept; a held one is made new.
    gauge, histogram = metrics.drift_window_samples, metrics.request_duration
    free, taken = metrics.labels(gauge, ("m", "free")), metrics.labels(gauge, ("m", "taken"))
    timed = metrics.labels(histogram, ("svc", "/p", "POST", "200", "0"))
    free_locks = [gauge._lock, free._value._lock, timed._sum._lock, *(b._lock for b in timed._buckets)]
    taken_lock = taken._value._lock

    def renewed_where_held() -> bool:
        kept = [gauge._lock, free._value._lock, timed._sum._lock, *(b._lock for b in timed._buckets)]
        taken.set(1)  # the held one: made new, else this hangs
        return all(a is b for a, b in zip(kept, free_locks, strict=True)) and taken._value._lock is not taken_lock

    assert child_while_held([taken_lock], renewed_where_held) == "done"


def test_renewing_at_fork_does_not_keep_an_object_alive() -> None:
    guard = LabelGuard(max_values=5)
    ref = weakref.ref(guard)
    del guard
    gc.collect()
    assert ref() is None


# --- objects with a thread of their own, made before the fork ----------------------------------------------------
def test_a_child_observes_and_evaluates_drift_while_the_monitor_was_locked_at_the_fork(registry: CollectorRegistry
                                                                                        ) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, flush_every=1)

    def observe_and_evaluate() -> bool:
        monitor.observe({"x": 0.5})
        monitor.evaluate()
        monitor.stop(timeout=HANG)
        return registry.get_sample_value("aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 1

    assert child_while_held([monitor._lock, monitor._eval_lock, monitor._export_lock, monitor._stop._cond],
                            observe_and_evaluate) == "done"


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_child_logs_and_flushes_predictions_while_the_log_was_locked_at_the_fork(metrics: Metrics) -> None:
    log = PredictionLog(_Rows(), batch_size=1, metrics=metrics)
    try:
        def log_and_flush() -> bool:
            log.log("m", {"x": 1})  # a full batch: it wakes the writer
            log.flush(timeout=0.1)  # (the writer is the parent's thread: the child's records wait for it)
            return True

        assert child_while_held([log._idle, log._wake._cond], log_and_flush) == "done"
    finally:
        log.close()


def test_a_child_polls_the_gpus_while_the_poller_was_locked_at_the_fork(metrics: Metrics) -> None:
    poller = GpuPoller(nvml=FakeNVML.with_gpus(1), metrics=metrics)

    def poll() -> bool:
        up = poller.poll_once().nvml_up
        poller.stop(timeout=HANG)
        return up

    assert child_while_held([poller._poll_lock, poller._thread_lock, poller._stop._cond], poll) == "done"


# --- threads that ran in the parent (gunicorn --preload: the app made them in the master) ------------------------
def _rows_by_model(directory: Path) -> dict[str, int]:
    """Rows in the completed Parquet files under ``directory``, by their ``model=`` folder."""
    counts: dict[str, int] = {}
    for path in directory.rglob("*.parquet"):
        model = path.parent.parent.name.removeprefix("model=")
        counts[model] = counts.get(model, 0) + pq.read_metadata(path).num_rows
    return counts


def test_a_child_writes_an_inherited_parquet_sink_into_files_of_its_own(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, fsync=False)
    sink.write([{"request_id": "p1", "timestamp": time.time(), "model": "m", "x": 1.0}])
    (parents_file,) = tmp_path.rglob(f"*{TEMP_SUFFIX}")  # open in the parent at the fork
    size = parents_file.stat().st_size

    def write_in_the_child() -> bool:
        sink.write([{"request_id": f"c{i}", "timestamp": time.time(), "model": "m", "x": 2.0} for i in range(3)])
        sink.close()
        gc.collect()
        return len(sink.completed) == 1 and sink.completed[0] != parents_file.with_name(
            parents_file.name.removeprefix(".").removesuffix(TEMP_SUFFIX))

    assert forked_child(write_in_the_child) == "done"
    assert parents_file.stat().st_size == size, "the child wrote into the parent's open file"
    sink.close()
    assert _rows_by_model(tmp_path) == {"m": 4}
    assert len(list(tmp_path.rglob("*.parquet"))) == 2 and not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))


Writes = Callable[[ParquetSink, list[dict[str, Any]], Callable[[], int]], int]


def _recovered_while_the_writers_child_lives(tmp_path: Path, write: Writes, *, journal: bool = True) -> None:
    """Fork a writer that runs ``write(sink, three rows, fork_child)`` (which forks, through ``fork_child``, a child
    that outlives it, and returns its pid) and is then killed; a new sink must recover the writer's journal and its
    three rows while that child still lives (without a ``journal``: remove the writer's unreadable open file)."""
    ready, child_pid = tmp_path / "child-ready", tmp_path / "child-pid"
    data = tmp_path / "log"
    writer = os.fork()
    if writer == 0:
        try:
            def fork_child() -> int:
                child = os.fork()
                if child == 0:  # lives on past the writer, holding whatever the fork left it
                    ready.write_text("ready")
                    time.sleep(60)
                    os._exit(0)
                return child

            rows = [{"request_id": f"w{i}", "timestamp": time.time(), "model": "m", "x": 1.0} for i in range(3)]
            child_pid.write_text(str(write(ParquetSink(data, fsync=False, journal=journal), rows, fork_child)))
            deadline = time.monotonic() + 20
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    assert exit_code_or_kill(writer, 2 * HANG) is not None, "the forked writer hung (killed)"
    child = int(child_pid.read_text())
    try:
        assert ready.exists()
        assert len(list(data.rglob(f"*{TEMP_SUFFIX}"))) == 1
        recovering = ParquetSink(data, fsync=False)
        if journal:
            assert len(recovering.recovered) == 1, "the journal of the dead writer was still locked by its child"
            assert _rows_by_model(data) == {"m": 3}
        else:
            assert not list(data.rglob(f"*{TEMP_SUFFIX}")), "the dead writer's open file was still locked by its child"
            assert recovering.recovery.files["orphan_removed"] == 1
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_journal_inherited_by_a_child_is_recovered_after_its_writer_dies_while_the_child_lives(
        tmp_path: Path) -> None:
    def write_then_fork(sink: ParquetSink, rows: list[dict[str, Any]], fork_child: Callable[[], int]) -> int:
        sink.write(rows)  # three rows in an open file and its journal
        return fork_child()

    _recovered_while_the_writers_child_lives(tmp_path, write_then_fork)


def _fork_while_inside(sink: ParquetSink, rows: list[dict[str, Any]], fork_child: Callable[[], int],
                       inside: threading.Event, go_on: threading.Event) -> int:
    """``sink.write(rows)`` on a thread until it sets ``inside`` (in a seam the caller patched to wait for
    ``go_on``), a fork there, then the write let go on; the child's pid."""
    thread = threading.Thread(target=sink.write, args=(rows,))
    thread.start()
    inside.wait(HANG)
    child = fork_child()
    go_on.set()
    thread.join(HANG)
    return child


def test_a_journal_being_made_at_the_fork_is_recovered_after_its_writer_dies_while_the_child_lives(
        tmp_path: Path) -> None:
    # the fork comes while the master's log writer is inside sink.write(), making the file's journal (not yet among
    # the sink's open files, which the child lets go of)
    def fork_while_writing(sink: ParquetSink, rows: list[dict[str, Any]], fork_child: Callable[[], int]) -> int:
        inside, go_on = threading.Event(), threading.Event()
        write = journal._write

        def write_once_inside(fd: int, data: Any) -> int:
            if not inside.is_set():
                inside.set()
                go_on.wait(HANG)
            return write(fd, data)

        journal._write = write_once_inside
        return _fork_while_inside(sink, rows, fork_child, inside, go_on)

    _recovered_while_the_writers_child_lives(tmp_path, fork_while_writing)


def test_an_open_file_inherited_by_a_child_is_removed_after_its_writer_dies_while_the_child_lives(
        tmp_path: Path) -> None:
    def write_then_fork(sink: ParquetSink, rows: list[dict[str, Any]], fork_child: Callable[[], int]) -> int:
        sink.write(rows)  # three rows in an open file without a journal
        return fork_child()

    _recovered_while_the_writers_child_lives(tmp_path, write_then_fork, journal=False)


def test_an_open_file_being_made_at_the_fork_is_removed_after_its_writer_dies_while_the_child_lives(
        tmp_path: Path) -> None:
    # the fork comes while the writer is making the file (locked, not yet among the sink's open files)
    def fork_while_making(sink: ParquetSink, rows: list[dict[str, Any]], fork_child: Callable[[], int]) -> int:
        inside, go_on = threading.Event(), threading.Event()
        make = pq.ParquetWriter.__init__

        def make_inside(self: Any, *args: Any, **kwargs: Any) -> None:
            inside.set()
            go_on.wait(HANG)
            make(self, *args, **kwargs)

        pq.ParquetWriter.__init__ = make_inside  # type: ignore[method-assign]
        return _fork_while_inside(sink, rows, fork_child, inside, go_on)

    _recovered_while_the_writers_child_lives(tmp_path, fork_while_making, journal=False)


@pytest.mark.parametrize("opened", [journal.NEW_SUFFIX, TEMP_SUFFIX])
def test_a_file_being_opened_at_the_fork_is_recovered_after_its_writer_dies_while_the_child_lives(
        tmp_path: Path, opened: str) -> None:
    # os.open lets other threads run: a fork after it made the descriptor of a journal (.journal.new) or of an open
    # file's lock (.inprogress), before the descriptor was stored, left the child a copy it did not let go of
    class OpenStopsOnceInside:
        def __init__(self) -> None:
            self.inside, self.go_on = threading.Event(), threading.Event()

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def open(self, path: Any, *args: Any) -> int:
            fd = os.open(path, *args)
            if str(path).endswith(opened) and not self.inside.is_set():
                self.inside.set()
                self.go_on.wait(HANG)  # as a thread does when it waits for the GIL after the call
            return fd

    def fork_while_opening(sink: ParquetSink, rows: list[dict[str, Any]], fork_child: Callable[[], int]) -> int:
        proxy = OpenStopsOnceInside()
        journal.os = proxy  # type: ignore[assignment]  # in the writer process, which is killed
        thread = threading.Thread(target=sink.write, args=(rows,))
        thread.start()
        proxy.inside.wait(HANG)
        # This thread keeps the GIL from here through the fork unless the fork waits: the writer cannot store its
        # descriptor meanwhile (without the fix the fork lands in the window every time).
        sys.setswitchinterval(1000)
        proxy.go_on.set()
        child = fork_child()
        thread.join(HANG)
        return child

    _recovered_while_the_writers_child_lives(tmp_path, fork_while_opening, journal=opened == journal.NEW_SUFFIX)


def test_a_log_whose_writer_ran_in_the_parent_writes_the_childs_rows_into_files_of_its_own(tmp_path: Path,
                                                                                          metrics: Metrics) -> None:
    sink = ParquetSink(tmp_path, fsync=False)
    log = PredictionLog(sink, batch_size=1, metrics=metrics)
    try:
        log.log("parent", {"x": 1.0})
        assert log.flush(timeout=HANG)
        (parents_file,) = tmp_path.rglob(f"*{TEMP_SUFFIX}")  # open in the parent at the fork
        size = parents_file.stat().st_size

        def log_in_the_child() -> bool:
            for i in range(3):
                log.log("child", {"x": float(i)})
            written = log.flush(timeout=HANG)
            log.close(timeout=HANG)  # closes the child's sink: its files, not the parent's
            gc.collect()  # the parent's pyarrow writers, if the child still had them, would write a footer now
            return written

        assert forked_child(log_in_the_child) == "done"
        assert parents_file.stat().st_size == size, "the child wrote into the parent's open file"
        log.log("parent", {"x": 2.0})
    finally:
        log.close(timeout=HANG)
    assert _rows_by_model(tmp_path) == {"parent": 2, "child": 3}
    assert metrics.registry.get_sample_value("aiwatch_prediction_log_records_total",
                                             {"log": "predictions", "result": "failed"}) == 0
    assert metrics.registry.get_sample_value("aiwatch_prediction_log_records_total",
                                             {"log": "predictions", "result": "lost"}) == 0


# A fresh interpreter: whether pyarrow has looked for pandas yet is per process (and done in this one long ago).
# The master's log writer is stopped inside its first pa.array(), where pyarrow imports pandas under a lock of its own
# (its pandas shim's), until the worker is forked.
_FORK_IN_PYARROWS_FIRST_ARRAY = f"""
import importlib.abc, os, sys, tempfile, threading
from prometheus_client import CollectorRegistry
from aiwatch.feedback import ParquetSink, PredictionLog

inside, forked = threading.Event(), threading.Event()

class PandasImportWaitsForTheFork(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pandas" and threading.current_thread() is not threading.main_thread():
            inside.set()
            forked.wait({HANG})
        return None

sys.meta_path.insert(0, PandasImportWaitsForTheFork())
log = PredictionLog(ParquetSink(tempfile.mkdtemp(), fsync=False), batch_size=1, registry=CollectorRegistry())
log.log("warmup", {{"x": 1.0}})  # at import, in the master (gunicorn --preload)
flusher = threading.Thread(target=lambda: (log.flush({HANG}), inside.set()), daemon=True)
flusher.start()
inside.wait({HANG})  # the writer is inside pyarrow's pandas import, or it never went there
pid = os.fork()
if pid == 0:
    log.log("worker", {{"x": 2.0}})
    os._exit(0 if log.flush({HANG}) else 3)
forked.set()
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
log.close()
"""


def test_a_worker_forked_while_the_masters_log_writer_was_in_pyarrows_first_array_writes_its_rows() -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_FORK_IN_PYARROWS_FIRST_ARRAY)], env=python_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=4 * HANG)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], "the worker's log writer hung on pyarrow's lock (3: its flush timed out)"


def test_a_sink_whose_pandas_fails_to_import_stores_every_row(tmp_path: Path) -> None:
    # pyarrow's first pa.array() raises what a broken pandas import raises (other than an ImportError), once
    code = f"""
        import importlib.abc, sys, time
        from aiwatch.feedback import ParquetSink

        class BrokenPandas(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "pandas":
                    raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")
                return None

        sys.meta_path.insert(0, BrokenPandas())
        sink = ParquetSink({str(tmp_path)!r}, fsync=False)
        sink.write([{{"request_id": "r", "timestamp": time.time(), "model": "m", "x": 1.0}}])
        sink.close()
        print(len(sink.completed))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=python_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=4 * HANG)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"] and _rows_by_model(tmp_path) == {"m": 1}


def test_the_request_ids_of_forked_children_are_not_their_parents_nor_each_others(tmp_path: Path,
                                                                                  metrics: Metrics) -> None:
    # request_id is the join key of delayed labels: gunicorn's workers forked from one master's log must not repeat
    # each other's ids (nor the master's)
    log = PredictionLog(_Rows(), metrics=metrics)
    try:
        def log_one(name: str) -> Callable[[], bool]:
            def action() -> bool:
                rid = log.log("m", {"x": 1.0})
                (tmp_path / name).write_text(rid or "")
                return rid is not None
            return action

        assert forked_child(log_one("first")) == "done"
        assert forked_child(log_one("second")) == "done"
        ids = [(tmp_path / name).read_text() for name in ("first", "second")] + [log.log("m", {"x": 1.0})]
        assert len(set(ids)) == 3, ids
    finally:
        log.close(timeout=HANG)


def test_forked_children_draw_their_own_sampling_decisions(tmp_path: Path) -> None:
    # aiwatch's random stream is its own (not the random module's, which Python reseeds in a child): copied as it was
    # at the fork, it gave every worker the same keep-or-drop sequence
    policy = SamplingPolicy(0.5)

    def draw(name: str) -> Callable[[], bool]:
        def action() -> bool:
            (tmp_path / name).write_text("".join("1" if policy.keep(0.5) else "0" for _ in range(64)))
            return True
        return action

    assert forked_child(draw("first")) == "done"
    assert forked_child(draw("second")) == "done"
    first, second = ((tmp_path / name).read_text() for name in ("first", "second"))
    assert first != second  # 64 fair draws each: equal by chance once in 2**64


def test_a_log_closed_in_the_parent_stays_closed_in_the_child(metrics: Metrics) -> None:
    log = PredictionLog(_Rows(), batch_size=1, metrics=metrics)
    log.close(timeout=HANG)

    def log_in_the_child() -> bool:
        dropped = log.log("m", {"x": 1}) is None
        return dropped and not any(t.name.startswith("aiwatch-prediction-log") for t in threading.enumerate())

    assert forked_child(log_in_the_child) == "done"


def test_a_child_that_does_not_log_starts_no_writer(metrics: Metrics) -> None:
    # a child that execs at once (subprocess with preexec_fn) or never logs gets no thread
    log = PredictionLog(_Rows(), metrics=metrics)
    try:
        def no_thread() -> bool:
            return not any(t.name.startswith("aiwatch-prediction-log") for t in threading.enumerate())

        assert forked_child(no_thread) == "done"
    finally:
        log.close(timeout=HANG)


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + HANG / 2
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_a_monitor_started_in_the_parent_evaluates_on_its_schedule_in_the_child(registry: CollectorRegistry
                                                                                ) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=0.05, flush_every=1).start()
    try:
        def observe_only() -> bool:
            for x in (0.1, 0.2, 0.3):
                monitor.observe({"x": x})
            return _eventually(lambda: registry.get_sample_value(
                "aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 3)

        assert forked_child(observe_only) == "done"
    finally:
        monitor.stop(timeout=HANG)


def test_a_child_whose_monitor_thread_cannot_start_tries_again_at_its_next_row(registry: CollectorRegistry,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=0.05, flush_every=1).start()
    try:
        def refused_once() -> bool:
            start = threading.Thread.start

            def cannot_start(thread: threading.Thread) -> None:
                monkeypatch.setattr(threading.Thread, "start", start)
                raise RuntimeError("can't start new thread")

            monkeypatch.setattr(threading.Thread, "start", cannot_start)
            monitor.observe({"x": 0.1})  # its thread could not start: counted, not raised
            refused = registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"})
            monitor.observe({"x": 0.2})
            return refused == 1 and _eventually(lambda: registry.get_sample_value(
                "aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 2)

        assert forked_child(refused_once) == "done"
    finally:
        monitor.stop(timeout=HANG)


def test_a_monitor_stopped_in_the_parent_does_not_start_in_the_child(registry: CollectorRegistry) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=0.05).start()
    monitor.stop(timeout=HANG)

    def observe() -> bool:
        monitor.observe({"x": 0.1})
        return not any(t.name.startswith("aiwatch-drift") for t in threading.enumerate())

    assert forked_child(observe) == "done"


def test_a_gpu_poller_started_in_the_parent_keeps_polling_there_and_not_in_a_child_never_scraped(metrics: Metrics
                                                                                                ) -> None:
    # a child polls again only from its first status() (a scrape): one that execs at once or serves no metrics does
    # not poll the GPUs a second time (docs/http.md, Forking)
    poller = GpuPoller(interval=0.05, nvml=FakeNVML.with_gpus(1), metrics=metrics).start()
    try:
        assert _eventually(lambda: poller.snapshot is not None)
        at_fork = poller.snapshot

        def no_poller() -> bool:
            time.sleep(0.3)  # six intervals: a poller running in the child would have replaced the snapshot
            return (not poller.running and poller.snapshot is at_fork
                    and not any(t.name == "aiwatch-gpu-poller" for t in threading.enumerate()))

        assert forked_child(no_poller) == "done"
        assert poller.running and _eventually(lambda: poller.snapshot is not at_fork)
    finally:
        poller.stop(timeout=HANG)


def _outside_multiprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """No prometheus_client multiprocess directory: a worker's /metrics serves its own registry."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)


def _polling_collector(registry: CollectorRegistry, nvml: FakeNVML) -> GpuCollector:
    """A collector polling every 0.05 s on ``registry``, with a poll finished."""
    collector = GpuCollector(interval=0.05, nvml=nvml, registry=registry, metrics=get_metrics(registry))
    assert _eventually(lambda: collector.poller.snapshot is not None and collector.poller.snapshot.nvml_up)
    return collector


def _polled_again(collector: GpuCollector, registry: CollectorRegistry, at_fork: GpuSnapshot | None) -> bool:
    """Whether a poll after ``at_fork`` (the snapshot the child inherited) is what ``registry`` exports."""
    return (_eventually(lambda: collector.poller.snapshot is not at_fork) and at_fork is not None
            and _last_poll(registry) > at_fork.timestamp)


def _xids(registry: CollectorRegistry) -> list[float]:
    return [s.value for f in registry.collect() if f.name == "aiwatch_gpu_xid_errors" for s in f.samples
            if s.name == "aiwatch_gpu_xid_errors_total"]


def _last_poll(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aiwatch_gpu_last_poll_timestamp_seconds") or 0.0


def test_a_gpu_collector_polling_in_the_parent_polls_again_in_the_child_from_its_first_scrape(
        registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    # without multiprocess mode a worker's /metrics serves its own collector: it served the snapshot of the fork for
    # ever, with aiwatch_gpu_last_poll_timestamp_seconds standing still
    _outside_multiprocess(monkeypatch)
    nvml = FakeNVML.with_gpus(1)
    nvml.xid(0)
    collector = _polling_collector(registry, nvml)
    assert _eventually(lambda: _xids(registry) == [1.0])
    parents_set = collector.poller._event_set
    try:
        def scrape() -> dict[str, Any]:
            at_fork = collector.poller.snapshot
            inits, handles, sets = (nvml.calls[name] for name in (
                "nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlEventSetCreate"))
            _last_poll(registry)  # the first scrape starts the child's poller
            fresh = _polled_again(collector, registry, at_fork)
            return {"fresh": fresh, "running": collector.poller.running,
                    "gpu_up": [s.value for f in registry.collect() if f.name == "aiwatch_gpu_up" for s in f.samples],
                    "nvml_init": nvml.calls["nvmlInit"] - inits,
                    "handles_opened": nvml.calls["nvmlDeviceGetHandleByIndex"] > handles,
                    "event_set_created": nvml.calls["nvmlEventSetCreate"] - sets,
                    "own_event_set": collector.poller._event_set is not parents_set, "xids": _xids(registry)}

        assert child_reports(scrape) == {"fresh": True, "running": True, "gpu_up": [1.0], "nvml_init": 1,
                                         "handles_opened": True, "event_set_created": 1, "own_event_set": True,
                                         "xids": [1.0]}
        assert collector.poller.running  # the parent polls on
    finally:
        collector.close(timeout=HANG)


def test_a_gpu_poller_not_resumed_yet_is_resumed_by_a_grandchild(registry: CollectorRegistry,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # a child forked before its first scrape (a fork pool, or the workers of a master that is itself a forked child)
    _outside_multiprocess(monkeypatch)
    collector = _polling_collector(registry, FakeNVML.with_gpus(1))
    try:
        def fork_again() -> dict[str, Any]:
            def scrape() -> dict[str, Any]:
                at_fork = collector.poller.snapshot
                _last_poll(registry)
                return {"fresh": _polled_again(collector, registry, at_fork)}

            return {"child_polls": collector.poller.running, "grandchild": child_reports(scrape)}

        assert child_reports(fork_again) == {"child_polls": False, "grandchild": {"fresh": True}}
    finally:
        collector.close(timeout=HANG)


def test_a_gpu_poller_forked_while_pynvml_held_its_load_lock_polls_in_the_child(
        registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    # pynvml loads NVML and counts nvmlInit under a plain module lock: forked while the parent held it (its poll
    # loading NVML), the child's first nvmlInit waited for ever, its poller hung and its GPUs read as down
    _outside_multiprocess(monkeypatch)
    nvml = FakeNVML.with_gpus(1)
    collector = _polling_collector(registry, nvml)
    try:
        def scrape() -> dict[str, Any]:
            at_fork = collector.poller.snapshot
            _last_poll(registry)
            return {"fresh": _polled_again(collector, registry, at_fork), "up": collector.poller.status().nvml_up}

        with held([nvml.libLoadLock]):
            reported = child_reports(scrape)
        assert reported == {"fresh": True, "up": True}
    finally:
        collector.close(timeout=HANG)


def test_a_child_that_stops_its_gpu_poller_before_its_first_scrape_starts_none(registry: CollectorRegistry,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # stop() cancels the restart the fork left pending: a scrape after it must not start the poller again
    _outside_multiprocess(monkeypatch)
    nvml = FakeNVML.with_gpus(1)
    collector = _polling_collector(registry, nvml)
    try:
        def stop_then_scrape() -> dict[str, Any]:
            collector.poller.stop()
            inits = nvml.calls["nvmlInit"]
            list(collector.collect())
            return {"running": collector.poller.running, "up": collector.poller.status().nvml_up,
                    "nvml_init": nvml.calls["nvmlInit"] - inits}

        assert child_reports(stop_then_scrape) == {"running": False, "up": False, "nvml_init": 0}
        assert collector.poller.running  # the parent's poller is its own
    finally:
        collector.close(timeout=HANG)


def test_a_child_logs_again_a_gpu_condition_its_parent_logged(registry: CollectorRegistry) -> None:
    # a worker's log may be a stream of its own: a GPU that cannot be opened is said there too, not only in the
    # master's log
    nvml = FakeNVML.with_gpus(1)
    nvml.gpus[0].fail["name"] = nvml.NVML_ERROR_GPU_IS_LOST
    collector = GpuCollector(nvml=nvml, registry=registry, metrics=get_metrics(registry), start=False)
    collector.poller.poll_once()
    assert collector.poller._reported, "the parent logged the condition"

    def poll_and_listen() -> dict[str, Any]:
        messages = _Messages()
        log = logging.getLogger("aiwatch.signals.gpu")
        log.addHandler(messages)
        try:
            collector.poller.poll_once()
        finally:
            log.removeHandler(messages)
        return {"logged": sum("cannot be opened" in m for m in messages.messages)}

    try:
        assert child_reports(poll_and_listen) == {"logged": 1}
    finally:
        collector.close(timeout=HANG)


def test_a_gpu_collector_in_a_multiprocess_child_does_not_poll_and_initialises_nvml_itself_when_asked(
        registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # with PROMETHEUS_MULTIPROC_DIR a worker's /metrics never serves this collector: the master's poller is the
    # host's one; a poll the child asks for itself opens NVML anew, not through the parent's handles
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    nvml = FakeNVML.with_gpus(1)
    collector = _polling_collector(registry, nvml)
    try:
        def scrape_then_poll() -> dict[str, Any]:
            at_fork = collector.poller.snapshot
            list(collector.collect())  # a scrape starts no poller here
            no_poller = not collector.poller.running and collector.poller.status() is at_fork
            inits = nvml.calls["nvmlInit"]
            polled = collector.poller.poll_once()
            return {"no_poller": no_poller, "nvml_init": nvml.calls["nvmlInit"] - inits, "up": polled.nvml_up,
                    "exported": collector.poller.status() is polled}

        assert child_reports(scrape_then_poll) == {"no_poller": True, "nvml_init": 1, "up": True, "exported": True}
    finally:
        collector.close(timeout=HANG)


def test_a_child_whose_gpu_poller_cannot_start_counts_it_and_tries_again_at_its_next_scrape(
        registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    _outside_multiprocess(monkeypatch)
    collector = _polling_collector(registry, FakeNVML.with_gpus(1))
    try:
        def refused_once() -> dict[str, Any]:
            at_fork = collector.poller.snapshot
            start = threading.Thread.start
            errors = registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"}) or 0.0

            def cannot_start(thread: threading.Thread) -> None:
                monkeypatch.setattr(threading.Thread, "start", start)
                raise RuntimeError("can't start new thread")

            monkeypatch.setattr(threading.Thread, "start", cannot_start)
            _last_poll(registry)  # its thread could not start: counted, not raised
            refused = (registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "gpu"})
                       or 0.0) - errors
            running_then = collector.poller.running
            _last_poll(registry)
            return {"refused": refused, "running_then": running_then,
                    "fresh": _polled_again(collector, registry, at_fork), "running": collector.poller.running}

        assert child_reports(refused_once) == {"refused": 1.0, "running_then": False, "fresh": True, "running": True}
    finally:
        collector.close(timeout=HANG)


def test_a_master_that_hands_over_its_monitors_schedule_stops_evaluating_and_its_children_resume(
        registry: CollectorRegistry) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    handed, stopped = (DriftMonitor(profile, model=name, registry=registry, interval=0.05, flush_every=1).start()
                       for name in ("handed", "stopped"))
    try:
        hand_over_schedules()
        stopped.stop(timeout=HANG)  # after the hand-over: it stays stopped in the children
        assert handed._thread is None

        def resume() -> bool:
            for monitor in (handed, stopped):
                monitor.observe({"x": 0.1})
            resumed = _eventually(lambda: registry.get_sample_value(
                "aiwatch_drift_window_samples", {"model": "handed", "feature": "x"}) == 1)
            return resumed and not any(t.name == "aiwatch-drift-stopped" for t in threading.enumerate())

        assert forked_child(resume) == "done"
    finally:
        handed.stop(timeout=HANG)
        stopped.stop(timeout=HANG)


def test_a_child_starts_with_an_empty_drift_window(registry: CollectorRegistry) -> None:
    # the master's warm-up rows are the master's: every worker evaluated them again as its own
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, window_size=100)
    for _ in range(5):
        monitor.observe({"x": 3.0})
    monitor.evaluate()

    def observe_and_evaluate() -> dict[str, Any]:
        empty = len(monitor.window()["x"])
        monitor.observe({"x": 0.1})
        report = monitor.evaluate()
        return {"empty": empty, "rows": report.features["x"].current_count,
                "window": monitor.window()["x"].tolist(),
                "gauge": registry.get_sample_value("aiwatch_drift_window_samples", {"model": "m", "feature": "x"})}

    assert child_reports(observe_and_evaluate) == {"empty": 0, "rows": 1, "window": [0.1], "gauge": 1.0}
    assert len(monitor.window()["x"]) == 5  # the parent's window is its own still


def test_a_monitor_started_in_the_parent_evaluates_only_the_childs_rows_on_its_schedule(registry: CollectorRegistry
                                                                                         ) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=0.05, flush_every=1).start()
    try:
        for _ in range(5):
            monitor.observe({"x": 3.0})
        assert _eventually(lambda: registry.get_sample_value(
            "aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 5)

        def observe_only() -> dict[str, Any]:
            for x in (0.1, 0.2):
                monitor.observe({"x": x})
            two = _eventually(lambda: registry.get_sample_value(
                "aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 2)
            return {"two": two, "gauge": registry.get_sample_value("aiwatch_drift_window_samples",
                                                                   {"model": "m", "feature": "x"})}

        assert child_reports(observe_only) == {"two": True, "gauge": 2.0}
    finally:
        monitor.stop(timeout=HANG)


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_child_counts_and_warns_about_an_unknown_feature_its_parent_already_reported(registry: CollectorRegistry
                                                                                      ) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry)
    monitor.observe({"x": 0.1, "extra": 1})  # counted and warned about in the parent, a moment before the fork
    unknown = {"model": "m", "feature": "extra", "reason": "unknown_feature"}
    assert registry.get_sample_value("aiwatch_feature_invalid_total", unknown) == 1

    def observe_unknown() -> dict[str, Any]:
        messages = _Messages()
        logging.getLogger("aiwatch").addHandler(messages)
        monitor.observe({"x": 0.2, "extra": 2})
        return {"counted": registry.get_sample_value("aiwatch_feature_invalid_total", unknown),
                "warned": any("'extra'" in m for m in messages.messages), "unknown": monitor.unknown_features}

    # the child's registry holds the parent's count (1) at the fork; its own sighting adds one
    assert child_reports(observe_unknown) == {"counted": 2.0, "warned": True, "unknown": ["extra"]}


def _bins_counted(registry: CollectorRegistry) -> float:
    return sum(s.value for family in registry.collect() if family.name == "aiwatch_feature_bin"
               for s in family.samples if s.name == "aiwatch_feature_bin_total")


def test_a_child_does_not_count_the_rows_its_parent_had_not_counted_yet(registry: CollectorRegistry) -> None:
    # five rows observed in the parent, under flush_every: not yet in aiwatch_feature_bin_total at the fork (every
    # gunicorn worker counted its master's such rows again at its first flush)
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=1e6, flush_interval=1e6).start()
    try:
        for _ in range(5):
            monitor.observe({"x": 0.1})

        def count_own_row() -> bool:
            monitor.observe({"x": 0.2})
            monitor.flush()
            return _bins_counted(registry) == 1

        assert forked_child(count_own_row) == "done"
        monitor.flush()
        assert _bins_counted(registry) == 5
    finally:
        monitor.stop(timeout=HANG)


def test_a_master_counts_its_uncounted_rows_when_it_hands_over_and_its_workers_do_not(registry: CollectorRegistry
                                                                                      ) -> None:
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=1e6, flush_interval=1e6).start()
    try:
        for _ in range(5):
            monitor.observe({"x": 0.1})  # at import, in the master (gunicorn --preload)
        hand_over_schedules()  # aiwatch.gunicorn's pre_fork: no flush of the master's comes after it
        assert _bins_counted(registry) == 5

        def count_own_row() -> bool:
            monitor.observe({"x": 0.2})
            monitor.flush()
            return _bins_counted(registry) == 6  # this registry's copy holds the master's 5

        assert forked_child(count_own_row) == "done"
    finally:
        monitor.stop(timeout=HANG)


def _evaluates_in_a_child(monitor: DriftMonitor, registry: CollectorRegistry) -> Callable[[], bool]:
    def observe_only() -> bool:
        for x in (0.1, 0.2, 0.3):
            monitor.observe({"x": x})
        return _eventually(lambda: registry.get_sample_value(
            "aiwatch_drift_window_samples", {"model": "m", "feature": "x"}) == 3)

    return observe_only


def test_a_started_monitor_evaluates_in_a_grandchild_forked_before_the_childs_first_row(
        registry: CollectorRegistry) -> None:
    # a worker that forks (a fork pool, gunicorn --daemon's double fork) before it observes a row
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=0.05, flush_every=1).start()
    try:
        grandchild = _evaluates_in_a_child(monitor, registry)
        assert forked_child(lambda: forked_child(grandchild) == "done") == "done"
    finally:
        monitor.stop(timeout=HANG)


def test_a_forked_master_that_hands_over_a_pending_schedule_leaves_it_to_its_workers_only(
        registry: CollectorRegistry) -> None:
    # gunicorn --preload --daemon: the monitor started at import, then daemonize() forks, then pre_fork + fork
    profile = ReferenceProfile.build({"x": np.random.default_rng(5).normal(0, 1, 500)})
    monitor = DriftMonitor(profile, model="m", registry=registry, interval=0.05, flush_every=1).start()
    try:
        worker = _evaluates_in_a_child(monitor, registry)

        def daemonized_master() -> bool:
            hand_over_schedules()
            if forked_child(worker) != "done":
                return False
            monitor.observe({"x": 0.1})  # a row in the master after the hand-over: no schedule resumes there
            return not any(t.name == "aiwatch-drift-m" for t in threading.enumerate())

        assert forked_child(daemonized_master) == "done"
    finally:
        monitor.stop(timeout=HANG)


def test_an_owner_that_fails_to_renew_leaves_the_others_renewed(caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    class Failing:
        def __init__(self, name: str) -> None:
            self.name = name

        def _renew_after_fork(self) -> None:
            called.append(self.name)
            raise RuntimeError(f"{self.name} cannot renew")

    owners = [Failing("first"), Failing("second")]
    for owner in owners:
        forksafe.renew_at_fork(owner)
    caplog.set_level("WARNING", logger="aiwatch")
    # whichever runs first fails: the other must still be renewed, and each failure is logged
    assert forked_child(lambda: sorted(called) == ["first", "second"] and caplog.text.count("cannot renew") == 2
                        ) == "done"
    assert called == [] and owners


def test_a_child_drops_what_the_parents_finalizers_left_to_record(metrics: Metrics) -> None:
    """The parent records the requests its finalizers left (aiwatch.deferred); a child recording them too would
    count them twice."""
    ran: list[str] = []
    metrics.deferred.append(lambda: ran.append("recorded"))

    def child() -> dict[str, Any]:
        from aiwatch.deferred import run_deferred

        left = len(metrics.deferred)
        run_deferred(metrics)
        return {"left": left, "ran": ran}

    assert child_reports(child) == {"left": 0, "ran": []}
    assert len(metrics.deferred) == 1  # the parent's, still to record


def test_a_child_serves_the_metrics_servers_handed_over_except_one_its_owner_shut_down() -> None:
    # the one shut down and closed was handed over too: a child's thread on its closed socket failed at once
    from aiwatch import exposition

    stopped, thread = exposition.start_http_server(0)
    stopped.shutdown()
    stopped.server_close()
    thread.join()
    live, _ = exposition.start_http_server(0)
    failed: list[str] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: failed.append(args.thread.name if args.thread else "?")
    try:
        exposition.hand_over_http_servers()
        pid = os.fork()
        if pid == 0:  # the metrics threads serving here, as a gunicorn worker's, and those that failed
            time.sleep(0.5)
            os._exit(10 * len(failed) + [t.name for t in threading.enumerate()].count("aiwatch-metrics"))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 1
        assert [t.name for t in threading.enumerate()].count("aiwatch-metrics") == 0  # handed over
    finally:
        threading.excepthook = hook
        exposition._handed_over.clear()  # the next forks of this process (other tests) serve nothing
        live.server_close()
