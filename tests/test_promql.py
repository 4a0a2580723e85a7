"""aiwatch.promql on its own: string literals, regex escaping, matcher parsing, selectors and contract names.
Whether Prometheus reads the text the same way is checked with promtool in tests/alerts/test_rules_escaping.py."""

from __future__ import annotations

import ast
import json
import math
import re

import pytest

from aiwatch import promql
from aiwatch.metrics import CONTRACT
from aiwatch.promql import Matcher, eq, metric, one_of, parse_matchers, quote, selector, series, unquote
from tests.servers import require_module
from tests.sourcecode import parse

AWKWARD = ['a"b\\c}', "first\nsecond", "tab\there\r", "ctl\x01\x7f", 'a\\"},x="y', "ünïcode ✓", "", "'single'",
           "`tick`", "{{ $labels.x }}", "\\n literally"]


@pytest.mark.parametrize("value", AWKWARD)
def test_quote_round_trips_through_unquote(value: str) -> None:
    literal = quote(value)
    assert unquote(literal) == value
    assert "\n" not in literal and literal.startswith('"') and literal.endswith('"')


@pytest.mark.parametrize("value", AWKWARD)
def test_quote_reads_back_as_json_would_write_it(value: str) -> None:
    """JSON's string escapes are a subset of Go's, so an independent encoder gives the same value back."""
    assert unquote(json.dumps(value, ensure_ascii=False)) == value
    assert unquote(json.dumps(value)) == value  # \uXXXX escapes


def test_quote_escapes_the_characters_promql_needs() -> None:
    assert quote('a"b\\c}') == '"a\\"b\\\\c}"'
    assert quote("x\ny\tz\x01") == '"x\\ny\\tz\\x01"'
    assert quote("ü") == '"ü"'


@pytest.mark.parametrize(("literal", "value"), [
    ("'it\\'s'", "it's"), ('"\\x41\\101\\u00fc\\U0001F600"', "AAü😀"), ("`raw \\n`", "raw \\n"),
    ('"\\a\\b\\f\\v"', "\a\b\f\v"), ('"\\xc3\\xbc"', "ü"),
])
def test_unquote_reads_every_promql_escape(literal: str, value: str) -> None:
    assert unquote(literal) == value


@pytest.mark.parametrize("literal", [
    '"a\nb"',        # a raw newline
    '"a\\.b"',       # a regex escape that PromQL strings do not have
    '"a\\"',         # the closing quote escaped
    '"a"b"',         # an unescaped quote inside
    "\"\\'\"",       # \' inside double quotes
    '"\\x4"',        # short hex
    '"\\400"',       # octal above 255
    '"\\ud800"',     # a surrogate
    '"\\xff"',       # not UTF-8 once unescaped
    "`a`b`",
    "unquoted",
])
def test_unquote_rejects_what_promql_rejects(literal: str) -> None:
    with pytest.raises(ValueError):
        unquote(literal)


def test_escape_regex_matches_exactly_the_value() -> None:
    values = ["v1.2", "a|b", "x(y)*", "[z]+?", "^$", "back\\slash", "brace{2}"]
    pattern = re.compile(promql.alternatives(values))
    for value in values:
        assert pattern.fullmatch(value), value
    for near in ("v1x2", "a", "b", "xy", "z", "backslash", "braceee"):
        assert not pattern.fullmatch(near), near


def test_one_of_quotes_the_escaped_regex() -> None:
    assert str(one_of("feature", ['a.b', 'c"d', "e\\f"])) == 'feature=~"a\\\\.b|c\\"d|e\\\\\\\\f"'


def test_parse_matchers_reads_promql_matcher_text() -> None:
    assert parse_matchers("") == () and parse_matchers("  ") == ()
    assert parse_matchers(' service = "a\\"b" ,phase!~`x|y`,  le="+Inf",') == (
        Matcher("service", "=", 'a"b'), Matcher("phase", "!~", "x|y"), Matcher("le", "=", "+Inf"))


@pytest.mark.parametrize("text", [
    "service=recommender", 'service="x" phase="y"', '"x"', 'se rvice="x"', 'service=="x"', 'service="x",,',
    'service="a\nb"', '9x="y"', 'service="x"}',
])
def test_parse_matchers_rejects_what_is_not_a_matcher_list(text: str) -> None:
    with pytest.raises(ValueError):
        parse_matchers(text)


