"""Shared fixtures: one instrumented workload served on a real /metrics endpoint, a real Prometheus scraping it
(with two test alert rules: one firing, one pending), and an embedded ScrapeSource on the same endpoint."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import CAVEAT_TEXT, AlertRow, DataSource, TargetHealth
from aiwatch.console.text import WORD_JOINER
from tests.console.workload import serve
from tests.servers import LANDED, Prometheus, free_port, http_get, prometheus, wait_until

APP = str(Path(__file__).resolve().parents[2] / "aiwatch" / "console" / "app.py")
WINDOW = 5.0
"""Rate window of the tests: Prometheus scrapes every second, so 5 s holds several samples."""

#: a service label value written as Markdown that would link, embed an image, colour, bold and emphasise (no "$":
#: label_replace reads it as a group reference)
HOSTILE_SERVICE = "[log in](https://evil.invalid/) ![x](https://evil.invalid/p.png) :red[red] <b>b</b> *em*"
RULES = """
groups:
  - name: console-test
    rules:
      - alert: ConsoleTestQueueBacklog
        expr: sum(aiwatch_queue_depth) > 0
        labels: {severity: critical}
        annotations:
          summary: Requests are waiting in the predict queue
          runbook_url: https://runbooks.example.test/queue-backlog
      - alert: ConsoleTestStaysPending
        expr: count(aiwatch_requests_in_flight) > 0
        for: 1h
        labels: {severity: warning}
        annotations:
          summary: Pending for an hour before it fires
          runbook_url: https://runbooks.example.test/pending
      # an aiwatch alert (the console links it to its runbook page) whose label values are hostile Markdown
      - alert: AiwatchTargetDown
        expr: label_replace(vector(1), "service", "HOSTILE", "", "")
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.service }} cannot be scraped"
          runbook_url: https://runbooks.example.test/target-down
""".replace("HOSTILE", HOSTILE_SERVICE)


@dataclass
class Stack:
    service: dict[str, Any]
    prom: Prometheus
    dead_target: str
    """A second scrape target of that Prometheus where nothing listens (an endpoint down)."""


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    rules = tmp_path_factory.mktemp("console-rules") / "rules.yml"
    rules.write_text(RULES)
    dead = f"127.0.0.1:{free_port()}"
    with serve(features=5, gpus=2, interval=0.2) as svc, \
            prometheus([svc["target"], dead], rule_files=[rules]) as prom:
        prom.wait_for("sum(rate(aiwatch_request_duration_seconds_count[5s])) > 0")
        prom.wait_for('count(ALERTS{alertstate="firing"}) >= 2')
        prom.wait_for(f'up{{instance="{dead}"}} == 0')
        yield Stack(svc, prom, dead)


@pytest.fixture(scope="session")
def prom_source(stack: Stack) -> PrometheusSource:
    return PrometheusSource(stack.prom.url, span=60, points=30)


SETTLED = WINDOW + 2.0
"""Seconds before the instant a :class:`PinnedSource` asks at over which every scrape of the workload answered: the
window's rates have all their samples, the gauges their latest."""
EDGE = 2.0
"""Seconds at each end of a window over which :func:`settled_growth` waits for every scrape to have answered: at
least one scrape (every second) falls in them."""
SETTLED_TIMEOUT = 60.0
"""Seconds a test waits for Prometheus to have scraped the workload without a failure long enough (a loaded machine
fails some of the scrapes)."""


