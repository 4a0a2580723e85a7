"""``PredictionLog``: sample requests, queue them without blocking, write them on a background thread.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from prometheus_client import CollectorRegistry
    >>> from aiwatch.feedback import ParquetSink
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with PredictionLog(ParquetSink(tmp), registry=CollectorRegistry()) as log:
    ...         request_id = log.log("ranker", {"basket_value": 42.0}, {"score": 0.9}, version="v3")
    ...     len(list(Path(tmp).rglob("*.parquet")))
    1

The request path does a random draw, builds one small object (with shallow copies of the caller's ``inputs`` and
``outputs`` mappings) and appends it to a bounded deque (no lock, no I/O).
When the deque is full the record is dropped and counted (``aiwatch_prediction_log_records_total{result="dropped"}``)
and the request goes on. The writer thread turns records into rows (:class:`~aiwatch.feedback.schema.FieldPolicy`:
allow/deny lists, hashing) and hands them to the sink in batches.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from aiwatch.amounts import as_count, as_timeout, period, shown
from aiwatch.amounts import timeout as seconds_to_wait
from aiwatch.fastpath import adder
from aiwatch.feedback.sampling import SamplingPolicy
from aiwatch.feedback.schema import FieldPolicy, PredictionRecord
from aiwatch.feedback.sink import PredictionSink, RowsLost
from aiwatch.forksafe import renew_at_fork
from aiwatch.metrics import RECOVERY_RESULTS, UNFINISHED_RECOVERY_RESULTS, Metrics, get_metrics
from aiwatch.prefork import check_fork_hooks
from aiwatch.safety import errors_of
from aiwatch.timing import current_timeline

COMPONENT = "prediction_log"
#: The logs of this process not closed yet (:func:`close_all`), not held alive by being here.
_open_logs: weakref.WeakSet[PredictionLog] = weakref.WeakSet()


def _snapshot(value: Any) -> Any:
    """A shallow copy of a mapping (the caller may reuse or change its dict once ``log()`` returns, and the row is
    built later, on the writer thread); any other value as it is. Nested values are not copied."""
    kind = type(value)
    if kind is dict:
        return value.copy()
    if kind is float or kind is str or value is None or not isinstance(value, Mapping):
        return value
    return dict(value.items())


def _where(sink: Any) -> str:
    """Where ``sink`` writes, for the log's failure lines: a ParquetSink's directory, a RedisStreamSink's stream,
    else the sink's class (logs of the same name may write to different places)."""
    directory = getattr(sink, "directory", None)
    if isinstance(directory, (str, os.PathLike)):
        return f"into {os.fspath(directory)}"
    stream = getattr(sink, "stream", None)
    if isinstance(stream, (str, bytes)):
        return f"into the stream {shown(stream)}"
    return f"into a {type(sink).__name__}"


def _current_trace() -> tuple[str | None, bool | None]:
    """The trace id of the request being served and whether its trace is sampled (stored by the tracing backend):
    aiwatch's timeline (which keeps a sampled span's id only), else the current OpenTelemetry span. An unsampled
    trace's id still correlates the request's logs, but a link to it finds no trace."""
    tl = current_timeline()
    if tl is not None and tl.trace_id:
        return tl.trace_id, True
    ctx = trace.get_current_span().get_span_context()
    return (format(ctx.trace_id, "032x"), bool(ctx.trace_flags.sampled)) if ctx.is_valid else (None, None)


