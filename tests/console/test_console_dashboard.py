"""The Grafana dashboard: importable JSON with a datasource variable and service/model variables, generated from
the console's PromQL, every panel's PromQL answering with data from a real Prometheus that scraped the instrumented
workload, and every metric it uses in aiwatch's metric contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiwatch.console.queries import PanelQueries
from aiwatch.gpuseries import DCGM_METRICS
from aiwatch.metrics import EXEMPLAR_HISTOGRAMS, exposed_sample_names, metric_names
from aiwatch.rules.render import LOOP_STALLED_RATIO, LOOP_STALLED_WORST, RECORDING_FILE, rule_files
from tests.console.conftest import Stack, settled_instant

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "aiwatch.json"
DCGM_DASHBOARD = REPO / "dashboards" / "aiwatch-dcgm.json"

#: What the test substitutes for Grafana's variables (Prometheus scrapes every second in the test).
VARIABLES = {"$__rate_interval": "5s", "$__range": "30s", "$service": ".*", "$model": ".*",
             "$feature": "basket_value", "$reference": ".*", "$cluster": ".*", "$namespace": ".*",
             "$gpu_limit": "5"}
#: Series that are not aiwatch metrics but Prometheus' own.
PROMETHEUS_BUILTINS = {"ALERTS"}


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    # "$1" is label_replace's capture group, no Grafana variable
    assert not re.search(r"\$(?!\d)", expr), f"unsubstituted variable in {expr}"
    return expr


def metric_names_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects: bare ``aiwatch_*`` identifiers, ``__name__=~`` regexes
    expanded, and any other identifier directly followed by a selector."""
    names = set()
    for regex in re.findall(r'__name__=~"([^"]+)"', expr):
        found = re.fullmatch(r"(\w*)\(([\w|]+)\)(\w*)", regex) or re.fullmatch(r"()([\w|]+)()", regex)
        assert found, f"cannot expand __name__ regex {regex!r}"
        names |= {found[1] + alt + found[3] for alt in found[2].split("|")}
    expr = re.sub(r'"[^"]*"', '""', expr)
    names |= set(re.findall(r"\baiwatch_\w+", expr))
    names |= {n for n in re.findall(r"\b([A-Za-z_:][\w:]*)\s*[{\[]", expr) if n not in ("by", "without")}
    return names


