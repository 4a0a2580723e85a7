"""Every console view rendered by Streamlit's AppTest against both sources: a real Prometheus that scraped the
instrumented workload, and the embedded ScrapeSource reading the same /metrics endpoint."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.scrape import sum_by
from aiwatch.console.source import (
    CAVEAT_TEXT,
    NETWORK_CLAMPED,
    OVERHEAD_CLAMPED,
    UNCLOSED,
    UNMEASURED,
    DataSource,
)
from tests.console.conftest import (
    CAVEAT_WARNINGS,
    HOSTILE_SERVICE,
    LOOP_WARNING,
    Stack,
    expected_warnings,
    plain,
    run_view,
    source_warnings,
    texts,
)
from tests.console.workload import (
    BACKGROUND_PHASE,
    BACKGROUND_SECONDS,
    CANARY,
    DEGRADED_REASON,
    GATEWAY,
    LOOP_INTERVAL,
    MISSING_FEATURE,
    MODEL,
    PROMPT_LOOP,
    REQUEST_BYTES,
    REQUESTS,
    RESPONSE_BYTES,
    SERVICE,
    STABLE,
    STARVED_LOOP,
    WORST_WORKER,
    feature_names,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("console_env")]

SOURCES = ["prometheus", "scrape"]


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest, scrape_source: ScrapeSource) -> DataSource:
    # the tests read the tiles and last points of now: Prometheus' are asked at an instant it has a whole window of
    # scrapes for (a loaded machine's failed scrapes left the rates of now empty)
    return request.getfixturevalue("settled_source") if request.param == "prometheus" else scrape_source


def metrics(at: Any) -> dict[str, str]:
    return {plain(m.label): m.value for m in at.metric}


def card(shown: dict[str, str], label: str) -> float:
    """The number of a ``"12.3 ms"`` or ``"45%"`` card."""
    return float(shown[label].split()[0].rstrip("%"))


def per_service(at: Any, kind: str) -> dict[str, Any]:
    """The console's per-service blocks of one panel (``"latency"`` or ``"phases"``), by service, in page order."""
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        key = getattr(node, "key", None)
        if isinstance(key, str) and key.startswith(f"{kind}-"):
            found[key.removeprefix(f"{kind}-")] = node
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(at._tree)
    return found


def test_latency_view(source: DataSource) -> None:
    at = run_view(source, "Latency")
    assert not at.error, texts(at.error)
    # besides the source's own: the recommender's loop stood still more than the alert's 20% (its table's test)
    assert source_warnings(at) == expected_warnings(source)
    latency = {svc: metrics(block) for svc, block in per_service(at, "latency").items()}
    phases = {svc: metrics(block) for svc, block in per_service(at, "phases").items()}
    assert latency.keys() == phases.keys() == {GATEWAY, SERVICE}
    for shown in [*latency.values(), *phases.values()]:
        assert all(v.endswith((" ms", "%")) for v in shown.values()), shown
    p50, p99 = (card(latency[SERVICE], f"request {q}") for q in ("p50", "p99"))
    # The recommender's requests take 31-102 ms: its quantiles fall inside that range and are ordered.
    assert 25 < p50 <= p99 < 110
    # The gateway's requests hold the recommender's plus 6-29 ms (at most 131 ms, so at most the 150 ms bucket
    # bound): its quantiles are its own, not a mix of both services' requests.
    gateway = latency[GATEWAY]
    assert p50 < card(gateway, "request p50") <= card(gateway, "request p99") <= 150
    # inference (the model) is 20-40 ms of each recommender request; the gateway has no model phase of its own, and
    # its largest phase is the call to the recommender.
    assert 15 < card(phases[SERVICE], "model time") < 45
    assert phases[SERVICE]["model share"].endswith("%")
    assert set(phases[GATEWAY]) == {"time per request", "inference_call", "inference_call share"}
    assert card(phases[GATEWAY], "time per request") > card(phases[SERVICE], "time per request")
    # latency x2 services, phase split x2 services, network time, link throughput, what the split could not
    # measure, event loop delay, throughput, error ratio, phases outside requests
    assert len(at.get("vega_lite_chart")) == 11
    # the only note: no slowest traced requests (this Prometheus runs without exemplar storage, the scraper keeps
    # none; tests/console/test_console_traces.py draws them)
    [note] = texts(at.info)
    assert "No traced request" in note or "keeps no exemplars" in note, note


