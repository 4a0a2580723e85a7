"""The demo's batch traffic and its gateway's graceful degradation: the batch client beside the real-time load, the
gateway's deadline and recent answers, what the summary makes of both, and the ``batch-backfill`` scenario end to end
on a real Prometheus with the demo's rules."""

from __future__ import annotations

import asyncio
import doctest
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from aiwatch.demo import fallback, loadgen, matrix, scenarios, summary
from aiwatch.demo.fallback import CallEstimate, Deadline, RecentAnswers
from aiwatch.demo.names import Names
from aiwatch.metrics import Metrics
from aiwatch.scrape import parse_metrics
from aiwatch.traffic import HEADER

# --- the gateway's fallback -----------------------------------------------------------------------------------------


def test_the_fallback_modules_examples_hold() -> None:
    assert doctest.testmod(fallback).failed == 0


def test_recent_answers_serve_the_users_own_answer_else_the_latest_and_stay_bounded() -> None:
    answers = RecentAnswers(capacity=3)
    assert answers.fallback(1) == ([], "default_answer")  # nothing served yet
    for user in range(10):
        answers.remember(user, [user, user + 100])
    assert len(answers) == 3
    assert answers.fallback(9) == ([9, 109], "cached_prediction")
    assert answers.fallback(0) == ([9, 109], "default_answer")  # forgotten: the latest answer instead
    answers.remember(7, [1])
    answers.remember(10, [2])  # 8 is now the least recently answered, and goes
    assert answers.fallback(7)[1] == "cached_prediction" and answers.fallback(8)[1] == "default_answer"
    with pytest.raises(ValueError):
        RecentAnswers(0)


def test_the_call_estimate_is_what_calls_took_and_falls_as_the_calls_in_flight_drain() -> None:
    est = CallEstimate(weight=1.0)
    assert est.expected() == 0.0  # no call finished yet: nothing to go by
    # a slow link: one call at a time, each 250 ms; the next call is expected to take as long, not twice as long
    est.finish(est.start(), 0.25)
    assert est.expected() == pytest.approx(0.25)
    # a queue: ten in flight, the last to start took 0.5 s
    tickets = [est.start() for _ in range(10)]
    est.finish(tickets[-1], 0.5)
    assert est.expected() == pytest.approx(0.5)  # nine in flight and the next: as many as it had
    for ticket in tickets[:-1]:
        est.finish(ticket, float("nan"))  # failed calls say nothing about the time, but leave
    assert est.in_flight == 0 and est.expected() == pytest.approx(0.05)  # one of ten: a tenth of the wait
    with pytest.raises(ValueError):
        CallEstimate(weight=0)


def test_the_deadline_is_near_when_the_call_would_not_return_in_time() -> None:
    now = time.monotonic()
    assert not Deadline(None, now).too_near(10.0)  # batch: no deadline
    assert Deadline(None, now).remaining() is None
    assert not Deadline(0.4, now).too_near(0.1)
    assert Deadline(0.4, now).too_near(0.5)
    assert Deadline(0.4, now - 0.38).too_near(0.0)  # less than a tenth left: no call, whatever calls took


# --- the batch client -----------------------------------------------------------------------------------------------


