"""``aiwatch diagnose`` as a person runs it: the report and --json on a real Prometheus, and every failure as one
clear line on stderr with its documented exit code, never a traceback."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from aiwatch import clock
from aiwatch.cli import main
from aiwatch.diagnose import PrometheusWindows, diagnose
from aiwatch.exposition import start_http_server
from aiwatch.promapi import PrometheusAPI
from tests.console.workload import serve
from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.traffic import BASELINE, INCIDENT, History
from tests.servers import free_port, handler_server, prometheus, require_module


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["diagnose", *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiwatch diagnose: "), err
    assert "Traceback" not in err
    return lines[0]


def at_incident(h: History) -> list[str]:
    return ["--incident", f"{INCIDENT:g}s", "--baseline", f"{BASELINE:g}s", "--at", f"{h.incident_end:.0f}"]


@contextmanager
def answering(status: int, body: bytes, content_type: str = "application/json") -> Iterator[str]:
    """An HTTP server answering every GET with ``body``: something at the URL that is not Prometheus."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with handler_server(Handler) as url:
        yield url


# --- a diagnosis ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_report_opens_with_the_verdict_then_the_tables(capsys: pytest.CaptureFixture[str],
                                                           network_history: History, prometheus_url: str) -> None:
    code, out, err = run(capsys, "--prometheus", prometheus_url, "--service", "gateway", *at_incident(network_history))
    assert code == 0, err
    expected = diagnose(PrometheusWindows(prometheus_url), "gateway", INCIDENT, BASELINE, network_history.incident_end)
    lines = out.splitlines()
    assert lines[0] == expected.verdict
    assert lines[2].startswith("baseline ") and lines[3].startswith("incident ")
    table = out.index("Time per request of gateway, by part")
    first_row = out[table:].splitlines()[2]
    assert first_row.split()[:4] == ["network", "gateway", "->", "inference"]
    assert re.search(r" \+(19[0-9]|20[0-9]) +100%$", first_row), first_row  # the 200 ms injected, all of the added time
    assert "Tail: seconds spent in requests slower than 100 ms" in out
    assert "Signals (baseline -> incident)" in out and "request rate (service=gateway)" in out


@pytest.mark.slow
def test_json_is_the_diagnosis_object_and_rfc3339_means_the_same_time(capsys: pytest.CaptureFixture[str],
                                                                      network_history: History,
                                                                      prometheus_url: str) -> None:
    h = network_history
    code, out, _ = run(capsys, "--prometheus", prometheus_url, *at_incident(h), "--json")
    assert code == 0
    found = json.loads(out)
    assert found["warnings"] == []  # Prometheus' answers were complete
    assert found["service"] == "gateway"  # the entry service, chosen when none is named
    assert found["cause"] == "network:gateway->inference"
    top = found["contributors"][0]
    assert (top["component"], top["service"], top["peer"], top["phase"]) == ("network", "gateway", "inference",
                                                                             "inference_call")
    assert top["delta_seconds"] == pytest.approx(top["incident_seconds"] - top["baseline_seconds"])
    assert found["incident"]["end"] == pytest.approx(h.incident_end)
    assert found["baseline"]["end"] == pytest.approx(h.incident_start)
    rfc3339 = dt.datetime.fromtimestamp(h.incident_end, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args = ["--prometheus", prometheus_url, "--incident", "5m", "--baseline", "20m", "--at", rfc3339, "--json"]
    assert run(capsys, *args)[1] == out


@pytest.mark.slow
def test_the_noise_floor_and_model_phases_are_options(capsys: pytest.CaptureFixture[str], network_history: History,
                                                      prometheus_url: str) -> None:
    base = ["--prometheus", prometheus_url, *at_incident(network_history), "--json"]
    found = json.loads(run(capsys, *base, "--noise-floor", "1s")[1])
    assert found["noise_floor_seconds"] == 1.0 and found["cause"] == "none"
    found = json.loads(run(capsys, *base, "--model-phase", "queue")[1])
    components = {(c["component"], c["phase"]) for c in found["contributors"]}
    assert ("model", "queue") in components and ("model", "inference") not in components


# --- failures -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--incident", "5 minutes"], "--incident: not a duration: '5 minutes'"),
    (["--baseline=-1h"], "--baseline: not a duration"),
    (["--baseline", "0"], "--baseline: a duration must be positive"),
    (["--at", "yesterday"], "--at: not a time: 'yesterday'"),
    (["--noise-floor", "lots"], "--noise-floor: not a duration"),
])
def test_invalid_arguments_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = run(capsys, "--prometheus", "http://127.0.0.1:9", *args)
    assert code == 2 and out == ""
    assert message in one_clear_line(err)


@pytest.mark.parametrize("url", ["", "  "])
def test_an_empty_prometheus_url_is_named(capsys: pytest.CaptureFixture[str], url: str) -> None:
    # it was taken as no --prometheus, and the error named the scrape path's class: "ScrapeSource needs at least
    # one /metrics endpoint URL"
    code, out, err = run(capsys, "--prometheus", url)
    assert code == 2 and out == ""
    assert "--prometheus: an empty URL" in one_clear_line(err)


def test_a_url_that_is_not_http_and_at_with_scrape_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--prometheus", "ftp://prom:9090")
    assert code == 2 and "Prometheus URL must look like http://host:9090" in one_clear_line(err)
    code, _, err = run(capsys, "--scrape", "http://127.0.0.1:9/metrics", "--at", "1700000000")
    assert code == 2 and "--at needs --prometheus" in one_clear_line(err)


def test_a_source_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["diagnose", "--service", "gateway"])
    assert info.value.code == 2
    assert "one of the arguments --prometheus --scrape is required" in capsys.readouterr().err


def test_unreachable_prometheus_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "--prometheus", url, "--timeout", "2s")
    assert code == 3 and out == ""
    assert f"Prometheus at {url} is unreachable" in one_clear_line(err)


@pytest.mark.parametrize(("status", "body", "message"), [
    (200, b"<html>hello</html>", "did not answer with JSON; is it a Prometheus server?"),
    (200, b'{"status": "success", "data": {"resultType": "vector", "result": [{"oops": 1}]}}',
     "holds a sample that is not [time, \"value\"]"),
    (200, b'{"hello": "world"}', "Prometheus query failed: {'hello': 'world'}"),
    (503, b'{"status": "error", "error": "overloaded"}', "Prometheus answered 503 to /api/v1/query: overloaded"),
    # a message's control characters are escaped, its backslashes (a regex's, quoted by Prometheus) left as written
    (400, b'{"status": "error", "error": "bad regex \\\\d\\u001b"}', "/api/v1/query: bad regex \\d\\x1b"),
])
def test_a_garbage_answer_exits_3(capsys: pytest.CaptureFixture[str], status: int, body: bytes,
                                  message: str) -> None:
    with answering(status, body) as url:
        code, out, err = run(capsys, "--prometheus", url)
    assert code == 3 and out == ""
    assert message in one_clear_line(err)


@pytest.mark.slow
@pytest.mark.parametrize("re2", ["installed", "absent"])
@pytest.mark.parametrize(("match", "regex"), [('cluster=~"eu-("', "eu-("), ('cluster!~"(?=x)"', "(?=x)")])
def test_a_match_regex_prometheus_cannot_compile_exits_2_naming_it(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch, re2: str,
                                                                   match: str, regex: str) -> None:
    # it got Prometheus' 400 to its first query, exit 3, as if Prometheus had failed: "Prometheus answered 400 to
    # /api/v1/query: invalid parameter "query": 1:87: parse error: error parsing regexp: missing closing )"
    if re2 == "absent":  # the core install: Prometheus' own 400 is the check, reworded to name --match
        monkeypatch.setitem(sys.modules, "re2", None)
    else:
        require_module("re2")
    with prometheus() as prom:
        code, out, err = run(capsys, "--prometheus", prom.url, "--match", match)
    line = one_clear_line(err)
    assert code == 2 and out == ""
    assert line.startswith("aiwatch diagnose: --match: ") and regex in line
    if re2 == "absent":
        assert "error parsing regexp" in line and 'pip install "aiwatch[rules]"' in line


def test_match_text_that_is_no_matchers_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--prometheus", "http://127.0.0.1:9", "--match", 'cluster="eu" oops')
    assert code == 2 and out == ""
    assert "--match: 'cluster=\"eu\" oops' is not PromQL label matchers" in one_clear_line(err)


def test_an_unreachable_endpoint_to_scrape_exits_3_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    code, out, err = run(capsys, "--scrape", url, "--baseline", "1h", "--incident", "5m", "--interval", "1s")
    assert code == 3 and out == ""
    assert f"no /metrics endpoint answered: {url}" in one_clear_line(err)


@pytest.mark.slow
def test_no_traffic_and_an_unknown_service_exit_4(capsys: pytest.CaptureFixture[str], network_history: History,
                                                  prometheus_url: str) -> None:
    h = network_history
    code, _, err = run(capsys, "--prometheus", prometheus_url, "--service", "gateway", "--incident", "5m",
                       "--baseline", "30m", "--at", f"{h.idle_end:.0f}")
    assert code == 4
    assert "service 'gateway' served no requests in the incident window" in one_clear_line(err)
    code, _, err = run(capsys, "--prometheus", prometheus_url, "--service", "checkout", *at_incident(h))
    assert code == 4
    assert ("no requests recorded for service 'checkout' in either window (services with requests: gateway, "
            "inference)") in one_clear_line(err)


