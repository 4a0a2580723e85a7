"""The Alerts view's panel of aiwatch's own errors: both sources read the console workload's real failures (its
prediction log's sink fails every third batch, counted by aiwatch as component ``prediction_log``) and the label
values its real cardinality guard folds (a raw path per step on a registry bounded at
:data:`~tests.console.workload.LABEL_VALUES` values per label), against the workload's own counters; the view names
the failing component and the folded label, and says all is clear when nothing grew."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.cardinality import OVERFLOW
from aiwatch.console import PrometheusSource, ScrapeSource, Series
from aiwatch.console.scrape import instance_names
from aiwatch.console.source import DataSource
from aiwatch.metrics import Metrics
from tests.console.conftest import WINDOW, Stack, growth, run_view, texts
from tests.servers import wait_until

pytestmark = pytest.mark.usefixtures("console_env")

URL = "http://127.0.0.1:9/metrics"
ERRORS, OVERFLOWS = "aiwatch_instrumentation_errors", "aiwatch_label_overflow"
FAILING = "prediction_log"
SWALLOWED = "aiwatch swallowed errors in the last 5s: "
FOLDED = f"Label values folded into {OVERFLOW} in the last 5s: "
ALL_CLEAR = "aiwatch swallowed no errors in the last 5s"


@pytest.fixture(params=["prometheus", "scrape"])
def source(request: pytest.FixtureRequest, prom_source: PrometheusSource, scrape_source: ScrapeSource) -> DataSource:
    return prom_source if request.param == "prometheus" else scrape_source


def grown(series: list[Series]) -> list[Series]:
    """The series that rose above 0 in the span: every component's error counter exists from the start, at 0."""
    return [s for s in series if any(v > 0 for _, v in s.points)]


def rates(series: list[Series], *labels: str) -> dict[tuple[str, ...], float]:
    """The latest rate of each series that grew, by ``labels``."""
    return {tuple(s.labels.get(k, "") for k in labels): s.last or 0.0 for s in grown(series)}


def growing(source: DataSource) -> None:
    """Wait until the source's latest rates show the workload's errors and folds."""
    wait_until(lambda: any((s.last or 0) > 0 for s in source.instrumentation_errors(WINDOW))
               and any((s.last or 0) > 0 for s in source.label_overflow(WINDOW)), 30,
               what="aiwatch's own errors and folded labels")


def compared_window(source: DataSource) -> float:
    """The window over which a source's rate is compared with the workload's own count. Prometheus' samples trail
    the workload by up to a scrape interval (1 s), and on a loaded machine its scrapes slip further while the
    workload's pace changes: over 5 s those edges moved its rate 40 % off the workload's own (a CI run), over 15 s
    they weigh a third as much. The scrape source reads the endpoint itself every 0.25 s and keeps 7.5 s of it."""
    return 3 * WINDOW if isinstance(source, PrometheusSource) else WINDOW


# --- the workload's real errors, through a real Prometheus and through the scrape source ---------------------------
@pytest.mark.slow
def test_both_sources_read_the_workloads_errors(stack: Stack, source: DataSource) -> None:
    growing(source)
    # the workload's own counts over a window, then the source's rate over the window that just ended
    window = compared_window(source)
    errors = growth(stack, ERRORS, "component", window)
    answer = source.instrumentation_errors(window)
    # one series per (instance, component): the workload's endpoint, Prometheus' instance label for it
    assert sorted(rates(answer, "instance", "component")) == [(stack.service["target"], FAILING)]
    own = errors[FAILING] / window
    assert own > 0
    assert rates(answer, "component")[(FAILING,)] == pytest.approx(own, rel=0.35)


@pytest.mark.slow
def test_both_sources_read_the_folded_labels(stack: Stack, source: DataSource) -> None:
    growing(source)
    window = compared_window(source)
    folds = growth(stack, OVERFLOWS, "label", window)
    answer = source.label_overflow(window)
    assert sorted(rates(answer, "label")) == [("route",)]
    # one raw path per workload step, each folded: the rate is the guard's own count over the window
    own = folds["route"] / window
    assert own > 0
    assert rates(answer, "label")[("route",)] == pytest.approx(own, rel=0.35)


@pytest.mark.slow
def test_the_sources_agree(stack: Stack, prom_source: PrometheusSource, scrape_source: ScrapeSource) -> None:
    # until Prometheus holds a whole window of samples its rates read low (see test_console_prediction_log.py)
    stack.prom.wait_for(f"count_over_time(aiwatch_label_overflow_total[{WINDOW:g}s]) >= 5")
    growing(prom_source)
    growing(scrape_source)
    for question, labels in (("instrumentation_errors", ("instance", "component")), ("label_overflow", ("label",))):
        prom, scrape = getattr(prom_source, question)(WINDOW), getattr(scrape_source, question)(WINDOW)
        assert sorted(tuple(sorted(s.labels.items())) for s in prom) == \
            sorted(tuple(sorted(s.labels.items())) for s in scrape), question
        assert rates(prom, *labels) == pytest.approx(rates(scrape, *labels), rel=0.35), question


@pytest.mark.slow
def test_the_alerts_view_names_the_failing_component_and_the_folded_label(stack: Stack, source: DataSource) -> None:
    growing(source)
    at = run_view(source, "Alerts")
    warnings = texts(at.warning)
    (swallowed,) = [t for t in warnings if t.startswith(SWALLOWED)]
    assert swallowed.startswith(f"{SWALLOWED}{FAILING} ") and "/s" in swallowed
    (folded,) = [t for t in warnings if t.startswith(FOLDED)]
    assert folded.startswith(f"{FOLDED}route ")
    assert not any(t.startswith(ALL_CLEAR) for t in texts(at.success))
    (table,) = [df.value for df in at.dataframe if "component / label" in df.value.columns]
    assert list(table["component / label"]) == [FAILING, "route"]
    assert list(table["what"]) == ["swallowed errors", "label values folded"]
    assert (table["per second"] > 0).all()
    # the replica that failed (folds are counted per label, over every replica)
    assert list(table["instance"]) == [stack.service["target"], ""]
    assert any("per second" in c.proto.spec and f"{FAILING} errors" in c.proto.spec
               for c in at.get("vega_lite_chart"))


