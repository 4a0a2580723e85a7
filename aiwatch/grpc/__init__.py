"""gRPC instrumentation: server and client interceptors for ``grpc`` and ``grpc.aio``, and instrumentors.

Needs the ``grpc`` extra (``pip install "aiwatch[grpc]"``); ``import aiwatch`` never imports grpc, this package
does. See docs/grpc.md::

    import grpc
    from concurrent import futures
    from aiwatch.grpc import grpc_server_interceptor

    server = grpc.server(futures.ThreadPoolExecutor(8), interceptors=[grpc_server_interceptor(service="ranker")])

Or patch every server and channel created afterwards, in the style of OpenTelemetry's instrumentors::

    from aiwatch.grpc import AiwatchGrpcInstrumentorClient, AiwatchGrpcInstrumentorServer

    AiwatchGrpcInstrumentorServer(service="ranker").instrument()
    AiwatchGrpcInstrumentorClient(service="gateway").instrument()
"""

from __future__ import annotations

from aiwatch._optional import require

require("grpc", "grpc")

from aiwatch.grpc.client import (  # noqa: E402
    AioStreamStreamClientInterceptor,
    AioStreamUnaryClientInterceptor,
    AioUnaryStreamClientInterceptor,
    AioUnaryUnaryClientInterceptor,
    AiwatchClientInterceptor,
    grpc_aio_client_interceptors,
    grpc_client_interceptor,
)
from aiwatch.grpc.instrumentor import AiwatchGrpcInstrumentorClient, AiwatchGrpcInstrumentorServer  # noqa: E402
from aiwatch.grpc.server import (  # noqa: E402
    METHOD_LABEL,
    AiwatchAioServerInterceptor,
    AiwatchServerInterceptor,
    grpc_aio_server_interceptor,
    grpc_server_interceptor,
)

__all__ = [
    "METHOD_LABEL",
    "AioStreamStreamClientInterceptor",
    "AioStreamUnaryClientInterceptor",
    "AioUnaryStreamClientInterceptor",
    "AioUnaryUnaryClientInterceptor",
    "AiwatchAioServerInterceptor",
    "AiwatchClientInterceptor",
    "AiwatchGrpcInstrumentorClient",
    "AiwatchGrpcInstrumentorServer",
    "AiwatchServerInterceptor",
    "grpc_aio_client_interceptors",
    "grpc_aio_server_interceptor",
    "grpc_client_interceptor",
    "grpc_server_interceptor",
]