def phase_charts(at: Any) -> dict[str, str]:
    """Spec of the stacked phase chart of every service, in page order."""
    out = {}
    for service, block in per_service(at, "phases").items():
        charts = block.get("vega_lite_chart")
        assert len(charts) == 1, service
        out[service] = str(charts[0].proto.spec)
        assert "ms per request" in out[service]
    return out


def test_phase_chart_separates_model_from_not_model(source: DataSource) -> None:
    at = run_view(source, "Latency")
    spec = phase_charts(at)[SERVICE]
    # the axis and tooltip say the clock: UTC wall time, drawn as it is in a browser of any time zone
    assert spec.count('"title": "time (UTC)"') == 2, spec
    assert "inference (model)" in spec
    for phase in ("queue", "features", "overhead"):
        assert f"{phase} (not model)" in spec


def test_phases_are_split_per_service_never_summed_across_services(source: DataSource) -> None:
    """The gateway's inference_call already holds the recommender's time: one stack of both would count it twice.
    Each service gets its own stack, holding only its own phases."""
    at = run_view(source, "Latency")
    charts = phase_charts(at)
    assert list(charts) == [GATEWAY, SERVICE]  # equal request rates: by name
    assert "inference_call" in charts[GATEWAY] and "inference_call" not in charts[SERVICE]
    for phase in ("queue", "inference (model)"):
        assert phase in charts[SERVICE] and phase not in charts[GATEWAY]
    series = source.phase_split(5.0)
    assert {s.labels["service"] for s in series} == {GATEWAY, SERVICE}
    assert {s.labels["phase"] for s in series if s.labels["service"] == GATEWAY} == {"features", "inference_call",
                                                                                     "overhead"}
    # The selector narrows the view to one service: its quantiles, its stack.
    at.selectbox(key="latency_service").set_value(SERVICE).run()
    assert not at.exception
    assert list(phase_charts(at)) == [SERVICE] and list(per_service(at, "latency")) == [SERVICE]
    # its latency and phases, the network time and link throughput of the calls to it, what the split could not
    # measure of its requests and of the calls to it, its event loop delay, throughput, error ratio, its background
    # job's phase
    assert len(at.get("vega_lite_chart")) == 9


def test_each_service_stack_adds_up_to_its_own_mean_request_time(stack: Stack, source: DataSource) -> None:
    """Per service, at the same instant, the phases stacked = that service's request time sum / request count."""
    # Prometheus' source asks at an instant two scrape intervals old (settled_source), when every scrape begun before
    # it has landed: asked at now, a scrape begun before the range query's end but stored after it changed the
    # instant query below (CI saw 0.0845 against 0.0849)
    series = source.phase_split(5.0)
    at_time = min(s.points[-1][0] for s in series)
    stacked: dict[str, float] = {}
    for s in series:
        value = dict(s.points).get(at_time)
        assert value is not None, s.labels
        stacked[s.labels["service"]] = stacked.get(s.labels["service"], 0.0) + value
    mean = mean_request_time(stack, source, at_time)
    assert mean.keys() == stacked.keys() == {GATEWAY, SERVICE}
    for service, total in stacked.items():
        assert total == pytest.approx(mean[service], rel=1e-6), service
    assert stacked[GATEWAY] > stacked[SERVICE]


def mean_request_time(stack: Stack, source: DataSource, at_time: float) -> dict[str, float]:
    """Each service's mean request time over the test window at ``at_time``, asked without the phase metric."""
    if isinstance(source, PrometheusSource):
        expr = ("sum by (service) (rate(aiwatch_request_duration_seconds_sum[5s]))"
                " / sum by (service) (rate(aiwatch_request_duration_seconds_count[5s]))")
        found = stack.prom.api("/api/v1/query", query=expr, time=f"{at_time:.3f}")["result"]
        return {r["metric"]["service"]: float(r["value"][1]) for r in found}
    assert isinstance(source, ScrapeSource)
    data = source._copy()
    sums = sum_by(source._rate(data, "aiwatch_request_duration_seconds_sum", at_time, 5.0), ("service",))
    counts = sum_by(source._rate(data, "aiwatch_request_duration_seconds_count", at_time, 5.0), ("service",))
    return {k[0]: v / counts[k] for k, v in sums.items()}


def test_network_time_is_attributed_to_the_calling_service(source: DataSource) -> None:
    labels = sorted(tuple(sorted(s.labels.items())) for s in source.network_time(5.0))
    assert labels == [(("peer", SERVICE), ("quantile", q), ("service", GATEWAY)) for q in ("p50", "p95")]


def test_link_throughput_is_bytes_per_second_of_network_time(source: DataSource) -> None:
    links = {(s.labels["service"], s.labels["peer"]): s.last for s in source.link_throughput(5.0)}
    assert links.keys() == {(GATEWAY, SERVICE)}
    # every call moves 50,000 bytes (both directions) in 3-20 ms of network time: 2.5-16.7 MB per network second,
    # however many calls the workload's steps made
    per_call = REQUEST_BYTES + RESPONSE_BYTES
    assert per_call / 0.02 <= (links[(GATEWAY, SERVICE)] or 0) <= per_call / 0.003


def test_measurement_caveats_are_the_workloads_shares(source: DataSource) -> None:
    """In each step's 20 requests the workload clamps one call's network time (CLAMPED_CALL) and one request's
    overhead (OVERLAPPED_REQUEST), and counts one WSGI response dropped unclosed: each a twentieth of the gateway's
    calls or the recommender's requests, and nothing of the others."""
    shares = {(s.labels["caveat"], s.labels["service"], s.labels.get("peer")): s.last
              for s in source.measurement_caveats(5.0)}
    assert shares.keys() == {(NETWORK_CLAMPED, GATEWAY, SERVICE), (UNMEASURED, GATEWAY, SERVICE),
                             (OVERHEAD_CLAMPED, SERVICE, None), (UNCLOSED, SERVICE, None)}
    # every call gets the recommender's report: none goes without a network time
    assert shares.pop((UNMEASURED, GATEWAY, SERVICE)) == pytest.approx(0, abs=1e-6)
    for key, share in shares.items():
        # Prometheus extrapolates each series of the request rate to the window's edges on its own
        assert share == pytest.approx(1 / REQUESTS, rel=0.1), key


def test_the_latency_view_warns_of_what_the_split_could_not_measure(source: DataSource) -> None:
    at = run_view(source, "Latency")
    warned = {t.split(" in the last ")[0]: t for t in texts(at.warning) if t.startswith(CAVEAT_WARNINGS)}
    # in the order of CAVEATS; every call of the workload gets the recommender's report, none goes without a network
    # time
    network, overhead, unclosed = (CAVEAT_TEXT[c][0] for c in (NETWORK_CLAMPED, OVERHEAD_CLAMPED, UNCLOSED))
    assert list(warned) == [network, overhead, unclosed]
    share = r"\d+\.\d% of "
    assert re.search(f"in the last 5s: {GATEWAY} → {SERVICE} {share}calls\\. The peer reported more time",
                     warned[network]), warned
    assert re.search(f"in the last 5s: {SERVICE} {share}requests\\. Their named phases added up",
                     warned[overhead]), warned
    assert re.search(f"in the last 5s: {SERVICE} {share}requests\\. Each was recorded as it stood",
                     warned[unclosed]), warned
    table = next(d.value for d in at.dataframe if "share %" in d.value.columns)
    assert list(table["service → peer"]) == [f"{GATEWAY} → {SERVICE}", SERVICE, SERVICE]
    assert list(table["share %"]) == pytest.approx([100 / REQUESTS] * 3, rel=0.1)
    # picking the gateway keeps the calls it made, not the recommender's own requests
    at.selectbox(key="latency_service").set_value(GATEWAY).run()
    table = next(d.value for d in at.dataframe if "share %" in d.value.columns)
    assert list(table["service → peer"]) == [f"{GATEWAY} → {SERVICE}"]


def test_event_loop_delay_is_each_services_own(source: DataSource) -> None:
    """The p99 and the mean of each service's loop delay over the window: the recommender's loop is late by
    30-45 ms, all in the (25 ms, 50 ms] bucket; the gateway's by under a millisecond, in the first bucket."""
    found = {(s.labels["service"], s.labels["stat"]): s for s in source.loop_delay(5.0)}
    assert found.keys() == {(svc, stat) for svc in (GATEWAY, SERVICE) for stat in ("p99", "mean")}
    assert all(set(s.labels) == {"service", "stat"} and s.points for s in found.values())
    assert 0.025 < (found[(SERVICE, "p99")].last or 0) <= 0.05
    assert STARVED_LOOP[0] <= (found[(SERVICE, "mean")].last or 0) <= STARVED_LOOP[1]
    assert 0 < (found[(GATEWAY, "p99")].last or 0) <= 0.001
    assert PROMPT_LOOP[0] <= (found[(GATEWAY, "mean")].last or 0) <= PROMPT_LOOP[1]


def test_phases_outside_requests_are_their_services_own_and_not_request_time(source: DataSource) -> None:
    """The recommender's background job: one phase per step outside any request, 0.2 to 0.4 s, all in the
    (0.3 s, 0.5 s] bucket's range or below; none in the requests' phase split."""
    found = {(s.labels["service"], s.labels["phase"], s.labels["stat"]): s for s in source.background_phases(5.0)}
    assert found.keys() == {(SERVICE, BACKGROUND_PHASE, stat) for stat in ("p99", "mean")}
    assert 0.3 < (found[(SERVICE, BACKGROUND_PHASE, "p99")].last or 0) <= 0.5
    assert min(BACKGROUND_SECONDS) <= (found[(SERVICE, BACKGROUND_PHASE, "mean")].last or 0) <= max(BACKGROUND_SECONDS)
    assert BACKGROUND_PHASE not in {s.labels.get("phase") for s in source.phase_split(5.0)}


def test_latency_view_draws_the_phases_outside_requests(source: DataSource) -> None:
    at = run_view(source, "Latency")
    assert any(t.startswith("**Phases outside requests") for t in texts(at.markdown))
    at.selectbox(key="latency_service").set_value(GATEWAY).run()  # the gateway has none: the panel says so
    assert any("No phase was recorded outside a request" in t for t in texts(at.info))


def test_latency_view_draws_the_event_loop_delay(source: DataSource) -> None:
    at = run_view(source, "Latency")
    title = next(t for t in texts(at.markdown) if t.startswith("**Event loop delay"))
    assert "p99 and mean" in title
    at.selectbox(key="latency_service").set_value(GATEWAY).run()
    specs = [str(c.proto.spec) for c in at.get("vega_lite_chart")]
    loop = [s for s in specs if f"{GATEWAY}, p99" in s]
    assert len(loop) == 1 and f"{SERVICE}, p99" not in loop[0] and f"{GATEWAY}, mean" in loop[0]


def stood_still(lateness: tuple[float, float]) -> tuple[float, float]:
    """The range of the share of the time a workload loop stood still: each sample adds its interval plus its
    delay to the time watched, and its delay to the time late."""
    return lateness[0] / (LOOP_INTERVAL + lateness[0]), lateness[1] / (LOOP_INTERVAL + lateness[1])


def test_loop_stalls_are_each_replicas_share_of_the_time_stood_still(stack: Stack, source: DataSource) -> None:
    """Per service and scrape target, the delays' sum over the time watched: what AiwatchEventLoopDelayHigh fires
    on. The recommender's loop, late 30-45 ms every 100 ms, stood still 23-31% of the time, the gateway's under 1%;
    worst first. Prometheus' dead target is no stuck loop: it is not up."""
    rows = source.loop_stalls(5.0)
    target = stack.service["target"]
    assert [(r.service, r.instance, r.stuck) for r in rows] == [(SERVICE, target, False), (GATEWAY, target, False)]
    low, high = stood_still(STARVED_LOOP)
    assert low <= rows[0].stalled <= high
    low, high = stood_still(PROMPT_LOOP)
    assert low <= rows[1].stalled <= high
    # Prometheus names the target's job too; the scrape source has none
    assert all(bool(r.job) == isinstance(source, PrometheusSource) for r in rows)


def test_loop_stalls_carry_each_replicas_worst_worker_beside_the_mean(stack: Stack, source: DataSource) -> None:
    """The workload's recommender stands for a merged multiprocess target with one worker stalled 60% among several
    (aiwatch_event_loop_stalled_ratio, livemax) whose mean is ~27%: the row carries both; its timestamp moves each
    step, so no worker is stuck."""
    rows = {r.service: r for r in source.loop_stalls(5.0)}
    assert rows.keys() == {SERVICE, GATEWAY}
    assert rows[SERVICE].worst == pytest.approx(WORST_WORKER[SERVICE])
    assert rows[GATEWAY].worst == pytest.approx(WORST_WORKER[GATEWAY])
    assert rows[SERVICE].stalled < rows[SERVICE].worst
    assert not any(r.worker_stuck or r.stuck for r in rows.values())


def test_latency_view_tables_the_time_each_replica_stood_still(stack: Stack, source: DataSource) -> None:
    at = run_view(source, "Latency")
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table["service"]) == [SERVICE, GATEWAY]  # worst first
    assert list(table["instance"]) == [stack.service["target"]] * 2
    low, high = stood_still(STARVED_LOOP)
    assert 100 * low <= table["stood still %"].iloc[0] <= 100 * high
    assert list(table["worst worker % (5m)"]) == [pytest.approx(100 * WORST_WORKER[SERVICE]),
                                                  pytest.approx(100 * WORST_WORKER[GATEWAY])]
    warning = next(t for t in texts(at.warning) if t.startswith(LOOP_WARNING))
    assert warning.startswith(f"Event loops standing still more than 20% of the last 5s: {stack.service['target']} "
                              f"of {SERVICE}: ") and GATEWAY not in warning
    at.selectbox(key="latency_service").set_value(GATEWAY).run()
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table["service"]) == [GATEWAY]
    assert not [t for t in texts(at.warning) if t.startswith(LOOP_WARNING)]


def test_ai_traffic_view(source: DataSource) -> None:
    at = run_view(source, "AI traffic")
    assert not at.error and not at.info, texts(at.error) + texts(at.info)
    assert texts(at.warning) == expected_warnings(source)
    classes = {svc: metrics(block) for svc, block in per_service(at, "classes").items()}
    assert classes.keys() == {GATEWAY, SERVICE}
    # a fifth of the recommender's requests are batch ones, drawn next to its real-time ones; the gateway's are all
    # real-time
    assert 25 < card(classes[SERVICE], "realtime p95") < 110
    assert 25 < card(classes[SERVICE], "other classes p95") < 110
    assert 10 <= card(classes[SERVICE], "not-realtime share of requests") <= 30
    assert classes[GATEWAY]["other classes p95"] == "—"
    assert card(classes[GATEWAY], "not-realtime share of requests") == 0
    # traffic classes x2 services; first chunk, time per output token, degraded share, time to first token,
    # token usage, version error share, version latency
    assert len(at.get("vega_lite_chart")) == 9
    assert not at.success  # the degraded panel has data: it does not say "no fallback answers"


def test_ai_traffic_answers(source: DataSource) -> None:
    """The numbers behind the AI traffic view: the workload's fallback, version and token figures."""
    degraded = {(s.labels["service"], s.labels["model"], s.labels["reason"]): s.last
                for s in source.degraded_share(5.0)}
    # one cached answer per step of 20 recommender requests
    assert degraded.keys() == {(SERVICE, MODEL, DEGRADED_REASON)}
    assert 0.02 < (degraded[(SERVICE, MODEL, DEGRADED_REASON)] or 0) < 0.1
    errors = {s.labels["model_version"]: s.last for s in source.version_error_ratio(5.0)}
    # the canary serves the failed requests (one per two steps), the stable version none
    assert errors.keys() == {STABLE, CANARY}
    assert errors[STABLE] == 0 and (errors[CANARY] or 0) > 0
    versions = {(s.labels["model_version"], s.labels["quantile"]) for s in source.version_latency(5.0)}
    assert versions == {(v, q) for v in (STABLE, CANARY) for q in ("p50", "p95")}
    tokens = {s.labels["token_type"]: s.last or 0 for s in source.token_rate(5.0)}
    assert tokens.keys() == {"input", "output"} and tokens["input"] > tokens["output"] > 0
    first = [s.last or 0 for s in source.first_token(5.0) if s.labels["quantile"] == "p95"]
    assert len(first) == 1 and 0.05 <= first[0] <= 0.25
    chunks = {(s.labels["service"], s.labels["route"]) for s in source.first_chunk(5.0)}
    assert chunks == {(SERVICE, "/generate")}


def test_resources_view(source: DataSource) -> None:
    at = run_view(source, "Resources")
    assert not at.error and not at.info, texts(at.error) + texts(at.info)
    assert texts(at.warning) == expected_warnings(source)
    gpus = at.dataframe[0].value
    assert list(gpus["GPU"]) == ["0", "1"]
    assert gpus["utilization %"].between(0, 100).all()
    assert (gpus["memory total GiB"] == 80).all()
    assert (gpus["power W"] >= 250).all() and (gpus["temperature °C"] >= 55).all()
    # GPU utilization, queue depth, batch size, in-flight, cache hit ratio
    assert len(at.get("vega_lite_chart")) == 5


def test_drift_view(source: DataSource) -> None:
    at = run_view(source, "Drift")
    errors = texts(at.error)
    assert errors[:2] == ["Drift detected in 1 of 5 features: basket_value",
                          "Quality off its objective: accuracy of ranker"]
    # the workload's prediction log loses the records its sink fails (tests/console/test_console_prediction_log.py)
    assert len(errors) == 4 and errors[2].startswith("Prediction log losing records: predictions ")
    # its sink reported a torn and a set-aside journal at the start (tests/console/workload.py), minutes ago at most
    assert re.match(r"Prediction log journals not recovered: predictions 1 torn \(last ([0-9]+ min|under a minute) "
                    r"ago\), predictions 1 set_aside \(last ([0-9]+ min|under a minute) ago\)\. ", errors[3]), errors[3]
    # each feature's missing share against its reference's (AiwatchFeatureMissing), the broken input first
    missing = at.dataframe[1].value
    assert missing.iloc[0]["feature"] == MISSING_FEATURE and sorted(missing["feature"]) == sorted(feature_names(5))
    assert missing.iloc[0]["live missing %"] == pytest.approx(75, abs=5)
    assert (missing["reference missing %"] == 2).all() and (missing["live missing %"].iloc[1:] == 0).all()
    assert list(missing["past threshold"]) == [True, False, False, False, False]
    assert [w for w in texts(at.warning) if w.startswith("Features missing")] == [
        "Features missing more often than in their reference profile (over 20 percentage points above its share) "
        f"in the last 5s: {MISSING_FEATURE} of ranker {missing.iloc[0]['live missing %']:.1f}% (reference 2.0%). "
        "Missing values are left out of drift, so the drift tests above cannot see this; see the "
        "[runbook](?runbook=AiwatchFeatureMissing)."]
    quality = at.dataframe[2].value  # realised quality, next to drift
    assert list(quality["metric"]) == ["accuracy", "recall"]
    assert quality["off objective"].iloc[0] == True  # noqa: E712 - a numpy/pandas bool
    table = at.dataframe[0].value
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    assert table.iloc[0]["feature"] == "basket_value" and bool(table.iloc[0]["detected"])
    assert {"feature", "model", "test", "score", "p-value", "detected"} <= set(table.columns)
    assert set(table["test"]) == {"psi", "ks"}
    feature = at.selectbox(key="drift_feature")
    assert feature.value == ("ranker", "basket_value")
    # the prediction log's records, the distribution of the selected feature, drift over time
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3
    assert "records/s" in str(charts[0].proto.spec)
    assert "reference" in str(charts[1].proto.spec) and "live" in str(charts[1].proto.spec)


def test_drift_view_selects_another_feature(source: DataSource) -> None:
    at = run_view(source, "Drift")
    at.selectbox(key="drift_feature").set_value(("ranker", "user_age")).run()
    assert not at.exception
    assert any("distribution of user_age" in m for m in texts(at.markdown))
    assert len(at.get("vega_lite_chart")) == 3


