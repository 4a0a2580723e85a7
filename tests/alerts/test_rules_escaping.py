"""Rules rendered for label values with quotes, backslashes, braces and newlines are valid PromQL (``promtool check
rules``) and select exactly those values on a real evaluator (``promtool test rules``: input series carrying the
value and decoys that a broken escaping would select instead).

The test file's series are written with ``json.dumps``, an encoder independent of :mod:`aiwatch.promql` (JSON's
string escapes are a subset of PromQL's).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aiwatch.promql import eq
from aiwatch.rules import ALERTING_FILE, RECORDING_FILE, RulesConfig, Selectors, render
from tests.servers import require_binary, require_module

yaml = require_module("yaml")

pytestmark = pytest.mark.slow

#: (the service, decoys a wrong escaping would select or merge with it)
CASES = [
    ('a"b\\c}', ['a"b\\c', 'a\\"b\\\\c}', 'a"b']),
    ("first\nsecond", ["first\\nsecond", "first", "second", "first second"]),
    ('a\\"},x="y', ["a\\", 'a\\"},x=', 'a"},x="y']),
]
ERROR_STATUS = '5..|bad "quote"'
"""A status regex with quotes: a request with status `bad "quote"` fails."""
MODEL_PHASES = "inference|re\\.rank"
"""A phase regex with an escaped dot: ``re.rank`` is model time, ``reXrank`` is not."""


def config(service: str) -> RulesConfig:
    matcher = str(eq("service", service))
    selectors = Selectors(**{name: matcher for name in ("requests", "network", "queue", "gpu", "cache", "drift",
                                                         "instrumentation", "targets")})
    cfg = RulesConfig(selectors=selectors)
    cfg.slo.error_status = ERROR_STATUS
    cfg.latency.model_phases = MODEL_PHASES
    return cfg


def series(name: str, **labels: str) -> str:
    return name + "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"


def unit_test(rules: Path, service: str, decoys: list[str]) -> dict[str, object]:
    """Per minute, the service gets 90 ok + 30 failed requests (2/s, error ratio 0.25) and spends 15 s in phase
    ``re.rank`` (model) and 45 s in ``reXrank`` (not model): 0.75 of its time outside the model. Each decoy gets other
    numbers, so a selector that also matched a decoy adds a series or changes a value."""
    requests = "aiwatch_request_duration_seconds_count"
    phases = "aiwatch_phase_duration_seconds_sum"
    inputs = [
        {"series": series(requests, service=service, route="/", method="GET", status="200",
                          traffic_class="realtime"), "values": "0+90x10"},
        {"series": series(requests, service=service, route="/", method="GET", status='bad "quote"',
                                traffic_class="realtime"),
         "values": "0+30x10"},
        {"series": series(phases, service=service, model="m", phase="re.rank"), "values": "0+15x10"},
        {"series": series(phases, service=service, model="m", phase="reXrank"), "values": "0+45x10"},
    ]
    for decoy in decoys:
        inputs += [
            {"series": series(requests, service=decoy, route="/", method="GET", status="503",
                                   traffic_class="realtime"), "values": "0+600x10"},
            {"series": series(phases, service=decoy, model="m", phase="re.rank"), "values": "0+600x10"},
        ]

    def expect(record: str, value: float) -> dict[str, object]:
        return {"eval_time": "10m", "expr": record,
                "exp_samples": [{"labels": series(record, service=service), "value": value}]}

    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": [
            expect("service:aiwatch_requests:rate5m", 2),
            expect("service:aiwatch_request_errors:ratio_rate5m", 0.25),
            expect("service:aiwatch_time_outside_model:ratio", 0.75),
        ]}],
    }


@pytest.mark.parametrize(("service", "decoys"), CASES, ids=["quote-backslash-brace", "newline", "injection"])
def test_rules_for_awkward_label_values_check_and_select_exactly_them(tmp_path: Path, service: str,
                                                                      decoys: list[str]) -> None:
    promtool = require_binary("promtool")
    for name, text in render(config(service)).items():
        (tmp_path / name).write_text(text)
    files = [str(tmp_path / RECORDING_FILE), str(tmp_path / ALERTING_FILE)]
    check = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    test_file = tmp_path / "escaping_test.yml"
    test_file.write_text(yaml.safe_dump(unit_test(tmp_path / RECORDING_FILE, service, decoys)))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_unit_test_can_fail(tmp_path: Path) -> None:
    """The same promtool test against rules whose selector names a decoy fails: the check is not vacuous."""
    promtool = require_binary("promtool")
    service, decoys = CASES[0]
    (tmp_path / RECORDING_FILE).write_text(render(config(decoys[1]))[RECORDING_FILE])
    test_file = tmp_path / "escaping_test.yml"
    test_file.write_text(yaml.safe_dump(unit_test(tmp_path / RECORDING_FILE, service, decoys)))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr
