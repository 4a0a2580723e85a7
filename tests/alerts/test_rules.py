"""The rule renderer, the committed rule files, their promtool unit tests, the runbooks and the Alertmanager example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from aiwatch import runbooks
from aiwatch.cli import main
from aiwatch.drift.promql import (
    BIN_RATE_RECORD,
    FLEET_BINS_RECORD,
    JS_RECORD,
    PSI_RECORD,
    REFERENCE_SHARE_RECORD,
    fleet_js_expr,
    fleet_psi_expr,
    live_bin_rate_expr,
    live_bins_expr,
    reference_share_expr,
    summed_bins_expr,
)
from aiwatch.gpuseries import DCGM_METRICS
from aiwatch.metrics import exposed_sample_names
from aiwatch.rules import (
    ALERTING_FILE,
    PROMETHEUS_RULE_FILE,
    RECORDING_FILE,
    RUNBOOK_URL_PLACEHOLDER,
    ConfigError,
    RulesConfig,
    config_from_dict,
    default_config_yaml,
    load_config,
    render,
    render_prometheus_rule,
    runbook_url,
)
from aiwatch.rules.render import HANDLED_RESULTS, UNSTORED_RESULTS, burn_windows, duration_seconds
from tests.servers import REPO, require_binary, require_module

yaml = require_module("yaml")

ALERTS_DIR = REPO / "alerts"
PROMTOOL_TESTS = sorted((Path(__file__).parent / "promtool").glob("*_test.yml"))
RUNBOOKS = REPO / "aiwatch" / "runbooks"
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
SEVERITIES = {"critical", "warning", "info"}


def rule_groups(text: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(text)["groups"]
    return groups


def alert_rules(cfg: RulesConfig | None = None) -> list[dict[str, Any]]:
    return [r for g in rule_groups(render(cfg)[ALERTING_FILE]) for r in g["rules"]]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups(render()[RECORDING_FILE]) for r in g["rules"]]


# --- PromQL metric names ------------------------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
             "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, keywords, label names or strings."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![\w:])\d+(ms|[smhdwy])\b", " ", s)
    s = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", s)
    names = set()
    for name, call in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_promql_metric_names_extracts_metrics_only() -> None:
    expr = ('sum by (service, le) (rate(aiwatch_request_duration_seconds_bucket{le="0.3", status=~"5.."}[5m])) '
            '/ on (service) group_left service:x:rate5m > 1e-3 and bogus_metric offset 1h')
    assert promql_metric_names(expr) == {"aiwatch_request_duration_seconds_bucket", "service:x:rate5m",
                                         "bogus_metric"}


def check_names(exprs: list[str], where: str) -> set[str]:
    records = {r["record"] for r in recording_rules()}
    contract = exposed_sample_names() | PROMETHEUS_BUILTINS | DCGM_METRICS
    used: set[str] = set()
    for expr in exprs:
        for name in promql_metric_names(expr):
            used.add(name)
            if ":" in name:
                assert name in records, f"{where}: {name} is not a recording rule (in {expr!r})"
            else:
                assert name in contract, f"{where}: {name} is not in aiwatch/metrics.py (in {expr!r})"
    return used


def test_every_metric_in_alerts_exists_in_the_contract() -> None:
    exprs = []
    for path in sorted(ALERTS_DIR.glob("*.rules.yml")):
        exprs += [r["expr"] for g in rule_groups(path.read_text()) for r in g["rules"]]
    used = check_names(exprs, "alerts/")
    # the check saw the families of every area, so it cannot pass vacuously
    for family in ("aiwatch_request_duration_seconds_count", "aiwatch_phase_duration_seconds_bucket",
                   "aiwatch_network_duration_seconds_bucket", "aiwatch_event_loop_delay_seconds_bucket",
                   "aiwatch_queue_depth", "aiwatch_gpu_utilization_ratio",
                   "aiwatch_gpu_xid_errors_total", "aiwatch_feature_cache_requests_total", "aiwatch_drift_detected",
                   "aiwatch_feature_bin_total", "aiwatch_instrumentation_errors_total", "up"):
        assert family in used


def test_the_prediction_log_alert_reads_every_result_the_log_counts() -> None:
    from prometheus_client import CollectorRegistry

    from aiwatch import PredictionLog

    class Sink:
        def write(self, rows: Any) -> None: ...
        def flush(self) -> None: ...
        def close(self) -> None: ...

    registry = CollectorRegistry()
    with PredictionLog(Sink(), registry=registry):
        counted = {s.labels["result"] for f in registry.collect() if f.name == "aiwatch_prediction_log_records"
                   for s in f.samples if s.name.endswith("_total")}
    # a new way of losing records (or of dealing with one) must be placed in the rule; recoverable rows are written
    # rows that are in no finished file (a journal waits for a sink to start on the directory): not in storage
    stored = {"sampled_out", "written"}
    assert set(UNSTORED_RESULTS) | set(HANDLED_RESULTS) == counted - stored
    assert set(UNSTORED_RESULTS) == counted - stored - {"queued"}
    assert "recoverable" in UNSTORED_RESULTS and "recoverable" in HANDLED_RESULTS


def test_every_metric_in_the_runbooks_exists() -> None:
    exprs = []
    for page in RUNBOOKS.glob("*.md"):
        for block in re.findall(r"```promql\n(.*?)```", page.read_text(), re.S):
            exprs += [line.split("#")[0] for line in block.splitlines() if line.strip()]
    assert len(exprs) > 40
    check_names(exprs, "docs/runbooks")


# --- renderer and committed files ---------------------------------------------------------------------------------


def test_committed_rule_files_are_the_default_rendering() -> None:
    files = render(RulesConfig())
    assert sorted(p.name for p in ALERTS_DIR.glob("*.rules.yml")) == sorted(files)
    for name, text in files.items():
        assert (ALERTS_DIR / name).read_text() == text, f"alerts/{name} is stale: run `aiwatch rules render`"


def test_every_alert_is_complete() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert len(names) == 26
    for rule in rules:
        assert duration_seconds(rule["for"]) > 0, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert "{{" in rule["annotations"]["description"], f"{rule['alert']}: description has no numbers"
    assert {r["labels"]["severity"] for r in rules} == SEVERITIES


def test_recording_rules_are_named_level_metric_operation() -> None:
    for rule in recording_rules():
        level, metric, operation = rule["record"].split(":")
        assert level and metric.startswith("aiwatch_") and operation, rule["record"]


def test_burn_rate_windows_and_slo_ratios_are_recorded() -> None:
    records = {r["record"] for r in recording_rules()}
    for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        for name in ("aiwatch_requests:rate", "aiwatch_request_errors:ratio_rate", "aiwatch_request_slow:ratio_rate"):
            assert f"service:{name}{w}" in records
    for name in ("service_model_phase:aiwatch_phase_duration_seconds:p99", "service:aiwatch_time_outside_model:ratio",
                 "queue:aiwatch_queue_depth:per_replica", "instance_gpu:aiwatch_gpu_utilization_ratio:avg5m",
                 "instance_gpu:aiwatch_gpu_memory_headroom:ratio", "cache:aiwatch_feature_cache_hit:ratio_rate10m",
                 "queue:aiwatch_desired_replicas:queue_depth", "job:aiwatch_desired_replicas:gpu"):
        assert name in records


def test_fleet_drift_rules_come_from_the_drift_promql() -> None:
    cfg = RulesConfig()
    exprs = {r["record"]: r["expr"] for r in recording_rules()}
    assert exprs[REFERENCE_SHARE_RECORD] == reference_share_expr()
    rate_record = BIN_RATE_RECORD.format(window=cfg.drift.rate_window_or_default())
    assert exprs[rate_record] == live_bin_rate_expr(cfg.drift.rate_window_or_default())
    for w in cfg.drift.windows:
        bins = FLEET_BINS_RECORD.format(window=w)
        summed = duration_seconds(w) > duration_seconds(cfg.drift.raw_window_max)
        assert exprs[bins] == (summed_bins_expr(rate_record, w, duration_seconds(cfg.drift.interval)) if summed
                               else live_bins_expr(w))

        def recorded(expr: str, bins: str = bins, w: str = w) -> str:
            return expr.replace(live_bins_expr(w), bins).replace(reference_share_expr(), REFERENCE_SHARE_RECORD)
        assert exprs[PSI_RECORD.format(window=w)] == recorded(fleet_psi_expr(w))
        assert exprs[JS_RECORD.format(window=w)] == recorded(fleet_js_expr(w))
    assert exprs[FLEET_BINS_RECORD.format(window="1d")] \
        == "sum_over_time(model_feature_bin:aiwatch_feature_bin:rate5m[1d]) * 60"


def test_drift_rules_read_each_raw_drift_counter_once_per_window() -> None:
    """Prometheus evaluates every copy of a subexpression: the PSI and JS rules held sixteen copies of the fleet's
    per-bin increase, each a scan of every replica's samples over the window (4.7 s of group evaluation at 50
    replicas x 20 features x 10 bins over 1h, against 0.26 s once recorded), and AiwatchFeatureMissing scanned the
    bin counters twice at every alert evaluation. A window longer than drift.raw_window_max (1d by default) reads
    none: one increase() over every replica's day of samples was 1.44 billion samples per evaluation at 500
    replicas x 50 features x 10 bins scraped every 15 s; it sums the per-bin rate recorded over drift.rate_window."""
    cfg = RulesConfig()
    drift = next(g for g in rule_groups(render(cfg)[RECORDING_FILE]) if g["name"] == "aiwatch-drift.rules")
    reads = [(r["record"], w) for r in drift["rules"]
             for selected, w in re.findall(r"(?:increase|rate)\(([^\[]*)\[(\w+)\]\)", r["expr"])
             if "aiwatch_feature_bin_total" in selected]
    assert sorted(reads) == sorted([(FLEET_BINS_RECORD.format(window="1h"), "1h"),
                                    (BIN_RATE_RECORD.format(window="5m"), "5m"),
                                    ("model_feature:aiwatch_feature_values:increase1h", "1h")])
    for rule in alert_rules(cfg):
        assert "aiwatch_feature_bin_total" not in rule["expr"], rule["alert"]


def test_config_changes_the_rendered_rules() -> None:
    cfg = config_from_dict({
        "runbook_url": "https://wiki.example.com/oncall/aiwatch/{alert}",
        "selectors": {"requests": 'service="recommender"', "targets": 'job="recsys"',
                      "event_loop": 'service="ranker"'},
        "slo": {"availability_objective": 0.995, "latency_threshold_seconds": 0.5,
                "page": {"windows": [{"long": "1h", "short": "5m", "factor": 10}], "for": "1m"}},
        "latency": {"model_phases": "inference|rerank", "loop_delay_p99_seconds": 0.05, "loop_stalled_ratio": 0.35,
                    "loop_delay_for": "3m", "window": "2m", "loop_stuck_window": "90s"},
    })
    files = render(cfg)
    alerting = "\n".join(r["expr"] for g in rule_groups(files[ALERTING_FILE]) for r in g["rules"])
    recording = "\n".join(r["expr"] for g in rule_groups(files[RECORDING_FILE]) for r in g["rules"])
    assert "service:aiwatch_request_errors:ratio_rate1h / 0.005 > 10" in alerting
    fast = next(r["expr"] for r in alert_rules(cfg) if r["alert"] == "AiwatchAvailabilityBudgetBurnFast")
    assert "ratio_rate6h" not in fast and "ratio_rate5m / 0.005 > 10" in fast
    assert 'le="0.5"' in recording and 'le="0.3"' not in recording
    assert 'aiwatch_request_duration_seconds_count{service="recommender"}' in recording
    assert 'phase=~"inference|rerank"' in recording
    assert 'absent(up{job="recsys"})' in alerting
    assert 'aiwatch_event_loop_delay_seconds_bucket{service="ranker"}' in recording
    loop = next(r for r in alert_rules(cfg) if r["alert"] == "AiwatchEventLoopDelayHigh")
    assert (loop["expr"], loop["for"]) == ("instance_service:aiwatch_event_loop_stalled:ratio_rate2m > 0.35\nor\n"
                                           "instance_service:aiwatch_event_loop_stalled_ratio:max > 0.35\nor\n"
                                           "instance_service:aiwatch_event_loop_delay_seconds:p99 > 0.05\nor\n"
                                           "(\n  instance_service:aiwatch_event_loop_sampled_seconds:increase90s == 0\n"
                                           "  and on (cluster, namespace, job, instance)\n  (up == 1)\n) + 1\nor\n"
                                           "(\n  instance_service:aiwatch_event_loop_last_sample_unchanged:count90s"
                                           " > 0\n"
                                           "  and on (cluster, namespace, job, instance)\n  (up == 1)\n) * 0 + 1", "3m")
    assert "no sample for the last 90s" in loop["annotations"]["description"]
    assert "aiwatch_event_loop_last_sample_unchanged:count90s{" in loop["annotations"]["description"]
    assert "changes(aiwatch_event_loop_last_sample_timestamp_seconds{service=\"ranker\"}[90s]) == 0" in recording
    assert ("count_over_time(aiwatch_event_loop_last_sample_timestamp_seconds{service=\"ranker\"}[90s]) >= 2"
            in recording)
    assert "in a stall longer than 90s" in loop["annotations"]["description"]
    assert "aiwatch_event_loop_stalled_ratio:max{" in loop["annotations"]["description"]
    assert ('max by (cluster, namespace, job, instance, service) '
            '(aiwatch_event_loop_stalled_ratio{service="ranker"})') in recording
    assert ('time() - min by (cluster, namespace, job, instance, service) '
            '(aiwatch_event_loop_last_sample_timestamp_seconds{service="ranker"} > 0 < +Inf)') in recording
    assert ('sum by (cluster, namespace, job, instance, service) '
            '(increase(aiwatch_event_loop_sampled_seconds_total{service="ranker"}[90s]))') in recording
    assert "above 50ms" in loop["annotations"]["description"]
    assert "over 2m" in loop["annotations"]["description"] and "above 35%" in loop["annotations"]["description"]
    assert ('sum by (cluster, namespace, job, instance, service) '
            '(rate(aiwatch_event_loop_delay_seconds_sum{service="ranker"}[2m])) / (sum by (cluster, namespace, job, '
            'instance, service) (rate(aiwatch_event_loop_sampled_seconds_total{service="ranker"}[2m])) > 0)') \
        in recording  # over the time watched, by the same selector
    urls = {r["annotations"]["runbook_url"] for r in alert_rules(cfg)}
    assert "https://wiki.example.com/oncall/aiwatch/AiwatchTargetAbsent" in urls


def test_the_missing_feature_alert_reads_its_config() -> None:
    cfg = config_from_dict({"drift": {"missing_share_increase": 0.5, "missing_for": "30m", "psi_window": "1d",
                                      "fleet_min_values": 1000},
                            "selectors": {"drift": 'job="ranker"'}, "aggregation_labels": ["cluster"]})
    rule = next(r for r in alert_rules(cfg) if r["alert"] == "AiwatchFeatureMissing")
    assert rule["for"] == "30m"
    replicas = ('(group without (bin) (aiwatch_feature_reference_ratio{job="ranker", reference!=""} >= 0) or '
                'ignoring (reference) group without (bin) (aiwatch_feature_reference_ratio{job="ranker"} >= 0))\n'
                '  * ignoring (reference) group_left ()\n')
    assert "model_feature:aiwatch_feature_reference_missing_ratio:max\n  + 0.5" in rule["expr"]
    assert "model_feature:aiwatch_feature_values:increase1d >= 1000" in rule["expr"]
    records = {r["record"]: r["expr"] for g in rule_groups(render(cfg)[RECORDING_FILE]) for r in g["rules"]}
    assert records["model_feature:aiwatch_feature_reference_missing_ratio:max"] == (
        f"max by (cluster, model, feature, reference) (\n  {replicas}"
        '  aiwatch_feature_reference_missing_ratio{job="ranker"}\n)')
    assert records["model_feature:aiwatch_feature_values:increase1d"] == (
        f"sum by (cluster, model, feature, reference) (\n  {replicas}"
        '  sum without (bin, reason, reference) (increase({__name__=~"aiwatch_feature_bin_total|'
        'aiwatch_feature_invalid_total|aiwatch_feature_missing_total", reason=~"|missing_feature", '
        'job="ranker"}[1d]))\n)')
    description = rule["annotations"]["description"]
    assert "in the last 1d" in description and "more than 50 percentage points" in description
    assert "from at least 1000 values" in description


@pytest.mark.parametrize(("data", "message"), [
    ({"slo": {"availabilty_objective": 0.99}}, "slo: unknown key(s) ['availabilty_objective']"),
    ({"slo": {"availability_objective": 1.5}}, "slo.availability_objective: must be a finite number in (0, 1)"),
    ({"slo": {"latency_threshold_seconds": 0.35}}, "slo.latency_threshold_seconds: 0.35 is not a bucket bound"),
    ({"latency": {"window": "5 minutes"}}, "latency.window: '5 minutes' is not a Prometheus duration"),
    ({"latency": {"loop_delay_p99_seconds": 0}}, "latency.loop_delay_p99_seconds: must be a finite number in (0, inf)"),
    ({"latency": {"loop_stalled_ratio": 0}}, "latency.loop_stalled_ratio: must be a finite number in (0, 1]"),
    ({"latency": {"loop_stalled_ratio": 20}}, "latency.loop_stalled_ratio: must be a finite number in (0, 1]"),
    ({"latency": {"loop_delay_for": "a while"}}, "latency.loop_delay_for: 'a while' is not a Prometheus duration"),
    ({"queue": {"for": "soon"}}, "queue.for: 'soon' is not a Prometheus duration"),
    ({"selectors": {"requests": "service=recommender"}}, "selectors.requests: 'service=recommender' is not"),
    ({"gpu": {"utilization_saturated": "high"}}, "gpu.utilization_saturated: expected a number"),
    ({"slo": {"page": {"windows": [], "for": "2m"}}}, "slo.page.windows: between 1 and 10 window pairs are needed"),
    ({"drift": {"psi_window": "6h"}}, "drift.psi_window: '6h' is not one of drift.windows"),
    ({"drift": {"missing_share_increase": 0}}, "drift.missing_share_increase: must be a finite number in (0, 1]"),
    ({"drift": {"missing_share_increase": 1.5}}, "drift.missing_share_increase: must be a finite number in (0, 1]"),
    ({"drift": {"missing_share_increase": float("nan")}}, "drift.missing_share_increase: expected a finite number"),
    ({"drift": {"missing_for": "a while"}}, "drift.missing_for: 'a while' is not a Prometheus duration"),
    ({"streaming": {"ttft_threshold_seconds": 0.3}}, "streaming.ttft_threshold_seconds: 0.3 is not a bucket bound"),
    ({"streaming": {"degraded_share_max": 2}}, "streaming.degraded_share_max: must be a finite number in [0, 1]"),
    ({"slo": {"traffic_class": "real(time"}}, "slo.traffic_class"),
    ({"runbook_url": "https://wiki.example.com/oncall"}, "runbook_url: 'https://wiki.example.com/oncall' must be"),
    ({"runbook_url": "wiki/{alert}"}, "must be an http(s) URL containing {alert}"),
    ({"runbook_base_url": "https://github.com/acme/ml/blob/main"}, "runbook_base_url: replaced by runbook_url"),
    ([1, 2], "config: expected a mapping"),
])
def test_bad_config_names_the_key(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


@pytest.mark.parametrize(("data", "message"), [
    ({"slo": {"availabilty": 0.999}}, "slo: unknown key(s) ['availabilty'] (did you mean slo.availability_objective?)"),
    ({"sloo": {}}, "unknown key(s) ['sloo'] (did you mean slo?)"),
    ({"SLO": {}}, "unknown key(s) ['SLO'] (did you mean slo?)"),
    ({"slo": {"page": {"windos": []}}}, "slo.page: unknown key(s) ['windos'] (did you mean slo.page.windows?)"),
    ({"slo": {"page": {"windows": [{"long": "1h", "shrot": "5m", "factor": 14.4}]}}},
     "slo.page.windows[0]: unknown key(s) ['shrot'] (did you mean slo.page.windows[0].short?)"),
    ({"slo": {"latency_threshold": 0.3}}, "(did you mean slo.latency_threshold_seconds?)"),
    ({"slo": {"availabilty": 0.999, "pag": {}, "zzz": 1}},
     "(did you mean slo.availability_objective for 'availabilty', slo.page for 'pag'?); known: "),
])
def test_a_misspelled_key_is_refused_with_the_key_it_is_probably_meant_to_be(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_a_key_like_no_known_one_gets_no_guess() -> None:
    with pytest.raises(ConfigError, match=r"^slo: unknown key\(s\) \['zzz'\]; known: \['availability_objective'"):
        config_from_dict({"slo": {"zzz": 1}})


def test_defaults_round_trip_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "defaults"]) == 0
    printed = capsys.readouterr().out
    assert printed == default_config_yaml()
    assert config_from_dict(yaml.safe_load(printed)) == RulesConfig()

    config = tmp_path / "aiwatch-rules.yml"
    config.write_text("slo:\n  latency_objective: 0.95\nqueue:\n  per_replica_warning: 7\n")
    out = tmp_path / "alerts"
    assert main(["rules", "render", "--config", str(config), "--out", str(out)]) == 0
    text = (out / ALERTING_FILE).read_text()
    assert "service:aiwatch_request_slow:ratio_rate1h / 0.05 > 14.4" in text
    assert "quantile_over_time(0.5, queue:aiwatch_queue_depth:per_replica[5m]) > 7" in text
    assert (out / RECORDING_FILE).read_text() == render(load_config(config))[RECORDING_FILE]

    assert main(["rules", "render", "--check", "--out", str(ALERTS_DIR)]) == 0
    assert main(["rules", "render", "--check", "--out", str(out)]) == 1
    config.write_text("slo:\n  latency_objective: 95\n")
    assert main(["rules", "render", "--config", str(config), "--out", str(out)]) == 2
    assert "slo.latency_objective: must be a finite number in (0, 1), got 95.0" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "text"), [("rules.yml", ""), ("rules.yml", "\n\n"),
                                           ("rules.yaml", "# slo:\n#   latency_objective: 0.95\n"),
                                           ("rules.yml", "~\n"), ("rules.json", "null")])
def test_an_empty_config_file_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                                 text: str) -> None:
    # an empty file (the wrong one, or one not yet written) rendered the defaults, as {} does, without a word
    config = tmp_path / name
    config.write_text(text)
    assert main(["rules", "render", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"aiwatch rules: {config}: the config is empty (no settings); for the "
                                       "defaults, write {} in it, or give no config\n")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="the config is empty"):
        load_config(config)
    config.write_text("{}\n")  # the defaults, said on purpose
    assert load_config(config) == RulesConfig()


def test_yaml_config_without_pyyaml_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "rules.yml"
    config.write_text("slo: {}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError, match=r'pip install "aiwatch\[rules\]"'):
        load_config(config)
    json_config = tmp_path / "rules.json"
    json_config.write_text('{"slo": {"availability_objective": 0.99}}')
    assert load_config(json_config).slo.availability_objective == 0.99


def test_cli_with_a_yaml_config_without_pyyaml_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "rules.yml"
    config.write_text("slo: {}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert main(["rules", "render", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert 'pip install "aiwatch[rules]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rendering_without_pyyaml_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError, match=r'pip install "aiwatch\[rules\]"'):
        render(RulesConfig())
    assert main(["rules", "render", "--out", "unused"]) == 2
    assert 'pip install "aiwatch[rules]"' in capsys.readouterr().err


# --- PrometheusRule ------------------------------------------------------------------------------------------------

K8S_EXAMPLE = REPO / "examples" / "kubernetes"
#: how examples/kubernetes/aiwatch.prometheusrule.yaml is rendered (its README says so)
K8S_EXAMPLE_ARGS = ["--format", "prometheusrule", "--label", "app.kubernetes.io/part-of=aiwatch"]


def test_the_kubernetes_example_prometheus_rule_is_the_current_rendering(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "render", *K8S_EXAMPLE_ARGS, "--out", str(K8S_EXAMPLE), "--check"]) == 0, \
        capsys.readouterr().err
    kustomization = yaml.safe_load((K8S_EXAMPLE / "kustomization.yaml").read_text())
    assert PROMETHEUS_RULE_FILE in kustomization["resources"]


def test_render_format_prometheusrule_writes_one_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "aiwatch-rules.yml"
    config.write_text("slo:\n  latency_objective: 0.95\n")
    args = ["rules", "render", "--config", str(config), "--format", "prometheusrule", "--out", str(tmp_path / "k8s"),
            "--name", "shop-aiwatch", "--namespace", "monitoring", "--label", "release=kube-prometheus-stack",
            "--label", "team=ml"]
    assert main(args) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'k8s' / PROMETHEUS_RULE_FILE}\n"
    assert sorted(p.name for p in (tmp_path / "k8s").iterdir()) == [PROMETHEUS_RULE_FILE]
    text = (tmp_path / "k8s" / PROMETHEUS_RULE_FILE).read_text()
    doc = yaml.safe_load(text)
    assert doc["metadata"] == {"name": "shop-aiwatch", "namespace": "monitoring",
                               "labels": {"release": "kube-prometheus-stack", "team": "ml"}}
    assert text == render_prometheus_rule(load_config(config), name="shop-aiwatch", namespace="monitoring",
                                          labels={"release": "kube-prometheus-stack", "team": "ml"})[
        PROMETHEUS_RULE_FILE]
    assert "service:aiwatch_request_slow:ratio_rate1h / 0.05 > 14.4" in text
    assert main([*args, "--check"]) == 0
    assert main([*args[:-1], "team=ops", "--check"]) == 1
    assert "is out of date; run: aiwatch rules render --format prometheusrule" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "Aiwatch"], "PrometheusRule name: 'Aiwatch' is not a Kubernetes DNS-1123 subdomain"),
    (["--name", "a" * 254], "at most 253 characters"),
    (["--namespace", "monitoring.prod"], "PrometheusRule namespace: 'monitoring.prod' is not a Kubernetes DNS-1123 "
                                         "label"),
    (["--label", "release"], "--label 'release': write KEY=VALUE"),
    (["--label", "=x"], "--label '=x': write KEY=VALUE"),
    (["--label", "a=1", "--label", "a=2"], "--label 'a' given twice"),
    (["--label", "team name=ml"], "PrometheusRule label 'team name': 'team name' is not a Kubernetes label name"),
    (["--label", "Example.com/team=ml"], "PrometheusRule label 'Example.com/team': its prefix: 'Example.com' is not"),
    (["--label", "team=ml/ops"], "PrometheusRule label team='ml/ops': not a Kubernetes label value"),
    (["--label", f"team={'x' * 64}"], "not a Kubernetes label value"),
])
def test_a_prometheus_rule_the_api_server_would_refuse_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               args: list[str], message: str) -> None:
    assert main(["rules", "render", "--format", "prometheusrule", "--out", str(tmp_path / "k8s"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aiwatch rules: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "k8s").exists()


def test_the_prometheus_rule_options_need_its_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "render", "--out", str(tmp_path), "--namespace", "monitoring", "--label", "a=b"]) == 2
    assert capsys.readouterr().err == "aiwatch rules: --namespace, --label: only with --format prometheusrule\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_promtool_checks_the_prometheus_rule_groups(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    (text,) = render_prometheus_rule().values()
    groups = tmp_path / "groups.rules.yml"
    groups.write_text(yaml.safe_dump(yaml.safe_load(text)["spec"], sort_keys=False))
    proc = subprocess.run([promtool, "check", "rules", str(groups)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = sum(len(g["rules"]) for t in render().values() for g in rule_groups(t))
    assert f"SUCCESS: {rules} rules found" in proc.stdout


# --- promtool -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    files = [str(p) for p in sorted(ALERTS_DIR.glob("*.rules.yml"))]
    proc = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_prometheus_example_loads_every_rule_file_and_scrapes_the_job_the_rules_watch() -> None:
    """examples/prometheus/prometheus.yml: its rule_files pattern (relative to the file) finds both rule files, and
    its scrape job is the one ``selectors.targets`` names, so AiwatchTargetDown / AiwatchTargetAbsent watch it."""
    promtool = require_binary("promtool")
    config = REPO / "examples" / "prometheus" / "prometheus.yml"
    proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.findall(r"Checking (\S+)\n\s+SUCCESS: (\d+) rules found", proc.stdout)
    assert sorted(Path(name).name for name, count in found if int(count)) == sorted(
        p.name for p in ALERTS_DIR.glob("*.rules.yml")), proc.stdout
    jobs = [job["job_name"] for job in require_module("yaml").safe_load(config.read_text())["scrape_configs"]]
    assert RulesConfig().selectors.targets == f'job="{jobs[0]}"' and len(jobs) == 1


@pytest.mark.slow
def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "test", "rules", *map(str, PROMTOOL_TESTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(PROMTOOL_TESTS) >= 6


def test_promtool_tests_cover_every_alert() -> None:
    """Each (alert, severity) is expected silent before its ``for`` and firing after, with labels and all three
    annotations, in the same test group; every test file reads recording rules in group_eval_order."""
    covered: set[tuple[str, str]] = set()
    for path in PROMTOOL_TESTS:
        doc = yaml.safe_load(path.read_text())
        order = doc["group_eval_order"]
        assert order.index("aiwatch-slo.rules") < order.index("aiwatch-slo.alerts"), path.name
        for group in doc["tests"]:
            silent: dict[str, float] = {}
            for case in group.get("alert_rule_test", []):
                t = duration_seconds(case["eval_time"])
                if not case["exp_alerts"]:
                    silent[case["alertname"]] = min(t, silent.get(case["alertname"], t))
            for case in group.get("alert_rule_test", []):
                t = duration_seconds(case["eval_time"])
                for exp in case["exp_alerts"]:
                    assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
                    if silent.get(case["alertname"], float("inf")) < t:
                        covered.add((case["alertname"], exp["exp_labels"]["severity"]))
    wanted = {(r["alert"], r["labels"]["severity"]) for r in alert_rules()}
    assert wanted - covered == set()


# --- runbooks and Alertmanager ------------------------------------------------------------------------------------


def test_runbook_urls_and_pages_match() -> None:
    rules = alert_rules(config_from_dict({"runbook_url": "https://wiki.example.com/oncall/{alert}.md"}))
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == f"https://wiki.example.com/oncall/{rule['alert']}.md"
    pages = {p.stem for p in RUNBOOKS.glob("*.md")}
    assert pages == {r["alert"] for r in rules}, "a runbook page without its alert, or an alert without a page"
    assert set(runbooks.names()) == pages
    # the one copy is the package's: docs/runbooks/ only says where they went
    assert sorted(p.name for p in (REPO / "docs" / "runbooks").iterdir()) == ["README.md"], \
        "runbooks belong in aiwatch/runbooks/ (package data, served by the console), not in docs/runbooks/"


def test_the_default_runbook_url_is_a_placeholder_that_resolves_nowhere() -> None:
    cfg = RulesConfig()
    assert cfg.runbook_url == RUNBOOK_URL_PLACEHOLDER and cfg.runbook_url_is_placeholder
    host = urlparse(runbook_url(cfg.runbook_url, "AiwatchTargetDown")).hostname
    assert host is not None and host.endswith(".invalid")  # RFC 2606: never resolves, never anyone's repository
    committed = (ALERTS_DIR / ALERTING_FILE).read_text()
    assert "github.com" not in committed
    assert committed.count(RUNBOOK_URL_PLACEHOLDER.split("{")[0]) == len(alert_rules())


def test_rendering_warns_while_the_runbook_url_is_the_placeholder(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "render", "--out", str(tmp_path / "default")]) == 0
    assert "warning: runbook_url is still the placeholder" in capsys.readouterr().err
    config = tmp_path / "rules.json"
    config.write_text(json.dumps({"runbook_url": "https://wiki.example.com/oncall/{alert}"}))
    assert main(["rules", "render", "--config", str(config), "--out", str(tmp_path / "configured")]) == 0
    assert "warning" not in capsys.readouterr().err
    text = (tmp_path / "configured" / ALERTING_FILE).read_text()
    assert "runbook_url: https://wiki.example.com/oncall/AiwatchTargetDown" in text


def test_a_p99_threshold_no_p99_can_reach_is_warned_of_not_refused(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # 300 meant as milliseconds: histogram_quantile reads no p99 above the largest bucket bound (60 s, 10 s for the
    # loop delay), so the alert rendered silently and could never fire
    config = tmp_path / "rules.json"
    config.write_text(json.dumps({"runbook_url": "https://wiki.example.com/oncall/{alert}",
                                  "latency": {"model_p99_seconds": 300, "network_p99_seconds": 0.1,
                                              "loop_delay_p99_seconds": 10}}))
    assert main(["rules", "render", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "aiwatch rules: warning: latency.model_p99_seconds is 300 seconds, at or above the largest bucket bound of "
        "aiwatch_phase_duration_seconds (60 s): histogram_quantile reads no p99 above it, so AiwatchModelLatencyHigh "
        "can never fire on it. Thresholds are in seconds (0.3 for 300 ms)",
        "aiwatch rules: warning: latency.loop_delay_p99_seconds is 10 seconds, at or above the largest bucket bound "
        "of aiwatch_event_loop_delay_seconds (10 s): histogram_quantile reads no p99 above it, so "
        "AiwatchEventLoopDelayHigh can never fire on it. Thresholds are in seconds (0.01 for 10 ms)"]
    assert "service_model:aiwatch_model_latency_seconds:p99 > 300" in (tmp_path / "out" / ALERTING_FILE).read_text()
    assert RulesConfig().unit_warnings == []
    assert config_from_dict({"latency": {"non_model_p99_seconds": 30, "network_p99_seconds": 59.9}}).unit_warnings \
        == []


def test_runbook_pages_have_the_sections() -> None:
    degrade = ("Serve cached predictions", "Route to a smaller model", "Shed batch traffic")
    with_degrade = 0
    for page in RUNBOOKS.glob("*.md"):
        text = page.read_text()
        assert text.startswith(f"# {page.stem}\n")
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert section in text, f"{page.name} lacks {section}"
        assert "```promql" in text and "view" in text
        if all(d in text for d in degrade):
            with_degrade += 1
    # every user-facing alert (SLO fast burns, latency, queue, cache, GPU capacity) lists the degrade options
    for name in ("AiwatchAvailabilityBudgetBurnFast", "AiwatchLatencyBudgetBurnFast", "AiwatchModelLatencyHigh",
                 "AiwatchNonModelLatencyHigh", "AiwatchQueueBacklog", "AiwatchGpuSaturated"):
        assert all(d in (RUNBOOKS / f"{name}.md").read_text() for d in degrade), name
    assert with_degrade >= 6


def test_latency_runbooks_start_their_diagnosis_with_aiwatch_diagnose() -> None:
    latency = ("AiwatchLatencyBudgetBurnFast", "AiwatchLatencyBudgetBurnSlow", "AiwatchModelLatencyHigh",
               "AiwatchNonModelLatencyHigh", "AiwatchNetworkLatencyHigh", "AiwatchQueueBacklog",
               "AiwatchGpuSaturated", "AiwatchFeatureCacheHitRatioLow")
    for name in latency:
        text = (RUNBOOKS / f"{name}.md").read_text()
        diagnosis = text[text.index("## Diagnosis"):text.index("## Mitigation")]
        command = re.search(r"```bash\n(aiwatch diagnose [^\n]*)\n```", diagnosis)
        assert command, f"{name}: its Diagnosis gives no aiwatch diagnose command"
        args = command.group(1).split()
        assert args[2:4] == ["--prometheus", "http://<prometheus>:9090"] and "--service" in args, name
        assert diagnosis.index("aiwatch diagnose") < diagnosis.index("```promql"), f"{name}: diagnose comes first"


@pytest.mark.slow
def test_alertmanager_example_passes_amtool() -> None:
    amtool = require_binary("amtool")
    config = str(ALERTS_DIR / "alertmanager.yml")
    proc = subprocess.run([amtool, "check-config", config], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for labels, receiver in ((["severity=critical"], "page"), (["severity=warning"], "ticket"),
                             (["severity=info"], "info"), (["alertname=Other"], "ticket")):
        proc = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}", *labels],
                              capture_output=True, text=True)
        assert proc.stdout.strip() == receiver, (labels, proc.stdout, proc.stderr)


@pytest.mark.parametrize("value", [
    "", "plain words", "a: b", "#not a comment", "- dash", "yes", "No", "null", "~", "1h", "0.5", "trailing ",
    "colon:", 'say "hi"', "back\\slash", "{{ $labels.service }}", "[x]", "tab\there", "multi\nline\ntext",
    "ünïcode ✓", "  lead\nx", "x  \ny", "end\n", "a\n\nb", "a\r\nb",
    "@at", "%pct", "`tick`", "*star", "&anchor", "!tag", "|pipe", ">gt", "'single'",
    # numbers to YAML 1.2 (aiwatch's reader), not to 1.1 (PyYAML's): written unquoted, they read back as floats
    "0E0", "1e5", ".5e1", "-3E+2", "+7e-1",
])
def test_yaml_writer_round_trips_strings(value: str) -> None:
    from aiwatch.rules.yamlout import dump, load

    data = {"key": value, "list": [value, {"nested": value}], "n": 14.4, "i": 3, "b": True, "f": float("inf")}
    assert yaml.safe_load(dump(data)) == data
    assert load(dump(data)) == data


@pytest.mark.parametrize("value", ["\x85", "a\u2028b", "a\u2029", "line\nthen\x85", "ü\u2028"])
def test_yaml_writer_keeps_unicode_line_breaks(value: str) -> None:
    """PyYAML writes NEL / U+2028 / U+2029 raw in single-quoted and block scalars, where readers fold them."""
    from aiwatch.rules.yamlout import dump, load

    data = {"key": value, "list": [value]}
    assert yaml.safe_load(dump(data)) == data and load(dump(data)) == data


@pytest.mark.parametrize("where", ["a-file", "a-file/sub", "a-file/sub/deeper"])
def test_render_into_a_path_that_cannot_be_a_directory_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    out = tmp_path / where
    assert main(["rules", "render", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"aiwatch rules: cannot write the rule files into {str(out)!r}: Not a directory", err
    assert "Traceback" not in err
    assert (tmp_path / "a-file").read_text() == "not a directory\n"


def test_render_over_a_directory_named_like_a_rule_file_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ALERTING_FILE).mkdir()
    assert main(["rules", "render", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"aiwatch rules: cannot write the rule files into {str(tmp_path)!r}: "), err
    assert ALERTING_FILE in err


def test_the_slo_ratios_read_the_recorded_request_rate() -> None:
    """Each window's error and slow ratios divide by the request rate recorded just before them in the group (same
    evaluation): spelled out, the rate was three more scans of every replica's request counts over the window per
    evaluation, 3d and 1d windows included, for one value the group had already recorded."""
    cfg = RulesConfig()
    slo = next(g for g in rule_groups(render(cfg)[RECORDING_FILE]) if g["name"] == "aiwatch-slo.rules")
    for w in burn_windows(cfg):
        total = f'rate(aiwatch_request_duration_seconds_count{{traffic_class=~"realtime"}}[{w}])'
        reads = [r["record"] for r in slo["rules"] for _ in range(r["expr"].count(total))]
        assert reads == [f"service:aiwatch_requests:rate{w}"], w


@pytest.mark.parametrize("interval", ["5m", "10m", "1h"])
def test_a_drift_interval_past_the_lookback_is_refused(interval: str) -> None:
    """AiwatchFleetInputDrift and AiwatchFeatureMissing read the drift group's records: evaluated every 10m, an alert
    evaluation more than 5m (Prometheus' lookback) after the last one saw no record, its 'for' started over, and a
    fleet-wide drift never fired (a real Prometheus scaled down, lookback 10s and drift.interval 30s: pending,
    gone, pending, gone; 5s: firing)."""
    with pytest.raises(ConfigError, match=r"drift\.interval: .* must be shorter than 5m"):
        config_from_dict({"drift": {"interval": interval}})
    config_from_dict({"drift": {"interval": "4m"}})


def test_burn_alerts_need_min_bad_requests_in_the_long_window() -> None:
    """At low traffic one bad request is a burn far above any factor (1 failure of 60 requests in 1h is 16.7x the 0.1%
    budget): each window pair also needs slo.min_bad_requests bad requests in its long window (the promtool cases in
    slo_test.yml show one failure at 1 request a minute no longer pages); 0 leaves the ratios alone."""
    def burn_exprs(cfg: RulesConfig) -> dict[str, str]:
        return {r["alert"]: r["expr"] for r in alert_rules(cfg) if "BudgetBurn" in r["alert"]}

    guarded = burn_exprs(config_from_dict({"slo": {"min_bad_requests": 3}}))
    assert len(guarded) == 6
    assert ("service:aiwatch_request_errors:ratio_rate1h * service:aiwatch_requests:rate1h * 3600 >= 3"
            in guarded["AiwatchAvailabilityBudgetBurnFast"])
    assert ("service:aiwatch_request_slow:ratio_rate3d * service:aiwatch_requests:rate3d * 259200 >= 3"
            in guarded["AiwatchLatencyBudgetBurnSlow"])
    assert ("service:aiwatch_gen_ai_ttft_slow:ratio_rate6h * service:aiwatch_gen_ai_ttft:rate6h * 21600 >= 3"
            in guarded["AiwatchTimeToFirstTokenBudgetBurnFast"])
    for expr in burn_exprs(config_from_dict({"slo": {"min_bad_requests": 0}})).values():
        assert ">=" not in expr and "rate1h *" not in expr
    with pytest.raises(ConfigError, match=r"slo\.min_bad_requests"):
        config_from_dict({"slo": {"min_bad_requests": -1}})