class PredictionLog:
    """Records model inputs and outputs per request into ``sink``, off the request path.

    ``sampling`` (or ``sample_rate``/``slow_seconds``/``slow_rate``/``error_rate``) picks the requests kept;
    ``fields`` (or ``allow``/``deny``/``hash_fields``/``hash_key``) picks and hashes the fields written.
    ``queue_size`` bounds the records waiting for the writer; ``batch_size`` rows go to the sink at a time, at least
    every ``flush_seconds``. ``name`` is the ``log`` label of ``aiwatch_prediction_log_records_total``.
    Close the log (or use it as a context manager) to write out what is queued; it is closed at interpreter exit.
    A sink with a ``take_recovery()`` (:class:`~aiwatch.feedback.ParquetSink`) has it called at the start, after each
    flush and at close, and must hand over what it recovered since the last call only.
    """

    def __init__(self, sink: PredictionSink, *, sampling: SamplingPolicy | None = None, sample_rate: float = 1.0,
                 slow_seconds: float | None = None, slow_rate: float = 1.0, error_rate: float = 1.0,
                 fields: FieldPolicy | None = None, allow: Any = None, deny: Any = (), hash_fields: Any = (),
                 hash_key: bytes | str | None = None, queue_size: int = 10_000, batch_size: int = 1_000,
                 flush_seconds: float = 1.0, name: str = "predictions", metrics: Metrics | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        for label, number in (("queue_size", queue_size), ("batch_size", batch_size)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{label} must be a whole number >= 1, got {number!r}")
        every = period(flush_seconds, "flush_seconds")  # the writer thread waits on it: 0 or NaN would spin it
        self.sink = sink
        self.sampling = sampling or SamplingPolicy(sample_rate, slow_seconds, slow_rate, error_rate)
        self.fields = fields or FieldPolicy(allow, deny, hash_fields, hash_key)
        self.queue_size, self.batch_size, self.flush_seconds, self.name = queue_size, batch_size, every, name
        self.metrics = metrics or get_metrics(registry)
        self._error = errors_of(COMPONENT, f"{shown(name)} ({_where(sink)})", self.metrics)
        counter = self.metrics.prediction_log_records
        # the request path's counters: fastpath adders, one Python call per update
        self._queued = adder(self.metrics.child(counter, (name, "queued")))
        self._sampled_out = adder(self.metrics.child(counter, (name, "sampled_out")))
        self._dropped = adder(self.metrics.child(counter, (name, "dropped")))
        self._written = self.metrics.child(counter, (name, "written"))
        self._failed = self.metrics.child(counter, (name, "failed"))
        self._lost = self.metrics.child(counter, (name, "lost"))
        self._recoverable = self.metrics.child(counter, (name, "recoverable"))
        self._recovery_broken = self._rotations_broken = False
        self._count_recovery()
        # request ids: a random prefix per log and a counter, unique without building a uuid4 per request
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()
        self._pending: collections.deque[PredictionRecord] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_hand = 0  # records taken off the deque and not yet handed to the sink
        self._done = 0  # records taken off the deque and handed to the sink (written or failed), for flush()
        self._closed = False
        self._finished = False  # close() has taken its last look at the queue: what is appended now, nothing writes
        self._start_lock = threading.Lock()
        self._no_writer = False  # in a forked child, until its first record starts a writer of its own
        self._thread = self._new_writer()
        atexit.register(self.close)
        _open_logs.add(self)
        renew_at_fork(self)
        check_fork_hooks(f"the prediction log {name!r}", self.metrics)

    def _count_recovery(self) -> None:
        """Count what the sink recovered since the last count: at its start (a ParquetSink: the files of writers
        that died), which it did before it knew this log's name and metrics, then at each flush and at close (the
        journals of its own files that failed); and the files it completed early (:meth:`_count_forced_rotations`)."""
        self._count_forced_rotations()
        take = getattr(self.sink, "take_recovery", None)
        if take is None or self._recovery_broken:
            return
        try:
            recovery = take()
            now = time.time()
            for result in RECOVERY_RESULTS:  # these alone: label values stay bounded whatever the sink gives
                files = recovery.files.get(result, 0)
                self.metrics.child(self.metrics.prediction_log_recovery_files, (self.name, result)).inc(files)
                if files > 0 and result in UNFINISHED_RECOVERY_RESULTS:
                    # what AiwatchPredictionLogRecoveryIncomplete reads: the count alone cannot tell a new one
                    # (a restart counting the same number) from an old one seen again after a scrape gap
                    self.metrics.child(self.metrics.prediction_log_recovery_last_timestamp,
                                       (self.name, result)).set(now)
            self.metrics.child(self.metrics.prediction_log_recovered_records, (self.name,)).inc(recovery.records)
        except Exception as exc:  # a sink of the user's with a method of that name: counted once, not per flush
            self._recovery_broken = True
            self._error(exc)

    def _count_forced_rotations(self) -> None:
        """Count the files the sink completed early since the last count (a ParquetSink at ``max_open_files``), at
        the log's start (0), after each flush and at close, as :meth:`_count_recovery` counts recovery."""
        take = getattr(self.sink, "take_forced_rotations", None)
        if take is None or self._rotations_broken:
            return
        try:
            self.metrics.child(self.metrics.prediction_log_forced_rotations, (self.name,)).inc(take())
        except Exception as exc:  # a sink of the user's with a method of that name: counted once, not per flush
            self._rotations_broken = True
            self._error(exc)

    def _new_writer(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name=f"aiwatch-prediction-log-{self.name}", daemon=True)
        thread.start()
        self._writer_pid = os.getpid()
        return thread

    def _renew_after_fork(self) -> None:
        # The records queued or in hand are the parent's, which writes them. The child (a gunicorn worker forked
        # from a master that imported the app) gets a writer of its own at its first record, not here: a child that
        # execs at once (subprocess with preexec_fn) or never logs needs no thread. The sink renews itself: aiwatch's
        # sinks let go of the parent's files (ParquetSink), redis-py makes new connections in a new pid. The child's
        # request ids get a prefix of their own: with the parent's, every worker repeated the master's id sequence.
        self._id_prefix = os.urandom(8).hex()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._start_lock = threading.Lock()
        self._pending.clear()
        self._in_hand = 0
        self._done = 0
        self._no_writer = not self._closed

    def _start_writer(self) -> None:
        with self._start_lock:
            if self._no_writer:
                self._thread = self._new_writer()
                self._no_writer = False

    # --- the request path ---------------------------------------------------------------------------------
    def log(self, model: str, inputs: Mapping[str, Any], outputs: Any = None, *, version: str = "",
            latency: float | None = None, error: bool = False, trace_id: str | None = None,
            trace_sampled: bool | None = None, request_id: str | None = None,
            timestamp: float | None = None) -> str | None:
        """Record one prediction, if sampled. Returns the record's ``request_id`` (the join key for delayed labels:
        pass your own, or keep the one returned), or ``None`` when the request was not kept. ``latency`` defaults
        to the time the current aiwatch request has taken so far, ``trace_id`` to the current trace's (and
        ``trace_sampled`` to whether that trace is sampled; with your own ``trace_id``, null unless you pass it),
        ``timestamp`` (Unix seconds) to now; a record whose ``timestamp`` is no time between the years 1 and 9999
        is counted as failed on its own. ``inputs`` and ``outputs`` mappings are copied (shallow: the caller may
        reuse its dict once this returns; nested values are the caller's until the record is written). Never raises
        into the caller."""
        try:
            if latency is None:
                tl = current_timeline()
                if tl is not None:
                    latency = tl.elapsed()
            rate = self.sampling.rate_for(latency, error)
            if not self.sampling.keep(rate):
                self._sampled_out(1.0)
                return None
            if self._closed or len(self._pending) >= self.queue_size:
                self._dropped(1.0)
                return None
            try:
                inputs, outputs = _snapshot(inputs), _snapshot(outputs)
            except Exception as exc:  # a mapping that cannot be read: this record alone fails
                self._error(exc)
                self._failed.inc()
                return None
            # ``or`` took a client's id 0 (an int, as docs/prediction-log.md allows) for no id: its row got another
            rid = request_id if request_id is not None and (request_id.__class__ is not str or request_id) \
                else f"{self._id_prefix}{next(self._ids):012x}"
            if trace_id is None:
                trace_id, trace_sampled = _current_trace()
            record = PredictionRecord(
                rid, time.time() if timestamp is None else timestamp, model, version, trace_id, latency, error, rate,
                inputs, outputs, trace_sampled)
            self._pending.append(record)
            if len(self._pending) > self.queue_size:
                # other threads appended between this one's check of the bound and its append (each copying its
                # mappings meanwhile): the queue passed queue_size by as many; the latest leave it again, dropped
                try:
                    self._pending.remove(record)
                except ValueError:  # the writer took it already: it is written
                    pass
                else:
                    self._dropped(1.0)
                    return None
            self._queued(1.0)
            if self._finished:
                # closed while this record was being made (its mappings copied, a thread switch): close() looked at
                # the queue for the last time before it was appended, so no writer takes it; counted as dropped, not
                # left queued for ever (unless close()'s last look took it after all)
                try:
                    self._pending.remove(record)
                except ValueError:
                    return None
                self._dropped(1.0)
                return None
            if self._no_writer:
                self._start_writer()
            if len(self._pending) >= self.batch_size:
                self._wake.set()
            return rid
        except Exception as exc:
            self._error(exc)
            return None

    # --- the writer thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            closing = self._closed
            self._drain()
            now = time.monotonic()
            if closing:
                self._call("close")
                self._count_recovery()
                return
            if now >= next_flush:
                self._call("flush")
                self._count_recovery()  # what the flush recovered of the sink's kept journals (a ParquetSink)
                next_flush = now + self.flush_seconds

    def _drain(self) -> None:
        while self._pending:
            batch: list[PredictionRecord] = []
            with self._idle:
                while self._pending and len(batch) < self.batch_size:
                    batch.append(self._pending.popleft())
                self._in_hand = len(batch)
            try:
                self._write(batch)
            finally:
                with self._idle:
                    self._done += self._in_hand
                    self._in_hand = 0
                    self._idle.notify_all()

    def _write(self, batch: list[PredictionRecord]) -> None:
        rows: list[dict[str, Any]] = []
        for record in batch:
            try:
                rows.append(self.fields.row(record))
            except Exception as exc:  # one unusable record (a mapping that raises) must not lose the batch
                self._error(exc)
                self._failed.inc()
        if not rows:
            return
        try:
            self.sink.write(rows)
        except Exception as exc:
            self._error(exc)
            failed = len(rows)
            if isinstance(exc, RowsLost):
                # a sink's miscount (more rows than the batch, a negative count, none: a subclass that skipped
                # __init__) raised out of the counters and stopped the writer for good; the whole batch fails then
                told = as_count(getattr(exc, "failed", None))
                if told is not None and told <= failed:
                    failed = told
            self._failed.inc(failed)
            self._written.inc(len(rows) - failed)
            self._count_lost(exc)
        else:
            self._written.inc(len(rows))

    def _call(self, method: str) -> None:
        try:
            getattr(self.sink, method)()
        except Exception as exc:
            self._error(exc)
            self._count_lost(exc)

    def _count_lost(self, exc: Exception) -> None:
        if isinstance(exc, RowsLost):  # counts that are none (negative, not ints, missing) count nothing
            self._lost.inc(as_count(getattr(exc, "lost", 0)) or 0)
            self._recoverable.inc(as_count(getattr(exc, "recoverable", 0)) or 0)  # a subclass that skipped __init__

    # --- control ------------------------------------------------------------------------------------------
    def pending(self) -> int:
        """Records queued or in the writer's hands, not yet given to the sink."""
        return len(self._pending) + self._in_hand

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record queued so far has been given to the sink; ``False`` on timeout. A ``timeout``
        that is no number of seconds (NaN, infinite, past 1e9, a string) is a ValueError naming it."""
        deadline = time.monotonic() + seconds_to_wait(timeout, "timeout")
        self._wake.set()
        with self._idle:
            # the records queued so far, counted where the writer is not taking any: waiting for no record pending at
            # all, a log under steady traffic (never empty) returned False after the whole timeout, every record
            # queued before the call long written
            target = self._done + self._in_hand + len(self._pending)
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write out what is queued, close the sink and stop the writer, waiting ``timeout`` seconds at most.
        Idempotent; never raises: a ``timeout`` that is no number of seconds (NaN, infinite, a string) is counted as
        aiwatch's error (component ``prediction_log``) and 10 s are waited instead."""
        if self._closed:
            return
        wait = as_timeout(timeout)
        if wait is None:
            self._error(ValueError(f"a close timeout must be a number of seconds, got {shown(timeout)}"))
            wait = 10.0
        self._closed = True
        atexit.unregister(self.close)
        _open_logs.discard(self)
        if self._writer_pid != os.getpid():
            # Forked without Python's fork hooks (uWSGI's default, reported at the log's start: aiwatch.prefork): the
            # writer, the sink's files and the lock are the parent's. Nothing here writes them; waiting for a thread
            # this process does not have held its exit for the whole timeout.
            self._finished = True
            self._drop_pending()
            return
        self._wake.set()
        self._thread.join(wait)
        if not self._thread.is_alive():  # appended while the writer was finishing
            self._finished = True
            self._drop_pending()
        if self._thread.is_alive():
            self._error(TimeoutError(f"prediction log writer did not stop within {wait}s"))

    def _drop_pending(self) -> None:
        """Count what is left queued as dropped, one record at a time: a log() finishing now may take its own back
        (and count it) at the same moment."""
        dropped = 0
        while True:
            try:
                self._pending.popleft()
            except IndexError:
                break
            dropped += 1
        if dropped:
            self._dropped(float(dropped))

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def close_all() -> None:
    """Close every log of this process (write out what is queued, complete the sink's files), as ``atexit`` does.
    aiwatch's ASGI middleware calls it when the app's lifespan has shut down under a server that will kill the
    process without running ``atexit`` (uvicorn's SIGTERM: :mod:`aiwatch.middleware.asgi`). Never raises."""
    for log in list(_open_logs):
        log.close()