def test_dashboard_is_generated_from_the_console_queries() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_dashboard.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dashboard_is_importable_with_datasource_service_and_model_variables() -> None:
    dash = load()
    assert dash["title"] == "aiwatch" and dash["uid"] and "id" not in dash
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("service", "model"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    titles = {p["title"] for p in dash["panels"]}
    # mirrors the console's views
    assert {"Request latency p50 / p95 / p99", "Time per request by phase: $service (model vs not model)", "Throughput",
            "Error ratio", "Network time seen by callers", "Effective throughput per link (bytes per network second)",
            "Event loop delay p99 / mean, time stood still", "GPUs", "Queue depth", "Requests in flight",
            "Mean batch size", "Feature-cache hit ratio", "Per-feature drift (latest evaluation)",
            "Drift score over time", "Firing and pending alerts", "Request latency p95: real-time vs batch",
            "Time to first chunk (streamed responses)", "Time to first token", "Time per output token",
            "Token usage", "Degraded share", "Model versions: error share", "Model versions: model time p95"} <= titles
    assert {p["title"] for p in dash["panels"] if p["type"] == "row"} == {
        "Latency: where the time goes", "AI traffic: real-time vs batch, streams, fallbacks, model versions",
        "Resources: GPUs, queues, batching, cache",
        "Drift: which input features moved", "Alerts and autoscaling"}


def test_latency_panels_never_mix_services() -> None:
    """A gateway's inference_call holds its backend's whole time: phases stacked across services, or quantiles of
    both services' requests in one histogram, would tell the wrong story. Every latency panel keeps services apart,
    and the stacked phase panel is repeated per service."""
    panels = {p["title"]: p for p in load()["panels"]}
    phases = panels["Time per request by phase: $service (model vs not model)"]
    assert phases["repeat"] == "service" and phases["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    for title, grouping in (("Time per request by phase: $service (model vs not model)",
                             "sum by (cluster, namespace, service, phase)"),
                            ("Request latency p50 / p95 / p99", "sum by (cluster, namespace, service, le)"),
                            ("Network time seen by callers", "sum by (cluster, namespace, service, peer, le)"),
                            ("Effective throughput per link (bytes per network second)",
                             "sum by (cluster, namespace, service, peer)")):
        for t in panels[title]["targets"]:
            assert grouping in t["expr"] and 'service=~"$service"' in t["expr"], (title, t["expr"])
            assert "{{service}}" in t["legendFormat"] or panels[title].get("repeat") == "service", title
    # the event loop delay sits next to the network time it shows up in, per service
    loop = panels["Event loop delay p99 / mean, time stood still"]
    assert [t["legendFormat"].split("}}")[1].split()[0] for t in loop["targets"]] == \
        ["p99", "mean", "{{instance", "{{instance"]
    p99, mean, stood, worst = (t["expr"] for t in loop["targets"])
    assert p99.startswith("histogram_quantile(0.99, sum by (cluster, namespace, service, le) (rate("
                          "aiwatch_event_loop_delay_seconds_bucket{")
    assert "sum by (cluster, namespace, service) (rate(aiwatch_event_loop_delay_seconds_sum{" in mean
    # the share of the time stood still is per replica, the alert's own reading, on a percent axis of its own
    # the seconds late over the seconds watched: the mean over a multiprocess target's workers, not their sum
    assert stood.startswith("sum by (cluster, namespace, job, instance, service) (rate("
                            "aiwatch_event_loop_delay_seconds_sum{")
    assert " / (sum by (cluster, namespace, job, instance, service) (rate(aiwatch_event_loop_sampled_seconds_total{" \
        in stood and stood.endswith(" > 0)")
    assert "stood still" in loop["targets"][2]["legendFormat"]
    rule = next(r["expr"] for g in rule_files()[RECORDING_FILE]["groups"] for r in g["rules"]
                if r["record"] == LOOP_STALLED_RATIO.format(window="5m"))
    assert rule == PanelQueries().loop_stalled_ratio("5m")  # the panel draws what the alert reads
    records = {r["record"]: r["expr"] for g in rule_files()[RECORDING_FILE]["groups"] for r in g["rules"]
               if "record" in r}
    assert records[LOOP_STALLED_WORST] == PanelQueries().loop_worst_stalled()
    override = loop["fieldConfig"]["overrides"][0]
    assert override["matcher"]["options"] == ".* stood still.*"
    assert {"id": "unit", "value": "percentunit"} in override["properties"]
    # beside the mean, each replica's worst worker (a multiprocess target's mean dilutes one stalled worker among
    # N), from the gauge the alert's worst-worker branch reads, on the same percent axis; a 5-minute share
    assert worst.startswith("max by (cluster, namespace, job, instance, service) (aiwatch_event_loop_stalled_ratio{")
    assert re.fullmatch(r".* stood still.*", loop["targets"][3]["legendFormat"])
    assert "worst worker" in loop["targets"][3]["legendFormat"] and "5m" in loop["targets"][3]["legendFormat"]
    assert all('service=~"$service"' in e and "{{service}}" in t["legendFormat"]
               for e, t in zip((p99, mean, stood, worst), loop["targets"], strict=True))
    network = panels["Network time seen by callers"]
    assert network["gridPos"]["y"] == loop["gridPos"]["y"] and loop["gridPos"]["w"] == network["gridPos"]["w"]


def test_ai_traffic_panels_keep_traffic_classes_and_model_versions_apart() -> None:
    """Real-time and batch requests are drawn side by side, never in one histogram (batch raising real-time latency
    must show), and a canary's version is never summed with the stable one."""
    panels = {p["title"]: p for p in load()["panels"]}
    for title, grouping in (("Request latency p95: real-time vs batch",
                             "sum by (cluster, namespace, service, traffic_class, le)"),
                            ("Throughput per traffic class", "sum by (cluster, namespace, service, traffic_class)"),
                            ("Model versions: model time p95",
                             "sum by (cluster, namespace, service, model, model_version, le)"),
                            ("Model versions: error share",
                             "sum by (cluster, namespace, service, model, model_version)"),
                            ("Degraded share", "sum by (cluster, namespace, service, model, reason)")):
        for t in panels[title]["targets"]:
            assert grouping in t["expr"] and 'service=~"$service"' in t["expr"], (title, t["expr"])


