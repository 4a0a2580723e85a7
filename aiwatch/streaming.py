"""Timing streamed responses: the first chunk of the body and the gaps between chunks.

A streamed response (an LLM's tokens over SSE, a ``StreamingResponse``, a gRPC server stream) is judged by how soon
its first chunk arrives and how steadily the rest follow, which a request histogram timed to the last byte cannot
show. :class:`ChunkTimer` is handed each chunk's time by the integration as the chunk leaves the app (for HTTP the
body's chunks, never the headers, which Starlette sends before it reads the body):

* ``aiwatch_time_to_first_chunk_seconds{service, route}``: from the request's start to the first non-empty chunk;
* ``aiwatch_time_between_chunks_seconds{service, route}``: from each chunk to the next.

Both carry the request's trace id as exemplar when its trace is sampled, as the request histogram does.

A response whose body comes in one chunk is no stream (its first byte is its last: the request histogram has it),
so nothing is recorded until a second chunk comes; then the first chunk's time is recorded too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiwatch.amounts import MAX_SECONDS, as_seconds, shown
from aiwatch.fastpath import observe
from aiwatch.safety import record_error

if TYPE_CHECKING:
    from aiwatch.timing import RequestRecorder


class ChunkTimer:
    """One streamed response's chunk times. ``route`` is the route label, or a callable that returns it (called at
    the second chunk, when a router has matched the request); ``trace_id``: the request's sampled trace id (the
    exemplar of each observation), ``None`` for none."""

    __slots__ = ("_exemplar", "_first", "_gap", "_last", "_recorder", "_route", "_start")

    def __init__(self, recorder: RequestRecorder, start: float, route: str | Callable[[], str],
                 trace_id: str | None = None) -> None:
        self._recorder = recorder
        self._start = start
        self._route = route
        self._exemplar = {"trace_id": trace_id} if trace_id else None
        self._first = 0.0  # the first chunk's time after the request's start
        self._last: float | None = None
        self._gap: Any = None

    def chunk(self, now: float) -> None:
        """A non-empty chunk left the app at ``now`` (the request's clock). A ``now`` that is no time from 0 to 1e9
        seconds after the request's start or the previous chunk (NaN, another clock's reading) is counted as
        aiwatch's error (component ``metrics``) and that chunk is left out."""
        last = self._last
        try:
            since = now - (self._start if last is None else last)
        except Exception:  # no number (TypeError), past float64 (OverflowError)
            since = None
        if since.__class__ is not float or not 0.0 <= since <= MAX_SECONDS:  # the common case: one test
            checked = as_seconds(since)
            if checked is None:
                record_error("metrics", ValueError(f"a chunk's time must be 0 to 1e9 seconds after the previous "
                                                   f"one's, got {shown(now)}"), self._recorder.metrics)
                return
            since = checked
        self._last = now
        if last is None:
            self._first = since
            return
        try:
            gap = self._gap
            if gap is None:  # the second chunk: this response is a stream
                route = self._route if isinstance(self._route, str) else self._route()
                first, gap = self._recorder.stream_children(route)
                self._gap = gap
                observe(first, self._first, self._exemplar)
            observe(gap, since, self._exemplar)
        except Exception as exc:
            record_error("metrics", exc, self._recorder.metrics)
