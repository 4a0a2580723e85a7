"""The Latency view opens with ``aiwatch diagnose``'s diagnosis (the same code), on both sources, and shows the names
that come from traffic as plain text, never as Markdown."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import DataSource
from tests.console.conftest import WINDOW, run_view, texts
from tests.diagnose.traffic import Means, Traffic, slower
from tests.servers import wait_until

pytestmark = pytest.mark.usefixtures("console_env")

HOSTILE = "**gw** [click](http://evil.test) :red[x] <b>y</b> `z`"
URL = "http://traffic.test/metrics"


def diagnosis_block(at: Any) -> Any:
    found: list[Any] = []

    def walk(node: Any) -> None:
        if getattr(node, "key", None) == "diagnosis":
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(at._tree)
    assert len(found) == 1, "the Latency view has no diagnosis block"
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["prometheus", "scrape"])
def test_the_latency_view_opens_with_the_diagnosis_on_either_source(name: str, prom_source: PrometheusSource,
                                                                    scrape_source: ScrapeSource) -> None:
    source: DataSource = prom_source if name == "prometheus" else scrape_source

    def baseline_has_traffic() -> bool:  # the shared stack may have started less than two windows ago
        now = time.time()
        return any(v > 0 for v in source.window_totals(now - 2 * WINDOW, now - WINDOW).of("requests").values())
    wait_until(baseline_has_traffic, 30, 0.5, what="two windows of traffic")
    at = run_view(source, "Latency")
    block = diagnosis_block(at)
    assert texts(block.markdown)[0] == f"**Diagnosis: the last {WINDOW:g}s against the {WINDOW:g}s before**"
    verdict, *notes = texts(block.text)
    # the entry service (nobody calls the gateway): a verdict line, not an error (the load factor is whatever the
    # workload's thread managed on this machine in the two windows)
    assert re.match(r"gateway p99 [0-9.]+ -> [0-9.]+ ms at x[0-9.]+ load; ", verdict), verdict
    assert "of the added time is" in verdict or "no part moved by more than the noise floor" in verdict
    # the recommender's report is longer than the call in one of the gateway's 20 calls of each step (CLAMPED_CALL)
    assert verdict.endswith("; caution: network gateway -> recommender is a lower bound (see the note)"), verdict
    (note,) = [n for n in notes if n.startswith("note: network gateway -> recommender is a lower bound: ")]
    assert re.search(r"saw the call take in [0-9]+% of the calls in the incident window \([0-9]+% in the baseline",
                     note), note
    (table,) = block.dataframe
    assert list(table.value.columns) == ["part", "baseline ms", "incident ms", "delta ms", "share of the added time"]
    assert 1 <= len(table.value) <= 5


def test_names_from_traffic_are_shown_as_text_not_markdown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "60")
    now = float(int(time.time()))
    traffic = Traffic(now - 120, interval=1.0, gateway=HOSTILE)
    traffic.run(60, 20, Means())
    traffic.run(60, 20, slower(network=0.2))
    src = ScrapeSource([URL], interval=1, history=300, start=False)
    for t, text in traffic.scrapes:
        src.record(URL, text, ts=t)
    at = run_view(src, "Latency")
    block = diagnosis_block(at)
    (verdict,) = texts(block.text)
    assert verdict.startswith(f"{HOSTILE} p99 ")
    assert f"of the added time is network {HOSTILE} -> inference" in verdict
    assert all(HOSTILE not in markdown for markdown in texts(block.markdown) + texts(block.caption))
    (table,) = block.dataframe
    assert table.value["part"].iloc[0] == f"network {HOSTILE} -> inference"


def test_a_source_that_cannot_diagnose_says_why_in_the_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "60")
    now = time.time()
    src = ScrapeSource([URL], interval=10, history=300, start=False)
    for ago in range(120, -1, -10):  # an endpoint without aiwatch, scraped through both windows
        src.record(URL, "# TYPE other_app_up gauge\nother_app_up 1\n", ts=now - ago)
    at = run_view(src, "Latency")
    block = diagnosis_block(at)
    assert texts(block.caption) == ["No diagnosis:"]
    (message,) = texts(block.text)
    assert message.startswith("scraping http://traffic.test/metrics holds no aiwatch request metrics")


class RestartedScrapeSource(ScrapeSource):
    """The scrape source, as if it counted series alone and saw a restart in every window ending after ``restart``
    (as the Prometheus source does: its ``resets()`` query)."""

    restart = 0.0

    def window_totals(self, start: float, end: float) -> Any:
        totals = super().window_totals(start, end)
        return dataclasses.replace(totals, resets={"gateway": 1.0, "inference": 1.0}) if end > self.restart else totals


def test_a_restart_in_the_incident_window_is_noted_under_the_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "60")
    now = float(int(time.time()))
    traffic = Traffic(now - 120, interval=1.0)
    traffic.run(60, 20, Means())
    traffic.run(60, 20, slower(network=0.2))
    src = RestartedScrapeSource([URL], interval=1, history=300, start=False)
    src.restart = now - 30
    for t, text in traffic.scrapes:
        src.record(URL, text, ts=t)
    block = diagnosis_block(run_view(src, "Latency"))
    verdict, *notes = texts(block.text)
    assert "restart" not in verdict
    assert notes == ["note: the incident window holds a restart (2 counter resets): parts may be undercounted; "
                     "compare windows without a restart"]
