"""Render aiwatch's Prometheus recording and alerting rules from a :class:`~aiwatch.rules.config.RulesConfig`.

    >>> from aiwatch.rules import RulesConfig, render
    >>> files = render(RulesConfig())
    >>> sorted(files)
    ['aiwatch-alerts.rules.yml', 'aiwatch-recording.rules.yml']

Recording rules follow Prometheus' ``level:metric:operation`` naming. Every metric name they read comes from
:mod:`aiwatch.metrics`; the fleet drift rules come from :mod:`aiwatch.drift.promql`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.utils import floatToGoString

from aiwatch.drift.promql import JS_RECORD, PSI_RECORD, fleet_js_expr, fleet_psi_expr
from aiwatch.rules.config import BurnAlert, RulesConfig
from aiwatch.rules.yamlout import dump

RECORDING_FILE = "aiwatch-recording.rules.yml"
ALERTING_FILE = "aiwatch-alerts.rules.yml"
QUANTILES = (0.5, 0.9, 0.99)

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration (``1h30m`` -> 5400)."""
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", text))


def _num(value: float) -> str:
    return format(value, ".12g")


def _pct(value: float) -> str:
    return format(value * 100, ".4g") + "%"


def _ms(seconds: float) -> str:
    return f"{_num(seconds * 1000)}ms" if seconds < 1 else f"{_num(seconds)}s"


def _sel(*matchers: str) -> str:
    parts = [m.strip().rstrip(",") for m in matchers if m and m.strip()]
    return "{" + ", ".join(parts) + "}" if parts else ""


@dataclass
class Alert:
    """One alerting rule before it is written out."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self, runbook_base: str) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": runbook_url(runbook_base, self.name),
            },
        }


def runbook_url(base: str, alert: str) -> str:
    """Where an alert's runbook page lives: ``<base>/docs/runbooks/<alert>.md``."""
    return f"{base.rstrip('/')}/docs/runbooks/{alert}.md"


