"""Failure states are designed messages, not tracebacks: Prometheus unreachable, an endpoint down, no data yet,
a family absent (no GPU), a panel whose question fails, a bad configuration, a URL that is not Prometheus."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.console import AlertRow, GpuTable, PrometheusSource, ScrapeSource, SourceError
from aiwatch.metrics import Metrics
from tests.console.conftest import WINDOW, Stack, run_view, source_warnings, texts
from tests.console.workload import Workload
from tests.servers import free_port

pytestmark = pytest.mark.usefixtures("console_env")

VIEWS = ("Latency", "AI traffic", "Resources", "Drift", "Alerts")
DEAD = "http://127.0.0.1:{port}/metrics"


def fed_source(gpus: int = 2, scrapes: int = 3, cls: type[ScrapeSource] = ScrapeSource) -> tuple[ScrapeSource, str]:
    """A ScrapeSource fed ``scrapes`` real expositions of a workload (one step apart), without a thread."""
    url = "http://127.0.0.1:9/metrics"
    src = cls([url], interval=1.0, history=60, start=False)
    registry = CollectorRegistry()
    workload = Workload(Metrics(registry), features=3, gpus=gpus)
    now = time.time()
    for i in range(scrapes):
        workload.step(10)
        src.record(url, generate_latest(registry).decode(), ts=now - scrapes + i + 1)
    workload.prediction_log.close()  # its writer thread would outlive the test
    return src, url


@pytest.mark.parametrize("view", VIEWS)
def test_unreachable_prometheus_says_so_in_every_view(view: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    at = run_view(PrometheusSource(url, timeout=2), view)
    assert len(at.error) == 1
    assert texts(at.error)[0].startswith(f"Prometheus at {url} is unreachable")
    assert "keeps retrying" in texts(at.error)[0]
    assert not at.get("vega_lite_chart") and not at.dataframe
    # navigation still works
    assert at.radio(key="view").options == [*VIEWS, "Runbooks"]


def test_no_data_yet_before_the_first_scrape() -> None:
    src = ScrapeSource(["http://127.0.0.1:9/metrics"], interval=1.0, start=False)
    at = run_view(src, "Latency")
    assert texts(at.info)[0] == "No data yet: waiting for the first scrape of http://127.0.0.1:9/metrics."
    assert any(t.startswith("No request latency yet") for t in texts(at.info))
    assert not at.error and not at.get("vega_lite_chart")


@pytest.mark.parametrize(("view", "expected"), [
    ("Latency", ["No request latency yet", "No phase timings yet", "No requests in the last 5s.",
                 "No requests in the last 5s, so no error ratio.", "No network timings", "No event loop delay",
                 "No time stood still per replica"]),
    ("AI traffic", ["No requests in the last 5s (aiwatch_request_duration_seconds)", "No streamed responses",
                    "No time per output token", "No time to first token", "No token usage",
                    "No versioned model served", "No versioned inference phase"]),
    ("Resources", ["No GPU metrics", "No GPU utilization series", "No queue metrics", "No batches in the last",
                   "No in-flight gauge", "No feature-cache lookups"]),
    ("Drift", ["No drift results yet", "No realised quality", "No prediction log"]),
    ("Alerts", ["Alert rules are evaluated by Prometheus"]),
])
def test_endpoint_up_without_aiwatch_metrics_shows_no_data_messages(view: str, expected: list[str]) -> None:
    url = "http://127.0.0.1:9/metrics"
    src = ScrapeSource([url], interval=1.0, start=False)
    now = time.time()
    src.record(url, "# an app with no aiwatch metrics yet\nother_metric 1\n", ts=now - 2)
    src.record(url, "other_metric 2\n", ts=now - 1)
    at = run_view(src, view)
    info = texts(at.info)
    for prefix in expected:
        assert any(t.startswith(prefix) for t in info), (prefix, info)
    assert not at.error and not at.warning


def test_no_gpu_family_keeps_the_rest_of_resources() -> None:
    src, _ = fed_source(gpus=0)
    at = run_view(src, "Resources")
    info = texts(at.info)
    assert len(info) == 2
    assert info[0].startswith("No GPU metrics: the source has no aiwatch_gpu_* series.")
    assert 'pip install "aiwatch[gpu]"' in info[0]
    assert info[1].startswith("No GPU utilization series")
    assert not at.dataframe
    # queue depth, batch size, in-flight, cache hit ratio still draw
    assert len(at.get("vega_lite_chart")) == 4
    signals = {m.label: m.value for m in run_view(src, "Alerts").metric}
    assert signals["GPU utilization (mean)"] == "—"
    assert signals["queue depth per replica (items)"] != "—"


def test_a_failing_panel_shows_an_error_and_the_others_draw() -> None:
    class BrokenGpu(ScrapeSource):
        def gpu_table(self) -> GpuTable:
            raise RuntimeError("NVML exploded")

    broken, _ = fed_source(cls=BrokenGpu)
    at = run_view(broken, "Resources")
    assert texts(at.error) == ["GPUs (latest) could not be drawn: RuntimeError: NVML exploded"]
    assert len(at.get("vega_lite_chart")) == 5


def test_bad_configuration_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_REFRESH", "soon")
    at = run_view(None, "Latency")
    assert texts(at.error) == ["Bad console configuration: AIWATCH_CONSOLE_REFRESH must be a number of seconds, "
                               "got 'soon'"]


def test_a_window_promql_cannot_express_is_a_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: 0.0004 s became the PromQL duration "0ms" and every Prometheus panel showed a query error
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "0.0004")
    at = run_view(None, "Latency")
    assert texts(at.error) == ["Bad console configuration: AIWATCH_CONSOLE_WINDOW must be at least 0.001 s (PromQL "
                               "durations count whole milliseconds), got 0.0004"]


def test_a_timeout_of_a_fraction_of_a_second_is_one_prometheus_accepts(stack: Stack) -> None:
    # before: the query's own timeout went out as "2.5s", which Prometheus refuses: every question failed with a 400
    src = PrometheusSource(stack.prom.url, timeout=2.5)
    assert {s.labels["service"] for s in src.throughput(WINDOW)}


def test_scrape_failure_marks_the_endpoint_down_and_drops_its_series() -> None:
    src, url = fed_source()
    src.record(url, None, error="Connection refused")
    assert [(t.up, t.error) for t in src.health()] == [(False, "Connection refused")]
    assert src.gpu_table().rows == []  # gauges of a down endpoint are not served stale


@pytest.mark.slow
def test_one_endpoint_down_is_a_warning_and_the_others_still_draw(stack: Stack) -> None:
    dead = DEAD.format(port=free_port())
    # the live endpoint's whole answer must come within the timeout: the default (the interval) fails it on a loaded
    # machine, and this test is about the dead one
    src = ScrapeSource([stack.service["url"], dead], interval=0.25, history=30, timeout=5.0)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not src.throughput(WINDOW):
            time.sleep(0.25)
        at = run_view(src, "Latency")
    finally:
        src.close()
    warnings = source_warnings(at)  # and the workload's starved loop
    assert len(warnings) == 1 and warnings[0].startswith(f"Endpoint down: {dead} (")
    assert "Panels show the endpoints that answer." in warnings[0]
    assert {m.label for m in at.metric} >= {"request p50", "request p95", "request p99"}
    assert not at.error


@pytest.mark.slow
def test_prometheus_errors_are_named(stack: Stack, prom_source: PrometheusSource) -> None:
    with pytest.raises(SourceError, match=r"Prometheus answered 400 to /api/v1/query: .*parse error"):
        prom_source.instant("sum(")
    not_prometheus = PrometheusSource(stack.service["url"].removesuffix("/metrics"))
    with pytest.raises(SourceError, match="did not answer with JSON; is it a Prometheus server"):
        not_prometheus.latency_quantiles(WINDOW)
    at = run_view(not_prometheus, "Drift")
    assert any("is it a Prometheus server" in t for t in texts(at.warning))


def test_no_alerts_is_a_green_all_clear() -> None:
    class Quiet(ScrapeSource):
        def alerts(self) -> list[AlertRow]:
            return []

    src, _ = fed_source(cls=Quiet)
    at = run_view(src, "Alerts")
    # first: the alerts panel's all-clear (aiwatch's own errors come below it: tests/console/test_console_own_errors.py)
    assert texts(at.success)[0] == "No alerts firing or pending."
    assert not at.error and not at.info


@pytest.mark.slow
def test_many_endpoints_down_are_named_up_to_ten_and_counted_beyond() -> None:
    """A real Prometheus with 25 targets down (a cluster half gone, or another team's jobs): ten banners name the
    first ten, one counts the other 15, and the view goes on below them; it drew a banner per target, 25 of them
    above the panels (hundreds on a large Prometheus)."""
    from tests.servers import prometheus

    dead = [f"127.0.0.1:{free_port()}" for _ in range(25)]
    with prometheus(dead) as prom:
        prom.wait_for("count(up == 0) == 25")
        at = run_view(PrometheusSource(prom.url), "Latency")
    warnings = source_warnings(at)
    named = [w for w in warnings if w.startswith("Endpoint down: http://127.0.0.1:")]
    assert len(named) == 10, warnings
    assert "15 more of the 25 endpoints are down (the first 10 are named above). Panels show the endpoints that " \
        "answer." in warnings, warnings
    assert len(warnings) == 11, warnings
    assert not at.error


@pytest.mark.slow
def test_hundreds_of_alerts_list_the_most_urgent_and_table_them_all(tmp_path: Path) -> None:
    """A real Prometheus with 60 alerts firing (one per queue: an alert per pod of a fleet, say): the list above the
    table names the 20 most urgent and says so, the table holds all 60, and the panels below still draw; it wrote
    a line per alert, 60 of them (thousands on a large fleet) above the table and the autoscaling signals."""
    from tests.servers import prometheus_scraping

    m = Metrics(CollectorRegistry())
    for i in range(60):
        m.queue_depth.labels(f"q{i:02d}").set(1)
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: many\n    rules:\n      - alert: QueueBacklog\n"
                     "        expr: aiwatch_queue_depth > 0\n        labels: {severity: warning}\n"
                     "        annotations: {summary: 'Queue {{ $labels.queue }} has a backlog'}\n")
    with prometheus_scraping(m.registry, [rules]) as prom:
        prom.wait_for('count(ALERTS{alertstate="firing"}) == 60')
        at = run_view(PrometheusSource(prom.url), "Alerts")
    listed = [t for t in texts(at.markdown) if "QueueBacklog" in t]
    assert len(listed) == 20, len(listed)
    assert "The 20 most urgent are listed (firing first, then by severity); the table below has all 60." \
        in texts(at.caption)
    assert len(at.dataframe[0].value) == 60
    assert "queue depth per replica (items)" in [m.label for m in at.metric]


@pytest.mark.slow
@pytest.mark.parametrize("match", ['cluster="eu"', 'cluster=~"e.+"'])
def test_endpoint_down_banners_name_only_the_targets_match_selects(match: str) -> None:
    """A Prometheus scraping a cluster ``eu`` target, a cluster ``us`` one and another job's, all down: with
    ``--match`` selecting ``eu`` the banners name the eu target alone, as the panels read eu's series alone. They
    named all three (every target of the Prometheus, whatever --match said)."""
    from aiwatch.console.queries import PanelQueries
    from tests.servers import prometheus

    eu, us, other = (f"127.0.0.1:{free_port()}" for _ in range(3))
    jobs = "".join(f"  - job_name: {cluster}\n    static_configs:\n      - targets: ['{target}']\n"
                   f"        labels: {{cluster: {cluster}}}\n" for cluster, target in (("eu", eu), ("us", us)))
    with prometheus([other], extra_config=jobs) as prom:
        prom.wait_for("count(up == 0) == 3")
        every = source_warnings(run_view(PrometheusSource(prom.url), "Latency"))
        narrowed = run_view(PrometheusSource(prom.url, queries=PanelQueries(match=match)), "Latency")
    assert sorted(w.split(" (")[0] for w in every) == sorted(f"Endpoint down: http://{t}/metrics"
                                                             for t in (eu, us, other))
    assert [w.split(" (")[0] for w in source_warnings(narrowed)] == [f"Endpoint down: http://{eu}/metrics"]
    assert not narrowed.error
