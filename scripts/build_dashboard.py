#!/usr/bin/env python3
"""Render the importable Grafana dashboards from the console's PromQL: ``dashboards/aiwatch.json`` (GPUs from
aiwatch's collector) and ``dashboards/aiwatch-dcgm.json`` (GPUs from NVIDIA's dcgm-exporter).

The panels mirror the console's views (Latency, AI traffic, Resources, Drift, Alerts) and take their PromQL from
:class:`aiwatch.console.queries.PanelQueries`, so the console and the dashboards cannot drift apart. Every query
keeps the aggregation labels (``cluster``, ``namespace``) apart, and each has a template variable, so a Thanos or
Mimir holding several clusters shows them side by side or one at a time, never summed. Run it after changing a
query:

    python scripts/build_dashboard.py            # rewrite dashboards/*.json
    python scripts/build_dashboard.py --check    # exit 1 if a committed file is stale
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
from aiwatch.console.queries import PanelQueries  # noqa: E402
from aiwatch.console.source import AUTOSCALING_SIGNALS, EVERY_GPU_UP_TO, QUANTILES  # noqa: E402
from aiwatch.drift.promql import FEATURE as DRIFT_FEATURE  # noqa: E402
from aiwatch.gpuseries import GpuSeries  # noqa: E402
from aiwatch.metrics import UNFINISHED_RECOVERY_RESULTS  # noqa: E402
from aiwatch.promql import DEFAULT_AGGREGATION_LABELS, series  # noqa: E402
from aiwatch.rules.config import Drift  # noqa: E402

#: GPU source -> the dashboard file rendered for it
OUT = {"aiwatch": REPO / "dashboards" / "aiwatch.json", "dcgm": REPO / "dashboards" / "aiwatch-dcgm.json"}
DS = {"type": "prometheus", "uid": "${datasource}"}
W = "$__rate_interval"
SVC = 'service=~"$service"'
MDL = 'model=~"$model"'
FEATURE = 'model=~"$model", feature=~"$feature"'
REFERENCE = 'reference=~"$reference"'
UNLABELLED_TITLE = "Reference vs live distribution of $feature on replicas exporting no reference label"
PHASE_TITLE = "Time per request by phase: $service (model vs not model)"
LINK_TITLE = "Effective throughput per link (bytes per network second)"
CAVEATS_TITLE = "What the split could not measure as it is"
LOOP_TITLE = "Event loop delay p99 / mean, time stood still"
BACKGROUND_TITLE = "Phases outside requests p99 / mean"
STOOD_STILL = "stood still"
#: AiwatchFeatureMissing's default thresholds (drift.missing_share_increase, drift.fleet_min_values)
MISSING_SHARE_INCREASE, MISSING_MIN_COUNTED = Drift().missing_share_increase, Drift().fleet_min_values
SCOPE = DEFAULT_AGGREGATION_LABELS
#: the choices of $gpu_limit, the first the default
GPU_LIMITS = "5,10,20,50"
#: every query selects the scope the template variables chose (All: any value, none included)
SCOPE_MATCH = ", ".join(f'{label}=~"${label}"' for label in SCOPE)
#: after a series' name in a legend: its place, so two clusters' series of one service are told apart
AT = "".join(f" {{{{{label}}}}}" for label in SCOPE)


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


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           exemplar: bool = False) -> dict[str, Any]:
    """``exemplar``: Grafana also asks Prometheus for the exemplars of the series ``expr`` reads (aiwatch's trace
    ids), drawn as points that link to the trace. One target per panel: the exemplars are those of the series read,
    whatever quantile is taken of them, so a second target would draw each one twice."""
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}
    if exemplar:
        t["exemplar"] = True
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


def build(gpu_source: str = "aiwatch") -> dict[str, Any]:
    q = PanelQueries(scope=SCOPE, match=SCOPE_MATCH, gpu=GpuSeries(gpu_source))
    dcgm = gpu_source == "dcgm"
    lay = Layout()
    lay.row("Latency: where the time goes")
    lay.add(timeseries("Request latency p50 / p95 / p99",
                       [target(q.latency_quantile(quantile, W, SVC), f"{{{{service}}}} {name}{AT}", chr(65 + i),
                               exemplar=name == "p99") for i, (name, quantile) in enumerate(QUANTILES)], "s",
                       "Server time per request (aiwatch_request_duration_seconds), per service: a gateway's and "
                       "its backend's requests are never mixed in one histogram. The points on the p99 line are "
                       "exemplars: one traced request each, which opens its trace once the data source has a trace "
                       "destination for the trace_id label (docs/console.md)."), w=8)
    lay.add(timeseries("Network time seen by callers",
                       [target(q.network_quantile(quantile, W, SVC), f"{{{{service}}}} → {{{{peer}}}} {name}{AT}",
                               chr(65 + i), exemplar=name == "p95")
                        for i, (name, quantile) in enumerate(QUANTILES[:2])], "s",
                       "Client-observed time minus server time (aiwatch_network_duration_seconds), per calling "
                       "service and the peer it called. A call whose peer reported more time than the call took "
                       "counts 0 here (aiwatch_network_clamped_total): then these quantiles are too low. The points "
                       "on the p95 line are exemplars: one traced call each, which opens its trace (the caller's "
                       "CLIENT span and the peer's SERVER span below it)."), w=8)
    lay.add(timeseries(LOOP_TITLE,
                       [target(q.loop_delay_quantile(0.99, W, SVC), f"{{{{service}}}} p99{AT}"),
                        target(q.loop_delay_mean(W, SVC), f"{{{{service}}}} mean{AT}", "B"),
                        target(q.loop_stalled_ratio(W, SVC), f"{{{{service}}}} {{{{instance}}}} {STOOD_STILL}{AT}",
                               "C"),
                        target(q.loop_worst_stalled(SVC),
                               f"{{{{service}}}} {{{{instance}}}} worst worker {STOOD_STILL} (last 5m){AT}", "D")], "s",
                       "How late each service's asyncio event loop ran a timer that was due "
                       "(aiwatch_event_loop_delay_seconds, ASGI and grpc.aio servers): p99 and mean per service, "
                       "left axis. A prompt loop stays around a millisecond; a starved one (CPU-bound work on the "
                       "loop, a saturated CPU) slows every request and shows as network time on its callers (the "
                       "panel to the left). Right axis: the share of the time each replica's loop stood still "
                       "(seconds late per second watched; about 1% when prompt; the mean over the workers of a "
                       "multiprocess target, so one worker stalled 60% among four reads 15%), what "
                       "AiwatchEventLoopDelayHigh reads: a stall of seconds is one sample to the p99 and the mean, "
                       "but counts by its length here. 'worst worker': the share of the last 5 minutes (whatever "
                       "the dashboard's range) the worst worker of each replica stood still, by its own sampler "
                       "(aiwatch_event_loop_stalled_ratio, the largest of a merged target's live workers), which "
                       "the alert reads too; none from an aiwatch without that gauge.",
                       overrides=[{"matcher": {"id": "byRegexp", "options": f".* {STOOD_STILL}.*"},
                                   "properties": [{"id": "unit", "value": "percentunit"},
                                                  {"id": "custom.axisPlacement", "value": "right"}]}]),
            w=8)
    phases = timeseries(PHASE_TITLE, [target(q.phase_split(W, SVC, MDL), "{{phase}}" + AT)], "s",
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
    lay.add(timeseries("Throughput", [target(q.throughput(W, SVC), "{{service}}" + AT)], "reqps"), w=6)
    lay.add(timeseries("Error ratio", [target(q.error_ratio(W, SVC), "{{service}}" + AT)], "percentunit",
                       "Share of requests with an HTTP 5xx or failed gRPC status."), w=6)
    lay.add(timeseries(LINK_TITLE, [target(q.link_throughput(W, SVC), "{{service}} → {{peer}}" + AT)], "Bps",
                       "Bytes instrumented clients sent to and received from each peer (aiwatch_client_bytes_total, "
                       "both directions) per second of network time to it (aiwatch_network_duration_seconds), not "
                       "of wall time. Small calls are latency-bound: the figure means most for large payloads."),
            w=6)
    lay.add(timeseries(CAVEATS_TITLE,
                       [target(q.network_clamped_share(W, SVC), "network counted as 0: {{service}} → {{peer}}" + AT),
                        target(q.unmeasured_share(W, SVC), "no network time: {{service}} → {{peer}}" + AT, "B"),
                        target(q.overhead_clamped_share(W, SVC), "overhead counted as 0: {{service}}" + AT, "C"),
                        target(q.unclosed_share(W, SVC), "dropped unclosed (WSGI): {{service}}" + AT, "D")],
                       "percentunit",
                       "Share of each service's calls or requests the latency split could not measure as it is. "
                       "Network counted as 0: the peer reported more time than the caller saw the call take "
                       "(aiwatch_network_clamped_total), so the network panel reads low and the peer's time high. No "
                       "network time: no total came back from the peer (an error or a timeout before it answered, a "
                       "proxy that drops Server-Timing) or the call was retried; their whole time counts as the "
                       "peer's in the diagnosis (peers that never report are left out). "
                       "Overhead counted as 0: the request's named phases added up to more than it (concurrent "
                       "phases, clock anomalies; aiwatch_overhead_clamped_total), so its phase stack adds up to more "
                       "than its time. Dropped unclosed: WSGI responses the server never closed "
                       "(aiwatch_unclosed_responses_total), each recorded as it stood when dropped. Empty when none."),
            w=6)
    lay.add(timeseries(BACKGROUND_TITLE,
                       [target(q.background_phase_quantile(0.99, W, SVC), f"{{{{service}}}} {{{{phase}}}} p99{AT}"),
                        target(q.background_phase_mean(W, SVC), f"{{{{service}}}} {{{{phase}}}} mean{AT}", "B")], "s",
                       "Phases recorded outside any request (aiwatch_background_phase_duration_seconds): background "
                       "workers and batch jobs in the services' processes, and code a request ran in another thread "
                       "without its context (loop.run_in_executor). Not request time: the panels above and the "
                       "diagnosis leave them out. Empty when none."), w=24)

    lay.row("AI traffic: real-time vs batch, streams, fallbacks, model versions")
    p95 = dict(QUANTILES)["p95"]
    lay.add(timeseries("Request latency p95: real-time vs batch",
                       [target(q.latency_by_class(p95, W, SVC), f"{{{{service}}}} {{{{traffic_class}}}} p95{AT}",
                               exemplar=True)],
                       "s", "Request latency p95 per service and traffic_class (the aiwatch-traffic-class header or "
                            "a route rule), side by side: batch traffic raising real-time latency on the same "
                            "replicas shows as the realtime line climbing with the batch rate (next panel). SLOs and "
                            "autoscaling signals count real-time traffic only."))
    lay.add(timeseries("Throughput per traffic class",
                       [target(q.throughput_by_class(W, SVC), f"{{{{service}}}} {{{{traffic_class}}}}{AT}")],
                       "reqps"))
    lay.add(timeseries("Time to first chunk (streamed responses)",
                       [target(q.first_chunk_quantile(quantile, W, SVC), f"{{{{service}}}} {{{{route}}}} {name}{AT}",
                               chr(65 + i), exemplar=name == "p95")
                        for i, (name, quantile) in enumerate(QUANTILES[:2])], "s",
                       "Time from the request's start to the first body chunk (not the headers) of responses "
                       "streamed in two chunks or more, and of gRPC server streams. The points on the p95 line are "
                       "exemplars: one traced stream each, which opens its trace."), w=8)
    lay.add(timeseries("Time to first token",
                       [target(q.first_token_quantile(quantile, W, SVC, MDL),
                               f"{{{{model}}}} {{{{traffic_class}}}} {name}{AT}", chr(65 + i),
                               exemplar=name == "p95")
                        for i, (name, quantile) in enumerate(QUANTILES[:2])], "s",
                       "OpenTelemetry's gen_ai.server.time_to_first_token (aiwatch.record_tokens)."), w=8)
    lay.add(timeseries("Time per output token",
                       [target(q.per_output_token_quantile(quantile, W, SVC, MDL),
                               f"{{{{model}}}} {{{{traffic_class}}}} {name}{AT}", chr(65 + i),
                               exemplar=name == "p95")
                        for i, (name, quantile) in enumerate(QUANTILES[:2])], "s",
                       "OpenTelemetry's gen_ai.server.time_per_output_token."), w=8)
    lay.add(timeseries("Token usage", [target(q.token_rate(W, SVC, MDL), "{{model}} {{token_type}}" + AT)],
                       "short", "Tokens per second by model and gen_ai.token.type (input, output)."), w=8)
    lay.add(timeseries("Degraded share", [target(q.degraded_share(W, SVC, MDL), "{{model}} {{reason}}" + AT)],
                       "percentunit", "Share of each service's responses served by a fallback (aiwatch.degraded: "
                                      "a cached prediction, a smaller model, a default answer), by model and "
                                      "reason. A scale-out signal: the service is answering, but not with its "
                                      "model."), w=8)
    lay.add(timeseries("Model versions: error share",
                       [target(q.version_error_ratio(W, SVC, MDL), "{{model}} {{model_version}}" + AT)],
                       "percentunit", "Share of each model version's requests with an error status "
                                      "(set_model(model, version)): a canary against the stable version."), w=8)
    lay.add(timeseries("Model versions: model time p95",
                       [target(q.version_latency(p95, W, SVC, MDL), "{{model}} {{model_version}}" + AT, exemplar=True)],
                       "s",
                       "The inference phase's p95 per model version."), w=24)

    lay.row("Resources: GPUs, queues, batching, cache")
    lay.add(table("GPUs", [target(q.gpu_table_rows(reading, "$gpu_limit"), ref=chr(65 + i), instant=True)
                           for i, (reading, _) in enumerate(Q.GPU_GAUGES)],
                  ("Latest value per GPU, from dcgm-exporter (DCGM_FI_*)" if dcgm else
                   "Latest value per GPU; empty when the service has no GPU collector")
                  + f". Every GPU of a fleet of up to {EVERY_GPU_UP_TO}; of a larger one those needing attention "
                  "first: up to $gpu_limit down, and the $gpu_limit hottest, with the fullest memory, busiest and "
                  "idlest (the panels below draw the fleet's distribution).",
                  rename={f"Value #{chr(65 + i)}": field for i, (field, _) in enumerate(Q.GPU_GAUGES)}), w=24)
    def per_gpu(title: str, reading: str, unit: str, w: int, what: str) -> None:
        """A reading of a fleet's GPUs over time: the fleet's min / median / max over every GPU and the $gpu_limit
        GPUs ranked first over the dashboard's range (the same GPUs at every step: a topk at each step would
        draw more of them, broken), so a panel draws as many lines for 4 000 GPUs as for 10."""
        gpu = "GPU {{gpu}} {{uuid}}" + AT
        targets = [target(q.gpu_fleet(reading), "fleet {{stat}}" + AT, "A"),
                   target(q.gpu_ranked(reading, "$gpu_limit", "$__range"), f"{what[0]} {gpu}", "B")]
        if len(what) > 1:
            targets.append(target(q.gpu_ranked(reading, "$gpu_limit", "$__range", lowest=True), f"{what[1]} {gpu}",
                                  "C"))
        ranked = " and the $gpu_limit ".join(what)
        lay.add(timeseries(title, targets, unit,
                           f"The fleet's min / median / max over every GPU, and the $gpu_limit {ranked} GPUs by "
                           "mean over the dashboard's range (a small fleet: every GPU). Raise the GPU limit "
                           "variable to draw more.",
                           overrides=[{"matcher": {"id": "byRegexp", "options": "fleet .*"},
                                       "properties": [{"id": "custom.lineWidth", "value": 2}]}]), w=w)

    per_gpu("GPU utilization", "utilization", "percentunit", 12, ("busiest", "idlest"))
    per_gpu("GPU power", "power_watts", "watt", 6, ("highest-power",))
    per_gpu("GPU temperature", "temperature_celsius", "celsius", 6, ("hottest",))
    per_gpu("GPU memory used", "memory_used_bytes", "bytes", 6, ("fullest",))
    lay.add(timeseries("Queue depth", [target(q.queue_depth(), "{{queue}}" + AT)], "short"), w=6)
    lay.add(timeseries("Requests in flight", [target(q.in_flight(SVC), "{{service}}" + AT)], "short"), w=6)
    lay.add(timeseries("Mean batch size", [target(q.batch_size(W, MDL), "{{model}}" + AT)], "short"), w=6)
    lay.add(timeseries("Feature-cache hit ratio", [target(q.cache_hit_ratio(W), "{{cache}}" + AT)], "percentunit"),
            w=24, h=6)

    lay.row("Drift: which input features moved")
    lay.add(table("Per-feature drift (latest evaluation)",
                  [target(q.drift_gauge(metric, MDL), ref=chr(65 + i), instant=True)
                   for i, (_, metric) in enumerate(Q.DRIFT_GAUGES)],
                  "Sorted by score; detected = 1 means the test found drift.",
                  rename={"Value #A": "score", "Value #B": "p-value", "Value #C": "detected"}, sort="score"),
            w=12, h=10)
    lay.add(timeseries("Drift score over time",
                       [target(q.drift_gauge(Q.DRIFT_SCORE.name, MDL, 'feature=~"$feature"'),
                               "{{feature}} {{test}}" + AT)], "short"), w=12, h=10)
    def distribution(title: str, reference: str, description: str) -> dict[str, Any]:
        return {"type": "barchart", "title": title, "description": description,
                "targets": [target(q.reference_share_for(FEATURE, reference), ref="A", instant=True),
                            target(q.live_share_for("$__range", FEATURE, reference), ref="B", instant=True)],
                "transformations": [{"id": "merge", "options": {}},
                                    {"id": "organize", "options": {
                                        "excludeByName": {"Time": True, "model": True, "feature": True,
                                                          "reference": True},
                                        "renameByName": {"Value #A": "reference share", "Value #B": "live share"}}}],
                "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
                "options": {"xField": "bin", "orientation": "vertical", "groupWidth": 0.7, "barWidth": 0.9}}

    dist = distribution("Reference vs live distribution of $feature (reference profile $reference)", REFERENCE,
                        "The reference profile's share of each bin vs the live share over the range, of the replicas "
                        "on that profile. One panel per reference profile (repeated over $reference): while a "
                        "re-baselined profile rolls out, the old and the new one bin by other edges under the same "
                        "bin index, and one's shares beside the other's mean nothing.")
    dist.update({"repeat": "reference", "repeatDirection": "h", "maxPerRow": 2})
    lay.add(dist, w=24, h=10)
    # Grafana lists a variable's values from the series' label values, and an absent label is none: the panels
    # repeated over $reference never show the replicas whose series have no reference label
    lay.add(distribution(UNLABELLED_TITLE, 'reference=""',
                         "The same, of the replicas whose bins carry no reference label: an aiwatch older than the "
                         "label, still running during an upgrade. The panels repeated over $reference leave them out "
                         "(Grafana lists no empty value); empty once every replica runs a newer aiwatch."),
            w=24, h=8)
    missing = table(
        "Missing values per feature: live vs reference",
        [target(q.missing_share("$__range", MDL), ref="A", instant=True),
         target(q.reference_missing_share(MDL), ref="B", instant=True),
         target(f"{q.missing_share('$__range', MDL)}\n- on ({', '.join((*SCOPE, *DRIFT_FEATURE))})\n"
                f"{q.reference_missing_share(MDL)}", ref="C", instant=True),
         target(q.missing_counted("$__range", MDL), ref="D", instant=True)],
        "Each feature's share of missing live values over the range (None, NaN or inf, or the key absent from the "
        "row), over the replicas of each reference profile (a rollout has a row per profile, by its reference "
        "label), against that profile's share. Missing values are left out of drift, so "
        f"the drift panels cannot see them. AiwatchFeatureMissing fires when the rise is over "
        f"{MISSING_SHARE_INCREASE * 100:.4g} percentage points (red; drift.missing_share_increase) over "
        f"drift.psi_window, from at least {MISSING_MIN_COUNTED:g} values and missing ones.",
        rename={"Value #A": "live missing", "Value #B": "reference missing", "Value #C": "rise",
                "Value #D": "values counted"}, sort="rise")
    missing["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byRegexp", "options": "live missing|reference missing|rise"},
         "properties": [{"id": "unit", "value": "percentunit"}, {"id": "decimals", "value": 1}]},
        {"matcher": {"id": "byName", "options": "rise"},
         "properties": [{"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                            {"color": "green", "value": None}, {"color": "red", "value": MISSING_SHARE_INCREASE}]}}]},
        {"matcher": {"id": "byName", "options": "values counted"}, "properties": [{"id": "decimals", "value": 0}]}]
    lay.add(missing, w=12)
    quality = (*SCOPE, "model", "metric")
    lay.add(timeseries("Realised model quality vs objective",
                       [target(q.quality_gauge(Q.MODEL_QUALITY.name, quality), "{{model}} {{metric}}" + AT, "A"),
                        target(q.quality_gauge(Q.MODEL_QUALITY_OBJECTIVE.name, quality),
                               "{{model}} {{metric}} objective" + AT, "B")], "short",
                       "Delayed labels joined to the prediction log (aiwatch quality): each model's latest labelled "
                       "window, against the objective AiwatchModelQualityLow compares it with (a floor for accuracy "
                       "/ precision / recall, a ceiling for MAE / RMSE). Next to drift: the inputs moved, did the "
                       "quality?"), w=12)
    lay.add(timeseries("Prediction log: what became of kept records",
                       [target(q.prediction_log_records(W), "{{log}} {{result}}" + AT)], "cps",
                       "Records per second of each prediction log (aiwatch.PredictionLog) by result: queued, then "
                       "written to the sink; or dropped (the queue was full), failed (the sink raised) or lost (a "
                       "Parquet file that could not be finished); recoverable (orange): written, but their file "
                       "could not be finished, so they wait in its journal until the sink makes them into a file (a "
                       "minute after the disk has room again). Drift checks and label joins on the log miss every "
                       "record that is not in a finished file; AiwatchPredictionLogLosingRecords fires on the share "
                       "of dropped, failed, lost and recoverable.",
                       overrides=[{"matcher": {"id": "byRegexp", "options": f".*{result}.*"},
                                   "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}
                                  for result, color in (("dropped", "red"), ("failed", "red"), ("lost", "red"),
                                                        ("recoverable", "orange"))]), w=12)
    lay.add(timeseries("Prediction log: journals at recovery, files completed early",
                       [target(q.prediction_log_recovery_files(), "{{log}} {{result}}" + AT, "A"),
                        target(q.prediction_log_forced_rotations(W), "{{log}} forced rotations/s" + AT, "B")],
                       "short",
                       "What each prediction log's ParquetSinks did with the journals they recovered, by result, "
                       "summed over replicas since each process started (the value: a start counts before the "
                       "first scrape): torn, set_aside and failed (red) are rows in no finished file, which "
                       "AiwatchPredictionLogRecoveryIncomplete fires on. Forced rotations: files completed early "
                       "because max_open_files were open (more models written at once than the cap: small files).",
                       overrides=[{"matcher": {"id": "byRegexp", "options": f".* {result}.*"},
                                   "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}
                                  for result in UNFINISHED_RECOVERY_RESULTS]), w=12)

    lay.row("Alerts and autoscaling")
    firing = series("ALERTS", 'alertstate=~"firing|pending"', SCOPE_MATCH)
    lay.add(table("Firing and pending alerts", [target(firing, instant=True)],
                  "Alerts from the aiwatch rules; their runbook_url annotation is in Alertmanager and the console."),
            w=24, h=6)
    for (name, unit, help_text), expr in zip(AUTOSCALING_SIGNALS, q.autoscaling(W), strict=True):
        grafana_unit = {"ratio": "percentunit", "seconds": "s", "req/s": "reqps"}.get(unit, "short")
        lay.add(stat(name, expr, grafana_unit, help_text), w=24 // len(AUTOSCALING_SIGNALS) + 0, h=5)

    return {
        "title": "aiwatch (GPUs from DCGM)" if dcgm else "aiwatch",
        "uid": "aiwatch-console-dcgm" if dcgm else "aiwatch-console", "tags": ["aiwatch"], "editable": True,
        "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s", "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "description": "aiwatch: where inference latency goes, GPUs, queues, cache, drift and alerts "
                       f"{'(GPUs from dcgm-exporter) ' if dcgm else ''}"
                       "(generated by scripts/build_dashboard.py from aiwatch.console.queries).",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "refresh": 1, "hide": 0},
            *[variable(label, label.capitalize(), f"label_values({Q.REQUESTS.count}, {label})") for label in SCOPE],
            variable("service", "Service", f"label_values({series(Q.REQUESTS.count, SCOPE_MATCH)}, service)"),
            variable("model", "Model", f"label_values({series(Q.PHASES.count, SCOPE_MATCH)}, model)"),
            variable("feature", "Feature", f"label_values({series(Q.DRIFT_SCORE, MDL, SCOPE_MATCH)}, feature)"),
            variable("reference", "Reference profile",
                     f"label_values({series(Q.REFERENCE_RATIO, FEATURE, SCOPE_MATCH)}, reference)"),
            {"name": "gpu_limit", "label": "GPUs per panel", "type": "custom", "query": GPU_LIMITS,
             "description": "How many GPUs each per-GPU panel draws: the busiest (and idlest), hottest... over the "
                            "range, besides the fleet's min / median / max.",
             "current": {"selected": True, "text": GPU_LIMITS.split(",")[0], "value": GPU_LIMITS.split(",")[0]},
             "options": [{"selected": i == 0, "text": v, "value": v} for i, v in enumerate(GPU_LIMITS.split(","))],
             "multi": False, "includeAll": False, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": lay.panels,
    }


def render(gpu_source: str = "aiwatch") -> str:
    return json.dumps(build(gpu_source), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard is stale")
    args = parser.parse_args()
    stale = 0
    for gpu_source, out in OUT.items():
        text = render(gpu_source)
        if args.check:
            if not out.exists() or out.read_text() != text:
                print(f"{out} is stale: run python scripts/build_dashboard.py", file=sys.stderr)
                stale = 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