@pytest.mark.parametrize("path", [DASHBOARD, DCGM_DASHBOARD], ids=["aiwatch", "dcgm"])
def test_every_panel_keeps_clusters_and_namespaces_apart_and_selects_them_by_variable(path: Path) -> None:
    """Thanos and Mimir hold several clusters: no panel sums across them, and the cluster and namespace variables
    narrow every query (``.*`` as All also matches series without the label: a single cluster)."""
    dash = load(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for label in ("cluster", "namespace"):
        assert variables[label]["definition"] == f"label_values(aiwatch_request_duration_seconds_count, {label})"
        assert variables[label]["includeAll"] and variables[label]["allValue"] == ".*"
    exprs = [t["expr"] for _, t in targets(dash)]
    assert len(exprs) > 30
    for expr in exprs:
        assert expr.count('cluster=~"$cluster"') == expr.count('namespace=~"$namespace"') >= 1, expr
        for grouping in re.findall(r"\b(?:sum|max|avg|count|min|group) by \(([^)]*)\)", expr):
            assert grouping.startswith("cluster, namespace"), (grouping, expr)
        for joined in re.findall(r"\bon \(([^)]*)\)", expr):
            # "and on () (count(...) <= 16)": the GPU table lists every GPU of a fleet that small, a gate that
            # joins no series of one scope to another's
            assert joined.startswith("cluster, namespace") or (joined == "" and "count(" in expr), (joined, expr)


def test_the_dcgm_dashboard_reads_gpus_from_dcgm_exporter_only() -> None:
    gpu_panels = [(title, t["expr"]) for title, t in targets(load(DCGM_DASHBOARD)) if title.startswith("GPU")]
    assert len(gpu_panels) >= 10
    for title, expr in gpu_panels:
        assert "aiwatch_gpu_" not in expr and "DCGM_FI_" in expr, (title, expr)
    assert all("DCGM_FI_" not in t["expr"] for _, t in targets(load()))


@pytest.mark.parametrize("path", [DASHBOARD, DCGM_DASHBOARD], ids=["aiwatch", "dcgm"])
def test_every_metric_the_dashboard_uses_is_in_the_contract(path: Path) -> None:
    known = metric_names() | exposed_sample_names() | DCGM_METRICS
    dash = load(path)
    exprs = [t["expr"] for _, t in targets(dash)]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used: set[str] = set()
    for expr in exprs:
        used |= metric_names_in(expr)
    unknown = {n for n in used if n not in known and n not in PROMETHEUS_BUILTINS and ":" not in n}
    assert not unknown, f"metrics missing from aiwatch/metrics.py: {sorted(unknown)}"
    assert len(used & known) >= 20


def test_metric_name_extraction_catches_unknown_names() -> None:
    assert metric_names_in('sum(rate(aiwatch_made_up_total{a="aiwatch_in_label"}[5m]))') == {"aiwatch_made_up_total"}
    assert metric_names_in('count({__name__=~"aiwatch_(a|b)"}) + foo_bar{x="1"}') == {"aiwatch_a", "aiwatch_b",
                                                                                       "foo_bar"}
    assert metric_names_in('sum(increase({__name__=~"aiwatch_a_total|aiwatch_b_total"}[5m]))') == {
        "aiwatch_a_total", "aiwatch_b_total"}


def test_the_missing_values_panel_reads_what_aiwatch_feature_missing_compares() -> None:
    """AiwatchFeatureMissing had no panel: the Drift row shows each feature's live missing share against its
    reference's, and their difference, red past the alert's default margin (drift.missing_share_increase)."""
    from aiwatch.drift.promql import ALL_VALUES_RECORD, MISSING_VALUES_RECORD, REFERENCE_MISSING_RECORD
    from aiwatch.rules.config import Drift, RulesConfig
    from aiwatch.rules.render import ALERTING_FILE, drift_records

    records = {r["record"]: r["expr"] for r in drift_records(RulesConfig())}
    missing_values = MISSING_VALUES_RECORD.format(window=Drift().psi_window)
    all_values = ALL_VALUES_RECORD.format(window=Drift().psi_window)

    for path in (DASHBOARD, DCGM_DASHBOARD):
        panels = {p["title"]: p for p in load(path)["panels"]}
        missing = panels["Missing values per feature: live vs reference"]
        drift_row = next(p for p in load(path)["panels"] if p["title"] == "Drift: which input features moved")
        assert missing["gridPos"]["y"] > drift_row["gridPos"]["y"]
        live, reference, rise, counted = (t["expr"] for t in missing["targets"])
        rule = next(r["expr"] for g in rule_files()[ALERTING_FILE]["groups"] for r in g["rules"]
                    if r.get("alert") == "AiwatchFeatureMissing")
        # the rule's own live share and reference share, over the dashboard's range, for its model variable
        query = PanelQueries(match='model=~"$model", cluster=~"$cluster", namespace=~"$namespace"')
        assert live == query.missing_share("$__range") and reference == query.reference_missing_share()
        # the rule reads them as the drift group records them (one scan of the counters per window)
        assert {missing_values, all_values, REFERENCE_MISSING_RECORD} <= set(re.findall(r"[\w:]+", rule))
        assert PanelQueries().missing_share(Drift().psi_window) == \
            f"(\n  {records[missing_values]}\n  /\n  {records[all_values]}\n)"
        assert PanelQueries().reference_missing_share() == records[REFERENCE_MISSING_RECORD]
        assert rise.startswith(live) and rise.endswith(reference) and counted == query.missing_counted("$__range")
        red = next(o for o in missing["fieldConfig"]["overrides"] if o["matcher"]["options"] == "rise")
        thresholds = next(p["value"] for p in red["properties"] if p["id"] == "thresholds")
        assert thresholds["steps"][-1] == {"color": "red", "value": Drift().missing_share_increase}


@pytest.mark.slow
def test_every_panel_query_returns_data_from_a_real_prometheus(stack: Stack) -> None:
    dash = load()
    empty = []
    # asked where Prometheus has a whole window of scrapes: a failed scrape leaves the gauges of now empty
    at = f"{settled_instant(stack.prom, stack.service['target']):.3f}"
    for title, target in targets(dash):
        expr = substitute(target["expr"])
        if not stack.prom.api("/api/v1/query", query=expr, time=at)["result"]:  # raises when the query is invalid
            empty.append((title, expr))
    # every replica here labels its bins with their reference: no older aiwatch's bins to show
    # (tests/console/test_console_drift_rollout.py shows them); fewer GPUs than $gpu_limit are all the busiest, none
    # left to be the idlest (tests/console/test_console_dashboard_fleet.py draws a fleet)
    assert [title for title, _ in empty] == ["GPU utilization"] + [
        "Reference vs live distribution of $feature on replicas exporting no reference label"] * 2, empty
    assert "bottomk(5, " in empty[0][1]
    for variable in dash["templating"]["list"]:
        # one Prometheus, no cluster or namespace labels: those variables are empty, and their All (".*", or ""
        # with no value at all) matches the series without the label, as the panels above showed
        if variable["type"] == "query" and variable["name"] not in ("cluster", "namespace"):
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert found, variable["definition"]
            series = stack.prom.api("/api/v1/series", **{"match[]": substitute(found[1])})
            assert {s.get(found[2]) for s in series} - {None}, variable["name"]


#: Prometheus keeps the exemplars on the histograms' ``_bucket`` series
EXEMPLAR_BUCKETS = {f"{name}_bucket" for name in EXEMPLAR_HISTOGRAMS}


@pytest.mark.parametrize("path", [DASHBOARD, DCGM_DASHBOARD], ids=["aiwatch", "dcgm"])
def test_every_panel_of_a_histogram_with_exemplars_draws_them_once(path: Path) -> None:
    """Grafana draws a trace link only for a target with ``exemplar: true``: each panel reading a histogram aiwatch
    puts trace ids on has one such target (a second would draw every exemplar twice), and no other panel has one."""
    drawn: set[str] = set()
    for panel in load(path)["panels"]:
        if panel["type"] == "row":
            continue
        reading = [t["refId"] for t in panel["targets"] if metric_names_in(substitute(t["expr"])) & EXEMPLAR_BUCKETS]
        with_exemplars = [t["refId"] for t in panel["targets"] if t.get("exemplar")]
        assert len(with_exemplars) == (1 if reading else 0) and set(with_exemplars) <= set(reading), panel["title"]
        if with_exemplars:
            drawn.add(panel["title"])
    assert {"Request latency p50 / p95 / p99", "Time to first token"} <= drawn