class RecordingClient:
    """An ``httpx.AsyncClient`` stand-in that answers every post after ``seconds`` and records its headers."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.headers: list[dict[str, str]] = []

    async def post(self, url: str, json: object, headers: dict[str, str] | None = None) -> object:
        self.headers.append(dict(headers or {}))
        await asyncio.sleep(self.seconds)

        class Ok:
            status_code = 200
        return Ok()


def test_a_batch_stage_sends_batch_requests_beside_the_real_time_ones() -> None:
    client = RecordingClient(0.05)
    stage = loadgen.Stage("batch", 1.0, 10.0, batch_workers=3)
    result = asyncio.run(loadgen.run_stage(client, "http://x", stage, np.random.default_rng(3), max_in_flight=32))
    batch = [h for h in client.headers if h.get(HEADER) == "batch"]
    realtime = [h for h in client.headers if HEADER not in h]
    assert len(batch) + len(realtime) == len(client.headers)
    assert result.batch_ok == len(batch) and result.batch_failed == 0
    assert result.ok == len(realtime) == result.sent
    # three closed-loop workers at 50 ms a request over one second: far more than the real-time load's ~10
    assert len(batch) > len(realtime)


def test_the_batch_scenario_adds_a_batch_client_and_stays_out_of_the_root_cause_matrix() -> None:
    scenario = scenarios.get("batch-backfill")
    first, middle, last = loadgen.plan(30.0, 5.0, scenario=scenario)
    assert middle.batch_workers == scenarios.BATCH_WORKERS and middle.rps == 5.0 and not middle.sale
    assert first.batch_workers == last.batch_workers == 0
    assert all(loadgen.plan(30.0, 5.0, scenario=s)[1].batch_workers == 0
               for s in scenarios.SCENARIOS.values() if s is not scenario)
    # not a fault of one part: the matrix (its cells, its CLI) runs the fault scenarios only
    assert "batch-backfill" not in scenarios.FAULTS
    assert {c.scenario.name for c in matrix.cells_of(matrix.MatrixOptions())} == set(scenarios.FAULTS)


# --- the summary ------------------------------------------------------------------------------------------------------


def _snapshot(metrics: Metrics) -> dict[str, Any]:
    return parse_metrics(generate_latest(metrics.registry).decode())


def _requests(metrics: Metrics, traffic_class: str, seconds: float, n: int) -> None:
    m = metrics
    for _ in range(n):
        m.child(m.request_duration, ("gateway", "/recommend", "POST", "200", traffic_class)).observe(seconds)


def test_the_summary_splits_real_time_from_batch_and_counts_only_real_time_in_the_slo(metrics: Metrics) -> None:
    snaps = [_snapshot(metrics)]
    _requests(metrics, "realtime", 0.05, 100)  # normal: all real-time, all fast
    snaps.append(_snapshot(metrics))
    _requests(metrics, "realtime", 0.05, 70)
    _requests(metrics, "realtime", 0.4, 30)  # 30% of the real-time requests slower than 200 ms
    _requests(metrics, "batch", 0.1, 300)  # batch: fast enough, and three quarters of the requests
    m = metrics
    for _ in range(20):
        m.child(m.degraded_responses, ("gateway", "recommender", "cached_prediction")).inc()
    snaps.append(_snapshot(metrics))
    normal, backfill = (summary.stage_stats(name, 10.0, before, after, Names())
                        for name, before, after in zip(("normal", "batch backfill"), snaps, snaps[1:],
                                                       strict=False))
    assert normal.batch_share == 0.0 and normal.slo_slow["realtime"] == 0.0 and normal.degraded_share == 0.0
    assert backfill.by_class == {"realtime": 100.0, "batch": 300.0}
    assert backfill.batch_share == pytest.approx(0.75)
    assert backfill.slo_slow["realtime"] == pytest.approx(0.3)
    assert backfill.slo_slow["all"] == pytest.approx(30 / 400)  # what an SLO counting batch too would see
    assert backfill.degraded == {"cached_prediction": 20.0} and backfill.degraded_share == pytest.approx(20 / 400)
    p99 = backfill.p99_of("realtime")
    assert p99 is not None and p99 > summary.SLO_LATENCY_SECONDS
    text = summary.format_summary([normal, backfill])
    assert "batch share of requests" in text and "realtime requests" in text
    assert "batch backfill: real-time p99" in text and "75% of requests" in text
    assert "30.0% of real-time requests slower than 200 ms (counting batch too it would say 7.5%)" in text
    assert "batch backfill: 5.0% of 400 responses (cached_prediction 20)" in text
    as_dict = backfill.as_dict()
    assert as_dict["batch_share"] == pytest.approx(0.75) and as_dict["degraded_share"] == pytest.approx(0.05)


def test_without_batch_traffic_the_summary_shows_no_traffic_class_rows(metrics: Metrics) -> None:
    before = _snapshot(metrics)
    _requests(metrics, "realtime", 0.05, 10)
    stage = summary.stage_stats("normal", 10.0, before, _snapshot(metrics), Names())
    text = summary.format_summary([stage])
    assert "batch share" not in text and "real-time vs batch" not in text
    assert "degraded (cached answer)" in text and "degraded responses" not in text


# --- batch-backfill end to end ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.alone
def test_batch_backfill_raises_real_time_latency_that_the_slo_counts_alone(tmp_path: Path) -> None:
    """``aiwatch demo --headless --scenario batch-backfill``, scraped by a real Prometheus with the demo's rules: the
    batch client's requests reach both services as batch, real-time latency rises, and the SLO's request rate is the
    real-time one."""
    from aiwatch.demo import alerting
    from aiwatch.rules import render
    from tests.servers import free_port, prometheus, python_env

    rule_files = []
    for name, text in render(alerting.rules_config()).items():
        (tmp_path / name).write_text(text)
        rule_files.append(tmp_path / name)
    out = tmp_path / "stages.json"
    gw, inf = free_port(), free_port()
    with prometheus([f"127.0.0.1:{gw}", f"127.0.0.1:{inf}"], rule_files) as prom:
        proc = subprocess.run([sys.executable, "-m", "aiwatch", "demo", "--headless", "--scenario", "batch-backfill",
                               "--duration", "21", "--no-alerts", "--gateway-port", str(gw), "--inference-port",
                               str(inf), "--json", str(out)],
                              env=python_env(), capture_output=True, text=True, timeout=150)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        stages = {s["name"]: s for s in json.loads(out.read_text())}
        backfill = stages["batch backfill"]
        at = f"{backfill['started_at'] + backfill['load']['seconds'] - 0.5:.3f}"

        def value(query: str) -> float:
            result = prom.api("/api/v1/query", query=query, time=at)["result"]
            return sum(float(r["value"][1]) for r in result)

        slo_rate = value('service:aiwatch_requests:rate10s{service="gateway"}')
        total = value('sum(rate(aiwatch_request_duration_seconds_count{service="gateway"}[10s]))')
        realtime = value('sum(rate(aiwatch_request_duration_seconds_count{service="gateway", '
                         'traffic_class="realtime"}[10s]))')
        batch_at_inference = value('sum(aiwatch_request_duration_seconds_count{service="inference", '
                                   'traffic_class="batch"})')
    report = proc.stdout
    assert "plus a batch client (8 workers, aiwatch-traffic-class: batch)" in report
    normal = stages["normal"]
    assert all(s["load"]["failed"] == 0 and s["load"]["batch_failed"] == 0 for s in stages.values()), report
    # the batch client shared the replicas: most requests of the stage were its, and none before or after
    assert backfill["load"]["batch_ok"] > backfill["load"]["ok"], report
    assert backfill["batch_share"] > 0.5 and normal["batch_share"] == 0 == stages["recovery"]["batch_share"], report
    # the gateway forwarded the class: the inference service counted batch requests too
    assert batch_at_inference > 0, report
    # real-time requests waited behind the batch ones, in the model's queue (medians: a p99 on a shared 2-core
    # machine is one scheduling stall)
    rt = {name: s["traffic_class_latency_seconds"]["realtime"] for name, s in stages.items()}
    assert rt["batch backfill"]["p50"] > rt["normal"]["p50"], report
    assert backfill["latency_seconds"]["queue"]["p50"] > normal["latency_seconds"]["queue"]["p50"], report
    assert "real-time p99" in report and "counts real-time requests only" in report
    # the SLO rules count real-time requests only: their request rate is the real-time one, not the total
    assert total > 0 and slo_rate == pytest.approx(realtime, rel=0.25), (slo_rate, realtime, total)
    assert slo_rate < 0.75 * total, (slo_rate, total)
