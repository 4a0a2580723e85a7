from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc
import pytest

from examples.grpc_service.servicer import AioInferenceServicer, InferenceServicer, pb, pb_grpc
from tests.labels import with_defaults

SERVICE = "/aiwatch.example.Inference/"
PREDICT = SERVICE + "Predict"
PREDICT_STREAM = SERVICE + "PredictStream"
UPLOAD = SERVICE + "Upload"
CHAT = SERVICE + "Chat"
#: seconds :func:`sync_server` waits for its server to stop
STOP_WAIT = 10.0
#: a method whose response takes :func:`slow_serializer`'s 0.3 s to serialize (:func:`slow_serialize_handler`)
SLOW_SERIALIZE = "/aiwatch.test.Slow/Serialize"


def slow_serializer(response: bytes) -> bytes:
    time.sleep(0.3)  # the app's codec, on a large response, outlasting the call's deadline
    return response


def slow_serialize_handler(handler: Any) -> Any:
    """A generic handler of :data:`SLOW_SERIALIZE` whose response takes :func:`slow_serializer`'s 0.3 s."""
    return grpc.method_handlers_generic_handler("aiwatch.test.Slow", {
        "Serialize": grpc.unary_unary_rpc_method_handler(handler, response_serializer=slow_serializer)})


@contextmanager
def sync_server(interceptors: Sequence[Any] = (), servicer: Any = None) -> Iterator[str]:
    """A real grpcio thread-pool server on a loopback port; yields its target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=list(interceptors))
    with serving(server, servicer) as target:
        yield target


@contextmanager
def serving(server: grpc.Server, servicer: Any = None) -> Iterator[str]:
    """``server``, a grpcio thread-pool server the test made itself (through a patched ``grpc.server``, say),
    serving the example servicer on a loopback port; yields its target, and stops it on the way out."""
    pb_grpc.add_InferenceServicer_to_server(servicer or InferenceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        # stop(None) waits for the server's end without a bound, and grpcio's thread-pool server sometimes never
        # ends after a request stream message it could not deserialize (scripts/grpcio_stop_hang.py, no aiwatch in
        # it: 10 of 40 servers on grpcio 1.85.3); it hung a CI run until pytest-timeout's 300 s.
        # A server still up after 10 s is left to its daemon thread, with a warning in the run's summary.
        if not server.stop(0).wait(STOP_WAIT):
            warnings.warn(f"grpcio's server on port {port} did not stop within {STOP_WAIT:g} s: left running",
                          stacklevel=1)


@asynccontextmanager
async def aio_server(interceptors: Sequence[Any] = (), servicer: Any = None) -> AsyncIterator[str]:
    """A real grpc.aio server on a loopback port; yields its target."""
    server = grpc.aio.server(interceptors=list(interceptors))
    pb_grpc.add_InferenceServicer_to_server(servicer or AioInferenceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@contextmanager
def stub_for(target: str, *interceptors: Any) -> Iterator[Any]:
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.InferenceStub(grpc.intercept_channel(channel, *interceptors) if interceptors else channel)


def req(**kwargs: Any) -> Any:
    return pb.PredictRequest(**kwargs)


#: client-side metrics carry the caller's phase; the tests' calls are made outside any request: phase ""
_PHASED = ("aiwatch_client_request_duration_seconds", "aiwatch_network_duration_seconds")


def value(registry: Any, name: str, **labels: str) -> float:
    if name.startswith(_PHASED):
        labels.setdefault("phase", "")
    return registry.get_sample_value(name, with_defaults(name, labels)) or 0.0


@pytest.fixture
def labels() -> dict[str, str]:
    return {"service": "infer", "method": "grpc"}


_FACTORIES = (("server", "grpc"), ("insecure_channel", "grpc"), ("secure_channel", "grpc"),
              ("server", "grpc.aio"), ("insecure_channel", "grpc.aio"), ("secure_channel", "grpc.aio"))


@pytest.fixture(autouse=True)
def _grpc_factories_restored() -> Iterator[None]:
    """Every test leaves grpc's factories as it found them (checked by identity), so patches cannot leak."""
    import grpc.aio

    modules = {"grpc": grpc, "grpc.aio": grpc.aio}
    before = [getattr(modules[mod], name) for name, mod in _FACTORIES]
    yield
    leaked = []
    for (name, mod), original in zip(_FACTORIES, before, strict=True):
        if getattr(modules[mod], name) is not original:
            leaked.append(f"{mod}.{name}")
            setattr(modules[mod], name, original)
    assert not leaked, f"test left {leaked} patched"
