"""AiwatchPredictionLogLosingRecords on real counters: the console stack's workload logs every request through a real
:class:`~aiwatch.PredictionLog` whose sink fails every third batch (tests/console/workload.py), a real Prometheus
scrapes it, and the alert's expression, its window shortened through the rules config, reads the share of the
log's records that never reached storage. AiwatchPredictionLogRecoveryIncomplete on the same log: its sink reports
a torn and a set-aside journal at the start, before the first scrape."""

from __future__ import annotations

from typing import Any

import pytest

from aiwatch.rules import RulesConfig
from aiwatch.rules.render import ALERTING_FILE, rule_files
from tests.console.conftest import Stack, counts, log_counts, settled_instant, settled_log_growth
from tests.console.workload import RECOVERY_AT_START

ALERT = "AiwatchPredictionLogLosingRecords"


def alert_expr(cfg: RulesConfig, alert: str = ALERT) -> str:
    rules: list[dict[str, Any]] = [r for g in rule_files(cfg)[ALERTING_FILE]["groups"] for r in g["rules"]]
    expr: str = next(r["expr"] for r in rules if r.get("alert") == alert)
    return expr


@pytest.mark.slow
def test_the_alert_reads_the_share_of_records_the_sink_failed(stack: Stack) -> None:
    cfg = RulesConfig()
    cfg.meta.prediction_log_window = "10s"
    stack.prom.wait_for(alert_expr(cfg))
    # asked at the end of the 10 s the log's counts grew over, once every scrape of them answered: asked at now, its
    # window was of other seconds, and after failed scrapes (a loaded machine) of fewer samples
    grown, pinned = settled_log_growth(stack, 10.0)
    (found,) = stack.prom.query(alert_expr(cfg), at=pinned.at)
    assert found["metric"]["log"] == "predictions" and found["metric"]["instance"] == stack.service["target"]
    share = float(found["value"][1])
    counts = log_counts(stack)
    assert counts["failed"] > 0 and counts["dropped"] == counts["lost"] == 0
    # the log's own share over the same 10 s (over the whole run it depends on the load: see log_growth)
    assert share == pytest.approx(grown["failed"] / grown["queued"], abs=0.1)


@pytest.mark.slow
def test_a_threshold_above_the_share_keeps_the_alert_quiet(stack: Stack) -> None:
    cfg = RulesConfig()
    cfg.meta.prediction_log_window = "10s"
    low = alert_expr(cfg)  # the default threshold (0.01): the share is over it
    cfg.meta.prediction_log_loss_max = 0.9
    # asked at an instant with a whole window of scrapes: at now, after a failed scrape (a loaded machine), the
    # expression could read nothing whatever its threshold
    at = settled_instant(stack.prom, stack.service["target"])
    (found,) = stack.prom.query(low, at=at)
    assert float(found["value"][1]) < 0.9
    assert stack.prom.query(alert_expr(cfg), at=at) == []


RECOVERY_ALERT = "AiwatchPredictionLogRecoveryIncomplete"


@pytest.mark.slow
def test_the_recovery_alert_names_the_journals_torn_and_set_aside_at_the_start(stack: Stack) -> None:
    # counted before the first scrape: the series appeared with its count, within the hour
    assert counts(stack, "aiwatch_prediction_log_recovery_files", "result") == RECOVERY_AT_START
    # asked where every scrape answered: at now, after a failed scrape (a loaded machine), its series read stale
    found = stack.prom.query(alert_expr(RulesConfig(), RECOVERY_ALERT),
                             at=settled_instant(stack.prom, stack.service["target"]))
    assert sorted((f["metric"]["result"], float(f["value"][1])) for f in found) == [("set_aside", 1.0), ("torn", 1.0)]
    assert all(f["metric"]["log"] == "predictions" and f["metric"]["instance"] == stack.service["target"]
               for f in found)


@pytest.mark.slow
def test_the_recovery_alert_clears_once_its_window_has_passed(stack: Stack) -> None:
    cfg = RulesConfig()
    cfg.meta.prediction_log_recovery_window = "3s"  # the workload started (and counted) longer ago than that
    cfg.meta.prediction_log_recovery_for = "0s"
    stack.prom.wait_for('count_over_time(aiwatch_prediction_log_recovery_files_total{result="torn"}[1m]) >= 5')
    # at an instant where every scrape answered and the default window's alert has its journals: at now, after a
    # failed scrape (a loaded machine), the series read stale and the alert nothing whatever its window
    at = settled_instant(stack.prom, stack.service["target"])
    assert len(stack.prom.query(alert_expr(RulesConfig(), RECOVERY_ALERT), at=at)) == 2
    assert stack.prom.query(alert_expr(cfg, RECOVERY_ALERT), at=at) == []
