"""The runbooks' PromQL, run in Prometheus's own engine (promtool) as the on-call will run it: every query parses;
the first one of each page (what fired) answers in its alert's firing scenario of the promtool unit tests, the
alert's labels in its ``<label>`` placeholders; and every one answers, its label values relaxed to "the label
exists", in some alert scenario that holds every series it reads. A renamed metric or label, or a label a recording
rule drops, leaves the on-call's query answering nothing, and this test names it. The aiwatch commands the pages give
take the flags they are given."""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from aiwatch.grpc.server import QUEUE_PHASE
from tests.alerts.test_rules import (
    PROMTOOL_TESTS,
    RUNBOOKS,
    alert_rules,
    promql_metric_names,
    recording_rules,
    yaml,
)
from tests.servers import require_binary

PLACEHOLDER = re.compile(r"<([a-z_]+)>")
#: a query's comment saying it is the one to run with dcgm-exporter's GPU series
DCGM_ONLY = "with gpu.source: dcgm"
# a trailing filter asks a yes/no question ("any GPU down?"): "no" is an empty answer, so the series it filters
# must exist, not pass it
TRAILING_FILTER = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*[-+]?[0-9.]+(?:[eE][-+]?\d+)?\s*$")
# queries whose empty answer is what the alert's scenario shows
EMPTY_WHILE_FIRING = {
    ("AiwatchTargetAbsent", 'up{job="aiwatch"}'),  # no target at all: that is the alert
}


def runbook_queries(page: Path, source: str | None = None) -> list[str]:
    """The queries of a page's ```promql blocks, one per line, an indented line continuing the one above; comments
    (``#`` to the end of the line) dropped. ``source`` "aiwatch" leaves out the queries whose comment says they are
    for ``gpu.source: dcgm`` (their labels are dcgm-exporter's: test_rules_dcgm.py runs them), "dcgm" keeps only
    those."""
    queries: list[tuple[str, bool]] = []
    for block in re.findall(r"```promql\n(.*?)```", page.read_text(), re.S):
        for line in block.splitlines():
            code = re.sub(r'#[^"]*$', "", line).rstrip()
            if not code.strip():
                continue
            if line[:1].isspace() and queries:
                queries[-1] = (queries[-1][0] + " " + code.strip(), queries[-1][1] or DCGM_ONLY in line)
            else:
                queries.append((code.strip(), DCGM_ONLY in line[len(code):]))
    return [q for q, dcgm in queries if source is None or dcgm == (source == "dcgm")]


def firing_scenarios() -> list[tuple[str, Path, dict[str, Any], dict[str, Any], str]]:
    """Firing cases of the promtool unit tests: each alert's first, and its first with each other set of label
    names (per cluster, per result...) or of input series (the event loop's stuck branch reads a series its other
    cases lack), in file order: (alert, test file, the case's group without its alert cases, the alert's labels,
    when)."""
    found: dict[tuple[str, frozenset[str], frozenset[str]], tuple[str, Path, dict[str, Any], dict[str, Any], str]] = {}
    for path in PROMTOOL_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            series = {k: v for k, v in group.items() if k not in ("alert_rule_test", "promql_expr_test")}
            read = frozenset(re.split(r"[{\s]", s["series"], maxsplit=1)[0] for s in group.get("input_series", []))
            for case in group.get("alert_rule_test", []):
                if case["exp_alerts"]:
                    labels = case["exp_alerts"][0]["exp_labels"]
                    found.setdefault((case["alertname"], frozenset(labels), read),
                                     (case["alertname"], path, series, labels, case["eval_time"]))
    return list(found.values())


def probe(query: str, scenario: int) -> str:
    """An expression that is empty when ``query`` answers in scenario ``scenario`` (so that promtool's expected
    ``exp_samples: []`` passes), and spelled apart from the same query's probe in another scenario: promtool names
    a failed case by its expression only."""
    return f'absent(label_replace({query}, "runbook_scenario", "{scenario}", "", ""))'


