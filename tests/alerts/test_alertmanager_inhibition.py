"""alerts/alertmanager.yml's inhibit rules and grouping on a real Alertmanager, in a Thanos / Mimir view of several
clusters and namespaces: an alert of one cluster never silences the alert of another cluster's service, queue or
link, however alike their other labels (the same deployment runs in each cluster under the same names)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.alerts.test_alerts_e2e import alertmanager_config, am_alerts, post_alerts
from tests.servers import alertmanager, wait_until

SOURCES = [
    {"alertname": "AiwatchQueueBacklog", "severity": "critical", "queue": "predict", "cluster": "eu",
     "namespace": "ml"},
    {"alertname": "AiwatchAvailabilityBudgetBurnFast", "severity": "critical", "service": "recommender",
     "slo": "availability", "cluster": "eu", "namespace": "ml"},
    {"alertname": "AiwatchTimeToFirstTokenBudgetBurnFast", "severity": "critical", "service": "chat",
     "slo": "time_to_first_token", "cluster": "eu", "namespace": "ml"},
    {"alertname": "AiwatchNetworkLatencyHigh", "severity": "warning", "service": "gateway", "peer": "ranker",
     "cluster": "eu", "namespace": "ml"},
]


def _target(source: dict[str, str], **labels: str) -> dict[str, str]:
    alertname = {"AiwatchQueueBacklog": "AiwatchQueueBacklog",
                 "AiwatchAvailabilityBudgetBurnFast": "AiwatchAvailabilityBudgetBurnSlow",
                 "AiwatchTimeToFirstTokenBudgetBurnFast": "AiwatchTimeToFirstTokenBudgetBurnSlow",
                 "AiwatchNetworkLatencyHigh": "AiwatchNonModelLatencyHigh"}[source["alertname"]]
    target = {**source, "alertname": alertname, "severity": "warning", **labels}
    if alertname == "AiwatchNonModelLatencyHigh":
        target["phase"] = "network"
    return target


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=[s["alertname"] for s in SOURCES])
def test_an_alert_silences_its_own_clusters_target_only(source: dict[str, str]) -> None:
    same = _target(source)
    other_cluster = _target(source, cluster="us")
    other_namespace = _target(source, namespace="staging")
    with alertmanager(alertmanager_config("http://127.0.0.1:9")) as am_url:
        post_alerts(am_url, [{"labels": labels} for labels in (source, same, other_cluster, other_namespace)])

        def status(labels: dict[str, str]) -> dict[str, Any]:
            return next(a["status"] for a in am_alerts(am_url) if a["labels"] == labels)

        # the inhibitor sees the source asynchronously: wait for the same-cluster target to be inhibited
        wait_until(lambda: bool(status(same)["inhibitedBy"]), 10, what="the same cluster's alert inhibited")
        assert status(other_cluster)["inhibitedBy"] == [] and status(other_cluster)["state"] == "active"
        assert status(other_namespace)["inhibitedBy"] == [] and status(other_namespace)["state"] == "active"


@pytest.mark.slow
def test_a_starved_loop_silences_no_network_alert() -> None:
    """The loop alert is per replica, the network alert per service: silencing the service's network alert while one
    replica of many is starved hid a slow link its healthy replicas saw. The rules leave the starved replica's calls
    out of the network alert instead (promtool: eventloop_test.yml), so Alertmanager silences none of them."""
    # the loop alert is per replica: it carries the starved target's job and instance, which the network alerts lack
    loop = {"alertname": "AiwatchEventLoopDelayHigh", "severity": "warning", "service": "ranker", "cluster": "eu",
            "namespace": "ml", "job": "ranker", "instance": "10.0.0.7:8000"}
    network = {"alertname": "AiwatchNetworkLatencyHigh", "severity": "warning", "cluster": "eu", "namespace": "ml"}
    from_it = {**network, "service": "ranker", "peer": "features"}
    to_it = {**network, "service": "gateway", "peer": "ranker"}
    other_caller = {**network, "service": "gateway", "peer": "features"}
    not_network = {"alertname": "AiwatchNonModelLatencyHigh", "severity": "warning", "service": "ranker",
                   "phase": "features", "cluster": "eu", "namespace": "ml"}
    with alertmanager(alertmanager_config("http://127.0.0.1:9")) as am_url:
        post_alerts(am_url, [{"labels": labels} for labels in (loop, from_it, to_it, other_caller, not_network)])

        def status(labels: dict[str, str]) -> dict[str, Any]:
            return next(a["status"] for a in am_alerts(am_url) if a["labels"] == labels)

        wait_until(lambda: all(status(labels)["state"] == "active"
                               for labels in (loop, from_it, to_it, other_caller, not_network)),
                   10, what="the five alerts active")
        time.sleep(1)  # the inhibitor sees alerts asynchronously: one that would be inhibited has had the time
        for labels in (loop, from_it, to_it, other_caller, not_network):
            assert status(labels)["inhibitedBy"] == [] and status(labels)["state"] == "active", labels


@pytest.mark.slow
def test_a_services_starved_replicas_are_one_notification() -> None:
    """The loop alert is per replica: the starved replicas of one service (a saturated fleet) are grouped into one
    notification listing them, and another service's or another cluster's are not grouped with them."""
    loop = {"alertname": "AiwatchEventLoopDelayHigh", "severity": "warning", "service": "ranker", "cluster": "eu",
            "namespace": "ml", "job": "ranker"}
    replicas = [{**loop, "instance": f"10.0.0.{i}:8000"} for i in range(3)]
    other_service = {**loop, "service": "gateway", "job": "gateway", "instance": "10.0.1.1:8000"}
    other_cluster = {**loop, "cluster": "us", "instance": "10.0.0.0:8000"}
    with alertmanager(alertmanager_config("http://127.0.0.1:9")) as am_url:
        post_alerts(am_url, [{"labels": labels} for labels in (*replicas, other_service, other_cluster)])

        def groups() -> list[set[str]]:
            with urllib.request.urlopen(f"{am_url}/api/v2/alerts/groups", timeout=5) as resp:
                found: list[dict[str, Any]] = json.loads(resp.read())
            return [{f"{a['labels']['cluster']}/{a['labels']['instance']}" for a in g["alerts"]} for g in found]

        wait_until(lambda: sum(map(len, groups())) == 5, 10, what="the five alerts in their groups")
        assert sorted(map(sorted, groups())) == [["eu/10.0.0.0:8000", "eu/10.0.0.1:8000", "eu/10.0.0.2:8000"],
                                                 ["eu/10.0.1.1:8000"], ["us/10.0.0.0:8000"]]


@pytest.mark.slow
def test_each_cluster_namespace_and_model_is_its_own_notification() -> None:
    """The same service's page in two clusters (or namespaces) was one group: one notification, and one PagerDuty
    incident (deduplicated by group), so the second cluster's outage paged no one once the first's was acknowledged.
    Drift and quality alerts carry a model and no service: two models' drift was one ticket."""
    page = {"alertname": "AiwatchAvailabilityBudgetBurnFast", "severity": "critical", "service": "recommender",
            "slo": "availability", "cluster": "eu", "namespace": "ml"}
    drift = {"alertname": "AiwatchFleetInputDrift", "severity": "warning", "feature": "basket_value",
             "cluster": "eu", "namespace": "ml", "model": "ranker"}
    sent = [page, {**page, "cluster": "us"}, {**page, "namespace": "staging"},
            drift, {**drift, "model": "fraud"}, {**drift, "feature": "country"}]
    with alertmanager(alertmanager_config("http://127.0.0.1:9")) as am_url:
        post_alerts(am_url, [{"labels": labels} for labels in sent])

        def groups() -> list[tuple[str, list[str]]]:
            with urllib.request.urlopen(f"{am_url}/api/v2/alerts/groups", timeout=5) as resp:
                found: list[dict[str, Any]] = json.loads(resp.read())
            return sorted((g["receiver"]["name"], sorted("/".join(
                a["labels"][k] for k in ("cluster", "namespace", "alertname", "service", "model", "slo", "feature")
                if k in a["labels"]) for a in g["alerts"])) for g in found)

        wait_until(lambda: sum(len(alerts) for _, alerts in groups()) == len(sent), 10, what="the alerts grouped")
        assert groups() == [
            ("page", ["eu/ml/AiwatchAvailabilityBudgetBurnFast/recommender/availability"]),
            ("page", ["eu/staging/AiwatchAvailabilityBudgetBurnFast/recommender/availability"]),
            ("page", ["us/ml/AiwatchAvailabilityBudgetBurnFast/recommender/availability"]),
            # one model's drifted features are one ticket
            ("ticket", ["eu/ml/AiwatchFleetInputDrift/fraud/basket_value"]),
            ("ticket", ["eu/ml/AiwatchFleetInputDrift/ranker/basket_value",
                        "eu/ml/AiwatchFleetInputDrift/ranker/country"]),
        ]


@pytest.mark.slow
@pytest.mark.parametrize("slice_labels", [("mig_gi", "mig_ci"), ("GPU_I_ID",)], ids=["aiwatch", "dcgm"])
def test_a_mig_slices_critical_silences_no_other_slices_warning(slice_labels: tuple[str, ...]) -> None:
    """MIG devices of one GPU share its gpu label (and the instance of the collector reading them): the critical
    memory alert of one slice silenced the warning of another slice, a different workload's memory running out."""
    def mig(severity: str, slice_id: str) -> dict[str, str]:
        return {"alertname": "AiwatchGpuMemoryNearlyFull", "severity": severity, "instance": "node-1:9400",
                "gpu": "0", "cluster": "eu", "namespace": "ml", **{label: slice_id for label in slice_labels}}

    critical, same_slice, other_slice = mig("critical", "1"), mig("warning", "1"), mig("warning", "2")
    with alertmanager(alertmanager_config("http://127.0.0.1:9")) as am_url:
        post_alerts(am_url, [{"labels": labels} for labels in (critical, same_slice, other_slice)])

        def status(labels: dict[str, str]) -> dict[str, Any]:
            return next(a["status"] for a in am_alerts(am_url) if a["labels"] == labels)

        wait_until(lambda: bool(status(same_slice)["inhibitedBy"]), 10, what="the same slice's warning inhibited")
        assert status(other_slice)["inhibitedBy"] == [] and status(other_slice)["state"] == "active"