def test_alerts_view(source: DataSource) -> None:
    at = run_view(source, "Alerts")
    shown = metrics(at)
    assert float(shown["queue depth per replica (items)"]) > 0
    assert float(shown["real-time request rate per replica (req/s)"]) > 0
    assert float(shown["in-flight requests per replica (requests)"]) >= 0
    assert shown["GPU utilization (mean)"].endswith("%")
    assert shown["queue wait p95"].endswith("ms")
    if isinstance(source, ScrapeSource):
        assert any("Alert rules are evaluated by Prometheus" in t for t in texts(at.info))
        return
    assert texts(at.error) == ["2 firing, 1 pending."]
    lines = texts(at.markdown)
    joined = " ".join(lines)
    assert "**FIRING** [critical] **ConsoleTestQueueBacklog**: Requests are waiting in the predict queue" in joined
    assert "runbook_url](https://runbooks.example.test/queue-backlog)" in joined
    assert "**PENDING** [warning] **ConsoleTestStaysPending**" in joined
    # an aiwatch alert links to its page in this console; its hostile label values stay text
    raw = next(str(m.value) for m in at.markdown if "AiwatchTargetDown" in str(m.value))
    assert "[runbook](?runbook=AiwatchTargetDown)" in raw
    assert "](https://evil" not in raw and "$x" not in raw and ":red[" not in raw
    assert HOSTILE_SERVICE in plain(raw)
    table = at.dataframe[0].value
    assert list(table["state"]) == ["firing", "firing", "pending"]
    assert list(table["alert"]) == ["ConsoleTestQueueBacklog", "AiwatchTargetDown", "ConsoleTestStaysPending"]
    import pandas as pd

    # no link: None, or NaN in pandas 3's str column (each an empty cell)
    assert [None if pd.isna(v) else v for v in table["runbook"]] == [None, "?runbook=AiwatchTargetDown", None]
    assert list(table["runbook_url"]) == ["https://runbooks.example.test/queue-backlog",
                                          "https://runbooks.example.test/target-down",
                                          "https://runbooks.example.test/pending"]


def test_sources_agree_on_the_same_endpoint(settled_source: PrometheusSource, scrape_source: ScrapeSource) -> None:
    """Both sources answer the same questions with the same shape and (for gauges) the same values."""
    prom_source = settled_source
    prom_drift = {(r.model, r.feature, r.test): r for r in prom_source.drift_table()}
    scrape_drift = {(r.model, r.feature, r.test): r for r in scrape_source.drift_table()}
    assert prom_drift.keys() == scrape_drift.keys() and len(prom_drift) == 10
    for key, row in prom_drift.items():
        assert row.detected == scrape_drift[key].detected
        assert row.pvalue == scrape_drift[key].pvalue
        assert row.score == pytest.approx(scrape_drift[key].score, abs=0.005)
    assert [(g.gpu, g.memory_total_bytes) for g in prom_source.gpu_table().rows] == \
        [(g.gpu, g.memory_total_bytes) for g in scrape_source.gpu_table().rows]
    for question in ("latency_quantiles", "phase_split", "throughput", "error_ratio", "network_time", "link_throughput",
                     "loop_delay",
                     "batch_size", "cache_hit_ratio", "latency_by_class", "throughput_by_class", "first_chunk",
                     "first_token", "per_output_token", "token_rate", "degraded_share", "version_latency",
                     "version_error_ratio", "prediction_log", "instrumentation_errors", "label_overflow",
                     "measurement_caveats"):
        prom_labels = sorted(tuple(sorted(s.labels.items())) for s in getattr(prom_source, question)(5.0))
        scrape_labels = sorted(tuple(sorted(s.labels.items())) for s in getattr(scrape_source, question)(5.0))
        assert prom_labels == scrape_labels, question
    assert [(r.service, r.instance, r.stuck) for r in prom_source.loop_stalls(5.0)] == \
        [(r.service, r.instance, r.stuck) for r in scrape_source.loop_stalls(5.0)]
    prom_bins = prom_source.feature_distribution("ranker", "basket_value", 5.0)
    scrape_bins = scrape_source.feature_distribution("ranker", "basket_value", 5.0)
    assert [(b.bin, b.reference) for b in prom_bins] == [(b.bin, b.reference) for b in scrape_bins]
    assert sum(b.live or 0 for b in prom_bins) == pytest.approx(1.0)
    assert sum(b.live or 0 for b in scrape_bins) == pytest.approx(1.0)


def test_prometheus_reports_its_down_target_and_the_panels_still_draw(stack: Stack,
                                                                      settled_source: PrometheusSource) -> None:
    prom_source = settled_source
    down = [t for t in prom_source.health() if not t.up]
    assert [t.url for t in down] == [f"http://{stack.dead_target}/metrics"] and down[0].error
    at = run_view(prom_source, "Resources")
    assert len(at.warning) == 1
    assert texts(at.warning)[0].startswith(f"Endpoint down: http://{stack.dead_target}/metrics (")
    assert len(at.dataframe[0].value) == 2
