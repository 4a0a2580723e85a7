"""The gRPC interceptors' on/off options are bools: ``server_timing="false"`` (true to Python) is a TypeError naming
the option, not the trailer turned on (:mod:`aiwatch.flags`)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from aiwatch import (
    AiwatchGrpcInstrumentorServer,
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_client_interceptor,
    grpc_server_interceptor,
)


@pytest.mark.parametrize("make", [grpc_server_interceptor, grpc_aio_server_interceptor])
def test_a_server_interceptor_refuses_a_string_server_timing(make: object) -> None:
    with pytest.raises(TypeError, match=r"^server_timing must be True or False, got 'false' of type str$"):
        make(registry=CollectorRegistry(), server_timing="false")  # type: ignore[operator]


@pytest.mark.parametrize("make", [grpc_client_interceptor, grpc_aio_client_interceptors])
def test_a_client_interceptor_refuses_a_string_propagate(make: object) -> None:
    with pytest.raises(TypeError, match=r"^propagate must be True or False, got 'no' of type str$"):
        make(registry=CollectorRegistry(), propagate="no")  # type: ignore[operator]


def test_the_server_instrumentor_refuses_a_string_server_timing() -> None:
    with pytest.raises(TypeError, match=r"^server_timing must be True or False, got 'false' of type str$"):
        AiwatchGrpcInstrumentorServer(registry=CollectorRegistry(), server_timing="false")


def test_the_client_instrumentor_refuses_a_string_propagate() -> None:
    from aiwatch import AiwatchGrpcInstrumentorClient

    with pytest.raises(TypeError, match=r"^propagate must be True or False, got 'false' of type str$"):
        AiwatchGrpcInstrumentorClient(registry=CollectorRegistry(), propagate="false")
