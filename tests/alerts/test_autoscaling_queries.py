"""Every PromQL query in examples/autoscaling/ runs against a real Prometheus scraping an instrumented app the way
prometheus-operator scrapes examples/kubernetes/ (its ServiceMonitor's relabelling, tests/alerts/operator.py) and
returns exactly one series, the Deployment's own (KEDA's Prometheus scaler and prometheus-adapter both fail, or
mislead, otherwise)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiwatch.rules import RulesConfig
from tests.alerts.operator import scrape_job
from tests.alerts.support import control, demo_app
from tests.servers import REPO, Prometheus, prometheus, require_module

yaml = require_module("yaml")

EXAMPLES = REPO / "examples" / "autoscaling"
KUBERNETES = REPO / "examples" / "kubernetes"


def _walk(node: Any, key: str) -> list[Any]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found += _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v, key)
    return found


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def keda_queries() -> list[str]:
    return [q for d in _docs(EXAMPLES / "keda-scaledobject.yaml") for q in _walk(d, "query")]


def adapter_rules() -> list[dict[str, Any]]:
    return [r for d in _docs(EXAMPLES / "prometheus-adapter-rules.yaml") for r in d["rules"]["external"]]


def hpa_metrics() -> list[dict[str, Any]]:
    return [m["external"] for d in _docs(EXAMPLES / "hpa-prometheus-adapter.yaml") for m in d["spec"]["metrics"]]


def kubernetes_manifests() -> dict[str, dict[str, Any]]:
    """examples/kubernetes/ by kind, as kustomize renders them (its namespace on each)."""
    (kustomization,) = _docs(KUBERNETES / "kustomization.yaml")
    manifests = {}
    for name in kustomization["resources"]:
        (doc,) = _docs(KUBERNETES / name)
        if "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        manifests[doc["kind"]] = doc
    return manifests


def adapter_query(rule: dict[str, Any], selector: dict[str, str], namespace: str) -> str:
    """The query prometheus-adapter sends for an HPA's External metric with ``selector`` in ``namespace``, as its
    ``BuildExternal`` (pkg/naming/metrics_query.go) fills the template: the selector's matchers, then the HPA's
    namespace on the label mapped to the namespace resource unless the rule says ``namespaced: false``; GroupBy
    is empty for external metrics."""
    series = rule["seriesQuery"].split("{")[0]
    matchers = [f'{k}="{v}"' for k, v in sorted(selector.items())]
    resources = rule.get("resources", {})
    if resources.get("namespaced", True):
        labels = [lbl for lbl, res in resources.get("overrides", {}).items() if res["resource"] in ("namespace",
                                                                                               "namespaces")]
        assert labels, f"{rule['name']}: namespaced, but no label maps to the namespace resource (the adapter errors)"
        matchers.append(f'{labels[0]}="{namespace}"')
    template: str = rule["metricsQuery"]
    return (template.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", ",".join(matchers))
            .replace("<<.GroupBy>>", ""))


def test_examples_are_written_to_fail_safe() -> None:
    """ignoreNullValues false + fallback on every KEDA trigger; AverageValue everywhere (fallback needs it)."""
    (scaled,) = _docs(EXAMPLES / "keda-scaledobject.yaml")
    assert scaled["spec"]["fallback"]["failureThreshold"] >= 1
    assert scaled["spec"]["fallback"]["replicas"] > scaled["spec"]["minReplicaCount"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["metadata"]["ignoreNullValues"] == "false"
        assert trigger["metricType"] == "AverageValue"
    assert len(keda_queries()) == 2
    names = {r["name"]["as"] for r in adapter_rules()}
    assert {m["metric"]["name"] for m in hpa_metrics()} == names
    assert all(m["target"]["type"] == "AverageValue" for m in hpa_metrics())


def test_every_keda_query_selects_the_workload_its_scaled_object_scales() -> None:
    """The namespace, container and service each KEDA query (both files) matches on are those of the Deployment
    its ScaledObject scales, as examples/kubernetes/ deploys it: a query naming another container or namespace
    returns nothing, and KEDA (ignoreNullValues "false") holds the fallback's replica count for good."""
    k8s = kubernetes_manifests()
    deployment = k8s["Deployment"]
    wanted = {"namespace": {deployment["metadata"]["namespace"]}, "service": {k8s["Service"]["metadata"]["name"]},
              "container": {c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]}}
    for name in ("keda-scaledobject.yaml", "keda-scaledobject-dcgm.yaml"):
        (scaled,) = _docs(EXAMPLES / name)
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        for trigger in scaled["spec"]["triggers"]:
            matchers = dict(re.findall(r'(\w+)="([^"]*)"', trigger["metadata"]["query"]))
            assert "namespace" in matchers, trigger["name"]
            assert {k: v for k, v in matchers.items() if k in wanted and v not in wanted[k]} == {}, trigger["name"]


