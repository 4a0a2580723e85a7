"""End to end on real servers: Prometheus scrapes an aiwatch-instrumented FastAPI service and evaluates the rendered
rules; Alertmanager (configured from alerts/alertmanager.yml) delivers to a webhook receiver run by the test.

A delay injected into the ``features`` phase (outside the model) must fire AiwatchNonModelLatencyHigh, never
AiwatchModelLatencyHigh; the notification must carry the runbook URL; the alert must resolve once the delay stops;
and the recording rules must show what was injected. Windows and ``for`` durations are shortened through the rules
config (never by editing the shipped rules), scrape and evaluation intervals through the Prometheus config.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from aiwatch import runbooks
from aiwatch.rules import BurnAlert, BurnWindow, RulesConfig, render, runbook_url
from tests.alerts.support import Load, WebhookReceiver, control, demo_app
from tests.servers import REPO, alertmanager, prometheus, require_module, wait_until

yaml = require_module("yaml")
pytestmark = pytest.mark.slow

FEATURES_DELAY = 0.2


def short_config() -> RulesConfig:
    cfg = RulesConfig()
    cfg.runbook_url = "https://wiki.example.com/oncall/{alert}"
    cfg.latency.window = "10s"
    cfg.latency.model_for = "3s"
    cfg.latency.non_model_for = "3s"
    # 30x the model's ~5 ms (event-loop delay on a loaded machine pushes its p99 to ~25 ms), yet below the injected
    # features delay: time misattributed to the model would fire it
    cfg.latency.model_p99_seconds = 0.15
    cfg.latency.non_model_p99_seconds = 0.1
    cfg.slo.page = BurnAlert([BurnWindow("1m", "10s", 14.4)], "5s")
    cfg.slo.ticket = BurnAlert([BurnWindow("2m", "30s", 3.0)], "10s")
    cfg.drift.windows = ["1m"]
    cfg.drift.psi_window = "1m"
    cfg.gpu.window = "10s"
    return cfg


def alertmanager_config(receiver_url: str) -> str:
    """alerts/alertmanager.yml with test timings and every webhook pointed at the test's receiver."""
    config = yaml.safe_load((REPO / "alerts" / "alertmanager.yml").read_text())
    for route in [config["route"], *config["route"]["routes"]]:
        route.update({"group_wait": "1s", "group_interval": "1s"})
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{receiver_url}/{receiver['name']}"
    return str(yaml.safe_dump(config))


