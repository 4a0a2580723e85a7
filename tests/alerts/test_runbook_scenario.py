"""The runbook queries an on-call runs on the queue, cache, model, network, time-to-first-token, feature, drift, GPU,
event loop, target, instrumentation-errors and prediction-log pages, against a real Prometheus scraping a real
aiwatch-instrumented service (tests/alerts/runbook_app.py) with the committed rules loaded: each answers with the
series it is there to name. No promtool scenario holds what these read (the batcher's queue wait and batch size, the
cache's lookup times, the loop sampler's own series, token usage, network time per phase, the drift monitor's own
series, GPU throttle reasons, the cardinality guard's folds, clamped network times, a prediction log's recovered
records), so test_runbook_queries.py could only parse them; a label aiwatch does not export, or a join on a label the
two sides do not share, would leave the on-call's query answering nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.runbook_names import CACHE, FEATURE, MODEL, QUEUE, SERVICE
from tests.alerts.support import Load
from tests.alerts.test_rules import ALERTS_DIR, RUNBOOKS
from tests.alerts.test_runbook_queries import PLACEHOLDER, runbook_queries
from tests.feedback.test_parquet_sink_recovery import killed_writer
from tests.servers import free_port, prometheus, python_app, python_env

pytestmark = pytest.mark.slow

Check = Callable[[list[dict[str, Any]], str], bool]


def one(**labels: str) -> Check:
    """One series, with exactly these labels (the target's ``instance`` when a value is ``"<instance>"``)."""
    def check(result: list[dict[str, Any]], target: str) -> bool:
        want = {k: target if v == "<instance>" else v for k, v in labels.items()}
        return [r["metric"] for r in result] == [want] and float(result[0]["value"][1]) >= 0
    return check


def for_the_target(result: list[dict[str, Any]], target: str) -> bool:
    """One series, of the scraped replica."""
    return len(result) == 1 and result[0]["metric"].get("instance") == target


def per_result(result: list[dict[str, Any]], target: str) -> bool:
    """A number for each result the lookups had (NaN for ``error``: none failed)."""
    return sorted(r["metric"].get("result", "") for r in result if r["value"][1] != "NaN") == ["hit", "miss"]


def power_capped(result: list[dict[str, Any]], target: str) -> bool:
    """The scraped replica's one GPU, throttled for one reason: the stand-in's power cap."""
    return [(r["metric"].get("instance"), r["metric"].get("gpu"), r["metric"].get("reason")) for r in result] == \
        [(target, "0", "sw_power_cap")]


def folding(label: str) -> Check:
    """The guard folding values of ``label`` now, and of no other label."""
    def check(result: list[dict[str, Any]], target: str) -> bool:
        return [r["metric"] for r in result] == [{"label": label}] and float(result[0]["value"][1]) > 0
    return check


def recovered(rows: int) -> Check:
    """The scraped replica's prediction log, ``rows`` rows recovered from a killed writer's journal."""
    def check(result: list[dict[str, Any]], target: str) -> bool:
        return [(r["metric"], float(r["value"][1])) for r in result] == [({"instance": target, "log": "predictions"},
                                                                           rows)]
    return check


#: (page, a text the query holds, what its answer must be)
QUERIES: list[tuple[str, str, Check]] = [
    ("AiwatchQueueBacklog", "aiwatch_queue_wait_seconds_bucket", one()),
    ("AiwatchQueueBacklog", "group by (service)", one(service=SERVICE)),
    ("AiwatchModelLatencyHigh", "aiwatch_batch_size_bucket", one()),
    ("AiwatchFeatureCacheHitRatioLow", "aiwatch_feature_cache_lookup_duration_seconds_bucket", per_result),
    ("AiwatchFeatureCacheHitRatioLow", "group by (service)", one(service=SERVICE)),
    ("AiwatchGpuSaturated", "group by (service)", one(service=SERVICE)),
    ("AiwatchEventLoopDelayHigh", "instance_service:aiwatch_event_loop_last_sample_age_seconds:max",
     for_the_target),
    ("AiwatchEventLoopDelayHigh", "instance_service:aiwatch_event_loop_stalled_ratio:max", for_the_target),
    ("AiwatchEventLoopDelayHigh", "aiwatch_event_loop_delay_seconds_bucket", one(instance="<instance>")),
    ("AiwatchNetworkLatencyHigh", "sum by (phase) (rate(aiwatch_network_duration_seconds_sum", one(phase="features")),
    ("AiwatchTimeToFirstTokenBudgetBurnFast", "aiwatch_gen_ai_token_usage_tokens_bucket", one()),
    ("AiwatchTimeToFirstTokenBudgetBurnSlow", "aiwatch_gen_ai_token_usage_tokens_bucket", one()),
    ("AiwatchFeatureMissing", 'reason="missing_feature"}[5m]', one(instance="<instance>")),
    ("AiwatchFeatureMissing", 'reason="unknown_feature"', one(feature="agee")),
    ("AiwatchLocalInputDrift", "aiwatch_drift_pvalue", for_the_target),
    ("AiwatchLocalInputDrift", "aiwatch_drift_window_samples", for_the_target),
    ("AiwatchTargetDown", "scrape_duration_seconds", for_the_target),
    ("AiwatchTargetDown", "scrape_samples_scraped", for_the_target),
    ("AiwatchGpuSaturated", "aiwatch_gpu_throttle_reason", power_capped),
    ("AiwatchInstrumentationErrors", "aiwatch_label_overflow_total", folding("cache")),
    # the peer's report of a minute exceeds every call's own time: each one is clamped
    ("AiwatchNetworkLatencyHigh", "aiwatch_network_clamped_total", one(service=SERVICE)),
    ("AiwatchPredictionLogRecoveryIncomplete", "aiwatch_prediction_log_recovered_records_total", recovered(3)),
]


def query_of(page: str, holding: str) -> str:
    (query,) = [q for q in runbook_queries(RUNBOOKS / f"{page}.md", "aiwatch") if holding in q]
    return query


def test_the_on_call_queries_answer_on_a_real_service(tmp_path: Path) -> None:
    killed_writer(tmp_path, [MODEL])  # a writer killed with 3 rows in its journal: the app's log recovers them
    port = free_port()
    target = f"127.0.0.1:{port}"
    labels = {"service": SERVICE, "peer": SERVICE, "model": MODEL, "queue": QUEUE, "cache": CACHE,
              "feature": FEATURE, "instance": target, "job": "aiwatch"}  # the job tests.servers.prometheus scrapes
    filled = [(PLACEHOLDER.sub(lambda m: labels[m.group(1)], query_of(page, holding)), check)
              for page, holding, check in QUERIES]
    args = ["-m", "uvicorn", "tests.alerts.runbook_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]
    with python_app(args, f"http://{target}/healthz", env=python_env(RUNBOOK_PREDICTION_LOG=str(tmp_path))), \
            prometheus([target], rule_files=sorted(ALERTS_DIR.glob("*.rules.yml"))) as prom, Load(target):
        for query, check in filled:
            prom.wait_for(query, lambda result, check=check: check(result, target), timeout=60)
