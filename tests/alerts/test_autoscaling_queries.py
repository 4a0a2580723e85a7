"""Every PromQL query in examples/autoscaling/ runs against a real Prometheus scraping an instrumented app and
returns exactly one series (KEDA's Prometheus scaler and prometheus-adapter both fail, or mislead, otherwise)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.support import control, demo_app
from tests.servers import REPO, prometheus, require_module

yaml = require_module("yaml")

EXAMPLES = REPO / "examples" / "autoscaling"


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


def adapter_query(rule: dict[str, Any], selector: dict[str, str]) -> str:
    """The query prometheus-adapter sends for an HPA external metric with ``selector`` (its template filled)."""
    series = rule["seriesQuery"].split("{")[0]
    matchers = ",".join(f'{k}="{v}"' for k, v in selector.items())
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", ",".join(selector)))


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


@pytest.mark.slow
def test_every_autoscaling_query_returns_one_series() -> None:
    with demo_app(fake_gpu=True) as target, prometheus([target]) as prom:
        control(target, queue_depth=12, gpu_utilization=0.9)
        prom.wait_for("aiwatch_queue_depth == 12 and on() aiwatch_gpu_utilization_ratio == 0.9", timeout=30)
        queries = list(keda_queries())
        by_name = {r["name"]["as"]: r for r in adapter_rules()}
        for metric in hpa_metrics():
            rule = by_name[metric["metric"]["name"]]
            assert prom.api("/api/v1/series", **{"match[]": rule["seriesQuery"]}), rule["seriesQuery"]
            queries.append(adapter_query(rule, metric["metric"]["selector"]["matchLabels"]))
        assert not [q for q in queries if "<<" in q]
        values = {}
        for query in queries:
            result = prom.query(query)
            assert len(result) == 1, f"{query} returned {len(result)} series: {result}"
            values[query] = float(result[0]["value"][1])
        # the queue queries read the injected depth, the GPU ones the injected utilization
        assert sorted(values.values()) == pytest.approx([0.9, 0.9, 12, 12])
        # and with the series gone (a scrape target without the GPU collector), the queries return nothing, so
        # KEDA with ignoreNullValues=false errors into its fallback instead of reading 0
        missing = [re.sub(r"aiwatch_gpu_utilization_ratio", "aiwatch_gpu_utilization_ratio_absent", q)
                   for q in queries if "gpu" in q]
        assert all(prom.query(q) == [] for q in missing)


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