def post_alerts(am_url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(f"{am_url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def am_alerts(am_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{am_url}/api/v2/alerts", timeout=5) as resp:
        result: list[dict[str, Any]] = json.loads(resp.read())
        return result


class AlertWatcher:
    """Polls Prometheus' active alerts in the background and remembers every (alertname, state) it saw."""

    def __init__(self, prom: Any) -> None:
        self.prom = prom
        self.seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                for alert in self.prom.alerts():
                    self.seen.add((alert["labels"]["alertname"], alert["state"]))
            except Exception:
                pass

    def __enter__(self) -> AlertWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def check_inhibition(am_url: str, receiver: WebhookReceiver) -> None:
    """The example config's inhibit rules, on the real Alertmanager: critical silences the warning of the same
    alert and queue; the fast burn silences the slow burn of the same SLO and service; a prediction log losing
    records silences aiwatch's errors of the prediction_log component on the same replica."""
    post_alerts(am_url, [
        {"labels": {"alertname": "AiwatchQueueBacklog", "severity": "critical", "queue": "inhibit-check"}},
        {"labels": {"alertname": "AiwatchQueueBacklog", "severity": "warning", "queue": "inhibit-check"}},
        {"labels": {"alertname": "AiwatchLatencyBudgetBurnFast", "severity": "critical", "service": "inhibit-check",
                    "slo": "latency"}},
        {"labels": {"alertname": "AiwatchLatencyBudgetBurnSlow", "severity": "warning", "service": "inhibit-check",
                    "slo": "latency"}},
        # a different queue's warning is not inhibited
        {"labels": {"alertname": "AiwatchQueueBacklog", "severity": "warning", "queue": "other-queue"}},
        # the prediction log's alert silences aiwatch's errors of its component on that replica, and no other's
        {"labels": {"alertname": "AiwatchPredictionLogLosingRecords", "severity": "warning", "job": "aiwatch",
                    "instance": "inhibit-check", "log": "predictions"}},
        *({"labels": {"alertname": "AiwatchInstrumentationErrors", "severity": "warning", "job": "aiwatch",
                      "instance": instance, "component": component}}
          for instance, component in (("inhibit-check", "prediction_log"), ("inhibit-check", "drift"),
                                      ("other-replica", "prediction_log"))),
    ])

    def states() -> dict[tuple[str, str, str], str]:
        return {(a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("queue", "")): a["status"]["state"]
                for a in am_alerts(am_url)
                if "inhibit-check" in (a["labels"].get("queue"), a["labels"].get("service"))
                or a["labels"].get("queue") == "other-queue"}

    def replica_states() -> dict[tuple[str, str, str], str]:
        return {(a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("component", "")):
                a["status"]["state"] for a in am_alerts(am_url)
                if a["labels"].get("instance") in ("inhibit-check", "other-replica")}

    expected = {
        ("AiwatchQueueBacklog", "critical", "inhibit-check"): "active",
        ("AiwatchQueueBacklog", "warning", "inhibit-check"): "suppressed",
        ("AiwatchLatencyBudgetBurnFast", "critical", ""): "active",
        ("AiwatchLatencyBudgetBurnSlow", "warning", ""): "suppressed",
        ("AiwatchQueueBacklog", "warning", "other-queue"): "active",
    }
    wait_until(lambda: states() == expected, 15, 0.2, what=f"inhibition states {expected}")
    per_replica = {
        ("AiwatchPredictionLogLosingRecords", "inhibit-check", ""): "active",
        ("AiwatchInstrumentationErrors", "inhibit-check", "prediction_log"): "suppressed",
        ("AiwatchInstrumentationErrors", "inhibit-check", "drift"): "active",
        ("AiwatchInstrumentationErrors", "other-replica", "prediction_log"): "active",
    }
    wait_until(lambda: replica_states() == per_replica, 15, 0.2, what=f"inhibition states {per_replica}")
    # routing by severity: the critical went to the page receiver, the uninhibited warning to the ticket receiver
    wait_until(lambda: any(p == "/page" for p, _ in receiver.alerts("AiwatchQueueBacklog")), 15,
               what="critical delivered to /page")
    wait_until(lambda: any(p == "/ticket" and a["labels"]["queue"] == "other-queue"
                           for p, a in receiver.alerts("AiwatchQueueBacklog")), 15, what="warning to /ticket")
    assert not [a for p, a in receiver.alerts("AiwatchQueueBacklog")
                if a["labels"]["queue"] == "inhibit-check" and a["labels"]["severity"] == "warning"]


def test_non_model_slowdown_pages_the_right_alert(tmp_path: Path) -> None:
    cfg = short_config()
    rule_files = []
    for name, text in render(cfg).items():
        (tmp_path / name).write_text(text)
        rule_files.append(tmp_path / name)

    with WebhookReceiver() as receiver, alertmanager(alertmanager_config(receiver.url)) as am_url, \
            demo_app() as target, prometheus([target], rule_files, alertmanager_url=am_url) as prom, \
            AlertWatcher(prom) as watcher, Load(target) as load:
        check_inhibition(am_url, receiver)

        # healthy traffic first: the model's ~5 ms shows up in the recorded quantiles
        prom.wait_for('service_model_phase:aiwatch_phase_duration_seconds:p50{phase="inference"} > 0', timeout=30)

        control(target, features_delay=FEATURES_DELAY)
        firing = prom.wait_for('ALERTS{alertname="AiwatchNonModelLatencyHigh", alertstate="firing"}', timeout=45)
        assert {s["metric"]["phase"] for s in firing} == {"features"}
        assert {s["metric"]["service"] for s in firing} == {"demo"}

        # recording rules against what was injected: features in its (0.2, 0.3] bucket; inference's ~5 ms in
        # (0.005, 0.025] (the buckets above 5 ms, with room for event-loop delay on a loaded machine)
        p50 = "service_model_phase:aiwatch_phase_duration_seconds:p50"
        features_p50 = prom.wait_for(f'{p50}{{phase="features"}} >= {FEATURES_DELAY}', timeout=20)
        assert FEATURES_DELAY <= float(features_p50[0]["value"][1]) <= 0.3
        inference_p50 = prom.value(f'{p50}{{phase="inference"}}')
        assert inference_p50 is not None and 0.005 <= inference_p50 <= 0.025
        model_p99 = prom.value("service_model:aiwatch_model_latency_seconds:p99")
        assert model_p99 is not None and model_p99 < cfg.latency.model_p99_seconds
        outside = prom.value('service:aiwatch_time_outside_model:ratio{service="demo"}')
        # features / (features + inference + overhead) with 200 ms vs ~5 ms
        assert outside is not None and 0.9 <= outside < 1.0
        rate = prom.value('service:aiwatch_requests:rate10s{service="demo"}')
        assert rate is not None and rate > 0

        # the notification reaches the ticket receiver (severity warning) with its runbook URL and numbers
        wait_until(lambda: receiver.alerts("AiwatchNonModelLatencyHigh", "firing"), 20, what="firing notification")
        path, alert = receiver.alerts("AiwatchNonModelLatencyHigh", "firing")[0]
        assert path == "/ticket"
        assert alert["annotations"]["runbook_url"] == runbook_url(cfg.runbook_url, "AiwatchNonModelLatencyHigh")
        assert runbooks.page("AiwatchNonModelLatencyHigh").startswith("# AiwatchNonModelLatencyHigh")
        assert "features" in alert["annotations"]["description"]
        assert "Share of request time outside the model" in alert["annotations"]["description"]

        # the slowdown stops: the alert resolves and the receiver is told
        control(target, features_delay=0)
        wait_until(lambda: receiver.alerts("AiwatchNonModelLatencyHigh", "resolved"), 60, 0.5,
                   what="resolved notification")
        assert not prom.query('ALERTS{alertname="AiwatchNonModelLatencyHigh"}')
        assert load.sent > 100 and load.failed == 0

    # the model's own latency alert stayed silent: never firing in Prometheus, never delivered
    assert ("AiwatchModelLatencyHigh", "firing") not in watcher.seen, watcher.seen
    assert not receiver.alerts("AiwatchModelLatencyHigh")
    assert ("AiwatchNonModelLatencyHigh", "firing") in watcher.seen