def _record(name: str, expr: str, **labels: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def burn_windows(cfg: RulesConfig) -> list[str]:
    """Every window the burn-rate alerts read, shortest first."""
    windows = {w for alert in (cfg.slo.page, cfg.slo.ticket) for pair in alert.windows for w in (pair.long, pair.short)}
    return sorted(windows, key=duration_seconds)


# --- recording rules ----------------------------------------------------------------------------------------------


def slo_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    req = cfg.selectors.requests
    le = floatToGoString(cfg.slo.latency_threshold_seconds)  # type: ignore[no-untyped-call]
    rules = []
    for w in burn_windows(cfg):
        total = f"sum by (service) (rate(aiwatch_request_duration_seconds_count{_sel(req)}[{w}]))"
        errors = ("sum by (service) (rate(aiwatch_request_duration_seconds_count"
                  f"{_sel(req, f'status=~{chr(34)}{cfg.slo.error_status}{chr(34)}')}[{w}]))")
        fast = ("sum by (service) (rate(aiwatch_request_duration_seconds_bucket"
                f"{_sel(req, f'le={chr(34)}{le}{chr(34)}')}[{w}]))")
        rules += [
            _record(f"service:aiwatch_requests:rate{w}", total),
            # "or 0 * total": a service with traffic and no error series yet has an error ratio of 0, not none
            _record(f"service:aiwatch_request_errors:ratio_rate{w}", f"({errors} or 0 * {total})\n/\n{total}"),
            _record(f"service:aiwatch_request_slow:ratio_rate{w}", f"1 - (\n  {fast}\n/\n  {total}\n)"),
        ]
    return rules


def latency_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    lat, req = cfg.latency, cfg.selectors.requests
    w = lat.window
    model = f'phase=~"{lat.model_phases}"'
    other = f'phase!~"{lat.model_phases}"'
    rules = []
    for q in QUANTILES:
        rules.append(_record(
            f"service_model_phase:aiwatch_phase_duration_seconds:p{_num(q * 100)}",
            f"histogram_quantile({_num(q)}, sum by (service, model, phase, le) "
            f"(rate(aiwatch_phase_duration_seconds_bucket{_sel(req)}[{w}])))"))
    rules += [
        _record("service_model:aiwatch_model_latency_seconds:p99",
                f"histogram_quantile(0.99, sum by (service, model, le) "
                f"(rate(aiwatch_phase_duration_seconds_bucket{_sel(req, model)}[{w}])))"),
        # the caller-side network time is one more non-model "phase" (service = the caller, peer = the callee)
        _record("service_phase:aiwatch_non_model_latency_seconds:p99",
                f"histogram_quantile(0.99, sum by (service, phase, le) "
                f"(rate(aiwatch_phase_duration_seconds_bucket{_sel(req, other)}[{w}])))\nor\n"
                f'label_replace(histogram_quantile(0.99, sum by (service, peer, le) '
                f'(rate(aiwatch_network_duration_seconds_bucket{_sel(cfg.selectors.network)}[{w}]))), '
                f'"phase", "network", "", "")'),
        _record("service:aiwatch_time_outside_model:ratio",
                f"sum by (service) (rate(aiwatch_phase_duration_seconds_sum{_sel(req, other)}[{w}]))\n/\n"
                f"sum by (service) (rate(aiwatch_phase_duration_seconds_sum{_sel(req)}[{w}]))"),
        _record("service:aiwatch_requests_in_flight:sum",
                f"sum by (service) (aiwatch_requests_in_flight{_sel(req)})"),
        _record("service:aiwatch_replicas:count",
                f"count by (service) (aiwatch_requests_in_flight{_sel(req)})"),
    ]
    return rules


def capacity_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    qs, gs, cs = _sel(cfg.selectors.queue), _sel(cfg.selectors.gpu), _sel(cfg.selectors.cache)
    g, c = cfg.gpu, cfg.cache
    total = f"sum by (cache) (rate(aiwatch_feature_cache_requests_total{cs}[{c.window}]))"
    return [
        _record("queue:aiwatch_queue_depth:sum", f"sum by (queue) (aiwatch_queue_depth{qs})"),
        # the replicas of a queue are the scrape targets exporting its depth gauge (see docs/autoscaling.md)
        _record("queue:aiwatch_queue_replicas:count", f"count by (queue) (aiwatch_queue_depth{qs})"),
        _record("queue:aiwatch_queue_depth:per_replica",
                f"sum by (queue) (aiwatch_queue_depth{qs})\n/\ncount by (queue) (aiwatch_queue_depth{qs})"),
        _record("queue:aiwatch_desired_replicas:queue_depth",
                f"clamp_min(ceil(sum by (queue) (aiwatch_queue_depth{qs}) / {_num(cfg.queue.target_per_replica)}), 1)"),
        _record(f"instance_gpu:aiwatch_gpu_utilization_ratio:avg{g.window}",
                f"avg_over_time(aiwatch_gpu_utilization_ratio{gs}[{g.window}])"),
        _record("instance_gpu:aiwatch_gpu_memory_headroom:ratio",
                f"1 - aiwatch_gpu_memory_used_bytes{gs} / (aiwatch_gpu_memory_total_bytes{gs} > 0)"),
        _record("job:aiwatch_gpu_utilization_ratio:avg", f"avg by (job) (aiwatch_gpu_utilization_ratio{gs})"),
        _record("job:aiwatch_gpu_replicas:count",
                f"count by (job) (count by (job, instance) (aiwatch_gpu_utilization_ratio{gs}))"),
        _record("job:aiwatch_desired_replicas:gpu",
                f"clamp_min(ceil(\n  count by (job) (count by (job, instance) (aiwatch_gpu_utilization_ratio{gs}))\n"
                f"  * avg by (job) (aiwatch_gpu_utilization_ratio{gs})\n  / {_num(g.target_utilization)}\n), 1)"),
        _record(f"cache:aiwatch_feature_cache_requests:rate{c.window}", total),
        _record(f"cache:aiwatch_feature_cache_hit:ratio_rate{c.window}",
                f"(sum by (cache) (rate(aiwatch_feature_cache_requests_total"
                f"{_sel(cfg.selectors.cache, 'result=' + chr(34) + 'hit' + chr(34))}[{c.window}])) or 0 * {total})"
                f"\n/\n{total}"),
    ]


def drift_records(cfg: RulesConfig) -> list[dict[str, Any]]:
    sel = _sel(cfg.selectors.drift)
    rules = []
    for w in cfg.drift.windows:
        rules.append(_record(PSI_RECORD.format(window=w), fleet_psi_expr(w, sel)))
        rules.append(_record(JS_RECORD.format(window=w), fleet_js_expr(w, sel)))
    return rules


# --- alerts -------------------------------------------------------------------------------------------------------


def _burn_expr(record: str, budget: float, alert: BurnAlert) -> str:
    pairs = []
    for p in alert.windows:
        pairs.append(f"(\n  {record}{p.long} / {_num(budget)} > {_num(p.factor)}\nand\n"
                     f"  {record}{p.short} / {_num(budget)} > {_num(p.factor)}\n)")
    return "\nor\n".join(pairs)


def _burn_text(alert: BurnAlert, period: str) -> str:
    parts = []
    for p in alert.windows:
        spent = p.factor * duration_seconds(p.long) / duration_seconds(period)
        parts.append(f"{_num(p.factor)}x over both {p.long} and {p.short} ({_pct(spent)} of the {period} budget "
                     f"spent in {p.long})")
    return " or ".join(parts)


def slo_alerts(cfg: RulesConfig) -> list[Alert]:
    s = cfg.slo
    out = []
    for slo, objective, record, what in (
        ("availability", s.availability_objective, "service:aiwatch_request_errors:ratio_rate", "failed"),
        ("latency", s.latency_objective, "service:aiwatch_request_slow:ratio_rate",
         f"took longer than {_ms(s.latency_threshold_seconds)}"),
    ):
        budget = 1 - objective
        title = slo.capitalize()
        for speed, alert, severity in (("Fast", s.page, "critical"), ("Slow", s.ticket, "warning")):
            out.append(Alert(
                f"Aiwatch{title}BudgetBurn{speed}",
                _burn_expr(record, budget, alert), alert.for_, severity,
                f"{{{{ $labels.service }}}} is burning its {slo} error budget "
                f"{'fast (page)' if speed == 'Fast' else 'steadily (ticket)'}",
                f"{{{{ $labels.service }}}}: burn rate {{{{ $value | printf \"%.1f\" }}}}x over the longest window "
                f"that tripped: the share of requests that {what} is that many times the error budget. "
                f"Objective {_pct(objective)} over "
                f"{s.period}, so the error budget is {_pct(budget)} of requests; 1x spends it exactly in {s.period}. "
                f"This alert fires at {_burn_text(alert, s.period)}.",
                {"slo": slo},
            ))
    return out


def latency_alerts(cfg: RulesConfig) -> list[Alert]:
    lat = cfg.latency
    outside = ('{{ with query (printf "service:aiwatch_time_outside_model:ratio{service=%q}" $labels.service) }}'
               "{{ with . }} Share of request time outside the model: {{ . | first | value | humanizePercentage }}."
               "{{ end }}{{ end }}")
    return [
        Alert("AiwatchModelLatencyHigh",
              f"service_model:aiwatch_model_latency_seconds:p99 > {_num(lat.model_p99_seconds)}",
              lat.model_for, "warning",
              "Model {{ $labels.model }} on {{ $labels.service }} is slow",
              f"p99 of the model's own time (phases {lat.model_phases}) for {{{{ $labels.model }}}} on "
              f"{{{{ $labels.service }}}} is {{{{ $value | humanizeDuration }}}} over {lat.window}, above "
              f"{_ms(lat.model_p99_seconds)}. The time is inside the model: look at the GPU, the batch size and "
              "the model version, not at the network or the queue."),
        Alert("AiwatchNonModelLatencyHigh",
              f"service_phase:aiwatch_non_model_latency_seconds:p99 > {_num(lat.non_model_p99_seconds)}",
              lat.non_model_for, "warning",
              "{{ $labels.service }} is slow outside the model ({{ $labels.phase }})",
              f"p99 of the {{{{ $labels.phase }}}} time on {{{{ $labels.service }}}} is "
              f"{{{{ $value | humanizeDuration }}}} over {lat.window}, above {_ms(lat.non_model_p99_seconds)}. "
              f"This time is outside the model (queueing, feature fetch, network or serving overhead), so scaling "
              f"or tuning the model will not fix it.{outside}"),
    ]


def capacity_alerts(cfg: RulesConfig) -> list[Alert]:
    q, c = cfg.queue, cfg.cache
    queue_desc = ("Queue {{ $labels.queue }} holds {{ $value | printf \"%.1f\" }} items per replica (alert above "
                  "{limit}; the autoscaling target is " + _num(q.target_per_replica) + " per replica). If the "
                  "autoscaler is not adding replicas it is at its maximum or cannot read the metric.")
    return [
        Alert("AiwatchQueueBacklog", f"queue:aiwatch_queue_depth:per_replica > {_num(q.per_replica_warning)}",
              q.for_, "warning", "Queue {{ $labels.queue }} is backing up",
              queue_desc.replace("{limit}", _num(q.per_replica_warning))),
        Alert("AiwatchQueueBacklog", f"queue:aiwatch_queue_depth:per_replica > {_num(q.per_replica_critical)}",
              q.for_, "critical", "Queue {{ $labels.queue }} is far behind",
              queue_desc.replace("{limit}", _num(q.per_replica_critical))),
        Alert("AiwatchFeatureCacheHitRatioLow",
              f"cache:aiwatch_feature_cache_hit:ratio_rate{c.window} < {_num(c.hit_ratio_min)}\n"
              f"and\ncache:aiwatch_feature_cache_requests:rate{c.window} > {_num(c.min_requests_per_second)}",
              c.for_, "warning", "Feature cache {{ $labels.cache }} hit ratio dropped",
              f"Only {{{{ $value | humanizePercentage }}}} of lookups in feature cache {{{{ $labels.cache }}}} hit "
              f"over {c.window} (alert below {_pct(c.hit_ratio_min)}). Misses go to the feature store: expect "
              "slower `features` phases and more load on the store."),
    ]


def gpu_alerts(cfg: RulesConfig) -> list[Alert]:
    g, gs = cfg.gpu, _sel(cfg.selectors.gpu)
    memory_desc = ("GPU {{ $labels.gpu }} ({{ $labels.name }}) on {{ $labels.instance }} has only "
                   "{{ $value | humanizePercentage }} of its memory free (alert below {limit}). The next larger "
                   "batch or model load can fail with out-of-memory.")
    # "and"/"unless" bind tighter than "or": the target-up condition applies to the disappeared-metrics branch only
    absent = (f"(aiwatch_gpu_nvml_up{gs} == 0)\nor\n(aiwatch_gpu_up{gs} == 0)\nor\n(\n"
              f"  max by (job, instance) (max_over_time(aiwatch_gpu_nvml_up{gs}[{g.absent_lookback}]))\n"
              f"  unless\n  max by (job, instance) (aiwatch_gpu_nvml_up{gs})\n  and on (job, instance)\n"
              f"  (up == 1)\n)")
    return [
        Alert("AiwatchGpuSaturated", f"instance_gpu:aiwatch_gpu_utilization_ratio:avg{g.window} > "
              f"{_num(g.utilization_saturated)}", g.saturated_for, "warning",
              "GPU {{ $labels.gpu }} on {{ $labels.instance }} is saturated",
              f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.name }}}}) on {{{{ $labels.instance }}}} ran kernels "
              f"{{{{ $value | humanizePercentage }}}} of the time over {g.window} (alert above "
              f"{_pct(g.utilization_saturated)}). Requests queue behind the model: add replicas or shed load."),
        Alert("AiwatchGpuMemoryNearlyFull", f"instance_gpu:aiwatch_gpu_memory_headroom:ratio < "
              f"{_num(g.memory_headroom_warning)}", g.memory_for, "warning",
              "GPU {{ $labels.gpu }} on {{ $labels.instance }} is nearly out of memory",
              memory_desc.replace("{limit}", _pct(g.memory_headroom_warning))),
        Alert("AiwatchGpuMemoryNearlyFull", f"instance_gpu:aiwatch_gpu_memory_headroom:ratio < "
              f"{_num(g.memory_headroom_critical)}", g.memory_for, "critical",
              "GPU {{ $labels.gpu }} on {{ $labels.instance }} is about to run out of memory",
              memory_desc.replace("{limit}", _pct(g.memory_headroom_critical))),
        Alert("AiwatchGpuMetricsAbsent", absent, g.absent_for, "warning",
              "GPU metrics of {{ $labels.instance }} are missing",
              "{{ $labels.instance }} reports no usable GPU metrics{{ with $labels.gpu }} for GPU {{ . }}{{ end }}: "
              "value 0 means NVML or the GPU did not answer the poll; value 1 means the target is up but stopped "
              f"exporting the GPU metrics it exported within the last {g.absent_lookback}. GPU alerts and the GPU "
              "autoscaling signal are blind meanwhile."),
        Alert("AiwatchGpuXidErrors", f"increase(aiwatch_gpu_xid_errors_total{gs}[{g.xid_window}]) > 0",
              g.xid_for, "warning", "GPU {{ $labels.gpu }} on {{ $labels.instance }} reported XID errors",
              f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.name }}}}, {{{{ $labels.uuid }}}}) on "
              f"{{{{ $labels.instance }}}} reported {{{{ $value | printf \"%.0f\" }}}} XID error(s) in the last "
              f"{g.xid_window}. XIDs are driver-reported GPU faults (ECC, fallen off the bus, illegal memory "
              "access); the node's kernel log names the XID code."),
    ]


