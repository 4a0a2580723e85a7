"""The Latency view's panel of what the split could not measure as it is, on shares the shared workload never shows:
under the 1% it warns from, at exactly 1%, grown earlier in the window and back to 0, and never at all. The counters
come from aiwatch's real recorders on a registry (synthetic clock values), scraped into a ScrapeSource by hand."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.client import ClientRecorder
from aiwatch.console import ScrapeSource
from aiwatch.console.source import CAVEAT_TEXT, NETWORK_CLAMPED, OVERHEAD_CLAMPED, UNMEASURED
from aiwatch.metrics import Metrics
from aiwatch.timing import RequestRecorder
from tests.console.conftest import run_view, texts

URL = "http://127.0.0.1:9/metrics"
TITLE = "What the split could not measure as it is"
NETWORK, OVERHEAD = CAVEAT_TEXT[NETWORK_CLAMPED][0], CAVEAT_TEXT[OVERHEAD_CLAMPED][0]
UNANSWERED = CAVEAT_TEXT[UNMEASURED][0]


class Service:
    """A caller ``gw`` serving requests, each calling ``api`` once: 10 ms of network, 40 ms reported by ``api``."""

    def __init__(self) -> None:
        self.metrics = Metrics(CollectorRegistry())
        self.requests = RequestRecorder(self.metrics, "gw")
        self.client = ClientRecorder(service="gw", peer="api", metrics=self.metrics)
        self.clock = 1000.0

    def serve(self, requests: int, clamped: int = 0, overlapped: int = 0, unanswered: int = 0) -> None:
        """``requests`` requests, ``clamped`` of whose calls the peer reports 5 ms longer than they took,
        ``overlapped`` of which have phases adding up to more than the request, and ``unanswered`` of whose calls
        get no report back (after the clamped ones). Each also calls ``cache``, which never reports."""
        for i in range(requests):
            start = self.clock
            tl = self.requests.begin(start=start)
            tl.add("call", None, 0.05)
            reported = 0.055 if i < clamped else 0.04
            timing = None if clamped <= i < clamped + unanswered else f"total;dur={reported * 1000}"
            self.client.record(start, start + 0.05, "api:80", "/", "200", timing, None, "call", "server_timing")
            self.client.record(start, start + 0.001, "cache:6379", "/", "200", None, None, "call", "server_timing",
                               fixed_peer="cache")
            self.requests.finish(tl, "/", "GET", "200", end=start + (0.049 if i < overlapped else 0.06))
            self.clock += 1.0

    def scrapes(self, src: ScrapeSource, *steps: tuple[int, ...]) -> None:
        """One scrape after each ``(requests, clamped, overlapped[, unanswered])`` step, the last one now, 10 s
        apart."""
        now = time.time()
        for i, step in enumerate(steps):
            self.serve(*step)
            src.record(URL, generate_latest(self.metrics.registry).decode(), ts=now - 10 * (len(steps) - 1 - i))


@pytest.fixture
def view(monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("AIWATCH_CONSOLE_WINDOW", "AIWATCH_CONSOLE_PROMETHEUS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "60")

    def run(*steps: tuple[int, ...]) -> Any:
        src = ScrapeSource([URL], interval=10.0, history=600, start=False)
        Service().scrapes(src, *steps)
        return run_view(src, "Latency")
    return run


def caveats_table(at: Any) -> Any:
    return next(d.value for d in at.dataframe if "share %" in d.value.columns)


def test_a_share_under_one_percent_is_shown_without_a_warning(view: Any) -> None:
    # 1 clamped call of 200, 1 overlapped request of 200 over the window
    at = view((1, 0, 0), (100, 1, 0), (100, 0, 1))
    assert not [t for t in texts(at.warning) if t.startswith((NETWORK, OVERHEAD))]
    assert "Under 1% of every service's calls and requests in the last 1m: the panels above stand as measured." \
        in texts(at.info)
    table = caveats_table(at)
    assert list(table["caveat"]) == [NETWORK, OVERHEAD]
    assert list(table["service → peer"]) == ["gw → api", "gw"]
    assert list(table["share %"]) == pytest.approx([0.5, 0.5])


def test_one_percent_is_warned(view: Any) -> None:
    at = view((1, 0, 0), (100, 1, 0), (100, 1, 2))
    (network,) = [t for t in texts(at.warning) if t.startswith(NETWORK)]
    assert network.startswith(f"{NETWORK} in the last 1m: gw → api 1.0% of calls. The peer reported more time")
    (overhead,) = [t for t in texts(at.warning) if t.startswith(OVERHEAD)]
    assert overhead.startswith(f"{OVERHEAD} in the last 1m: gw 1.0% of requests. Their named phases")
    assert not [t for t in texts(at.info) if t.startswith("Under 1%")]


def test_a_caveat_gone_by_now_stays_in_the_table_at_its_latest_share(view: Any) -> None:
    # half the calls and requests clamped between the scrapes 80 s and 70 s ago: in the chart, not in the last 1m
    at = view((1, 0, 0), (100, 50, 50), *[(100, 0, 0)] * 7)
    assert not [t for t in texts(at.warning) if t.startswith((NETWORK, OVERHEAD))]
    table = caveats_table(at)
    assert list(table["share %"]) == [0.0, 0.0]
    assert any(t.startswith("Under 1% of every service's calls and requests") for t in texts(at.info))


def test_nothing_to_caveat_is_said_as_an_all_clear(view: Any) -> None:
    at = view((1, 0, 0), (100, 0, 0), (100, 0, 0))
    assert any(t.startswith("Every call's network time and every request's overhead in the last 1m were measured "
                            "as they are") for t in texts(at.success))
    assert not [d for d in at.dataframe if "share %" in d.value.columns]


def test_counters_that_did_not_grow_in_the_span_are_no_news(view: Any) -> None:
    # the counters exist (clamps before the first scrape) and stand still through every window: the all-clear
    at = view((100, 50, 50), (100, 0, 0), (100, 0, 0))
    assert any(t.startswith("Every call's network time and every request's overhead in the last 1m were measured "
                            "as they are") for t in texts(at.success))
    assert not [d for d in at.dataframe if "share %" in d.value.columns]


def test_calls_without_a_report_are_a_share_of_the_peers_calls(view: Any) -> None:
    # 10 of 100 calls to api got no report back in the window; cache never reports, so it is no peer of this panel
    at = view((1, 0, 0, 0), (100, 0, 0, 10), (100, 0, 0, 10))
    (unanswered,) = [t for t in texts(at.warning) if t.startswith(UNANSWERED)]
    assert unanswered.startswith(f"{UNANSWERED} in the last 1m: gw → api 10.0% of calls. No total came back")
    table = caveats_table(at)
    assert list(table["caveat"]) == [UNANSWERED] and list(table["service → peer"]) == ["gw → api"]


def test_a_warning_naming_ten_of_more_services_says_there_are_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet's gateway calling a dozen peers, each reporting more time than its call took: the warning names the
    ten worst and says the list goes on (it read as if those ten were all; the table below has every one)."""
    for var in ("AIWATCH_CONSOLE_WINDOW", "AIWATCH_CONSOLE_PROMETHEUS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "60")
    metrics = Metrics(CollectorRegistry())
    requests = RequestRecorder(metrics, "gw")
    clients = [ClientRecorder(service="gw", peer=f"api{i}", metrics=metrics) for i in range(12)]
    src = ScrapeSource([URL], interval=10.0, history=600, start=False)
    clock, now = 1000.0, time.time()
    for step, clamped in enumerate((0, 50)):
        for i in range(100):
            tl = requests.begin(start=clock)
            tl.add("call", None, 0.05)
            for client in clients:
                reported = 55.0 if i < clamped else 40.0
                client.record(clock, clock + 0.05, f"{client.peer}:80", "/", "200", f"total;dur={reported}", None,
                              "call", "server_timing")
            requests.finish(tl, "/", "GET", "200", end=clock + 0.06)
            clock += 1.0
        src.record(URL, generate_latest(metrics.registry).decode(), ts=now - 10 * (1 - step))
    at = run_view(src, "Latency")
    (network,) = [t for t in texts(at.warning) if t.startswith(NETWORK)]
    named = network.split(": ", 1)[1].split(". ", 1)[0]
    assert named.count(" of calls") == 10
    assert named.endswith("of calls…"), network
    assert len([s for s in caveats_table(at)["service → peer"] if s.startswith("gw → api")]) == 12
