"""Rules config values that used to render rules Prometheus refuses, or to change their meaning, are rejected with
the key's path, or rendered so that promtool accepts them and they mean what was written (issue 13, finding 6)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiwatch.rules import ALERTING_FILE, RECORDING_FILE, ConfigError, config_from_dict, load_config, render
from aiwatch.rules.render import rule_files
from tests.servers import require_binary


def _exprs(files: dict[str, str]) -> list[str]:
    return [r["expr"] for text in files.values() for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


@pytest.mark.parametrize(("data", "message"), [
    ({"slo": {"error_status": "(?=x)"}}, "slo.error_status: not an RE2 regular expression: '(?=x)' (invalid perl"),
    ({"slo": {"error_status": "5..|\\1"}}, "slo.error_status: not an RE2 regular expression"),
    ({"slo": {"error_status": "a{1001}"}}, "invalid repetition size"),
    ({"slo": {"error_status": "\\Q"}}, "slo.error_status: not an RE2 regular expression"),
    ({"latency": {"model_phases": "\\C"}}, "latency.model_phases: not an RE2 regular expression Prometheus accepts"),
    ({"latency": {"model_phases": "(?<n>x)"}}, "is not supported by Go's regexp"),
    ({"selectors": {"requests": 'phase=~"(?!x)"'}}, "selectors.requests (phase=~): not an RE2 regular expression"),
    ({"selectors": {"requests": '__name__="x"'}}, "selectors.requests: a selector cannot match __name__"),
    ({"latency": {"model_p99_seconds": float("nan")}}, "latency.model_p99_seconds: expected a finite number"),
    ({"queue": {"per_replica_warning": float("inf")}}, "queue.per_replica_warning: expected a finite number"),
    ({"queue": {"per_replica_warning": 10**400}}, "queue.per_replica_warning: expected a finite number"),
    ({"queue": {"per_replica_warning": -5}}, "queue.per_replica_warning: must be a finite number in [0, inf)"),
    ({"latency": {"model_p99_seconds": 0}}, "latency.model_p99_seconds: must be a finite number in (0, inf)"),
    ({"gpu": {"utilization_saturated": 1.5}}, "gpu.utilization_saturated: must be a finite number in [0, 1]"),
    ({"gpu": {"target_utilization": 0}}, "gpu.target_utilization: must be a finite number in (0, 1]"),
    ({"slo": {"page": {"windows": [{"long": "1h", "short": "5m"}], "for": "2m"}}},
     "slo.page.windows[0]: missing key(s) ['factor']"),
    ({"slo": {"page": {"windows": [{"long": "1h", "short": "5m", "factor": 0}], "for": "2m"}}},
     "slo.page.windows[0].factor: must be a finite number in (0, inf)"),
    ({"latency": {"window": "0s"}}, "latency.window: '0s' must be longer than 0"),
    ({"slo": {"period": "0s"}}, "slo.period: '0s' must be longer than 0"),
    ({"latency": {"window": "30m1h"}}, "latency.window: '30m1h' is not a Prometheus duration"),
    ({"latency": {"loop_stuck_window": "0s"}}, "latency.loop_stuck_window: '0s' must be longer than 0"),
    ({"latency": {"loop_stuck_window": "2 min"}}, "latency.loop_stuck_window: '2 min' is not a Prometheus duration"),
    ({"latency": {"window": "99999999999999999999y"}}, "is not a Prometheus duration"),
    ({"drift": {"windows": ["1h", "1h"], "psi_window": "1h"}}, "drift.windows: between 1 and 10 distinct windows"),
    # the summed long windows count each value once only where the recorded rate windows overlap evenly
    ({"drift": {"interval": "2m", "rate_window": "5m"}},
     "drift.rate_window: '5m' must be a multiple of drift.interval '2m'"),
    ({"drift": {"interval": "2m", "rate_window": "5m"}}, "leave it empty for 6m"),
    ({"drift": {"rate_window": "5 min"}}, "drift.rate_window: '5 min' is not a Prometheus duration"),
    ({"drift": {"raw_window_max": "0s"}}, "drift.raw_window_max: '0s' must be longer than 0"),
    ({"runbook_url": "https://x/\nrunbooks/{alert}"}, "runbook_url: 'https://x/\\nrunbooks/{alert}' is not a URL"),
    ({"latency": {"model_phases": "a\ud800"}}, "latency.model_phases: 'a\\ud800' is not valid UTF-8 text"),
    ({"slo": {"period": 30}}, "slo.period: expected a string, got 30"),
    ({1: 2, None: 3}, "unknown key(s) ['1', 'None']"),
    # a burst's count over the window is above 0 for exactly the window: a `for` as long never fires
    ({"meta": {"instrumentation_for": "10m"}}, "meta.instrumentation_for: '10m' must be shorter than its window '10m'"),
    ({"gpu": {"xid_window": "5m", "xid_for": "1h"}}, "gpu.xid_for: '1h' must be shorter than its window '5m'"),
    ({"meta": {"prediction_log_recovery_window": "30m", "prediction_log_recovery_for": "30m"}},
     "meta.prediction_log_recovery_for: '30m' must be shorter than its window '30m'"),
    # a window pair fires when the bad share exceeds factor x budget: at 1 or more not even every request bad does
    # (latency objective 0.8: the page's 14.4x and 6x pairs needed 288% and 120% of requests slow, and never fired)
    ({"slo": {"latency_objective": 0.8}}, "slo.page.windows[0].factor: 14.4 times the error budget of "
     "slo.latency_objective 0.8 (0.2) is a bad share of 2.88, more than every request: the pair would never fire; "
     "choose a factor below 5 (1 / budget)"),
    ({"slo": {"latency_objective": 0.93}}, "slo.page.windows[0].factor: 14.4 times"),
    ({"slo": {"availability_objective": 0.9, "page": {"windows": [{"long": "1h", "short": "5m", "factor": 10}],
                                                      "for": "2m"}}}, "slo.page.windows[0].factor: 10 times"),
    ({"streaming": {"ttft_objective": 0.5}}, "slo.page.windows[0].factor: 14.4 times the error budget of "
     "streaming.ttft_objective 0.5"),
    # aggregation labels are kept by every aggregation: the error ratio per status read 1 for status="500", and one
    # failed request in ten thousand paged at a burn rate of 1000x
    ({"aggregation_labels": ["cluster", "status"]}, "aggregation_labels: 'status' is a label the rules take ratios "
     "across (the error ratio: failed statuses over all)"),
    *(({"aggregation_labels": [label]}, f"aggregation_labels: {label!r} is a label the rules take ratios across")
      for label in ("result", "bin", "phase", "reason", "direction")),
])
def test_bad_values_are_rejected_with_the_key(data: dict[Any, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_a_regex_cannot_add_a_matcher() -> None:
    files = render(config_from_dict({"slo": {"error_status": '5..", job!="x'}}))
    errors = [e for e in _exprs(files) if "status=~" in e]
    assert errors and all('status=~"5..\\", job!=\\"x"' in e and 'job!="x"' not in e for e in errors)


def test_yaml_numbers_are_read_as_numbers_and_written_exactly(tmp_path: Path) -> None:
    config = tmp_path / "rules.yml"
    config.write_text("latency:\n  model_p99_seconds: 1e-07\nqueue:\n  per_replica_warning: 123456789012.5\n"
                      "  per_replica_critical: 1.5E+3\n")
    cfg = load_config(config)
    assert (cfg.latency.model_p99_seconds, cfg.queue.per_replica_warning) == (1e-07, 123456789012.5)
    alerting = render(cfg)[ALERTING_FILE]
    assert "service_model:aiwatch_model_latency_seconds:p99 > 1e-07" in alerting
    assert "queue:aiwatch_queue_depth:per_replica[5m]) > 123456789012.5" in alerting
    assert "queue:aiwatch_queue_depth:per_replica[5m]) > 1500\n" in alerting


@pytest.mark.parametrize("text", ["latency: {model_p99_seconds: .nan}", "latency: {model_p99_seconds: .inf}",
                                  "latency: {model_p99_seconds: -.inf}", "queue: {per_replica_warning: 1e999}"])
def test_yaml_nan_and_infinities_are_rejected(tmp_path: Path, text: str) -> None:
    config = tmp_path / "rules.yml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError, match=r"rules\.yml: .*expected a finite number"):
        load_config(config)


@pytest.mark.parametrize(("text", "message"), [
    ("[" * 5000, "not valid YAML"),
    ("!!python/object/apply:os.system ['true']", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("- 1\n", "config: expected a mapping"),
])
def test_hostile_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "rules.yml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_a_string_key_that_yaml_reads_as_a_number_says_to_quote_it(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) writes the string 0E0 unquoted; aiwatch reads YAML 1.2's numbers, where it is 0.0."""
    config = tmp_path / "rules.yml"
    config.write_text(yaml.safe_dump({"slo": {"error_status": "0E0"}}))
    assert config.read_text() == "slo:\n  error_status: 0E0\n"
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value).endswith("slo.error_status: expected a string, got 0.0 (a number or a boolean: quote it "
                                    "to give a string)")
    config.write_text("slo:\n  error_status: '0E0'\n")
    assert load_config(config).slo.error_status == "0E0"