def drift_alerts(cfg: RulesConfig) -> list[Alert]:
    d, ds = cfg.drift, _sel(cfg.selectors.drift)
    psi = PSI_RECORD.format(window=d.psi_window)
    js = JS_RECORD.format(window=d.psi_window)
    js_text = ('{{ with query (printf "' + js + '{model=%q, feature=%q}" $labels.model $labels.feature) }}'
               '{{ with . }} Jensen-Shannon distance: {{ . | first | value | printf "%.3f" }}.{{ end }}{{ end }}')
    return [
        Alert("AiwatchLocalInputDrift",
              f"max by (model, feature, test) (\n  aiwatch_drift_score{ds}\n  and\n"
              f"  (aiwatch_drift_detected{ds} == 1)\n)",
              d.local_for, "info", "Input feature {{ $labels.feature }} of {{ $labels.model }} drifted",
              "The {{ $labels.test }} test on the latest window of {{ $labels.feature }} (model {{ $labels.model }}) "
              "found drift against the reference profile on at least one replica; statistic "
              "{{ $value | printf \"%.3g\" }}. One replica's window can be unrepresentative: compare with the fleet "
              "PSI before acting."),
        Alert("AiwatchFleetInputDrift", f"{psi} > {_num(d.psi_threshold)}", d.fleet_for, "warning",
              "Input feature {{ $labels.feature }} of {{ $labels.model }} shifted across the fleet",
              f"PSI of {{{{ $labels.feature }}}} (model {{{{ $labels.model }}}}) over all replicas in the last "
              f"{d.psi_window} is {{{{ $value | printf \"%.3f\" }}}} (alert above {_num(d.psi_threshold)}; below "
              f"0.1 is stable, 0.1-0.2 moderate, above 0.2 significant).{js_text}"),
    ]


