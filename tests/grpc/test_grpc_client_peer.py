"""The client's ``peer`` label against real grpcio servers that are not aiwatch's: a service name the server reports
in its ``server-timing`` trailer is taken only when it is short printable text, and one address cannot name itself anew
without bound; a call with no ``peer`` nor ``address`` and no name reported is ``unknown``, not ``""``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.client._core import NAMES_PER_ADDRESS
from aiwatch.grpc import grpc_aio_client_interceptors, grpc_client_interceptor, grpc_server_interceptor
from aiwatch.grpc.client import UNKNOWN_PEER
from aiwatch.metrics import Metrics
from aiwatch.servertiming import quote

UNARY = "/t.Peer/Unary"
SLOW = b"!slow"
STREAM = "/t.Peer/Stream"


def _trailer(request: bytes, context: grpc.ServicerContext) -> None:
    """The request names the service the server reports; an empty one: no ``server-timing`` trailer at all."""
    if request:
        context.set_trailing_metadata((("server-timing", f"total;dur=0.001;desc={quote(request.decode())}"),))


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == SLOW:  # past the caller's deadline, with no trailer
        time.sleep(1)
        return b"ok"
    _trailer(request, context)
    return b"ok"


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    _trailer(request, context)
    yield b"a"


@contextmanager
def plain_server(interceptors: Sequence[grpc.ServerInterceptor] = ()) -> Iterator[str]:
    """A grpcio server (without aiwatch unless ``interceptors`` hold its), on a loopback port; yields its target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Peer", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait(10)


def calls(metrics: Metrics) -> dict[str, float]:
    """peer -> client calls recorded."""
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "aiwatch_client_request_duration_seconds_count":
                out[s.labels["peer"]] = out.get(s.labels["peer"], 0.0) + s.value
    return out


def errors(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total",
                                             {"component": "grpc_server_timing"}) or 0.0


# (a control character cannot reach the client: grpc-core refuses it in metadata; the HTTP tests cover it)
@pytest.mark.parametrize("name", ["A" * 7000, "A" * 129], ids=["7000-chars", "129-chars"])
def test_a_reported_name_that_is_no_short_printable_text_is_counted_and_the_address_labels_the_call(
        metrics: Metrics, name: str) -> None:
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics, address=target)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            assert channel.unary_unary(UNARY)(name.encode(), timeout=10) == b"ok"
    assert calls(metrics) == {target: 1.0}
    assert errors(metrics) == 1
    # the trailer's total is still the server's time: the network time is kept, under the address
    assert metrics.registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                             {"service": "gw", "peer": target, "phase": ""}) == 1


def test_a_servicer_forwarding_its_upstreams_server_timing_is_labelled_by_the_aiwatch_server_that_answered(
        metrics: Metrics) -> None:
    # the servicer sets the `server-timing` trailer its upstream sent; aiwatch's server interceptor appends its own
    # after it, and the caller reads the last: before, it took the first and labelled the call "upstream"
    server_side = Metrics(registry=CollectorRegistry())
    with plain_server([grpc_server_interceptor(service="gateway", metrics=server_side)]) as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics, address=target)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            _, call = channel.unary_unary(UNARY).with_call(b"upstream", timeout=10)
    sent = [v for k, v in call.trailing_metadata() if k == "server-timing"]
    assert len(sent) == 2 and sent[0].endswith('desc="upstream"') and sent[1].endswith('desc="gateway"')
    assert calls(metrics) == {"gateway": 1.0}
    assert errors(metrics) == 0


@pytest.mark.parametrize("name", ["a" * 128, "fraud scorer", "team/ranker", 'say "hi"'],
                         ids=["128-chars", "space", "slash", "quotes"])
def test_a_short_printable_name_is_the_peer_label(metrics: Metrics, name: str) -> None:
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics, address=target)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            channel.unary_unary(UNARY)(name.encode(), timeout=10)
    assert calls(metrics) == {name: 1.0}
    assert errors(metrics) == 0


def test_one_server_naming_itself_anew_per_call_takes_a_bounded_share_of_the_peer_label(metrics: Metrics) -> None:
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics, address=target)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            for i in range(NAMES_PER_ADDRESS + 30):
                channel.unary_unary(UNARY)(f"evil-{i}".encode(), timeout=10)
            channel.unary_unary(UNARY)(b"evil-0", timeout=10)  # a name already taken stays taken
    recorded = calls(metrics)
    assert "__overflow__" not in recorded  # the guard's other slots stay free for other peers
    assert recorded[target] == 30
    assert recorded["evil-0"] == 2
    assert len(recorded) == NAMES_PER_ADDRESS + 1
    assert errors(metrics) == 30


def test_an_explicit_peer_wins_over_the_name_the_server_reports(metrics: Metrics) -> None:
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics, peer="ranker", address=target)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            channel.unary_unary(UNARY)(b"evil", timeout=10)
    assert calls(metrics) == {"ranker": 1.0}


