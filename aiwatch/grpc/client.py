"""Client interceptors for ``grpc`` and ``grpc.aio`` channels: client time, network time and status per call.

Per call (see docs/grpc.md):

* ``aiwatch_client_request_duration_seconds{service, peer, route, status}``: client-observed time from the call to
  its end (for streams: until the stream ends), ``status`` = the gRPC status name the client saw, including
  client-side ones (``DEADLINE_EXCEEDED``, ``CANCELLED``, ``UNAVAILABLE``).
* ``aiwatch_network_duration_seconds{service, peer}`` = client time - the ``total`` the server reported in the
  ``server-timing`` trailing metadata. A negative difference (clock granularity, a bogus server) is recorded as 0
  and counted in ``aiwatch_network_clamped_total``; malformed ``server-timing`` from a peer is counted in
  ``aiwatch_instrumentation_errors_total{component="grpc_server_timing"}`` and skipped.
* The current W3C trace context is injected into the call's metadata (unless a ``traceparent`` is already there).

``service`` is the calling service's name; ``peer`` is the channel target given to the interceptor (the
instrumentor passes the target of each channel it creates), else the call's ``peer()``. The interceptors never
raise anything new: the call's outcome, errors included, reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.propagate import inject
from prometheus_client import CollectorRegistry

from aiwatch.client import ClientRecorder
from aiwatch.grpc._common import metadata_value, method_name, status_name
from aiwatch.metrics import Metrics
from aiwatch.recording import resolve_client_recorder
from aiwatch.safety import record_error
from aiwatch.servertiming import HEADER
from aiwatch.timing import RequestTimeline, call_site

COMPONENT = "grpc_client"
TIMING_COMPONENT = "grpc_server_timing"

_clock = time.perf_counter


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _AioCallDetails(
    collections.namedtuple(
        "_AioCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")),
    grpc.aio.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _ClientCore:
    """What the sync and aio client interceptors share: the recorder's labels and metrics, and one call's record."""

    def __init__(self, recorder: ClientRecorder, peer: str | None, propagate: bool,
                 address: str | None = None) -> None:
        self.recorder = recorder
        self.metrics = recorder.metrics
        self.guard = recorder.guard
        #: a fixed ``peer`` label (else the name the server reports, else ``address``, else the call's peer())
        self.peer = peer
        self.address = address
        self.propagate = propagate

    @classmethod
    def of(cls, recorder: ClientRecorder | None, peer: str | None, propagate: bool, *, service: str | None,
           registry: CollectorRegistry | None, metrics: Metrics | None, max_label_values: int | None,
           address: str | None = None) -> _ClientCore:
        return cls(resolve_client_recorder(recorder, {"service": service, "registry": registry, "metrics": metrics,
                                                      "max_label_values": max_label_values}), peer, propagate,
                   address)

    @property
    def needs_call_peer(self) -> bool:
        """Whether the call's own ``peer()`` may be needed as the label's fallback."""
        return not (self.peer or self.recorder.peer or self.address)

    def carrier(self, metadata: Any) -> list[tuple[str, Any]] | None:
        """Metadata with the current trace context added, or ``None`` when there is nothing to add."""
        if not self.propagate:
            return None
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        pairs = [(item[0], item[1]) for item in metadata or ()]
        if any(k == "traceparent" for k, _ in pairs):
            return None
        headers: dict[str, str] = {}
        inject(headers)
        pairs.extend(headers.items())
        return pairs

    def record(self, method: str, start: float, end: float, code: Any, trailing: Any, address: str | None,
               site: tuple[RequestTimeline | None, str]) -> None:
        """Record a finished call made from ``site`` (:func:`aiwatch.timing.call_site`); ``address`` is the call's
        ``peer()`` when :attr:`needs_call_peer`."""
        try:
            route = self.guard.fold("route", method)
            status = status_name(code) or "UNKNOWN"
            value = metadata_value(trailing, HEADER)
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)
            return
        timeline, phase = site
        self.recorder.record(start, end, self.address or address or "", route, status, value, timeline, phase,
                             TIMING_COMPONENT, fixed_peer=self.peer)


def _peer_of(call: Any) -> str | None:
    try:
        return str(call.peer())
    except Exception:
        return None


class AiwatchClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """One interceptor for all four kinds of call on a sync channel: ``grpc.intercept_channel(channel, it)``.

    Keyword arguments as :func:`grpc_client_interceptor`.
    """

    def __init__(self, *, recorder: ClientRecorder | None = None, service: str | None = None,
                 peer: str | None = None, registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 max_label_values: int | None = None, propagate: bool = True, address: str | None = None) -> None:
        self._core = _ClientCore.of(recorder, peer, propagate, service=service, registry=registry, metrics=metrics,
                                    max_label_values=max_label_values, address=address)

    @property
    def recorder(self) -> ClientRecorder:
        """The recorder calls are recorded through."""
        return self._core.recorder

    def _intercept(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        start = _clock()
        site = call_site()
        core = self._core
        try:
            pairs = core.carrier(details.metadata)
            if pairs is not None:
                details = _CallDetails(details.method, details.timeout, pairs, details.credentials,
                                       details.wait_for_ready, getattr(details, "compression", None))
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        call = continuation(details, request)
        try:
            method = method_name(details.method)

            def done(finished: Any) -> None:
                end = _clock()
                try:
                    code, trailing = finished.code(), finished.trailing_metadata()
                except Exception as exc:
                    record_error(COMPONENT, exc, core.metrics)
                    return
                core.record(method, start, end, code, trailing,
                            _peer_of(finished) if core.needs_call_peer else None, site)

            call.add_done_callback(done)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator)


class _AioClientBase:
    def __init__(self, *, recorder: ClientRecorder | None = None, service: str | None = None,
                 peer: str | None = None, registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 max_label_values: int | None = None, propagate: bool = True, core: _ClientCore | None = None,
                 address: str | None = None) -> None:
        self._core = core if core is not None else _ClientCore.of(
            recorder, peer, propagate, service=service, registry=registry, metrics=metrics,
            max_label_values=max_label_values, address=address)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def recorder(self) -> ClientRecorder:
        """The recorder calls are recorded through."""
        return self._core.recorder

    async def _intercept(self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any,
                         request: Any) -> Any:
        start = _clock()
        site = call_site()
        core = self._core
        try:
            pairs = core.carrier(details.metadata)
            if pairs is not None:
                details = _AioCallDetails(details.method, details.timeout, grpc.aio.Metadata(*pairs),
                                          details.credentials, details.wait_for_ready)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        method = method_name(details.method)
        try:
            call = await continuation(details, request)
        except grpc.aio.AioRpcError as error:  # another interceptor awaited the call and it failed
            core.record(method, start, _clock(), error.code(), error.trailing_metadata(), None, site)
            raise
        try:
            self._watch(call, method, start, site)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        return call

    def _watch(self, call: Any, method: str, start: float, site: tuple[RequestTimeline | None, str]) -> None:
        def done(finished: Any) -> None:
            self._spawn(self._record(finished, method, start, _clock(), site))

        try:
            call.add_done_callback(done)
        except NotImplementedError:  # a response object returned by another interceptor: no callbacks
            self._spawn(self._record(call, method, start, None, site))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except Exception as exc:
            coro.close()
            record_error(COMPONENT, exc, self._core.metrics)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, call: Any, method: str, start: float, end: float | None,
                      site: tuple[RequestTimeline | None, str]) -> None:
        try:
            code = await call.code()
            if end is None:
                end = _clock()
            trailing = await call.trailing_metadata()
            peer = _peer_of(call) if self._core.needs_call_peer else None
        except asyncio.CancelledError:
            return
        except Exception as exc:
            record_error(COMPONENT, exc, self._core.metrics)
            return
        self._core.record(method, start, end, code, trailing, peer, site)


class AioUnaryUnaryClientInterceptor(_AioClientBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for unary-unary calls on a ``grpc.aio`` channel."""

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class AioUnaryStreamClientInterceptor(_AioClientBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for unary-stream calls on a ``grpc.aio`` channel."""

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class AioStreamUnaryClientInterceptor(_AioClientBase, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for stream-unary calls on a ``grpc.aio`` channel."""

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


class AioStreamStreamClientInterceptor(_AioClientBase, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for stream-stream calls on a ``grpc.aio`` channel."""

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


def grpc_client_interceptor(*, recorder: ClientRecorder | None = None, service: str | None = None,
                            peer: str | None = None, registry: CollectorRegistry | None = None,
                            metrics: Metrics | None = None, max_label_values: int | None = None,
                            propagate: bool = True) -> AiwatchClientInterceptor:
    """An interceptor for sync channels: ``grpc.intercept_channel(channel, grpc_client_interceptor(...))``.

    - ``recorder`` or the recorder options ``service`` (the calling service), ``registry`` / ``metrics`` and
      ``max_label_values``, as for every integration (:mod:`aiwatch.recording`); a
      :class:`~aiwatch.client.ClientRecorder` can be shared with other clients, HTTP ones included.
    - ``peer``: a fixed ``peer`` label (default: the recorder's ``peer``, else the service name the server reports in
      its ``server-timing`` trailer, else ``address``, else each call's ``peer()`` address).
    - ``address``: the channel's target, the label when the server reports no name (the instrumentor passes it).
    - ``propagate``: inject the current W3C trace context into the call's metadata (default on).
    """
    return AiwatchClientInterceptor(recorder=recorder, service=service, peer=peer, registry=registry,
                                    metrics=metrics, max_label_values=max_label_values, propagate=propagate)


def grpc_aio_client_interceptors(*, recorder: ClientRecorder | None = None, service: str | None = None,
                                 peer: str | None = None, registry: CollectorRegistry | None = None,
                                 metrics: Metrics | None = None, max_label_values: int | None = None,
                                 propagate: bool = True, address: str | None = None) -> list[Any]:
    """The four interceptors for ``grpc.aio.insecure_channel(target, interceptors=...)`` (grpc.aio files each
    interceptor under one call kind only, so there is one per kind); arguments as :func:`grpc_client_interceptor`.
    """
    core = _ClientCore.of(recorder, peer, propagate, service=service, registry=registry, metrics=metrics,
                          max_label_values=max_label_values, address=address)
    return [cls(core=core) for cls in (AioUnaryUnaryClientInterceptor, AioUnaryStreamClientInterceptor,
                                       AioStreamUnaryClientInterceptor, AioStreamStreamClientInterceptor)]