class PinnedSource(PrometheusSource):
    """A PrometheusSource that asks every question at one instant ``at`` instead of now: the range questions end
    there, the instant ones (gauges, whose series a failed scrape marks stale) are asked there too."""

    def __init__(self, url: str, at: float, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.at = at

    def now(self) -> float:
        return self.at

    def _instant(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        return super()._instant(promql, self.at if at is None else at)

    # Prometheus answers the targets' health and the alerts only as of now: a scrape failed since ``at`` (its 1 s
    # timeout on a loaded machine) reads the workload's endpoint down, resolves the alert on its queue depth and puts
    # the pending one back to its start. These two wait for Prometheus' answer of now to be what it was at ``at``
    # (``up`` and ``ALERTS`` there), then give it: the view and the test that reads it after see the same state.
    def health(self) -> list[TargetHealth]:
        then = {labels.get("instance"): value == 1 for labels, value in self._instant("up")}
        found: list[TargetHealth] = []

        def as_then() -> bool:
            found[:] = super(PinnedSource, self).health()
            return {t.get("labels", {}).get("instance"): t.get("health") == "up" for t in self._targets} == then
        wait_until(as_then, SETTLED_TIMEOUT, 0.25, what=f"the targets' health of now to be theirs at {self.at:.3f}: "
                   f"{then}")
        return found

    def alerts(self) -> list[AlertRow]:
        then = sorted((labels["alertname"], labels["alertstate"]) for labels, _ in self._instant("ALERTS"))
        found: list[AlertRow] = []

        def as_then() -> bool:
            found[:] = super(PinnedSource, self).alerts()
            return sorted((a.name, a.state) for a in found) == then
        wait_until(as_then, SETTLED_TIMEOUT, 0.25, what=f"the alerts of now to be those at {self.at:.3f}: {then}")
        return found


def settled_instant(prom: Prometheus, target: str, timeout: float = 60) -> float:
    """The latest instant :data:`LANDED` seconds ago at which every scrape of ``target`` over the :data:`SETTLED`
    seconds before it answered, waited for.

    The shared Prometheus scrapes every second with a 1 s timeout: on a loaded machine a scrape fails (its series are
    marked stale), and after a few the series come back with one sample, so asked at now a window's rate reads
    nothing (or 0 where a query adds ``or 0 * ...``), a gauge nothing. Asked at this instant, every question has the
    data of a whole window."""
    found: list[float] = []

    def answered() -> bool:
        at = time.time() - LANDED
        if all_answered(prom, target, at, SETTLED):
            found.append(at)
        return bool(found)
    wait_until(answered, timeout, 0.25, what=f"{SETTLED:g}s of scrapes of {target} that all answered")
    return found[0]


def all_answered(prom: Prometheus, target: str, at: float, seconds: float) -> bool:
    """Whether every scrape of ``target`` over the ``seconds`` before ``at`` answered (asked once ``at`` is
    :data:`LANDED` seconds ago: a scrape begun before it may land until then)."""
    up = f'up{{instance="{target}"}}'
    expr = f"min_over_time({up}[{seconds:g}s]) == 1 and count_over_time({up}[{seconds:g}s]) >= {seconds - 1:g}"
    return bool(prom.query(expr, at=at))


def pinned_source(prom: Prometheus, target: str) -> PinnedSource:
    """A source of ``prom`` (as :func:`prom_source`) asking at :func:`settled_instant`."""
    return PinnedSource(prom.url, settled_instant(prom, target), span=60, points=30)


@pytest.fixture
def settled_source(stack: Stack) -> PinnedSource:
    """:func:`prom_source` for the tests that read its values at now: asked at an instant every question has a
    whole window's data for (:func:`settled_instant`)."""
    return pinned_source(stack.prom, stack.service["target"])


@pytest.fixture(scope="session")
def scrape_source(stack: Stack) -> Iterator[ScrapeSource]:
    # a scrape slower than its timeout is a failed one and the views show "—" for it: the default timeout (the
    # interval, 0.25 s) is too short for a loaded CI machine, and these tests are not about timeouts
    src = ScrapeSource([stack.service["url"]], interval=0.25, history=30, timeout=5.0)
    wait_until(lambda: bool(src.throughput(WINDOW)) and len(src.throughput(WINDOW)[0].points) >= 3, 20,
               what="three scrapes with traffic")
    yield src
    src.close()


def console_window(monkeypatch: pytest.MonkeyPatch, window: float) -> None:
    """The app reads its config from the environment on every run: none of the caller's AIWATCH_CONSOLE_*
    variables, and a window of ``window`` seconds."""
    for var in [v for v in os.environ if v.startswith("AIWATCH_CONSOLE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", str(window))


@pytest.fixture
def console_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short window, no Prometheus default."""
    console_window(monkeypatch, WINDOW)


def counts(stack: Stack, family: str, label: str) -> dict[str, float]:
    """The workload's counter ``family`` (its name without ``_total``) by ``label``, read from its endpoint."""
    status, body = http_get(stack.service["url"])
    assert status == 200, status
    return {s.labels[label]: s.value for found in text_string_to_metric_families(body.decode())
            if found.name == family for s in found.samples if s.name.endswith("_total")}


def growth(stack: Stack, family: str, label: str, seconds: float) -> dict[str, float]:
    """How much the workload's counter ``family`` grows by ``label`` over the next ``seconds``: its own counts over
    the window a source asked right after reads."""
    before = counts(stack, family, label)
    time.sleep(seconds)
    return {value: count - before.get(value, 0.0) for value, count in counts(stack, family, label).items()}


def settled_growth(stack: Stack, family: str, label: str, seconds: float,
                   timeout: float = SETTLED_TIMEOUT) -> tuple[dict[str, float], PinnedSource]:
    """:func:`growth` over ``seconds``, and a source of the shared Prometheus asking at their end, once the scrapes
    of the workload over their first and last :data:`EDGE` seconds all answered: measured again until they did.
    Asked there, Prometheus' rates over those seconds are of samples taken at their edges (a counter's increase is
    its last sample's less its first): of the seconds the counts grew over. Asked at now, or where a scrape at an
    edge failed (its 1 s timeout on a loaded machine), they are of other seconds, or of too few samples."""
    deadline = time.monotonic() + timeout
    target = stack.service["target"]
    while True:
        grown = growth(stack, family, label, seconds)
        end = time.time()
        time.sleep(max(0.0, end + LANDED - time.time()))
        if all_answered(stack.prom, target, end - seconds + EDGE, EDGE) and all_answered(stack.prom, target, end, EDGE):
            return grown, PinnedSource(stack.prom.url, end, span=60, points=30)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {seconds:g}s in {timeout:g}s whose first and last scrapes of the workload answered")


def log_counts(stack: Stack) -> dict[str, float]:
    """The workload's prediction-log counter by result, read from its endpoint."""
    return counts(stack, "aiwatch_prediction_log_records", "result")


def log_growth(stack: Stack, seconds: float) -> dict[str, float]:
    """How much the workload's prediction-log counter grows by result over the next ``seconds``: the log's own
    counts over the window a source asked right after reads. Over the whole run they would not do: how the writer
    thread batches the records (so how many of them the sink's failing batches hold) depends on the machine's load."""
    return growth(stack, "aiwatch_prediction_log_records", "result", seconds)


def settled_log_growth(stack: Stack, seconds: float) -> tuple[dict[str, float], PinnedSource]:
    """:func:`log_growth` with a source asking at its end (see :func:`settled_growth`)."""
    return settled_growth(stack, "aiwatch_prediction_log_records", "result", seconds)


def run_view(source: DataSource | None, view: str, timeout: float = 60) -> Any:
    """Run the console app once with ``source`` on ``view``; returns the AppTest."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout)
    if source is not None:
        at.session_state["aiwatch_source"] = source
    at.session_state["view"] = view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plain(markdown: str) -> str:
    """What a Markdown string written with :func:`aiwatch.console.text.md` reads as: the backslash escapes and the
    invisible word joiners taken out."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(WORD_JOINER, "")


def texts(elements: Any) -> list[str]:
    """The text of each element as the person reads it (see :func:`plain`)."""
    return [plain(str(e.value)) for e in elements]


LOOP_WARNING = "Event loops standing still"
"""How the Latency view's warning of event loops above AiwatchEventLoopDelayHigh's share starts: the workload's
recommender loop stands still about 27% of the time, so the view always shows it on the shared stack."""


CAVEAT_WARNINGS = tuple(what for what, _, _ in CAVEAT_TEXT.values())
"""How the Latency view's warnings of what the split could not measure start: the workload clamps one call and one
request in each step's 20, and has one response dropped unclosed, so the view always shows all three."""


def source_warnings(at: Any) -> list[str]:
    """The view's warnings but those of the workload's own state: the starved event loops (:data:`LOOP_WARNING`)
    and what the split could not measure (:data:`CAVEAT_WARNINGS`)."""
    return [t for t in texts(at.warning) if not t.startswith((LOOP_WARNING, *CAVEAT_WARNINGS))]


def expected_warnings(source: DataSource) -> list[str]:
    """The warnings a view shows on the shared stack: one for Prometheus' dead test target, none for the scrape
    source (which scrapes only the live endpoint)."""
    if not isinstance(source, PrometheusSource):
        return []
    return [f"Endpoint down: {t.url} ({t.error or 'no answer'}). Panels show the endpoints that answer."
            for t in source.health() if not t.up]