def test_without_peer_or_address_a_server_that_names_nothing_is_unknown(metrics: Metrics) -> None:
    # grpcio's call objects have no peer(): the label was "" for every such call, of every channel
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            channel.unary_unary(UNARY)(b"", timeout=10)
            channel.unary_unary(UNARY).with_call(b"", timeout=10)
            channel.unary_unary(UNARY).future(b"", timeout=10).result()
            assert list(channel.unary_stream(STREAM)(b"", timeout=10)) == [b"a"]
            channel.unary_unary(UNARY)(b"ranker", timeout=10)  # a server that names itself is still named
    assert calls(metrics) == {UNKNOWN_PEER: 4.0, "ranker": 1.0}


async def test_aio_without_peer_or_address_a_server_that_names_nothing_is_unknown(metrics: Metrics) -> None:
    with plain_server() as target:
        async with grpc.aio.insecure_channel(
                target, interceptors=grpc_aio_client_interceptors(service="gw", metrics=metrics)) as channel:
            assert await channel.unary_unary(UNARY)(b"", timeout=10) == b"ok"
            assert [m async for m in channel.unary_stream(STREAM)(b"", timeout=10)] == [b"a"]
            assert await channel.unary_unary(UNARY)(("A" * 200).encode(), timeout=10) == b"ok"
        # the aio interceptor records from a task once the call is done
        for _ in range(1000):
            if sum(calls(metrics).values()) == 3:
                break
            await asyncio.sleep(0.01)
    assert calls(metrics) == {UNKNOWN_PEER: 3.0}
    assert errors(metrics) == 1


def test_a_call_past_its_deadline_counts_against_the_name_that_answered_its_method(metrics: Metrics) -> None:
    # no trailer comes back from a call that timed out: it is labelled with the name that answered the same method
    # at the same target before, so the diagnosis sees a call to ranker with no network time
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics, address=target)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(UNARY)(SLOW, timeout=0.2)  # before any answer: the target
            assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            channel.unary_unary(UNARY)(b"ranker", timeout=10)
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(UNARY)(SLOW, timeout=0.2)
    assert calls(metrics) == {target: 1.0, "ranker": 2.0}
    assert metrics.registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                             {"service": "gw", "peer": "ranker", "phase": ""}) == 1


def test_without_an_address_a_call_past_its_deadline_stays_unknown(metrics: Metrics) -> None:
    # the interceptor does not see its channel: the name that answered may be another channel's server
    with plain_server() as target:
        interceptor = grpc_client_interceptor(service="gw", metrics=metrics)
        with grpc.intercept_channel(grpc.insecure_channel(target), interceptor) as channel:
            channel.unary_unary(UNARY)(b"ranker", timeout=10)
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(UNARY)(SLOW, timeout=0.2)
    assert calls(metrics) == {"ranker": 1.0, UNKNOWN_PEER: 1.0}


def test_a_call_made_in_a_request_is_labelled_with_its_service_unless_the_interceptor_was_given_one(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interceptor made without ``service=`` labelled every call ``$AIWATCH_SERVICE`` or ``app``, also a call
    a ``recommender`` request made: the call graph lost it. Now the request's service (a stream's bytes, settled
    after the call, too); outside any request, and given ``service=``, as before."""
    from aiwatch.timing import RequestRecorder

    monkeypatch.delenv("AIWATCH_SERVICE", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    server = RequestRecorder(metrics, service="recommender")
    with plain_server() as target:
        plain = grpc_client_interceptor(metrics=metrics, peer="ranker")
        named = grpc_client_interceptor(metrics=metrics, peer="ranker", service="gateway")
        with grpc.intercept_channel(grpc.insecure_channel(target), plain) as channel, \
                grpc.intercept_channel(grpc.insecure_channel(target), named) as named_channel:
            tl = server.begin("POST")
            assert channel.unary_unary(UNARY)(b"x", timeout=10) == b"ok"
            assert list(channel.unary_stream(STREAM)(b"x", timeout=10)) == [b"a"]
            assert named_channel.unary_unary(UNARY)(b"x", timeout=10) == b"ok"
            server.finish(tl, "/recommend", "POST", "200")
            assert channel.unary_unary(UNARY)(b"x", timeout=10) == b"ok"  # outside any request
    by_service: dict[str, float] = {}
    received: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "aiwatch_client_request_duration_seconds_count":
                by_service[s.labels["service"]] = by_service.get(s.labels["service"], 0.0) + s.value
            if s.name == "aiwatch_client_bytes_total" and s.labels["direction"] == "received":
                received[s.labels["service"]] = s.value
    assert by_service == {"recommender": 2.0, "gateway": 1.0, "app": 1.0}
    assert received.get("recommender", 0) > received.get("app", 0) > 0  # 2 answers (one streamed) against 1