def test_selector_joins_matchers_and_rewrites_text_canonically() -> None:
    assert selector() == "" and selector("", "") == ""
    assert selector(eq("service", "x"), "phase=~'a|b'", "") == '{service="x", phase=~"a|b"}'
    assert series("up", 'job="aiwatch"') == 'up{job="aiwatch"}'
    with pytest.raises(ValueError):
        Matcher("not a label", "=", "x")
    with pytest.raises(ValueError):
        Matcher("label", "==", "x")  # type: ignore[arg-type]


def test_metric_names_come_from_the_contract() -> None:
    for spec in CONTRACT:
        assert metric(spec.name).name == spec.name
    requests = metric("aiwatch_request_duration_seconds")
    assert (requests.bucket, requests.sum, requests.count) == (
        "aiwatch_request_duration_seconds_bucket", "aiwatch_request_duration_seconds_sum",
        "aiwatch_request_duration_seconds_count")
    assert str(metric("aiwatch_feature_bin_total")) == "aiwatch_feature_bin_total"
    with pytest.raises(LookupError, match="not a metric of the contract"):
        metric("aiwatch_request_duration")
    with pytest.raises(ValueError, match="is a gauge"):
        _ = metric("aiwatch_queue_depth").bucket


def literal_metric_names(source: str) -> list[str]:
    """The ``aiwatch_*`` metric names spelled in string literals of ``source``, other than docstrings, the argument
    of a ``metric("...")`` lookup and recording-rule names (``level:aiwatch_metric:operation``)."""
    tree = parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            skip.add(id(node.body[0].value))  # type: ignore[attr-defined]
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "metric":
            skip.update(id(arg) for arg in node.args)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found += re.findall(r"(?<![\w:])aiwatch_[a-z_]+(?![\w:])", node.value)
    return found


def test_literal_metric_names_finds_names_in_code_only() -> None:
    source = ('''"""Reads aiwatch_docstring."""\nA = metric("aiwatch_looked_up")\n'''
              '''B = f"sum(aiwatch_spelled{x}) / rec:aiwatch_record:rate5m"\nC = ("aiwatch_argument", 1)\n''')
    assert literal_metric_names(source) == ["aiwatch_spelled", "aiwatch_argument"]


def test_every_module_that_writes_promql_names_its_metrics_through_the_contract() -> None:
    """No module that builds PromQL spells a metric name in code: each looks its names up in the contract once."""
    import inspect

    from aiwatch.console import queries
    from aiwatch.drift import promql as drift_promql
    from aiwatch.rules import render
    from aiwatch.signals import autoscaling

    for module in (render, queries, drift_promql, autoscaling):
        assert literal_metric_names(inspect.getsource(module)) == [], module.__name__


def test_expression_shapes() -> None:
    requests = metric("aiwatch_request_duration_seconds")
    assert promql.number(0.99) == "0.99" and promql.number(14.4) == "14.4" and promql.number(1e-5) == "1e-05"
    assert promql.by("sum", (), "x") == "sum(x)"
    assert promql.by("max", ("gpu", "name"), "x") == "max by (gpu, name) (x)"
    assert promql.histogram_quantile(0.5, requests, "5m", ("service",), eq("service", 'a"b')) == (
        'histogram_quantile(0.5, sum by (service, le) '
        '(rate(aiwatch_request_duration_seconds_bucket{service="a\\"b"}[5m])))')
    with pytest.raises(ValueError):
        promql.by("sum", ("bad label",), "x")


def test_number_is_exact_and_refuses_non_finite() -> None:
    assert promql.number(123456789012.5) == "123456789012.5" and promql.number(1e-07) == "1e-07"
    assert promql.number(2.0) == "2" and float(promql.number(0.1 + 0.2)) == 0.1 + 0.2
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="not a finite number"):
            promql.number(bad)


def test_quote_escapes_what_yaml_would_read_as_a_line_break() -> None:
    for value in ("a\x85b", "a\u2028b", "a\u2029b", "\ufeff", "\x9f"):
        literal = promql.quote(value)
        assert literal.isascii() and promql.unquote(literal) == value
    assert promql.quote("ü✓😀") == '"ü✓😀"'


@pytest.mark.parametrize(("regex", "ok"), [
    ("5..|UNKNOWN", True), ("(?i)inference|rerank", True), ("\\\\C", True), ("", True),
    ("(?=x)", False), ("a{1001}", False), ("\\C", False), ("(?<n>x)", False), ("\\Q", False), ("a)|(b", False),
    ("\\1", False), ("x" * 5000, False),
])
def test_check_regex_compiles_as_prometheus_does(regex: str, ok: bool) -> None:
    require_module("re2")
    if ok:
        assert promql.check_regex(regex) == regex
    else:
        with pytest.raises(ValueError):
            promql.check_regex(regex)