ODD_BUT_VALID: list[dict[str, Any]] = [
    {"latency": {"model_phases": "inference|x{{y"}},
    {"latency": {"model_phases": "a{"}, "selectors": {"targets": 'job="{{x"'}},
    {"runbook_url": "https://runbooks.example/{{x}}/a{/{alert}"},
    {"selectors": {"requests": 'service="a\u2028b\x85c\\"d\\\\e"', "drift": "model=~'x|\u2029'"}},
    {"slo": {"error_status": "5..|\x85|\u2028|\"'"}},
    {"latency": {"model_p99_seconds": 1e-07}, "queue": {"per_replica_warning": 123456789012.5}},
    {"gpu": {"utilization_saturated": 0}, "meta": {"target_down_for": "0s"}},
]


def test_odd_values_that_validate_pass_promtool_and_read_back_exactly(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    paths = []
    for i, data in enumerate(ODD_BUT_VALID):
        cfg = config_from_dict(data)
        files = render(cfg)
        for name, content in rule_files(cfg).items():
            assert yaml.safe_load(files[name]) == content
            path = tmp_path / f"{i}-{name}"
            path.write_text(files[name], encoding="utf-8")
            paths.append(str(path))
    proc = subprocess.run([promtool, "check", "rules", *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    description = next(r["annotations"]["description"] for g in rule_files(config_from_dict(ODD_BUT_VALID[0]))[
        ALERTING_FILE]["groups"] for r in g["rules"] if r["alert"] == "AiwatchModelLatencyHigh")
    assert '(phases inference|x{{ "{" }}{y)' in description  # Prometheus expands it to "inference|x{{y"
    assert RECORDING_FILE in render(config_from_dict(ODD_BUT_VALID[3]))


@pytest.mark.parametrize(("text", "where"), [
    ("a: [1, 2\n", "while parsing a flow sequence at line 1, column 4: expected ',' or ']', but got '<stream end>' "
                   "at line 2, column 1"),
    ("runbook_url: [\n", "while parsing a flow node: expected the node content, but found '<stream end>' at line 2, "
                         "column 1"),
    ("a: 1\n---\nb: 2\n", "expected a single document in the stream at line 1, column 1: but found another document "
                         "at line 2, column 1"),
    ("a:\tb\n\x00", "unacceptable character #x0000: special characters are not allowed at position 5"),
    ("a: 1\n  b: 2\n", "mapping values are not allowed here at line 2, column 4"),
])
def test_a_yaml_syntax_error_is_one_line_with_where_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         text: str, where: str) -> None:
    # PyYAML's message spans 3 to 7 lines, quoting the line with a caret under it
    from aiwatch.cli import main

    config = tmp_path / "rules.yml"
    config.write_text(text)
    assert main(["rules", "render", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"aiwatch rules: {config}: not valid YAML: {where}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("selector", "matcher", "lacking"), [
    # the SLOs' histogram has route and traffic_class, the phases, the in-flight gauge and the degraded count do not:
    # the model, non-model, degraded and autoscaling rules selected nothing and never fired
    ("requests", 'route="/predict"', "aiwatch_phase_duration_seconds"),
    ("requests", 'traffic_class=~"realtime"', "aiwatch_requests_in_flight"),
    ("requests", 'model="ranker"', "aiwatch_request_duration_seconds"),
    ("network", 'direction="out"', "aiwatch_network_duration_seconds"),
    ("network", 'phase="features"', "aiwatch_client_bytes_total"),
    ("gpu", 'gpu="0"', "aiwatch_gpu_nvml_up"),
    ("drift", 'test="ks"', "aiwatch_feature_bin_total"),
    ("drift", 'bin!=""', "aiwatch_drift_score"),
])
def test_a_selector_on_a_label_some_of_its_metrics_lack_is_refused(selector: str, matcher: str, lacking: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"selectors": {selector: matcher}})
    message = str(info.value)
    assert message.startswith(f"selectors.{selector}: {matcher} selects no series of ") and lacking in message
    assert ("slo.traffic_class" in message) == ("traffic_class" in matcher)


@pytest.mark.parametrize(("selector", "matcher"), [
    ("requests", 'service="recommender"'),  # every metric of the selector carries it
    ("requests", 'route!="/healthz"'),  # matches the series without a route too
    ("requests", 'traffic_class=~"realtime|"'),
    ("requests", 'pod=~"ranker-.*"'),  # a target label: none of the contract's, the operator's to know
    ("gpu", 'gpu="0"'),  # with dcgm-exporter as the source (below), aiwatch's GPU series are not read
    ("queue", 'queue="predict"'),
])
def test_a_selector_every_metric_can_satisfy_is_accepted(selector: str, matcher: str) -> None:
    data: dict[str, Any] = {"selectors": {selector: matcher}}
    if selector == "gpu":
        data["gpu"] = {"source": "dcgm"}
    assert getattr(config_from_dict(data).selectors, selector) == matcher


def test_selector_metrics_are_the_metrics_each_selector_reaches_in_the_rules() -> None:
    """The check above reads SELECTOR_METRICS: it must name exactly the contract metrics each selector is rendered
    into, or a selector newly applied to a metric without one of its labels would pass again."""
    import re

    from aiwatch.metrics import SPECS
    from aiwatch.rules.config import SELECTOR_METRICS

    for name, metrics in SELECTOR_METRICS.items():
        files = render(config_from_dict({"selectors": {name: 'zz_probe="p"'}}))
        reached = set()
        for expr in _exprs(files):
            for series_name in re.findall(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{[^{}]*zz_probe="p"', expr):
                base = re.sub(r"_(bucket|sum|count)$", "", series_name)
                reached.add(base if base in SPECS else series_name)
            # a selector naming its metrics by a regex on __name__ (AiwatchFeatureMissing sums several counters)
            for names in re.findall(r'\{__name__=~"([^"]*)"[^{}]*zz_probe="p"', expr):
                reached.update(names.split("|"))
        assert reached == set(metrics), name


def test_a_burn_factor_just_under_one_over_the_budget_is_accepted() -> None:
    """Objective 0.93 (budget 7%): a page factor of 14 asks for 98% of requests slow, which can happen."""
    page = {"windows": [{"long": "1h", "short": "5m", "factor": 14}, {"long": "6h", "short": "30m", "factor": 6}],
            "for": "2m"}
    cfg = config_from_dict({"slo": {"latency_objective": 0.93, "page": page}})
    assert "service:aiwatch_request_slow:ratio_rate1h / 0.07 > 14" in rule_files(cfg)[ALERTING_FILE]["groups"][0][
        "rules"][2]["expr"]