# --- counters written by hand: the all-clear, replicas, the scrape source's math -----------------------------------
def fed(*steps: dict[tuple[str, str], float], urls: tuple[str, ...] = (URL,)) -> ScrapeSource:
    """A ScrapeSource fed one real exposition per step (1 s apart) and per endpoint of aiwatch's own counters,
    grown by ``{(kind, value): increase}``, kind ``component`` or ``label``."""
    src = ScrapeSource(list(urls), interval=1.0, history=60, start=False)
    registries = {url: Metrics(CollectorRegistry()) for url in urls}
    start = time.time() - len(steps)
    for i, step in enumerate(steps):
        for url, m in registries.items():
            for (kind, value), amount in step.items():
                counter = m.instrumentation_errors if kind == "component" else m.label_overflow
                counter.labels(value).inc(amount)
            src.record(url, generate_latest(m.registry).decode(), ts=start + i)
    return src


def test_no_errors_is_a_green_all_clear() -> None:
    # counters at zero (a component that failed before this history, say) and no family at all read the same
    for src in (fed({("component", "metrics"): 0, ("label", "route"): 0}, {}, {}), fed({}, {})):
        at = run_view(src, "Alerts")
        assert f"{ALL_CLEAR}, and its cardinality guard folded no label values." in texts(at.success)
        assert not at.warning and not at.error
        assert not [df for df in at.dataframe if "component / label" in df.value.columns]


def test_errors_that_stopped_are_drawn_under_an_all_clear() -> None:
    # errors 8 s ago, none in the last 5 s (the view's window): the chart shows them, the banner says all is clear
    src = fed({("component", "drift"): 0}, {("component", "drift"): 4}, *[{}] * 7)
    assert [s.last for s in grown(src.instrumentation_errors(WINDOW))] == [0.0]
    at = run_view(src, "Alerts")
    assert texts(at.success) == [f"{ALL_CLEAR}."]
    assert not at.warning
    (table,) = [df.value for df in at.dataframe if "component / label" in df.value.columns]
    assert list(table["component / label"]) == ["drift"] and list(table["per second"]) == [0.0]
    assert any("drift errors" in c.proto.spec for c in at.get("vega_lite_chart"))


def test_server_timing_cut_to_its_cap_is_told_apart_from_a_failure() -> None:
    # the cap at work (every response of an app with 40 phases) is not a failure: an info line, the all-clear stays
    src = fed({("component", "server_timing_header"): 0, ("component", "grpc_server_trailer"): 0},
              {("component", "server_timing_header"): 5, ("component", "grpc_server_trailer"): 2})
    at = run_view(src, "Alerts")
    assert not at.warning
    assert texts(at.success) == [f"{ALL_CLEAR}."]
    (capped,) = [t for t in texts(at.info) if t.startswith("Server-Timing values cut to their size cap")]
    assert "server_timing_header 5/s" in capped and "grpc_server_trailer 2/s" in capped


def test_replicas_are_told_apart_by_instance() -> None:
    urls = ("http://10.0.0.1:8000/metrics", "http://10.0.0.2:8000/metrics")
    src = fed({("component", "tracing"): 0, ("label", "peer"): 0}, {("component", "tracing"): 3, ("label", "peer"): 2},
              urls=urls)
    errors = src.instrumentation_errors(10.0)
    assert rates(errors, "instance", "component") == {("10.0.0.1:8000", "tracing"): 3.0,
                                                      ("10.0.0.2:8000", "tracing"): 3.0}
    assert rates(src.label_overflow(10.0), "label") == {("peer",): 4.0}  # summed over replicas
    at = run_view(src, "Alerts")
    (swallowed,) = [t for t in texts(at.warning) if t.startswith("aiwatch swallowed errors in the last 5s: ")]
    assert swallowed.startswith("aiwatch swallowed errors in the last 5s: tracing 6/s")
    (table,) = [df.value for df in at.dataframe if "component / label" in df.value.columns]
    assert list(table["instance"]) == ["10.0.0.1:8000", "10.0.0.2:8000", ""]


def test_instance_names_are_prometheus_targets() -> None:
    assert instance_names(["http://a:1/metrics", "https://user:secret@b:2/x"]) == {
        "http://a:1/metrics": "a:1", "https://user:secret@b:2/x": "b:2"}
    # two endpoints on one host:port keep their URLs, to stay two
    both = ["http://a:1/metrics", "http://a:1/other"]
    assert instance_names(both) == {u: u for u in both}


def test_a_component_in_two_clusters_is_two() -> None:
    from aiwatch.console.source import tell_scopes_apart

    found = [{"cluster": c, "instance": "10.0.0.1:8000", "component": "drift"} for c in ("eu", "us")]
    named = tell_scopes_apart([*found, {"cluster": "eu", "label": "route"}], ("cluster", "namespace"))
    assert [n.get("component") for n in named] == ["drift (eu)", "drift (us)", None]


def test_the_query_is_the_runbooks() -> None:
    from aiwatch import runbooks
    from aiwatch.console.queries import PanelQueries

    page, q = runbooks.page("AiwatchInstrumentationErrors"), PanelQueries(scope=())
    assert q.instrumentation_errors("10m") in page and q.label_overflow("10m") in page
    assert "Alerts view" in page and "aiwatch's own errors" in page
