"""httpx and requests against a real loopback peer whose calls sometimes bring no name back (a 503 with no
Server-Timing, as a load balancer sends; a timeout): such a call is labelled with the one name that answered its route
template at its address before, so that it counts against the peer it was meant for and the diagnosis sees it as a
call with no network time to that peer; with no template, or two names, it keeps the address."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from prometheus_client import CollectorRegistry

import aiwatch.client
from aiwatch.client import ReportedNames
from aiwatch.client._core import _TRACKED_ROUTES, UNKNOWN_ADDRESS
from aiwatch.servertiming import quote
from tests.http.peer import peer


class _Backend(BaseHTTPRequestHandler):
    """``?as=<name>``: answers 200 naming itself ``name``; ``?sleep=<s>``: answers after that long; else a 503 with
    no Server-Timing (what a load balancer in front sends when no backend took the call)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if "sleep" in query:
            time.sleep(float(query["sleep"][0]))
        name = query.get("as", [None])[0]
        try:
            self.send_response(200 if name else 503)
            self.send_header("Content-Length", "2")
            if name:
                self.send_header("Server-Timing", f"total;dur=0.001;desc={quote(name)}")
            self.end_headers()
            self.wfile.write(b"ok")
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and went away
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer(_Backend) as url:
        yield url


Get = Callable[..., Any]
TIMEOUTS = {"httpx": httpx.ReadTimeout, "requests": requests.ReadTimeout}


@pytest.fixture(params=["httpx", "requests"])
def client(request: pytest.FixtureRequest, registry: CollectorRegistry) -> Iterator[tuple[str, Get]]:
    """The client's name and a GET through it, instrumented into ``registry``."""
    if request.param == "httpx":
        with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as c:
            yield request.param, c.get
    else:
        with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as session:
            yield request.param, session.get


def calls(registry: CollectorRegistry, name: str = "aiwatch_client_request_duration_seconds_count",
          ) -> dict[tuple[str, str], float]:
    """(peer, status) -> calls recorded (``name``: the calls' count, or the network time's without the status)."""
    out: dict[tuple[str, str], float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == name:
                key = (s.labels["peer"], s.labels.get("status", ""))
                out[key] = out.get(key, 0.0) + s.value
    return out


def network_counts(registry: CollectorRegistry) -> dict[str, float]:
    return {peer: n for (peer, _), n in calls(registry, "aiwatch_network_duration_seconds_count").items()}


def test_a_503_with_no_report_counts_against_the_name_that_answered_its_route(
        base: str, client: tuple[str, Get], registry: CollectorRegistry) -> None:
    _, get = client
    with aiwatch.client.route("/predict"):
        get(f"{base}/predict?as=inference")
        get(f"{base}/predict")
        get(f"{base}/predict")
    assert calls(registry) == {("inference", "200"): 1.0, ("inference", "503"): 2.0}
    # what the diagnosis and the console read: three calls to inference, one with a network time
    assert network_counts(registry) == {"inference": 1.0}


def test_a_timeout_counts_against_the_name_that_answered_its_route(
        base: str, client: tuple[str, Get], registry: CollectorRegistry) -> None:
    kind, get = client
    with aiwatch.client.route("/predict"):
        get(f"{base}/predict?as=inference")
        with pytest.raises(TIMEOUTS[kind]):  # the app's exception passes through as it was
            get(f"{base}/predict?as=inference&sleep=1", timeout=0.2)
    assert calls(registry) == {("inference", "200"): 1.0, ("inference", "ReadTimeout"): 1.0}
    assert network_counts(registry) == {"inference": 1.0}


def test_before_any_answer_a_call_keeps_the_address(base: str, client: tuple[str, Get],
                                                     registry: CollectorRegistry) -> None:
    _, get = client
    with aiwatch.client.route("/predict"):
        get(f"{base}/predict")
        get(f"{base}/predict?as=inference")
    address = base.removeprefix("http://")
    assert calls(registry) == {(address, "503"): 1.0, ("inference", "200"): 1.0}


def test_a_call_with_no_route_template_keeps_the_address(base: str, client: tuple[str, Get],
                                                         registry: CollectorRegistry) -> None:
    # one address, many services behind it (an ingress routing by path): without a template, which one a call that
    # brought no name was for is unknown
    _, get = client
    get(f"{base}/predict?as=inference")
    get(f"{base}/users")
    address = base.removeprefix("http://")
    assert calls(registry) == {("inference", "200"): 1.0, (address, "503"): 1.0}


def test_another_route_at_the_same_address_keeps_the_address(base: str, client: tuple[str, Get],
                                                             registry: CollectorRegistry) -> None:
    _, get = client
    with aiwatch.client.route("/predict"):
        get(f"{base}/predict?as=inference")
    with aiwatch.client.route("/users/{id}"):
        get(f"{base}/users/7")
    address = base.removeprefix("http://")
    assert calls(registry) == {("inference", "200"): 1.0, (address, "503"): 1.0}


def test_a_route_answered_by_two_names_keeps_the_address(base: str, client: tuple[str, Get],
                                                         registry: CollectorRegistry) -> None:
    _, get = client
    with aiwatch.client.route("/predict"):
        get(f"{base}/predict?as=inference")
        get(f"{base}/predict?as=canary")
        get(f"{base}/predict")
        get(f"{base}/predict?as=inference")  # a name answering again does not settle which one the 503 was for
        get(f"{base}/predict")
    address = base.removeprefix("http://")
    assert calls(registry) == {("inference", "200"): 2.0, ("canary", "200"): 1.0, (address, "503"): 2.0}


def test_the_names_remembered_per_route_stay_bounded() -> None:
    names = ReportedNames()
    for i in range(3 * _TRACKED_ROUTES):
        names.remember("10.0.0.2:8001", f"/r/{i}", "inference")
    assert len(names._by_route) <= _TRACKED_ROUTES
    assert names.answering("10.0.0.2:8001", f"/r/{3 * _TRACKED_ROUTES - 1}") == "inference"  # the latest is kept


def test_no_name_is_remembered_for_an_unknown_address_or_an_unmatched_route() -> None:
    names = ReportedNames()
    names.remember(UNKNOWN_ADDRESS, "/t.Peer/Unary", "ranker")
    names.remember("10.0.0.2:8001", "__unmatched__", "inference")
    names.remember("10.0.0.2:8001", "__overflow__", "inference")
    assert names.answering(UNKNOWN_ADDRESS, "/t.Peer/Unary") is None
    assert names.answering("10.0.0.2:8001", "__unmatched__") is None
    assert names.answering("10.0.0.2:8001", "__overflow__") is None


def test_threads_remembering_and_reading_at_once_keep_the_bound() -> None:
    # lock-free: dict operations are atomic, and a clear racing a read gives a miss (the address), never an error
    names = ReportedNames()
    errors: list[BaseException] = []

    def remember(offset: int) -> None:
        try:
            for i in range(2 * _TRACKED_ROUTES):
                names.remember("10.0.0.2:8001", f"/r/{offset}/{i}", f"svc-{i % 3}")
        except BaseException as exc:  # any error at all fails the test
            errors.append(exc)

    def read() -> None:
        try:
            for i in range(2 * _TRACKED_ROUTES):
                found = names.answering("10.0.0.2:8001", f"/r/0/{i}")
                assert found in (None, f"svc-{i % 3}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=remember, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    # each writer may add its one pair past a check another made at the bound, never more
    assert len(names._by_route) <= _TRACKED_ROUTES + 4