def test_the_autoscaler_examples_of_a_kind_are_alternatives_for_one_deployment() -> None:
    """The ScaledObjects (and the HPAs) that scale one Deployment share one name, so applying the directory leaves
    one of each: KEDA's webhook refuses a second ScaledObject on a workload ("already managed by the ScaledObject"),
    and two HPAs on one Deployment make neither scale (AmbiguousSelector)."""
    names: dict[tuple[str, str], set[str]] = {}
    for path in EXAMPLES.glob("*.yaml"):
        for doc in _docs(path):
            if doc.get("kind") in ("ScaledObject", "HorizontalPodAutoscaler"):
                key = (doc["kind"], doc["spec"]["scaleTargetRef"]["name"])
                names.setdefault(key, set()).add(doc["metadata"]["name"])
    assert set(names) == {("ScaledObject", "recommender"), ("HorizontalPodAutoscaler", "recommender")}
    assert all(len(found) == 1 for found in names.values()), names


#: What KEDA's Prometheus scaler reads from a TriggerAuthentication for each of its authModes.
AUTH_PARAMETERS = {"bearer": {"bearerToken"}, "basic": {"username", "password"}, "tls": {"cert", "key"}}


def test_every_keda_trigger_authenticates_through_the_trigger_authentication() -> None:
    """Credentials live in a Secret that a TriggerAuthentication maps to the parameters each trigger's authModes
    needs; no trigger carries a credential of its own."""
    docs = {d["kind"]: d for d in _docs(EXAMPLES / "keda-triggerauthentication.yaml")}
    secret, auth = docs["Secret"], docs["TriggerAuthentication"]
    refs = auth["spec"]["secretTargetRef"]
    assert all(r["name"] == secret["metadata"]["name"] and r["key"] in secret["stringData"] for r in refs)
    given = {r["parameter"] for r in refs}
    triggers = [t for name in ("keda-scaledobject.yaml", "keda-scaledobject-dcgm.yaml")
                for d in _docs(EXAMPLES / name) for t in d["spec"]["triggers"]]
    assert len(triggers) == 3
    for trigger in triggers:
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        modes = set(trigger["metadata"]["authModes"].split(","))
        assert modes <= set(AUTH_PARAMETERS) and not {"bearer", "basic"} <= modes
        assert set().union(*(AUTH_PARAMETERS[m] for m in modes)) <= given, trigger["name"]
        assert not {"bearerToken", "password", "username", "key"} & set(trigger["metadata"])
        assert trigger["metadata"]["serverAddress"].startswith("https://")


#: The Deployment's namespace, and another one running the same app with the same queue name (staging, a second
#: team): the autoscaling queries must read the first one's series only.
OTHER_NAMESPACE = "staging"


#: both pods' injected gauges in Prometheus
SCRAPED = ("count(aiwatch_queue_depth == 12 or aiwatch_queue_depth == 30) == 2 and on() "
           "count(aiwatch_gpu_utilization_ratio == 0.9 or aiwatch_gpu_utilization_ratio == 0.4) == 2")


def settled(prom: Prometheus) -> float:
    """An instant where both pods' scrapes answered and have landed (:meth:`Prometheus.settled_for`): asked at now, a
    scrape failed since (its 1 s timeout on a loaded machine) reads that pod's gauges stale, and its queries empty."""
    return prom.settled_for(f"count(up == 1) == 2 and on() {SCRAPED}")


@pytest.fixture(scope="module")
def operator_prometheus() -> Iterator[tuple[Prometheus, str]]:
    """A real Prometheus scraping two pods of the demo app as prometheus-operator scrapes examples/kubernetes/
    (one in the kustomization's namespace: queue depth 12, GPU 0.9; one in another: 30 and 0.4), with aiwatch's
    rules loaded; yields it and the Deployment's namespace."""
    k8s = kubernetes_manifests()
    namespace = k8s["Deployment"]["metadata"].get("namespace", "default")
    with demo_app(fake_gpu=True) as ours, demo_app(fake_gpu=True) as theirs:
        job = scrape_job(k8s["ServiceMonitor"], k8s["Service"], k8s["Deployment"],
                         {"recommender-6d8f7c9b5-k2xqz": (namespace, ours),
                          "recommender-59b7d4c8f-q7wtn": (OTHER_NAMESPACE, theirs)})
        rules = sorted((REPO / "alerts").glob("*.rules.yml"))
        with prometheus([], rules, extra_config=f"  - {json.dumps(job)}\n") as prom:
            control(ours, queue_depth=12, gpu_utilization=0.9)
            control(theirs, queue_depth=30, gpu_utilization=0.4)
            prom.wait_for(SCRAPED, timeout=30)
            yield prom, namespace


