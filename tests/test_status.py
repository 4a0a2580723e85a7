"""One definition of an error (aiwatch.status): the rules' default ``slo.error_status``, the console's error ratio
(and so the Grafana dashboards'), diagnose's error read and the Python check the scrape source and diagnose use on
raw series all count the same statuses, checked by Prometheus' own engine (promtool) for every HTTP class and every
gRPC code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from aiwatch.console.queries import PanelQueries
from aiwatch.diagnose.sources import read_promql
from aiwatch.diagnose.window import READS
from aiwatch.rules import RulesConfig
from aiwatch.semconv import RpcConventions, end_grpc_span, end_http_server_span
from aiwatch.status import ERROR_STATUS_RE, GRPC_SERVER_ERRORS, is_error_status
from tests.servers import REPO, require_binary, require_module

yaml = require_module("yaml")

GRPC_CODES = [code.name for code in grpc.StatusCode]
STATUSES = ["200", "204", "301", "404", "429", "499", "500", "502", "503", "504", "599", *GRPC_CODES]
ERROR_READ = next(r for r in READS if r.errors_only)


def test_the_set_is_http_5xx_and_the_grpc_server_failures() -> None:
    assert [s for s in STATUSES if is_error_status(s)] == [
        "500", "502", "503", "504", "599", "UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
        "DATA_LOSS"]
    assert set(GRPC_SERVER_ERRORS) <= set(GRPC_CODES)
    # a client that went away (499), a client cancel, a quota or overload refusal are not the server failing
    for status in ("499", "CANCELLED", "RESOURCE_EXHAUSTED", "429", "", "5", "5000", "500\n", "error"):
        assert not is_error_status(status), status


def test_every_consumer_is_written_with_the_one_definition() -> None:
    selector = f'status=~{json.dumps(ERROR_STATUS_RE)}'
    assert RulesConfig().slo.error_status == ERROR_STATUS_RE
    assert selector in (REPO / "alerts" / "aiwatch-recording.rules.yml").read_text()
    assert selector in PanelQueries().error_ratio("1m")
    assert selector in read_promql(ERROR_READ, 300)
    for dashboard in ("aiwatch.json", "aiwatch-dcgm.json"):
        panels = json.loads((REPO / "dashboards" / dashboard).read_text())["panels"]
        (error_panel,) = [p for p in panels if p["title"] == "Error ratio"]
        assert selector in error_panel["targets"][0]["expr"]


def test_a_server_span_is_an_error_exactly_when_its_status_counts_as_one() -> None:
    """The traces (OpenTelemetry's conventions, aiwatch.semconv) and the metrics agree on every status."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import StatusCode

    tracer = TracerProvider().get_tracer("test")
    for status in STATUSES:
        with tracer.start_as_current_span("call") as span:
            if status.isdigit():
                end_http_server_span(span, True, "GET", "/x", int(status), None)
            else:
                end_grpc_span(span, RpcConventions(), status, grpc.StatusCode[status].value[0], None, server=True)
        assert (span.status.status_code is StatusCode.ERROR) == is_error_status(status), status  # type: ignore[attr-defined]


@pytest.mark.slow
def test_prometheus_counts_the_same_statuses_in_the_rules_the_console_and_diagnose(tmp_path: Path) -> None:
    """One service per status, every request with that status: its error ratio is 1 exactly when
    ``is_error_status`` says so, in the recording rule, the console's query and diagnose's read."""
    promtool = require_binary("promtool")
    services = {status: f"s{i}" for i, status in enumerate(STATUSES)}
    # traffic_class="realtime": the SLO rules count real-time traffic (slo.traffic_class)
    series = [{"series": f'aiwatch_request_duration_seconds_count{{service="{svc}", traffic_class="realtime", '
                         f'status="{status}"}}',
               "values": "0+60x20"} for status, svc in services.items()]

    ratio = [{"labels": f'{{service="{svc}"}}', "value": 1 if is_error_status(status) else 0}
             for status, svc in services.items()]
    test = {
        "rule_files": [str(REPO / "alerts" / "aiwatch-recording.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
            {"eval_time": "10m", "expr": "sum by (service) (service:aiwatch_request_errors:ratio_rate5m)",
             "exp_samples": ratio},
            {"eval_time": "10m", "expr": f"sum by (service) ({PanelQueries(scope=()).error_ratio('5m')})",
             "exp_samples": ratio},
            {"eval_time": "10m", "expr": f"sum by (service) ({read_promql(ERROR_READ, 300)} > bool 0)",
             "exp_samples": [r for r in ratio if r["value"] == 1]},
        ]}],
    }
    path = tmp_path / "status_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