@pytest.mark.slow
@pytest.mark.parametrize("at", [
    "1700000000000",  # unix milliseconds (as in a Grafana URL), not seconds
    "two hours from now, local time written without its offset",
])
def test_an_incident_window_ending_in_the_future_exits_2(capsys: pytest.CaptureFixture[str], prometheus_url: str,
                                                         at: str) -> None:
    if not at.isdigit():  # made here, not in the parameters: pytest-xdist's workers must collect the same test ids
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    code, out, err = run(capsys, "--prometheus", prometheus_url, "--at", at)
    assert code == 2 and out == ""
    assert "--at: the incident window must end by now" in one_clear_line(err)


@pytest.mark.slow
def test_an_uninstrumented_target_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    registry = CollectorRegistry()
    Gauge("some_other_app_up", "An app without aiwatch.", registry=registry).set(1)
    server, thread = start_http_server(0, registry=registry)
    try:
        target = f"127.0.0.1:{server.server_port}"
        with prometheus([target]) as prom:
            prom.wait_for("some_other_app_up == 1")
            code, out, err = run(capsys, "--prometheus", prom.url, "--incident", "10s", "--baseline", "10s")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert code == 4 and out == ""
    line = one_clear_line(err)
    assert f"Prometheus at {prom.url} holds no aiwatch request metrics" in line
    assert ("has the service served requests then (the family has no series before a first request), is it "
            "instrumented with aiwatch, and is it scraped?") in line


@pytest.mark.slow
def test_scrape_mode_watches_both_windows_then_diagnoses(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(features=2, gpus=0, interval=0.1) as svc:
        code, out, err = run(capsys, "--scrape", svc["url"], "--baseline", "2s", "--incident", "2s", "--interval",
                             "0.5s", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["service"] == "gateway" and found["incident"]["requests"] > 0
    assert "every 0.5 s for 4 s (the baseline, then the incident window)" in err


@pytest.mark.slow
def test_scrape_mode_across_a_wall_clock_set_back_diagnoses_both_windows(capsys: pytest.CaptureFixture[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the wall clock set back an hour (an NTP step, a VM's resume) while the baseline is scraped, where the embedded
    # scraper reads it: its scrapes after the step were dropped as older than the last before it (the incident
    # window held none: exit 4)
    readings = []

    def wall() -> float:  # set back after the third scrape (of one endpoint), 1 s into the baseline
        readings.append(None)
        return time.time() - (3600.0 if len(readings) > 3 else 0.0)

    monkeypatch.setattr(clock, "wall", wall)
    with serve(features=2, gpus=0, interval=0.1) as svc:
        code, out, err = run(capsys, "--scrape", svc["url"], "--baseline", "2s", "--incident", "2s", "--interval",
                             "0.5s", "--json")
    assert len(readings) > 7  # scrapes after the step
    assert code == 0, err
    found = json.loads(out)
    assert found["baseline"]["requests"] > 0 and found["incident"]["requests"] > 0, found


@pytest.mark.slow
def test_an_answer_prometheus_marks_incomplete_is_diagnosed_with_its_warning(capsys: pytest.CaptureFixture[str],
                                                                            network_history: History,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # a remote-read store that is down: Prometheus answers from its local data with a warning (as Thanos and Mimir
    # do for a partial response); the diagnosis stands on what was answered, and says it may be incomplete
    dead = f"remote_read:\n  - url: http://127.0.0.1:{free_port()}/read\n    read_recent: true\n"
    with backfilled_prometheus(network_history.traffic.openmetrics(), extra_config=dead) as prom:
        code, out, err = run(capsys, "--prometheus", prom.url, *at_incident(network_history), "--json")
        assert code == 0
        found = json.loads(out)
        assert found["cause"] == "network:gateway->inference"
        assert len(found["warnings"]) == 1 and found["warnings"][0].startswith("remote_read: ")
        assert found["warnings"][0] in one_clear_line(err)
        code, out, err = run(capsys, "--prometheus", prom.url, *at_incident(network_history))
        assert code == 0 and "network gateway -> inference" in out
        assert "Prometheus warned that its answers may be incomplete: remote_read: " in one_clear_line(err)
        # the wall clock stepped back an hour (an NTP step, a VM's resume) once the run asked its first question:
        # the warnings, dated on it, fell before the run's start and were dropped
        query = PrometheusAPI.query

        def stepped_back(self: PrometheusAPI, promql: str, *args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(clock, "wall", lambda: time.time() - 3600)
            return query(self, promql, *args, **kwargs)

        monkeypatch.setattr(PrometheusAPI, "query", stepped_back)
        code, out, err = run(capsys, "--prometheus", prom.url, *at_incident(network_history), "--json")
        monkeypatch.undo()
    assert code == 0, err
    assert [w[:13] for w in json.loads(out)["warnings"]] == ["remote_read: "]
    assert "Prometheus warned that its answers may be incomplete: remote_read: " in one_clear_line(err)