@pytest.mark.slow
def test_the_servicemonitor_keeps_the_labels_aiwatchs_rules_read(operator_prometheus: tuple[Prometheus, str]) -> None:
    """Scraped through the ServiceMonitor, the targets are in the scrape job the rules watch (``selectors.targets``,
    job="aiwatch": the operator names the job after the Service otherwise, so AiwatchTargetAbsent fires for good
    and AiwatchTargetDown never), and the series keep the ``service`` label aiwatch gives them (its callers'
    ``peer`` label names it): without honorLabels the operator's own ``service`` label (the Service's name)
    overwrites it and the app's moves to ``exported_service``."""
    prom, namespace = operator_prometheus
    targets = RulesConfig().selectors.targets
    at = settled(prom)
    assert len(prom.query(f"up{{{targets}}} == 1", at)) == 2
    assert prom.query(f"absent(up{{{targets}}})", at) == []
    replicas = prom.wait_for("service:aiwatch_replicas:count", lambda found: len(found) == 2)
    assert sorted((r["metric"]["namespace"], r["metric"]["service"]) for r in replicas) == sorted(
        [(namespace, "demo"), (OTHER_NAMESPACE, "demo")])
    assert prom.query('{__name__=~"aiwatch_.+", exported_service!=""}', at) == []
    # the target labels the operator adds, which dashboards and the GPU trigger select on
    (gpu,) = prom.query(f'aiwatch_gpu_utilization_ratio{{namespace="{namespace}"}}', at)
    assert {k: gpu["metric"][k] for k in ("job", "service", "pod", "container")} == {
        "job": "aiwatch", "service": "recommender", "pod": "recommender-6d8f7c9b5-k2xqz", "container": "model"}


@pytest.mark.slow
def test_every_autoscaling_query_reads_its_own_namespace(operator_prometheus: tuple[Prometheus, str]) -> None:
    """Each KEDA query, and each query prometheus-adapter makes for the HPA (in the Deployment's namespace),
    returns one series with the Deployment's own queue depth and GPU utilization, not the sum with another
    namespace's pods of the same queue name (12, not 42)."""
    prom, namespace = operator_prometheus
    queries = list(keda_queries())
    by_name = {r["name"]["as"]: r for r in adapter_rules()}
    for metric in hpa_metrics():
        rule = by_name[metric["metric"]["name"]]
        assert prom.api("/api/v1/series", **{"match[]": rule["seriesQuery"]}), rule["seriesQuery"]
        queries.append(adapter_query(rule, metric["metric"]["selector"]["matchLabels"], namespace))
    assert not [q for q in queries if "<<" in q]
    values = {}
    at = settled(prom)
    for query in queries:
        result = prom.query(query, at)
        assert len(result) == 1, f"{query} returned {len(result)} series: {result}"
        values[query] = float(result[0]["value"][1])
    # the queue queries read the injected depth, the GPU ones the injected utilization
    assert sorted(values.values()) == pytest.approx([0.9, 0.9, 12, 12]), values
    # the same as the recording rules the docs compare them with, for this namespace
    prom.wait_for(f'queue:aiwatch_desired_replicas:queue_depth{{namespace="{namespace}", queue="predict"}} == 3')
    # and with the series gone (a scrape target without the GPU collector), the queries return nothing, so
    # KEDA with ignoreNullValues=false errors into its fallback instead of reading 0
    missing = [re.sub(r"aiwatch_gpu_utilization_ratio", "aiwatch_gpu_utilization_ratio_absent", q)
               for q in queries if "gpu" in q]
    assert all(prom.query(q, at) == [] for q in missing)


def test_demand_per_replica_is_zero_on_replicas_up_without_requests() -> None:
    """The shipped recording rules on a real Prometheus scraping a replica that has served no request yet (a quiet
    night after a restart: no request counter exists): the demand signal is one series of 0, which an autoscaler
    scales to its minimum on, not an empty result, which KEDA with ignoreNullValues "false" reads as an error and
    answers with its fallback replica count. A service with no replica up has no signal at all."""
    signal = "service:aiwatch_requests_per_replica:rate5m"
    with demo_app() as target, prometheus([target], [REPO / "alerts" / "aiwatch-recording.rules.yml"]) as prom:
        prom.wait_for('service:aiwatch_replicas:count{service="demo"} == 1')
        (series,) = prom.wait_for(signal)
        assert series["metric"] == {"__name__": signal, "service": "demo"}
        assert float(series["value"][1]) == 0
        assert prom.query(f'{signal}{{service="not-running"}}') == []
