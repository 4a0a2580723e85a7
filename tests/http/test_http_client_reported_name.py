"""httpx and requests against a real loopback peer that names itself in Server-Timing as the test asks: the name
is the ``peer`` label only when it is short printable text, and one address cannot name itself anew without bound."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

import httpx
import pytest
import requests
from prometheus_client import CollectorRegistry

import aiwatch.client
from aiwatch.client import ReportedNames
from aiwatch.client._core import MARKUP_CHARACTERS, MARKUP_TEXT, MAX_REPORTED_NAME, NAMES_PER_ADDRESS
from aiwatch.servertiming import quote
from tests.http.peer import peer
from tests.servers import REPO, uvicorn_in_thread


class _Naming(BaseHTTPRequestHandler):
    """Reports the service name its path spells (``/name/<percent-encoded>``) as the ``total``'s ``desc``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        name = unquote(self.path.removeprefix("/name/"), encoding="latin-1")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("Server-Timing", f"total;dur=0.001;desc={quote(name)}")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer(_Naming) as url:
        yield url


Get = Callable[[str], object]


@pytest.fixture(params=["httpx", "requests"])
def get(request: pytest.FixtureRequest, registry: CollectorRegistry) -> Iterator[Get]:
    """A GET through the client the test is parametrised with, instrumented into ``registry``."""
    if request.param == "httpx":
        with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as client:
            yield client.get
    else:
        with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as session:
            yield session.get


def calls(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == "aiwatch_client_request_duration_seconds_count":
                out[s.labels["peer"]] = out.get(s.labels["peer"], 0.0) + s.value
    return out


def errors(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "server_timing"}) or 0.0


@pytest.mark.parametrize("name", ["A" * 7000, "A" * (MAX_REPORTED_NAME + 1), "tab%09name"],
                         ids=["7000-chars", "129-chars", "control-character"])
def test_a_reported_name_that_is_no_short_printable_text_is_counted_and_the_address_labels_the_call(
        base: str, get: Get, registry: CollectorRegistry, name: str) -> None:
    get(f"{base}/name/{name}")
    address = base.removeprefix("http://")
    assert calls(registry) == {address: 1.0}
    assert errors(registry) == 1
    assert registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                     {"service": "gw", "peer": address, "phase": ""}) == 1


@pytest.mark.parametrize("name", ["%3C!channel%3E%20%3Chttps://evil.example%7Crotate%20keys%3E", "%40everyone",
                                  "%5Bclick%5D(https://evil.example)", "a%26amp;b"],
                         ids=["slack-mention-and-link", "discord-mention", "markdown-link", "html-entity"])
def test_a_reported_name_holding_notification_markup_is_counted_and_the_address_labels_the_call(
        base: str, get: Get, registry: CollectorRegistry, name: str) -> None:
    # the peer label is templated into AiwatchNetworkLatencyHigh's summary: a peer (a third-party API) naming itself
    # "<!channel> <https://evil.example|rotate keys>" pinged the channel and posted its link in every notification
    get(f"{base}/name/{name}")
    address = base.removeprefix("http://")
    assert calls(registry) == {address: 1.0}
    assert errors(registry) == 1


def test_the_docs_name_the_markup_characters_the_code_refuses() -> None:
    """docs/http.md, grpc.md and limits.md write the refused characters by hand (configuration.md is generated from
    the ``peer`` option's text, built from :data:`MARKUP_TEXT`): each names exactly the set the code refuses."""
    assert frozenset(MARKUP_TEXT) == MARKUP_CHARACTERS
    named = {path.name: re.findall(r"without `([^`\w\s]+)`", path.read_text())
             for path in sorted((REPO / "docs").glob("*.md"))}
    assert {name: runs for name, runs in named.items() if runs} == {
        name: [MARKUP_TEXT] for name in ("configuration.md", "grpc.md", "http.md", "limits.md")}


def test_a_reported_short_printable_name_is_the_peer_label(base: str, get: Get, registry: CollectorRegistry) -> None:
    # a service may be named with spaces, slashes or accents (OTEL_SERVICE_NAME="fraud scorer"): its callers label
    # it by that name and count no error
    for name in ("a" * MAX_REPORTED_NAME, "ranker.v2", "fraud%20scorer", "team%2Franker", "caf%E9"):
        get(f"{base}/name/{name}")
    assert calls(registry) == {"a" * MAX_REPORTED_NAME: 1.0, "ranker.v2": 1.0, "fraud scorer": 1.0,
                               "team/ranker": 1.0, "caf\xe9": 1.0}
    assert errors(registry) == 0


def test_one_peer_naming_itself_anew_per_call_takes_a_bounded_share_of_the_peer_label(
        base: str, get: Get, registry: CollectorRegistry) -> None:
    for i in range(NAMES_PER_ADDRESS + 30):
        get(f"{base}/name/evil-{i}")
    recorded = calls(registry)
    assert "__overflow__" not in recorded
    assert recorded[base.removeprefix("http://")] == 30
    assert len(recorded) == NAMES_PER_ADDRESS + 1
    assert errors(registry) == 30


def test_an_explicit_peer_wins_over_the_name_the_peer_reports(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry, peer="ranker") as client:
        client.get(f"{base}/name/evil")
    assert calls(registry) == {"ranker": 1.0}


def test_an_app_forwarding_its_upstreams_server_timing_is_labelled_by_the_aiwatch_server_that_answered(
        get: Get, registry: CollectorRegistry) -> None:
    # a gateway app forwards the Server-Timing its upstream sent; aiwatch's middleware appends its own after it, and
    # the caller reads the last total: before, it took the first, labelled the call "upstream" and took the
    # upstream's 5 ms for the gateway's time, so the gateway's 200 ms read as network
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def forwarding(request: object) -> PlainTextResponse:
        await asyncio.sleep(0.2)
        return PlainTextResponse("ok", headers={"Server-Timing": 'total;dur=5;desc="upstream"'})

    app = aiwatch.instrument(Starlette(routes=[Route("/x", forwarding)]), service="gateway",
                             registry=CollectorRegistry())
    with uvicorn_in_thread(app) as (port, _):
        response = get(f"http://127.0.0.1:{port}/x")
    assert 'desc="upstream"' in response.headers["server-timing"]  # type: ignore[attr-defined]
    assert calls(registry) == {"gateway": 1.0}
    labels = {"service": "gw", "peer": "gateway", "phase": ""}
    client = registry.get_sample_value("aiwatch_client_request_duration_seconds_sum",
                                       {**labels, "route": "__unmatched__", "status": "200"})
    network = registry.get_sample_value("aiwatch_network_duration_seconds_sum", labels)
    assert client is not None and network is not None
    # the client's time less the gateway's total, which holds the 200 ms sleep (less what the loop's timer may wake
    # early: uvloop's count whole milliseconds); less the upstream's 5 ms before, 195 ms
    assert network < client - 0.15


def test_the_names_of_one_address_do_not_count_against_another() -> None:
    names = ReportedNames()
    for i in range(NAMES_PER_ADDRESS):
        assert names.refusal("a:1", f"n{i}") is None
    refusal = names.refusal("a:1", "one-more")
    assert refusal is not None and "'a:1'" in refusal and "one-more" in refusal
    assert names.refusal("b:1", "one-more") is None
    assert names.refusal("a:1", "n0") is None  # a name taken stays taken
