"""Instrumentors that add aiwatch's interceptors to every gRPC server or channel created after ``instrument()``.

Built on OpenTelemetry's ``BaseInstrumentor`` (:mod:`aiwatch.instrumentor`), like its ``GrpcInstrumentorServer`` /
``GrpcInstrumentorClient``: ``opentelemetry-instrument python app.py`` loads them from their
``opentelemetry_instrumentor`` entry points (``aiwatch_grpc_server``, ``aiwatch_grpc_client``) with no code change,
``instrument()`` and ``uninstrument()`` are idempotent and restore what they replaced, and options go to the
constructor or to ``instrument(**options)``. They compose with OpenTelemetry's instrumentors in either order:
aiwatch's server interceptor is appended after the app's (and OpenTelemetry's, which it inserts first), so
OpenTelemetry's span is current when aiwatch's handler starts and aiwatch's phase spans become its children.

If another instrumentor wrapped the same function after aiwatch, ``uninstrument()`` cannot take aiwatch's wrapper out
of the middle of that chain; it turns it into a pass-through instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

import grpc
import grpc.aio

from aiwatch.exclusion import ExcludedServices
from aiwatch.flags import flag
from aiwatch.grpc.client import AiwatchClientInterceptor, grpc_aio_client_interceptors
from aiwatch.grpc.server import AiwatchAioServerInterceptor, AiwatchServerInterceptor
from aiwatch.instrumentor import PatchingInstrumentor
from aiwatch.patching import Maker, Patch
from aiwatch.recording import resolve_client_recorder, resolve_recorder

__all__ = ["AiwatchGrpcInstrumentorClient", "AiwatchGrpcInstrumentorServer"]

_SERVER_OPTIONS = ("service", "model", "registry", "metrics", "tracer_provider", "max_label_values",
                   "slow_threshold", "model_version", "traffic_classes")
_CLIENT_OPTIONS = ("service", "registry", "metrics", "tracer_provider", "max_label_values")


def _with_interceptors(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, extra: list[Any]) -> tuple[
        tuple[Any, ...], dict[str, Any]]:
    """Append ``extra`` to the ``interceptors`` argument, given by keyword or at position ``index``."""
    if len(args) > index:
        items = list(args[index] or ())
        return (*args[:index], [*items, *extra], *args[index + 1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["interceptors"] = [*(kwargs.get("interceptors") or ()), *extra]
    return args, kwargs


def _split(options: dict[str, Any], names: tuple[str, ...], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(names) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(unknown)}")
    return {k: options.get(k) for k in names}


class AiwatchGrpcInstrumentorServer(PatchingInstrumentor):
    """Adds aiwatch's server interceptor to every ``grpc.server(...)`` and ``grpc.aio.server(...)`` created while
    instrumented. Options (keyword-only, to the constructor or ``instrument()``) as
    :func:`aiwatch.grpc.grpc_server_interceptor`: ``recorder`` or the recorder options, ``server_timing`` and
    ``excluded_services`` (default: ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``, read by ``instrument()``); one
    interceptor per kind is shared by all servers (it keeps no per-request state), and both record through one
    recorder."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("grpcio >= 1.60",)

    def _configure(self, options: dict[str, Any]) -> None:
        recorder_options = _split(options, _SERVER_OPTIONS, ("recorder", "server_timing", "excluded_services"))
        server_timing = flag(options.get("server_timing", True), "server_timing")
        recorder = resolve_recorder(options.get("recorder"), recorder_options)
        excluded = ExcludedServices.resolve(options.get("excluded_services")).services
        #: the interceptors the patched factories add
        self.interceptor = AiwatchServerInterceptor(recorder=recorder, server_timing=server_timing,
                                                    excluded_services=excluded)
        self.aio_interceptor = AiwatchAioServerInterceptor(recorder=recorder, server_timing=server_timing,
                                                           excluded_services=excluded)

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        sync, aio = self.interceptor, self.aio_interceptor
        return [(grpc, "server", lambda original, patch: self._server_factory(original, patch, sync)),
                (grpc.aio, "server", lambda original, patch: self._server_factory(original, patch, aio))]

    @staticmethod
    def _server_factory(original: Callable[..., Any], patch: Patch, interceptor: Any) -> Callable[..., Any]:
        @functools.wraps(original)
        def server(*args: Any, **kwargs: Any) -> Any:
            if patch.active:
                # grpc.server(thread_pool, handlers, interceptors, ...); grpc.aio.server(pool, handlers, interceptors)
                args, kwargs = _with_interceptors(args, kwargs, 2, [interceptor])
            return original(*args, **kwargs)

        return server


class AiwatchGrpcInstrumentorClient(PatchingInstrumentor):
    """Adds aiwatch's client interceptors to every channel made by ``grpc.insecure_channel``,
    ``grpc.secure_channel``, ``grpc.aio.insecure_channel`` and ``grpc.aio.secure_channel`` while instrumented, with
    the service name the server reports (else the channel's target) as the ``peer`` label and the target as the
    spans' ``server.address``. Options as :func:`aiwatch.grpc.grpc_client_interceptor` (``recorder`` or the recorder
    options, ``propagate``, ``excluded_services``); every channel records through one recorder, so peers and routes
    are bounded across them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("grpcio >= 1.60",)

    def _configure(self, options: dict[str, Any]) -> None:
        recorder_options = _split(options, _CLIENT_OPTIONS, ("recorder", "propagate", "excluded_services"))
        #: the recorder every channel's interceptors record through
        self.recorder = resolve_client_recorder(options.get("recorder"), recorder_options)
        self._propagate = flag(options.get("propagate", True), "propagate")
        self._excluded = ExcludedServices.resolve(options.get("excluded_services")).services

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        return [(grpc, "insecure_channel", self._sync_factory),
                (grpc, "secure_channel", self._sync_factory),
                (grpc.aio, "insecure_channel", lambda original, patch: self._aio_factory(original, patch, 3)),
                (grpc.aio, "secure_channel", lambda original, patch: self._aio_factory(original, patch, 4))]

    def _sync_factory(self, original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
        recorder, propagate, excluded = self.recorder, self._propagate, self._excluded

        @functools.wraps(original)
        def channel(target: str, *args: Any, **kwargs: Any) -> Any:
            made = original(target, *args, **kwargs)
            if not patch.active:
                return made
            interceptor = AiwatchClientInterceptor(recorder=recorder, address=str(target), propagate=propagate,
                                                   excluded_services=excluded)
            return grpc.intercept_channel(made, interceptor)

        return channel

    def _aio_factory(self, original: Callable[..., Any], patch: Patch, index: int) -> Callable[..., Any]:
        recorder, propagate, excluded = self.recorder, self._propagate, self._excluded

        @functools.wraps(original)
        def channel(target: str, *args: Any, **kwargs: Any) -> Any:
            if patch.active:
                extra = grpc_aio_client_interceptors(recorder=recorder, address=str(target), propagate=propagate,
                                                     excluded_services=excluded)
                # index counts target: insecure_channel(target, options, compression, interceptors)
                full, kwargs = _with_interceptors((target, *args), kwargs, index, extra)
                return original(*full, **kwargs)
            return original(target, *args, **kwargs)

        return channel
