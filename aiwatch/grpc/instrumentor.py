"""Instrumentors that add aiwatch's interceptors to every gRPC server or channel created after ``instrument()``.

In the style of OpenTelemetry's ``GrpcInstrumentorServer`` / ``GrpcInstrumentorClient``: ``instrument()`` and
``uninstrument()`` are idempotent and restore what they replaced. They compose with OpenTelemetry's instrumentors in
either order: aiwatch's server interceptor is appended after the app's (and OpenTelemetry's, which it inserts first),
so OpenTelemetry's span is current when aiwatch's handler starts and aiwatch's phase spans become its children.

If another instrumentor wrapped the same function after aiwatch, ``uninstrument()`` cannot take aiwatch's wrapper out
of the middle of that chain; it turns it into a pass-through instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry

from aiwatch.client import ClientRecorder
from aiwatch.grpc.client import AiwatchClientInterceptor, grpc_aio_client_interceptors
from aiwatch.grpc.server import AiwatchAioServerInterceptor, AiwatchServerInterceptor
from aiwatch.metrics import Metrics
from aiwatch.recording import resolve_client_recorder, resolve_recorder
from aiwatch.timing import RequestRecorder

_Maker = Callable[[Callable[..., Any], "_Patch"], Callable[..., Any]]


class _Patch:
    """One module attribute replaced by a wrapper; ``active`` turns the wrapper into a pass-through."""

    def __init__(self, module: Any, name: str, make: _Maker) -> None:
        self.module = module
        self.name = name
        self.original: Callable[..., Any] = getattr(module, name)
        self.active = True
        self.wrapper = make(self.original, self)

    def apply(self) -> None:
        setattr(self.module, self.name, self.wrapper)

    def remove(self) -> None:
        if getattr(self.module, self.name) is self.wrapper:
            setattr(self.module, self.name, self.original)
        self.active = False


def _with_interceptors(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, extra: list[Any]) -> tuple[
        tuple[Any, ...], dict[str, Any]]:
    """Append ``extra`` to the ``interceptors`` argument, given by keyword or at position ``index``."""
    if len(args) > index:
        items = list(args[index] or ())
        return (*args[:index], [*items, *extra], *args[index + 1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["interceptors"] = [*(kwargs.get("interceptors") or ()), *extra]
    return args, kwargs


class _Instrumentor:
    def __init__(self) -> None:
        self._patches: list[_Patch] = []

    @property
    def is_instrumented(self) -> bool:
        return bool(self._patches)

    def _targets(self) -> list[tuple[Any, str, _Maker]]:
        raise NotImplementedError

    def instrument(self) -> None:
        """Patch the gRPC factories; a second call does nothing."""
        if self._patches:
            return
        patches = [_Patch(module, name, make) for module, name, make in self._targets()]
        for patch in patches:
            patch.apply()
        self._patches = patches

    def uninstrument(self) -> None:
        """Restore what ``instrument()`` replaced; servers and channels created meanwhile keep their interceptors."""
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = []


class AiwatchGrpcInstrumentorServer(_Instrumentor):
    """Adds aiwatch's server interceptor to every ``grpc.server(...)`` and ``grpc.aio.server(...)`` created while
    instrumented. Arguments as :func:`aiwatch.grpc.grpc_server_interceptor`; one interceptor per kind is shared by
    all servers (it keeps no per-request state), and both record through one recorder."""

    def __init__(self, *, recorder: RequestRecorder | None = None, service: str | None = None, model: str = "",
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 tracer_provider: Any = None, max_label_values: int | None = None,
                 server_timing: bool = True, slow_threshold: float | None = None) -> None:
        super().__init__()
        recorder = resolve_recorder(recorder, {
            "service": service, "model": model, "registry": registry, "metrics": metrics,
            "tracer_provider": tracer_provider, "max_label_values": max_label_values,
            "slow_threshold": slow_threshold})
        self.interceptor = AiwatchServerInterceptor(recorder=recorder, server_timing=server_timing)
        self.aio_interceptor = AiwatchAioServerInterceptor(recorder=recorder, server_timing=server_timing)

    def _targets(self) -> list[tuple[Any, str, _Maker]]:
        return [(grpc, "server", lambda original, patch: self._server_factory(original, patch, self.interceptor)),
                (grpc.aio, "server",
                 lambda original, patch: self._server_factory(original, patch, self.aio_interceptor))]

    @staticmethod
    def _server_factory(original: Callable[..., Any], patch: _Patch, interceptor: Any) -> Callable[..., Any]:
        @functools.wraps(original)
        def server(*args: Any, **kwargs: Any) -> Any:
            if patch.active:
                # grpc.server(thread_pool, handlers, interceptors, ...); grpc.aio.server(pool, handlers, interceptors)
                args, kwargs = _with_interceptors(args, kwargs, 2, [interceptor])
            return original(*args, **kwargs)

        return server


class AiwatchGrpcInstrumentorClient(_Instrumentor):
    """Adds aiwatch's client interceptors to every channel made by ``grpc.insecure_channel``,
    ``grpc.secure_channel``, ``grpc.aio.insecure_channel`` and ``grpc.aio.secure_channel`` while instrumented, with
    the service name the server reports (else the channel's target) as the ``peer`` label. Arguments as
    :func:`aiwatch.grpc.grpc_client_interceptor`; every channel records through one recorder, so peers and routes are
    bounded across them."""

    def __init__(self, *, recorder: ClientRecorder | None = None, service: str | None = None,
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 max_label_values: int | None = None, propagate: bool = True) -> None:
        super().__init__()
        self.recorder = resolve_client_recorder(recorder, {"service": service, "registry": registry,
                                                            "metrics": metrics, "max_label_values": max_label_values})
        self._propagate = propagate

    def _targets(self) -> list[tuple[Any, str, _Maker]]:
        return [(grpc, "insecure_channel", self._sync_factory),
                (grpc, "secure_channel", self._sync_factory),
                (grpc.aio, "insecure_channel", lambda original, patch: self._aio_factory(original, patch, 3)),
                (grpc.aio, "secure_channel", lambda original, patch: self._aio_factory(original, patch, 4))]

    def _sync_factory(self, original: Callable[..., Any], patch: _Patch) -> Callable[..., Any]:
        @functools.wraps(original)
        def channel(target: str, *args: Any, **kwargs: Any) -> Any:
            made = original(target, *args, **kwargs)
            if not patch.active:
                return made
            interceptor = AiwatchClientInterceptor(recorder=self.recorder, address=str(target),
                                                   propagate=self._propagate)
            return grpc.intercept_channel(made, interceptor)

        return channel

    def _aio_factory(self, original: Callable[..., Any], patch: _Patch, index: int) -> Callable[..., Any]:
        @functools.wraps(original)
        def channel(target: str, *args: Any, **kwargs: Any) -> Any:
            if patch.active:
                extra = grpc_aio_client_interceptors(recorder=self.recorder, address=str(target),
                                                     propagate=self._propagate)
                # index counts target: insecure_channel(target, options, compression, interceptors)
                full, kwargs = _with_interceptors((target, *args), kwargs, index, extra)
                return original(*full, **kwargs)
            return original(target, *args, **kwargs)

        return channel