def test_runbook_queries_parse_in_prometheus(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for i, query in enumerate(runbook_queries(page)):
            rules.append({"record": f"runbook:{page.stem}:q{i}", "expr": PLACEHOLDER.sub(r"\1", query)})
    assert len(rules) > 80
    path = tmp_path / "runbooks.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbooks", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, "a runbook query does not parse:\n" + proc.stdout + proc.stderr


def relaxed(query: str) -> str:
    """``query`` with each matcher that wants a value (``label="value"``, ``label=~"regex"`` not matching "") made
    ``label=~".+"`` (metric names kept): it answers wherever the labels it filters on exist, whichever their
    values."""
    def relax(m: re.Match[str]) -> str:
        value = m.group(3)
        if m.group(1) == "__name__" or (m.group(2) == "=~" and re.fullmatch(value, "")):
            return m.group(0)
        return f'{m.group(1)}=~".+"'
    return re.sub(r'([a-zA-Z_]\w*)\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"', relax, query)


def test_runbook_queries_answer_in_the_alerts_scenarios(tmp_path: Path) -> None:
    """The first query of each page (what fired) answers in its alert's own firing scenario, the alert's labels in its
    placeholders; every query answers, its matchers relaxed to "the label exists", in one of the scenarios that hold
    every series it reads (most hold only the series their alert reads)."""
    promtool = require_binary("promtool")
    scenarios = firing_scenarios()
    queries = {p.stem: runbook_queries(p, "aiwatch") for p in sorted(RUNBOOKS.glob("*.md"))}
    assert set(queries) <= {s[0] for s in scenarios}, "an alert with no firing promtool case to run its runbook in"
    first_seen: set[str] = set()
    rule_files: list[str] = []
    groups: list[dict[str, Any]] = []
    firing: list[tuple[str, str, int]] = []  # (page, first query filled, its scenario)
    names = {query: promql_metric_names(query) for page_queries in queries.values() for query in page_queries}
    for index, (alert, path, series, labels, eval_time) in enumerate(scenarios):
        doc = yaml.safe_load(path.read_text())
        files = [str((path.parent / f).resolve()) for f in doc["rule_files"]]
        assert not rule_files or files == rule_files, "every promtool test file reads the same rule files"
        rule_files, order = files, doc["group_eval_order"]
        exprs = {probe(relaxed(TRAILING_FILTER.sub("", q)), index) for q in names}
        exprs |= {probe(n, index) for q in names for n in names[q]}
        for query in queries.get(alert, []):
            missing = set(PLACEHOLDER.findall(query)) - set(labels) - {"prometheus"}
            assert not missing, f"{alert}: {query!r} has placeholders its alert has no label for: {missing}"
        filled = PLACEHOLDER.sub(lambda m, labels=labels: str(labels[m.group(1)]), queries[alert][0])
        if alert not in first_seen and (alert, filled) not in EMPTY_WHILE_FIRING:
            first_seen.add(alert)
            firing.append((alert, filled, index))
            exprs.add(probe(TRAILING_FILTER.sub("", filled), index))
        group = copy.deepcopy(series)
        # exp_samples [] passes when absent() is empty, that is when the query answers
        group["promql_expr_test"] = [{"expr": e, "eval_time": eval_time, "exp_samples": []} for e in sorted(exprs)]
        groups.append(group)
    test = tmp_path / "runbooks_test.yml"
    test.write_text(yaml.safe_dump({"rule_files": rule_files, "evaluation_interval": "1m",
                                    "group_eval_order": order, "tests": groups}, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert "parse error" not in out.lower() and ("SUCCESS" in out or "FAILED:" in out), out

    def answers(expr: str, index: int) -> bool:
        return f"expr: {json.dumps(probe(expr, index))}," not in out

    silent = [f"{page}: {query}" for page, query, i in firing if not answers(TRAILING_FILTER.sub("", query), i)]
    assert not silent, "the first query of these runbooks answers nothing while their alert fires:\n" + \
        "\n".join(silent)
    empty, answered, without_data = [], 0, 0
    for query, read in names.items():
        with_data = [i for i in range(len(groups)) if all(answers(n, i) for n in read)]
        if not with_data:
            without_data += 1  # no scenario holds every series it reads: nothing to learn
        elif any(answers(relaxed(TRAILING_FILTER.sub("", query)), i) for i in with_data):
            answered += 1
        else:
            empty.append(query)
    assert not empty, ("runbook queries answer nothing, whatever their label values, in every alert scenario that "
                       "holds the series they read (a wrong label, a label the recording rules drop?):\n"
                       + "\n".join(empty))
    # the check saw most queries, so it cannot pass vacuously
    assert answered > 2 * without_data and len(firing) == len(queries) - 1, (answered, without_data, len(firing))


def series_read(expr: str) -> set[str]:
    """The metric names ``expr`` reads, those of its ``__name__=~"a|b"`` selectors included."""
    return promql_metric_names(expr).union(*(m.split("|") for m in re.findall(r'__name__=~"([^"]*)"', expr)))


def test_the_first_query_of_each_runbook_reads_what_its_alert_reads() -> None:
    """The on-call's first query is the alert's own signal: a slow burn's page showed the 5-minute ratio of the fast
    one, which reads 0 the morning after a night that spent the budget."""
    records = {r["record"]: series_read(r["expr"]) for r in recording_rules()}

    def through_records(names: set[str]) -> set[str]:  # a record's own inputs are what the alert reads too
        found = set(names)
        while more := {n for name in found for n in records.get(name, ())} - found:
            found |= more
        return found

    reads: dict[str, set[str]] = {}
    for rule in alert_rules():
        reads.setdefault(rule["alert"], set()).update(through_records(series_read(rule["expr"])))
    for page in sorted(RUNBOOKS.glob("*.md")):
        first = runbook_queries(page)[0]
        assert series_read(first) & reads[page.stem], f"{page.name}: its first query {first!r} reads nothing " \
            f"its alert reads ({sorted(reads[page.stem])})"


def test_the_non_model_runbook_names_the_phases_aiwatch_records_itself() -> None:
    """AiwatchNonModelLatencyHigh fires with the slow phase in its ``phase`` label; a thread-pool gRPC server's wait
    for a worker is ``queue_pool``, which the page did not name."""
    text = (RUNBOOKS / "AiwatchNonModelLatencyHigh.md").read_text()
    for section in ("Meaning", "Mitigation"):
        body = re.search(rf"\n## {section}\n(.*?)(?=\n## |\Z)", text, re.S)
        assert body, section
        for phase in ("queue", QUEUE_PHASE, "features", "overhead", "network"):
            assert f"`{phase}`" in body.group(1), f"{section} does not name the {phase!r} phase"


def test_the_aiwatch_commands_of_the_runbooks_take_the_flags_they_are_given() -> None:
    """``aiwatch <command> --flag`` in a runbook, and a flag on its own (``--incident 10m``) on a page that gives
    aiwatch commands, is an option of the command (of one of the page's commands); a page that gives a diagnose
    command says how to point it at the alert's cluster."""
    from aiwatch.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in commands.items()}
    others = {"--native", "--limit-max-requests"}  # py-spy's and uvicorn's, on the event loop's page
    checked = 0
    for page in sorted(RUNBOOKS.glob("*.md")):
        text = page.read_text()
        spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"```bash\n(.*?)```", text, re.S)
        named = set(re.findall(r"\baiwatch ([a-z]+) ", text)) & set(options)
        for span in spans:
            for line in span.splitlines():
                command = re.match(r"aiwatch ([a-z]+)\b", line)
                if command:
                    assert command.group(1) in options, f"{page.name}: no command aiwatch {command.group(1)}"
                    allowed = options[command.group(1)]
                elif line.startswith("--") and named:
                    allowed = set().union(*(options[n] for n in named)) | others
                else:
                    continue
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
                    assert flag in allowed, f"{page.name}: {line!r}: {flag} is not an option of aiwatch {named}"
                    checked += 1
        if "aiwatch diagnose --prometheus" in text:
            # diagnose refuses (exit 2) a service several clusters run until --match says which: the alert's cluster
            assert "--match 'cluster=\"<cluster>\"'" in text, f"{page.name}: no --match for a multi-cluster alert"
    assert checked > 40


def run_with_rendered_rules(tmp_path: Path, cfg: Any, interval: str, series: list[dict[str, str]],
                            cases: list[dict[str, Any]]) -> None:
    """promtool's unit test of ``cases`` over ``series`` (scraped every ``interval``), with the rules ``cfg``
    renders loaded: what a Prometheus running that config's rules answers."""
    from aiwatch.rules import render

    promtool = require_binary("promtool")
    for name, text in render(cfg).items():
        (tmp_path / name).write_text(text)
    test = tmp_path / "rendered_test.yml"
    test.write_text(yaml.safe_dump({
        "rule_files": sorted(render(cfg)), "evaluation_interval": interval,
        "tests": [{"interval": interval, "input_series": series, "promql_expr_test": cases}]}, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_availability_pages_list_the_errors_their_alert_counts_under_any_config(tmp_path: Path) -> None:
    """The availability pages' errors per route and status are those of the config's ``slo.traffic_class`` and
    ``slo.error_status``, and add up to the error ratio the alert reads: the pages wrote the defaults' regexes, so
    with ``traffic_class: interactive`` and 429 counted as an error they listed a realtime route's 500s, which burn
    no budget, and not the interactive route's 429s that fired the page."""
    from aiwatch.rules import RulesConfig

    cfg = RulesConfig()
    cfg.slo.traffic_class, cfg.slo.error_status = "interactive", "5..|429"
    pages = {("AiwatchAvailabilityBudgetBurnFast", "5m"): 1, ("AiwatchAvailabilityBudgetBurnSlow", "1d"): 86400}
    # per second, for a day, scraped every minute: /a's 429s and /c's 503s count; /b's 500s are realtime, and the
    # batch 500s are of no class the config names
    rates = [("interactive", "/a", "429", 0.1), ("interactive", "/c", "503", 0.05), ("interactive", "/a", "200", 0.85),
             ("realtime", "/b", "500", 0.2), ("batch", "/a", "500", 0.3)]
    series = [{"series": f'aiwatch_request_duration_seconds_count{{service="checkout", traffic_class="{cls}", '
                         f'route="{route}", status="{status}"}}', "values": f"0+{round(r * 60)}x1440"}
              for cls, route, status, r in rates]
    cases = []
    for (name, window), per in pages.items():
        (query,) = [q for q in runbook_queries(RUNBOOKS / f"{name}.md") if "route" in q]
        filled = query.replace("<service>", "checkout")
        cases.append({"expr": f"round(({filled}) / {per} * 1000)", "eval_time": "1d", "exp_samples": [
            {"labels": f'{{service="checkout", route="{route}", status="{status}"}}', "value": round(r * 1000)}
            for cls, route, status, r in rates[:2]]})
        # what the page lists, over the requests the alert counts, is the alert's error ratio (0.15)
        cases.append({"expr": f"abs(sum by (service) ({filled}) / {per} / service:aiwatch_requests:rate{window}"
                              f" - service:aiwatch_request_errors:ratio_rate{window}) < bool 1e-9",
                      "eval_time": "1d", "exp_samples": [{"labels": '{service="checkout"}', "value": 1}]})
        cases.append({"expr": f"round(service:aiwatch_request_errors:ratio_rate{window} * 100)", "eval_time": "1d",
                      "exp_samples": [{"labels": '{service="checkout"}', "value": 15}]})
    run_with_rendered_rules(tmp_path, cfg, "1m", series, cases)


def test_the_burn_rate_queries_of_the_runbooks_follow_the_rendered_objectives(tmp_path: Path) -> None:
    """The SLO pages' burn-rate queries read the recorded burn rates, which the rules render from the config's
    objectives: the pages divided by the defaults' budgets, ``/ (1 - 0.999)``, so with a 99% availability objective
    the on-call read a burn rate of 100 where the alert said 10."""
    from aiwatch.rules import RulesConfig

    pages = {name: runbook_queries(RUNBOOKS / f"{name}.md") for name in (
        "AiwatchAvailabilityBudgetBurnFast", "AiwatchAvailabilityBudgetBurnSlow", "AiwatchLatencyBudgetBurnSlow",
        "AiwatchTimeToFirstTokenBudgetBurnSlow")}
    for page in sorted(RUNBOOKS.glob("*.md")):
        for query in runbook_queries(page):
            assert not re.search(r"\(\s*1\s*-\s*0\.9", query), f"{page.name}: a budget written in: {query}"
    burns = {name: [q for q in queries if ":burn_rate" in q] for name, queries in pages.items()}
    assert all(burns.values()), burns
    cfg = RulesConfig()
    cfg.slo.availability_objective, cfg.slo.latency_objective, cfg.streaming.ttft_objective = 0.99, 0.95, 0.95
    labels = 'service="checkout", traffic_class="realtime"'
    # 1 request in 10 fails, 1 in 4 is slower than 300 ms, 1 stream in 2 is slower to its first token than 1 s,
    # for a day, scraped every 5 minutes: every ratio is flat, so each window's burn rate is the ratio over the
    # configured budget
    series = [
        {"series": f'aiwatch_request_duration_seconds_count{{{labels}, status="200"}}', "values": "0+450x300"},
        {"series": f'aiwatch_request_duration_seconds_count{{{labels}, status="500"}}', "values": "0+50x300"},
        {"series": f'aiwatch_request_duration_seconds_bucket{{{labels}, status="200", le="0.3"}}',
         "values": "0+375x300"},
        {"series": f'aiwatch_gen_ai_time_to_first_token_seconds_count{{{labels}}}', "values": "0+100x300"},
        {"series": f'aiwatch_gen_ai_time_to_first_token_seconds_bucket{{{labels}, le="1.0"}}', "values": "0+50x300"},
    ]
    expected = {"request_errors": 10, "request_slow": 5, "gen_ai_ttft_slow": 10}  # 0.1/0.01, 0.25/0.05, 0.5/0.05
    cases = []
    for queries in burns.values():
        for query in queries:
            filled = query.replace("<service>", "checkout")
            (kind,) = re.findall(r"service:aiwatch_(\w+):burn_rate", filled)
            # the answer within float noise of the burn rate (0.1 / 0.01 is 9.999999999999998), labels kept
            cases.append({"expr": f"abs({filled} - {expected[kind]}) < bool 1e-9", "eval_time": "1d",
                          "exp_samples": [{"labels": '{service="checkout"}', "value": 1}]})
    run_with_rendered_rules(tmp_path, cfg, "5m", series, cases)
    assert len(cases) == 5


def test_the_target_down_page_reads_the_job_its_alert_names_under_any_config(tmp_path: Path) -> None:
    """AiwatchTargetDown's queries name the alert's own ``job``: they wrote the default ``selectors.targets``,
    ``job="aiwatch"``, so with the targets in ``job="recsys"`` (docs/alerts.md's example config) the page's
    ``up{job="aiwatch"} == 0`` answered nothing while the alert fired for ``recsys``'s down target. No other page
    writes that default in a query, but AiwatchTargetAbsent, whose alert has no ``job`` label in its per-cluster
    form, and says so."""
    from aiwatch.rules import RulesConfig

    for page in sorted(RUNBOOKS.glob("*.md")):
        if page.stem != "AiwatchTargetAbsent":
            assert not [q for q in runbook_queries(page) if 'job="aiwatch"' in q], page.name
    absent = (RUNBOOKS / "AiwatchTargetAbsent.md").read_text()
    assert "`job=\"aiwatch\"` below is the default\n`selectors.targets`" in absent
    cfg = RulesConfig()
    cfg.selectors.targets = 'job="recsys"'
    labels = {"job": "recsys", "instance": "b:8000"}
    series = [{"series": f'{name}{{job="recsys", instance="{instance}"}}', "values": values}
              for instance, up in (("a:8000", "1x20"), ("b:8000", "0x20"))
              for name, values in (("up", up), ("scrape_duration_seconds", "0.01x20"),
                                   ("scrape_samples_scraped", "100x20"))]
    queries = runbook_queries(RUNBOOKS / "AiwatchTargetDown.md")
    filled = [PLACEHOLDER.sub(lambda m: labels[m.group(1)], q) for q in queries]
    cases = [{"expr": 'ALERTS{alertname="AiwatchTargetDown", alertstate="firing"}', "eval_time": "10m",
              "exp_samples": [{"labels": 'ALERTS{alertname="AiwatchTargetDown", alertstate="firing", '
                                         'instance="b:8000", job="recsys", severity="warning"}', "value": 1}]}]
    cases += [{"expr": f"count({q})", "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 1}]}
              for q in filled]
    assert len(cases) == 4
    run_with_rendered_rules(tmp_path, cfg, "1m", series, cases)
