"""What diagnose needs from the instrumentation: callers label their calls with the peer's own service name and
the phase the call was made in, and slow requests are counted phase by phase."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import requests
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
from aiwatch.metrics import Metrics
from aiwatch.servertiming import parse
from aiwatch.timing import RequestRecorder, call_site
from tests.http.peer import peer


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer() as url:
        yield url


def client_count(registry: CollectorRegistry, **labels: str) -> float | None:
    return registry.get_sample_value("aiwatch_client_request_duration_seconds_count",
                                     {"service": "gw", "route": "__unmatched__", "status": "200", **labels})


def network_count(registry: CollectorRegistry, **labels: str) -> float | None:
    return registry.get_sample_value("aiwatch_network_duration_seconds_count", {"service": "gw", **labels})


def test_the_server_reports_its_service_name_in_server_timing(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service='infer"ence')
    tl = recorder.begin("GET")
    timing = parse(tl.server_timing()[0])
    recorder.finish(tl, "/x", "GET", "200")
    assert timing.service == 'infer"ence' and timing.total is not None


def test_the_peer_label_is_the_name_the_peer_reports(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as client:
        client.get(f"{base}/named")
        client.get(f"{base}/ok")  # reports no name: the address
    assert client_count(registry, peer="inference", phase="") == 1
    assert network_count(registry, peer="inference", phase="") == 1
    assert client_count(registry, peer=base.removeprefix("http://"), phase="") == 1


def test_a_peer_given_in_code_wins_over_the_reported_name(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry,
                                            peer="ranker") as session:
        session.get(f"{base}/named")
    assert client_count(registry, peer="ranker", phase="") == 1
    assert client_count(registry, peer="inference", phase="") is None


def test_calls_carry_the_callers_phase(base: str, metrics: Metrics) -> None:
    server = RequestRecorder(metrics, service="gw")
    tl = server.begin("POST")
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", metrics=metrics) as client:
        with aiwatch.phase("inference_call"):
            assert call_site() == (tl, "inference_call")
            client.get(f"{base}/named")
        assert call_site() == (tl, "overhead")
        client.get(f"{base}/named")  # in the request, outside every phase: its overhead
    server.finish(tl, "/recommend", "POST", "200")
    registry = metrics.registry
    assert client_count(registry, peer="inference", phase="inference_call") == 1
    assert network_count(registry, peer="inference", phase="inference_call") == 1
    assert client_count(registry, peer="inference", phase="overhead") == 1
    assert call_site() == (None, "")


def test_slow_requests_are_counted_phase_by_phase(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="gw", slow_threshold=0.3)
    registry = metrics.registry
    assert registry.get_sample_value("aiwatch_slow_threshold_seconds", {"service": "gw"}) == 0.3
    for total in (0.5, 0.2, 0.4):  # two slow requests, one fast
        tl = recorder.begin("POST")
        aiwatch.record_phase("features", 0.1)
        tl.add_call("inference", "features", 0.08, 0.01)
        recorder.finish(tl, "/recommend", "POST", "200", end=tl.start + total)

    def slow(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"service": "gw", **labels})

    assert slow("aiwatch_slow_requests_total") == 2
    assert slow("aiwatch_slow_phase_seconds_total", phase="features") == pytest.approx(0.2)
    assert slow("aiwatch_slow_phase_seconds_total", phase="overhead") == pytest.approx(0.4 + 0.3)
    # the slow phases partition the slow requests' time, as all phases partition all requests
    slow_time = sum(slow("aiwatch_slow_phase_seconds_total", phase=p) or 0.0 for p in ("features", "overhead"))
    assert slow_time == pytest.approx(0.5 + 0.4)
    assert slow("aiwatch_slow_call_seconds_total", peer="inference", phase="features") == pytest.approx(0.16)
    assert slow("aiwatch_slow_network_seconds_total", peer="inference", phase="features") == pytest.approx(0.02)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_the_slow_threshold_must_be_a_positive_number(metrics: Metrics, bad: float) -> None:
    with pytest.raises(ValueError, match="slow_threshold"):
        RequestRecorder(metrics, slow_threshold=bad)


def test_the_slow_threshold_comes_from_the_environment(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_SLOW_THRESHOLD_SECONDS", "0.05")
    assert aiwatch.make_recorder(metrics=metrics, service="x").slow_threshold == 0.05


def test_calls_in_a_request_are_labelled_with_its_service_unless_given_one(
        base: str, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FastAPI app instrumented as ``service="recommender"`` whose clients were made without ``service=``
    labelled its calls ``service="app"`` (``$AIWATCH_SERVICE``'s default): the call graph diagnose follows from
    ``recommender`` found no calls, and showed an ``app`` that serves nothing. A client without ``service=`` now
    labels a call made inside an aiwatch request with that request's service (httpx sync and async, requests,
    and the received bytes of a body read later); outside any request, and with ``service=`` given, as before."""
    fastapi = pytest.importorskip("fastapi")
    from tests.servers import uvicorn_in_thread

    monkeypatch.delenv("AIWATCH_SERVICE", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    plain = aiwatch.client.instrument_httpx(httpx.Client(), registry=registry)
    plain_async = aiwatch.client.instrument_httpx(httpx.AsyncClient(), registry=registry)
    session = aiwatch.client.instrument_requests(requests.Session(), registry=registry)
    named = aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, service="gateway")
    app = fastapi.FastAPI()

    @app.get("/recommend")
    async def recommend() -> dict[str, bool]:
        await plain_async.get(f"{base}/named")
        return {"ok": True}

    @app.get("/sync")
    def sync() -> dict[str, bool]:  # run in a worker thread: the request's context goes along
        plain.get(f"{base}/named")
        session.get(f"{base}/named", stream=True).content  # noqa: B018 - the body read after the call's record
        named.get(f"{base}/named")
        return {"ok": True}

    aiwatch.instrument(app, registry=registry, service="recommender")
    with uvicorn_in_thread(app) as (port, _):
        assert httpx.get(f"http://127.0.0.1:{port}/recommend").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/sync").status_code == 200
    plain.get(f"{base}/named")  # outside any request

    def count(service: str) -> float | None:
        return client_count(registry, service=service, peer="inference", phase="overhead")

    assert (count("recommender"), count("gateway"), count("app")) == (3, 1, None)
    assert client_count(registry, service="app", peer="inference", phase="") == 1
    assert network_count(registry, service="recommender", peer="inference", phase="overhead") == 3
    received = {service: registry.get_sample_value("aiwatch_client_bytes_total", {
        "service": service, "peer": "inference", "direction": "received"}) for service in ("recommender", "app")}
    assert received["app"] and received["recommender"] > 2 * received["app"]  # three bodies, and the one outside
    for closable in (plain, session, named):
        closable.close()