def meta_alerts(cfg: RulesConfig) -> list[Alert]:
    m, t = cfg.meta, _sel(cfg.selectors.targets)
    return [
        Alert("AiwatchInstrumentationErrors",
              f"sum by (job, instance, component) (increase(aiwatch_instrumentation_errors_total"
              f"{_sel(cfg.selectors.instrumentation)}[{m.instrumentation_window}])) > 0",
              m.instrumentation_for, "warning", "aiwatch is swallowing its own errors on {{ $labels.instance }}",
              f"aiwatch's {{{{ $labels.component }}}} component on {{{{ $labels.instance }}}} failed "
              f"{{{{ $value | printf \"%.0f\" }}}} time(s) in the last {m.instrumentation_window}. Requests were "
              "served, but the metrics of that component are incomplete: the app's logs carry the first error of "
              "each burst."),
        Alert("AiwatchTargetDown", f"up{t} == 0", m.target_down_for, "warning",
              "Prometheus cannot scrape {{ $labels.instance }}",
              "Scrapes of {{ $labels.instance }} (job {{ $labels.job }}) have failed for "
              f"{m.target_down_for}: its metrics, alerts and autoscaling signals are stale."),
        Alert("AiwatchTargetAbsent", f"absent(up{t})", m.target_absent_for, "critical",
              "No aiwatch scrape target is known to Prometheus",
              f"Prometheus has no target matching up{t} (job {{{{ $labels.job }}}}) for {m.target_absent_for}: "
              "service discovery or the scrape config lost the service, and every aiwatch alert is silent."),
    ]


