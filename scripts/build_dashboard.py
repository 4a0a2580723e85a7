#!/usr/bin/env python3
"""Render ``dashboards/aiwatch.json`` (an importable Grafana dashboard) from the console's PromQL.

The panels mirror the console's views (Latency, Resources, Drift, Alerts) and take their PromQL from
:mod:`aiwatch.console.queries`, so the console and the dashboard cannot drift apart. Run it after changing a query:

    python scripts/build_dashboard.py            # rewrite dashboards/aiwatch.json
    python scripts/build_dashboard.py --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiwatch.console import queries as Q  # noqa: E402
from aiwatch.console.source import AUTOSCALING_SIGNALS, QUANTILES  # noqa: E402
from aiwatch.promql import series  # noqa: E402

OUT = REPO / "dashboards" / "aiwatch.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
W = "$__rate_interval"
SVC = 'service=~"$service"'
MDL = 'model=~"$model"'
FEATURE = 'model=~"$model", feature=~"$feature"'
PHASE_TITLE = "Time per request by phase: $service (model vs not model)"


class Layout:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self._id(), "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def add(self, panel: dict[str, Any], w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["datasource"] = DS
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x, self.row_h = 0, 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t


def timeseries(title: str, targets: list[dict[str, Any]], unit: str, description: str = "",
               stacked: bool = False, overrides: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 60 if stacked else 10,
                              "showPoints": "never"}
    if stacked:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {"type": "timeseries", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}}


def table(title: str, targets: list[dict[str, Any]], description: str = "",
          rename: dict[str, str] | None = None, sort: str = "") -> dict[str, Any]:
    transformations: list[dict[str, Any]] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": rename or {}}},
    ]
    return {"type": "table", "title": title, "description": description, "targets": targets,
            "transformations": transformations, "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True, "sortBy": [{"displayName": sort, "desc": True}] if sort else []}}


def stat(title: str, expr: str, unit: str, description: str) -> dict[str, Any]:
    return {"type": "stat", "title": title, "description": description, "targets": [target(expr)],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area"}}


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
            "query": {"query": query, "refId": f"{name}-query"}, "refresh": 2, "includeAll": True, "multi": True,
            "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


def build() -> dict[str, Any]:
    lay = Layout()
    lay.row("Latency: where the time goes")
    lay.add(timeseries("Request latency p50 / p95 / p99",
                       [target(Q.latency_quantile(q, W, SVC), f"{{{{service}}}} {name}", chr(65 + i))
                        for i, (name, q) in enumerate(QUANTILES)], "s",
                       "Server time per request (aiwatch_request_duration_seconds), per service: a gateway's and "
                       "its backend's requests are never mixed in one histogram."))
    lay.add(timeseries("Network time seen by callers",
                       [target(Q.network_quantile(q, W, SVC), f"{{{{service}}}} → {{{{peer}}}} {name}", chr(65 + i))
                        for i, (name, q) in enumerate(QUANTILES[:2])], "s",
                       "Client-observed time minus server time (aiwatch_network_duration_seconds), per calling "
                       "service and the peer it called."))
    phases = timeseries(PHASE_TITLE, [target(Q.phase_split(W, SVC, MDL), "{{phase}}")], "s",
                        "Mean seconds per request in each phase of this service, stacked: 'inference' (red) is the "
                        "model's own time; every other phase is not model. One panel per service (repeated over "
                        "$service): a caller's phase that calls another service (a gateway's inference_call) "
                        "already holds that service's whole time, so services are never stacked together.",
                        stacked=True,
                        overrides=[{"matcher": {"id": "byName", "options": "inference"},
                                    "properties": [{"id": "color", "value": {"mode": "fixed",
                                                                              "fixedColor": "red"}}]}])
    phases.update({"repeat": "service", "repeatDirection": "h", "maxPerRow": 2})
    lay.add(phases, w=24)
    lay.add(timeseries("Throughput", [target(Q.throughput(W, SVC), "{{service}}")], "reqps"))
    lay.add(timeseries("Error ratio", [target(Q.error_ratio(W, SVC), "{{service}}")], "percentunit",
                       "Share of requests with an HTTP 5xx or failed gRPC status."))

    lay.row("Resources: GPUs, queues, batching, cache")
    lay.add(table("GPUs", [target(Q.gpu_gauge(metric), ref=chr(65 + i), instant=True)
                           for i, (_, metric) in enumerate(Q.GPU_GAUGES)],
                  "Latest value per GPU; empty when the service has no GPU collector.",
                  rename={f"Value #{chr(65 + i)}": field for i, (field, _) in enumerate(Q.GPU_GAUGES)}), w=24)
    lay.add(timeseries("GPU utilization", [target(Q.per_gpu("aiwatch_gpu_utilization_ratio"), "GPU {{gpu}}")],
                       "percentunit"), w=12)
    lay.add(timeseries("GPU power", [target(Q.per_gpu("aiwatch_gpu_power_watts"), "GPU {{gpu}}")],
                       "watt"), w=6)
    lay.add(timeseries("GPU temperature", [target(Q.per_gpu("aiwatch_gpu_temperature_celsius"), "GPU {{gpu}}")],
                       "celsius"), w=6)
    lay.add(timeseries("GPU memory used", [target(Q.per_gpu("aiwatch_gpu_memory_used_bytes"), "GPU {{gpu}}")],
                       "bytes"), w=6)
    lay.add(timeseries("Queue depth", [target(Q.queue_depth(), "{{queue}}")], "short"), w=6)
    lay.add(timeseries("Requests in flight", [target(Q.in_flight(SVC), "{{service}}")], "short"), w=6)
    lay.add(timeseries("Mean batch size", [target(Q.batch_size(W, MDL), "{{model}}")], "short"), w=6)
    lay.add(timeseries("Feature-cache hit ratio", [target(Q.cache_hit_ratio(W), "{{cache}}")], "percentunit"),
            w=24, h=6)

    lay.row("Drift: which input features moved")
    lay.add(table("Per-feature drift (latest evaluation)",
                  [target(Q.drift_gauge(metric, MDL), ref=chr(65 + i), instant=True)
                   for i, (_, metric) in enumerate(Q.DRIFT_GAUGES)],
                  "Sorted by score; detected = 1 means the test found drift.",
                  rename={"Value #A": "score", "Value #B": "p-value", "Value #C": "detected"}, sort="score"),
            w=12, h=10)
    dist = {"type": "barchart", "title": "Reference vs live distribution of $feature",
            "description": "The reference profile's share of each bin vs the live share over the range.",
            "targets": [target(Q.reference_share_for(FEATURE), ref="A", instant=True),
                        target(Q.live_share_for("$__range", FEATURE), ref="B", instant=True)],
            "transformations": [{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True, "model": True,
                                                                                 "feature": True},
                                                               "renameByName": {"Value #A": "reference",
                                                                                "Value #B": "live"}}}],
            "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
            "options": {"xField": "bin", "orientation": "vertical", "groupWidth": 0.7, "barWidth": 0.9}}
    lay.add(dist, w=12, h=10)
    lay.add(timeseries("Drift score over time",
                       [target(Q.drift_gauge(Q.DRIFT_SCORE.name, MDL, 'feature=~"$feature"'),
                               "{{feature}} {{test}}")], "short"), w=24)

    lay.row("Alerts and autoscaling")
    lay.add(table("Firing and pending alerts", [target('ALERTS{alertstate=~"firing|pending"}', instant=True)],
                  "Alerts from the aiwatch rules; their runbook_url annotation is in Alertmanager and the console."),
            w=24, h=6)
    for (name, unit, help_text), expr in zip(AUTOSCALING_SIGNALS, Q.autoscaling(W), strict=True):
        grafana_unit = {"ratio": "percentunit", "seconds": "s", "req/s": "reqps"}.get(unit, "short")
        lay.add(stat(name, expr, grafana_unit, help_text), w=24 // len(AUTOSCALING_SIGNALS) + 0, h=5)

    return {
        "title": "aiwatch", "uid": "aiwatch-console", "tags": ["aiwatch"], "editable": True,
        "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s", "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "description": "aiwatch: where inference latency goes, GPUs, queues, cache, drift and alerts "
                       "(generated by scripts/build_dashboard.py from aiwatch.console.queries).",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "refresh": 1, "hide": 0},
            variable("service", "Service", f"label_values({Q.REQUESTS.count}, service)"),
            variable("model", "Model", f"label_values({Q.PHASES.count}, model)"),
            variable("feature", "Feature", f"label_values({series(Q.DRIFT_SCORE, MDL)}, feature)"),
        ]},
        "annotations": {"list": []},
        "panels": lay.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true", help="fail if dashboards/aiwatch.json is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