def alerts(cfg: RulesConfig) -> list[Alert]:
    """Every alerting rule, in file order."""
    return [*slo_alerts(cfg), *latency_alerts(cfg), *capacity_alerts(cfg), *gpu_alerts(cfg), *drift_alerts(cfg),
            *meta_alerts(cfg)]


def render(cfg: RulesConfig | None = None) -> dict[str, str]:
    """File name -> YAML text of the recording and alerting rule files for ``cfg`` (default config if None)."""
    cfg = (cfg or RulesConfig()).validate()
    header = ("# Generated by `aiwatch rules render` from a RulesConfig; do not edit by hand.\n"
              "# Change the config instead (`aiwatch rules defaults` prints the default one). See docs/alerts.md.\n")
    recording = {"groups": [
        {"name": "aiwatch-slo.rules", "rules": slo_records(cfg)},
        {"name": "aiwatch-latency.rules", "rules": latency_records(cfg)},
        {"name": "aiwatch-capacity.rules", "rules": capacity_records(cfg)},
        {"name": "aiwatch-drift.rules", "interval": cfg.drift.interval, "rules": drift_records(cfg)},
    ]}
    groups = [
        ("aiwatch-slo.alerts", slo_alerts(cfg)),
        ("aiwatch-latency.alerts", latency_alerts(cfg)),
        ("aiwatch-capacity.alerts", capacity_alerts(cfg)),
        ("aiwatch-gpu.alerts", gpu_alerts(cfg)),
        ("aiwatch-drift.alerts", drift_alerts(cfg)),
        ("aiwatch-meta.alerts", meta_alerts(cfg)),
    ]
    alerting = {"groups": [{"name": name, "rules": [a.rule(cfg.runbook_base_url) for a in rules]}
                           for name, rules in groups]}
    return {RECORDING_FILE: header + dump(recording), ALERTING_FILE: header + dump(alerting)}
