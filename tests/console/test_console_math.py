"""The scrape source's PromQL-equivalent math (rates with counter resets, sums, ratios, histogram quantiles),
configuration, the command line and optional-dependency behaviour; no servers."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import pytest

from aiwatch.commands.console import register, streamlit_command
from aiwatch.console import PrometheusSource, ScrapeSource, histogram_quantile
from aiwatch.console.config import ConsoleConfig
from aiwatch.console.source import Series, duration, loop_stuck_seconds, service_order
from aiwatch.promql import one_of, selector
from aiwatch.status import is_error_status
from tests.hostile_numbers import NOT_A_PERIOD
from tests.servers import python_env

URL = "http://127.0.0.1:9/metrics"
INF = math.inf


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0.5, [(1.0, 0.0), (2.0, 10.0), (INF, 10.0)], 1.5),            # interpolated inside (1, 2]
    (0.25, [(1.0, 10.0), (2.0, 20.0), (INF, 20.0)], 0.5),          # the lowest bucket starts at 0
    (0.99, [(1.0, 10.0), (2.0, 10.0), (INF, 20.0)], 2.0),          # rank in +Inf: the highest finite bound
    (0.5, [(1.0, 0.0), (INF, 0.0)], None),                         # no observations
    (0.5, [(1.0, 5.0), (2.0, 10.0)], None),                        # no +Inf bucket
    (1.5, [(1.0, 5.0), (INF, 10.0)], INF),
    (-0.1, [(1.0, 5.0), (INF, 10.0)], -INF),
    (0.5, [(2.0, 10.0), (1.0, 0.0), (INF, 10.0)], 1.5),            # order of the input does not matter
    (0.5, [(1.0, 6.0), (2.0, 5.0), (INF, 10.0)], 5 / 6),           # non-monotonic counts: running maximum
    (0.25, [(1.0, 2.0), (1.0, 2.0), (INF, 8.0)], 0.5),             # le "1" and "1.0": one bucket, added up
    (0.0, [(1.0, 0.0), (2.0, 10.0), (INF, 10.0)], None),           # q 0 over an empty lowest bucket: PromQL's 0/0
    # Prometheus' order of operations (Prometheus answers 0.49 here; (end - start) * (rank - low) / count: 0.48999...)
    (0.3, [(0.1, 3.0), (0.7, 9.0), (INF, 23.0)], 0.49),
])
def test_histogram_quantile_follows_promql(q: float, buckets: list[tuple[float, float]],
                                           expected: float | None) -> None:
    got = histogram_quantile(q, buckets)
    if expected is None:
        assert got is None
    else:
        assert got == expected  # the console computes the quantiles it draws from the buckets: PromQL's, to the bit


def exposition(requests_ok: float, requests_err: float, buckets: dict[str, float], gauge: float) -> str:
    lines = ["# TYPE aiwatch_request_duration_seconds histogram"]
    for le, count in buckets.items():
        lines.append(f'aiwatch_request_duration_seconds_bucket{{service="s",route="/",method="GET",status="200",'
                     f'le="{le}"}} {count}')
    lines += [
        f'aiwatch_request_duration_seconds_count{{service="s",route="/",method="GET",status="200"}} {requests_ok}',
        f'aiwatch_request_duration_seconds_count{{service="s",route="/",method="GET",status="503"}} {requests_err}',
        'aiwatch_request_duration_seconds_created{service="s",route="/",method="GET",status="200"} 1.0',
        "# TYPE aiwatch_queue_depth gauge",
        f'aiwatch_queue_depth{{queue="q"}} {gauge}',
    ]
    return "\n".join(lines) + "\n"


def test_rates_handle_counter_resets_and_ratios() -> None:
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 4
    b = {"0.1": 0.0, "0.2": 0.0, "+Inf": 0.0}
    # ok requests: 10 -> 20 -> 5 (process restarted) -> 15: increase 10 + 5 + 10 = 25 over 3 s
    for i, (ok, err) in enumerate([(10, 0), (20, 1), (5, 0), (15, 2)]):
        src.record(URL, exposition(ok, err, b, gauge=i), ts=t0 + i)
    rates = src.throughput(10.0)
    assert len(rates) == 1 and rates[0].labels == {"service": "s"}
    # errors: 0 -> 1 -> 0 (reset) -> 2: increase 1 + 0 + 2 = 3
    assert rates[0].last == pytest.approx((25 + 3) / 3)
    assert src.error_ratio(10.0)[0].last == pytest.approx(3 / 28)
    depth = src.queue_depth()[0]
    assert depth.labels == {"queue": "q"} and [v for _, v in depth.points] == [0, 1, 2, 3]


def test_quantiles_come_from_bucket_increases_over_the_window() -> None:
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 3
    src.record(URL, exposition(100, 0, {"0.1": 100, "0.2": 100, "+Inf": 100}, 0), ts=t0)
    # the next 10 requests all fall in (0.1, 0.2]: the window's quantiles ignore the 100 earlier fast ones
    src.record(URL, exposition(110, 0, {"0.1": 100, "0.2": 110, "+Inf": 110}, 0), ts=t0 + 1)
    quantiles = {s.labels["quantile"]: s.last for s in src.latency_quantiles(10.0)}
    assert quantiles == pytest.approx({"p50": 0.15, "p95": 0.195, "p99": 0.199})


def statuses(counts: dict[str, float]) -> str:
    """Request counts of one route by status (a status absent from ``counts`` has no series yet)."""
    lines = ["# TYPE aiwatch_request_duration_seconds histogram"]
    lines += [f'aiwatch_request_duration_seconds_count{{service="s",route="/",method="GET",status="{status}"}} {n}'
              for status, n in counts.items()]
    return "\n".join(lines) + "\n"


def test_a_status_first_seen_in_the_window_counts_from_0_in_the_rate_charts() -> None:
    # the window's first scrape was good and had no 500 series: the 5 errors at t0 + 1 are all new in the window
    # (as increase() counts them), so the chart shows them instead of the 0 of a series counted from its first value
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 3
    for i, counts in enumerate([{"200": 10}, {"200": 20, "500": 5}, {"200": 30, "500": 5}]):
        src.record(URL, statuses(counts), ts=t0 + i)
    assert src.throughput(10.0)[0].last == pytest.approx((20 + 5) / 2)
    assert src.error_ratio(10.0)[0].last == pytest.approx(5 / 25)
    # a 503 that appears in the window's last scrape only: its 4 errors over the 1 s since the scrape that lacked it
    src.record(URL, statuses({"200": 40, "500": 5, "503": 4}), ts=t0 + 3)
    assert src.error_ratio(1.5)[0].last == pytest.approx(4 / 14)


def test_a_status_in_the_windows_first_good_scrape_counts_from_its_value_there() -> None:
    # the scrape before the 500 series' first one failed: nothing says it was new, so its base is its first value
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 3
    src.record(URL, None, ts=t0, error="timed out")
    for i, counts in enumerate([{"200": 20, "500": 5}, {"200": 30, "500": 6}], start=1):
        src.record(URL, statuses(counts), ts=t0 + i)
    assert src.error_ratio(10.0)[0].last == pytest.approx(1 / 11)


def batches(count: float, total: float, fast: float) -> str:
    """A batch-size histogram child after ``count`` batches of ``total`` items, ``fast`` of them of at most 4."""
    return ("# TYPE aiwatch_batch_size histogram\n"
            f'aiwatch_batch_size_bucket{{model="m",le="4"}} {fast}\n'
            f'aiwatch_batch_size_bucket{{model="m",le="+Inf"}} {count}\n'
            f'aiwatch_batch_size_sum{{model="m"}} {total}\n'
            f'aiwatch_batch_size_count{{model="m"}} {count}\n')


def test_a_histograms_sum_restarts_with_its_count_in_the_rate_charts() -> None:
    # 10 batches of 1, then a restart: 20 batches of 8 (the _sum, 100 -> 160, did not fall but restarted with the
    # _count, 100 -> 20), then 10 more of 8: 250 items in 40 batches, as increase() counts them
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 4
    for i, (count, total) in enumerate([(90, 90), (100, 100), (20, 160), (30, 240)]):
        src.record(URL, batches(count, total, 0), ts=t0 + i)
    assert src.batch_size(10.0)[0].last == pytest.approx(250 / 40)


def test_a_histograms_buckets_restart_with_its_count_in_the_rate_charts() -> None:
    # 90 slow requests, then a restart (the _count falls 100 -> 20) after which 12 of 20 are fast: the fast bucket
    # (10 -> 12) did not fall but counts 12, not 2
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 2
    for i, (count, fast) in enumerate([(100, 10), (20, 12)]):
        src.record(URL, exposition(count, 0, {"0.1": fast, "0.2": fast, "+Inf": count}, 0), ts=t0 + i)
    p50 = {s.labels["quantile"]: s.last for s in src.latency_quantiles(10.0)}["p50"]
    assert p50 == pytest.approx(0.1 * 10 / 12)


def two_tier(gateway: tuple[float, float, float, float], inference: tuple[float, float, float, float],
             count: float) -> str:
    """Counters of a gateway (features, inference_call, overhead; request sum) calling an inference service (queue,
    inference, overhead; request sum), both after ``count`` requests."""
    lines = ["# TYPE aiwatch_phase_duration_seconds histogram", "# TYPE aiwatch_request_duration_seconds histogram"]
    for service, phases, values in (("gateway", ("features", "inference_call", "overhead"), gateway),
                                    ("inference", ("queue", "inference", "overhead"), inference)):
        for phase, value in zip(phases, values, strict=False):
            lines.append(f'aiwatch_phase_duration_seconds_sum{{service="{service}",model="",phase="{phase}"}} {value}')
            lines.append(f'aiwatch_phase_duration_seconds_count{{service="{service}",model="",phase="{phase}"}} '
                         f"{count}")
        labels = f'service="{service}",route="/",method="POST",status="200"'
        lines.append(f"aiwatch_request_duration_seconds_sum{{{labels}}} {values[3]}")
        lines.append(f"aiwatch_request_duration_seconds_count{{{labels}}} {count}")
    return "\n".join(lines) + "\n"


def test_phase_split_is_per_service_and_each_stack_is_that_services_request_time() -> None:
    """10 requests: the inference service spends 0.5 s queue + 0.3 s model + 0.1 s overhead (90 ms each); the
    gateway 0.1 s features + 1.0 s inference_call (the inference service's 0.9 s + 0.1 s network) + 0.1 s overhead
    (120 ms each). Summed into one stack over 20 requests the model would be 15 ms of a 105 ms 'request'."""
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 2
    src.record(URL, two_tier((0, 0, 0, 0), (0, 0, 0, 0), 0), ts=t0)
    src.record(URL, two_tier((0.1, 1.0, 0.1, 1.2), (0.5, 0.3, 0.1, 0.9), 10), ts=t0 + 1)
    split = {(s.labels["service"], s.labels["phase"]): s.last for s in src.phase_split(10.0)}
    assert split == pytest.approx({
        ("gateway", "features"): 0.01, ("gateway", "inference_call"): 0.1, ("gateway", "overhead"): 0.01,
        ("inference", "queue"): 0.05, ("inference", "inference"): 0.03, ("inference", "overhead"): 0.01})
    assert sum(v for (svc, _), v in split.items() if svc == "gateway") == pytest.approx(0.12)
    assert sum(v for (svc, _), v in split.items() if svc == "inference") == pytest.approx(0.09)


def test_services_are_laid_out_callers_first_then_by_name() -> None:
    def call(caller: str, peer: str) -> Series:
        return Series({"service": caller, "peer": peer, "quantile": "p50"}, [(0.0, 0.01)])

    assert service_order(["a-backend", "z-gateway"]) == ["a-backend", "z-gateway"]
    assert service_order(["a-backend", "z-gateway"], [call("z-gateway", "a-backend")]) == ["z-gateway", "a-backend"]
    # a chain edge -> mid -> backend; a peer that is no known service (host:port) changes nothing
    chain = [call("mid", "backend"), call("edge", "mid"), call("edge", "10.0.0.1:443")]
    assert service_order(["backend", "mid", "edge"], chain) == ["edge", "mid", "backend"]
    # a call cycle still ends with every service once
    assert sorted(service_order(["a", "b"], [call("a", "b"), call("b", "a")])) == ["a", "b"]


@pytest.mark.parametrize("history", [5.0, 300.0])
def test_history_is_bounded(history: float) -> None:
    """The history's scrapes, or the event loop's stuck range's (2m) where the history is shorter: the loop table's
    stuck check reads that range whatever the history."""
    src = ScrapeSource([URL], interval=1.0, history=history, start=False)
    t0 = time.time() - 1000
    for i in range(500):
        src.record(URL, f"aiwatch_queue_depth{{queue=\"q\"}} {i}\n", ts=t0 + i)
    snaps = src._copy()[0][1]
    assert len(snaps) == max(history, loop_stuck_seconds()) + 1
    assert dict(snaps[-1].series("aiwatch_queue_depth")) == {(("queue", "q"),): 499.0}


def test_over_time_panels_are_downsampled_to_points() -> None:
    src = ScrapeSource([URL], interval=1.0, history=600, points=10, start=False)
    t0 = time.time() - 100
    for i in range(100):
        src.record(URL, f"aiwatch_queue_depth{{queue=\"q\"}} {i}\n", ts=t0 + i)
    points = src.queue_depth()[0].points
    assert len(points) == 10 and points[-1][1] == 99


def test_scrape_source_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one /metrics endpoint"):
        ScrapeSource([], start=False)
    with pytest.raises(ValueError, match="endpoint must be a URL like"):
        ScrapeSource(["localhost:8000"], start=False)
    with pytest.raises(ValueError, match=r"^interval must be a number of seconds above 0 and at most 1e9, got 0$"):
        ScrapeSource([URL], interval=0, start=False)
    src = ScrapeSource([URL], interval=1.0, start=False)
    with pytest.raises(ValueError, match="is not one of this source's endpoints"):
        src.record("http://elsewhere/metrics", "")
    src.record(URL, "", ts=100.0)
    with pytest.raises(ValueError, match="older than the latest"):
        src.record(URL, "", ts=50.0)
    with pytest.raises(ValueError, match="Prometheus URL must look like"):
        PrometheusSource("127.0.0.1:9090")


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, 10**400, 2e9])
def test_every_console_duration_setting_is_a_number_of_seconds_above_0(bad: object) -> None:
    # before: NaN and infinity passed the `<= 0` tests of ConsoleConfig and ScrapeSource (and the span's `> 0`)
    for name in ("interval", "history", "window", "span", "timeout"):
        named = f"^console {name} \\([^)]*AIWATCH_CONSOLE_{name.upper()}\\) "
        with pytest.raises(ValueError, match=named + NOT_A_PERIOD):
            ConsoleConfig(**{name: bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^interval {NOT_A_PERIOD}"):
        ScrapeSource([URL], interval=bad, start=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^history {NOT_A_PERIOD}"):
        ScrapeSource([URL], interval=1.0, history=bad, start=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^span {NOT_A_PERIOD}"):
        PrometheusSource("http://127.0.0.1:9090", span=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^timeout {NOT_A_PERIOD}"):
        PrometheusSource("http://127.0.0.1:9090", timeout=bad)  # type: ignore[arg-type]


def test_the_checks_beside_the_console_durations_name_their_own_setting() -> None:
    with pytest.raises(ValueError, match=r"^need history >= interval, got interval=10 history=5$"):
        ScrapeSource([URL], interval=10, history=5, start=False)
    with pytest.raises(ValueError, match=r"^points must be >= 2, got 1$"):
        PrometheusSource("http://127.0.0.1:9090", points=1)
    with pytest.raises(ValueError, match=r"^max_bytes must be >= 1, got 0$"):
        PrometheusSource("http://127.0.0.1:9090", max_bytes=0)
    source = ScrapeSource([URL], interval=2, history=60, start=False)
    assert (source.interval, source.history) == (2.0, 60.0)
    assert PrometheusSource("http://127.0.0.1:9090", timeout=3).api.timeout == 3.0


def test_unreachable_endpoint_is_a_failed_scrape() -> None:
    src = ScrapeSource([URL], interval=1.0, start=False)
    _, data, error, offset = src._scrape(URL)  # nothing listens on port 9
    assert data is None and error and offset is None


def test_query_helpers() -> None:
    assert selector() == "" and selector("", 'a="b"') == '{a="b"}'
    assert str(one_of("m", ["a.b", "c|d"])) == 'm=~"' + "a\\\\.b|c\\\\|d" + '"'
    assert duration(60) == "60s" and duration(0.5) == "500ms" and duration(1.5) == "1500ms"
    with pytest.raises(ValueError, match="window must be positive"):
        duration(0)


def test_a_window_under_a_millisecond_is_no_promql_duration() -> None:
    # before: 0.0004 s became "0ms", which Prometheus refuses
    with pytest.raises(ValueError, match=r"^window must be at least 0\.001 s \(PromQL durations count whole "
                                         r"milliseconds\), got 0\.0004$"):
        duration(0.0004)
    assert duration(0.001) == "1ms"
    assert is_error_status("503") and is_error_status("UNAVAILABLE")
    assert not is_error_status("200") and not is_error_status("404") and not is_error_status("NOT_FOUND")


def test_config_roundtrips_through_the_environment() -> None:
    cfg = ConsoleConfig(prometheus="", scrape=("http://a:1/metrics", "http://b:2/metrics"), interval=2,
                        history=60, refresh=0, window=30, span=120)
    assert ConsoleConfig.from_env(cfg.to_env()) == cfg
    assert ConsoleConfig.from_env({}) == ConsoleConfig()
    with pytest.raises(ValueError, match="AIWATCH_CONSOLE_WINDOW must be a number of seconds, got 'x'"):
        ConsoleConfig.from_env({"AIWATCH_CONSOLE_WINDOW": "x"})
    with pytest.raises(ValueError,
                       match=f"^console interval \\(--interval or AIWATCH_CONSOLE_INTERVAL\\) {NOT_A_PERIOD}0$"):
        ConsoleConfig(interval=0)


def test_a_setting_out_of_range_is_named_by_the_variable_it_came_from() -> None:
    # "console span must be ..." named no variable: AIWATCH_CONSOLE_SPAN, the span's only setting, was not found
    with pytest.raises(ValueError, match=f"^console span \\(AIWATCH_CONSOLE_SPAN\\) {NOT_A_PERIOD}0.0$"):
        ConsoleConfig.from_env({"AIWATCH_CONSOLE_SPAN": "0", "AIWATCH_CONSOLE_PROMETHEUS": "http://p:9090"})


def parse(*argv: str) -> object:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["console", *argv])


def test_console_command_binds_loopback_headless_by_default() -> None:
    cmd, env = streamlit_command(parse())  # type: ignore[arg-type]
    assert cmd[1:4] == ["-m", "aiwatch.console.streamlit_server", "run"] and cmd[4].endswith("aiwatch/console/app.py")
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.headless"] == "true" and flags["--server.port"] == "8501"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert env["AIWATCH_CONSOLE_SCRAPE"] == "http://127.0.0.1:8000/metrics"
    assert env["AIWATCH_CONSOLE_PROMETHEUS"] == ""


def test_console_command_passes_its_options_to_the_app() -> None:
    cmd, env = streamlit_command(parse("--prometheus", "http://prom:9090", "--port", "9000", "--refresh", "3",  # type: ignore[arg-type]
                                       "--address", "127.0.0.2"))
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.port"] == "9000" and flags["--server.address"] == "127.0.0.2"
    cfg = ConsoleConfig.from_env(env)
    assert cfg.prometheus == "http://prom:9090" and cfg.refresh == 3.0
    _, env = streamlit_command(parse("--scrape", "http://a:1/metrics", "--scrape", "http://b:2/metrics"))  # type: ignore[arg-type]
    assert ConsoleConfig.from_env(env).scrape == ("http://a:1/metrics", "http://b:2/metrics")


def test_console_command_options_not_given_keep_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AIWATCH_CONSOLE_PROMETHEUS=... aiwatch console`` reads that Prometheus, as the docs say of every option not
    given; the command passed its own defaults instead (no Prometheus: it scraped 127.0.0.1:8000, with a 60 s window
    and a 10 s refresh whatever the variables said)."""
    for name, value in {"PROMETHEUS": "http://prom:9090", "WINDOW": "300", "REFRESH": "0", "INTERVAL": "2",
                        "HISTORY": "600", "SCRAPE": "http://a:1/metrics"}.items():
        monkeypatch.setenv(f"AIWATCH_CONSOLE_{name}", value)
    cfg = ConsoleConfig.from_env(streamlit_command(parse())[1])  # type: ignore[arg-type]
    assert (cfg.prometheus, cfg.window, cfg.refresh, cfg.interval, cfg.history) == ("http://prom:9090", 300, 0, 2, 600)
    # an option given wins over its variable; --scrape over AIWATCH_CONSOLE_PROMETHEUS too (it names the source)
    cfg = ConsoleConfig.from_env(streamlit_command(parse("--scrape", "http://b:2/metrics", "--window", "30"))[1])  # type: ignore[arg-type]
    assert (cfg.prometheus, cfg.scrape, cfg.window) == ("", ("http://b:2/metrics",), 30)
    cfg = ConsoleConfig.from_env(streamlit_command(parse("--prometheus", "http://other:9090"))[1])  # type: ignore[arg-type]
    assert cfg.prometheus == "http://other:9090"
    # a history shorter than the interval is still raised to one interval, whichever gave them
    monkeypatch.setenv("AIWATCH_CONSOLE_HISTORY", "1")
    assert ConsoleConfig.from_env(streamlit_command(parse())[1]).history == 2  # type: ignore[arg-type]


def test_console_command_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import main

    assert main(["console", "--scrape", "localhost:8000"]) == 2
    assert "not an http(s) URL: 'localhost:8000'" in capsys.readouterr().err
    assert main(["console", "--port", "0"]) == 2
    assert "--port must be 1-65535" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["console", "--prometheus", "http://a:1", "--scrape", "http://b:2/metrics"])


@pytest.mark.parametrize("match", ['cluster=~"eu-("', 'cluster!~"(?=eu)"', 'cluster="eu", job=~"a)|(b"'])
def test_console_match_with_a_regex_prometheus_cannot_compile_is_refused_at_startup(
        match: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from aiwatch.cli import main

    # it was taken: the console started and every panel showed Prometheus' 400 (bad_data: error parsing regexp)
    with pytest.raises(ValueError, match=r"^--match: the regex of "):
        streamlit_command(parse("--prometheus", "http://127.0.0.1:9", "--match", match))  # type: ignore[arg-type]
    assert main(["console", "--prometheus", "http://127.0.0.1:9", "--match", match]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aiwatch console: --match: the regex of ") and "Prometheus cannot compile" in err, err
    monkeypatch.setenv("AIWATCH_CONSOLE_MATCH", match)
    assert main(["console", "--prometheus", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("aiwatch console: AIWATCH_CONSOLE_MATCH: the regex of ")
    with pytest.raises(ValueError, match=r"^console match: the regex of "):
        ConsoleConfig(prometheus="http://127.0.0.1:9", match=match)
    monkeypatch.delenv("AIWATCH_CONSOLE_MATCH")
    _, env = streamlit_command(parse("--prometheus", "http://127.0.0.1:9", "--match", 'cluster=~"eu-.+"'))  # type: ignore[arg-type]
    assert ConsoleConfig.from_env(env).match == 'cluster=~"eu-.+"'


@pytest.mark.parametrize("address", ["not an address", "", " ", "nohost.invalid", "[::1]", "203.0.113.7",
                                     "a" * 64 + ".example"])
def test_console_address_that_cannot_be_served_on_is_refused(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import main

    # before: passed to streamlit, which ended in a traceback (socket.gaierror, OSError: Cannot assign requested
    # address), or, for "", served on every interface
    with pytest.raises(ValueError, match=r"^--address "):
        streamlit_command(parse("--address", address))  # type: ignore[arg-type]
    assert main(["console", "--address", address]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aiwatch console: --address ") and err.count("\n") == 1, err


@pytest.mark.parametrize("address", ["127.0.0.2", "localhost", "0.0.0.0"])
def test_console_addresses_of_this_machine_are_taken(address: str) -> None:
    cmd, _ = streamlit_command(parse("--address", address))  # type: ignore[arg-type]
    assert dict(zip(cmd[5::2], cmd[6::2], strict=True))["--server.address"] == address


def test_console_port_that_is_no_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import main

    for port in ("x", "80.5", "65536", "-1"):
        try:
            code = main(["console", "--port", port])
        except SystemExit as exc:  # argparse's own refusal of a non-integer
            code = exc.code
        assert code == 2, port
        assert "--port" in capsys.readouterr().err, port


def test_sources_do_not_import_streamlit_and_the_app_names_the_extra() -> None:
    code = ("import sys; import aiwatch.console, aiwatch.commands.console; "
            "assert 'streamlit' not in sys.modules and 'pandas' not in sys.modules; "
            "sys.modules['streamlit'] = None\n"
            "try:\n    import aiwatch.console.app\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "aiwatch[console]"' in out.stdout


@pytest.mark.parametrize("refresh", ["nan", "inf", "1e400", "-1", "1e10"])
def test_console_refresh_that_is_not_off_or_a_period_is_refused(refresh: str) -> None:
    # nan was taken, and the console showed "Refreshes every nan s." and never redrew; inf reached st.fragment
    message = f"^console refresh \\(--refresh or AIWATCH_CONSOLE_REFRESH; 0: off\\) {NOT_A_PERIOD}{float(refresh)}$"
    with pytest.raises(ValueError, match=message):
        streamlit_command(parse("--refresh", refresh))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        ConsoleConfig.from_env({"AIWATCH_CONSOLE_REFRESH": refresh})


@pytest.mark.parametrize("history", ["-1", "0", "nan"])
def test_console_history_that_is_no_period_is_refused(history: str) -> None:
    # a history below the interval is raised to it (one scrape kept at least), but -1 and 0 were raised to it too,
    # silently
    with pytest.raises(ValueError,
                       match=f"^console history \\(--history or AIWATCH_CONSOLE_HISTORY\\) {NOT_A_PERIOD}"):
        streamlit_command(parse("--history", history))  # type: ignore[arg-type]


def test_console_refresh_zero_turns_the_redraws_off() -> None:
    _, env = streamlit_command(parse("--refresh", "0"))  # type: ignore[arg-type]
    assert ConsoleConfig.from_env(env).refresh == 0


@pytest.mark.parametrize(("flag", "url", "why"), [
    ("--prometheus", "http://127.0.0.1:99999", "Port out of range 0-65535"),
    ("--prometheus", "http://127.0.0.1:abc", "Port could not be cast to integer value as 'abc'"),
    ("--prometheus", "http://:9090", None),
    ("--prometheus", "http://[::1", "Invalid IPv6 URL"),
    ("--scrape", "http://127.0.0.1:99999/metrics", "Port out of range 0-65535"),
    ("--scrape", "http://:8000/metrics", None),
    ("--scrape", "http://[::1/metrics", "Invalid IPv6 URL"),
])
def test_console_urls_with_a_bad_port_or_no_host_are_refused_before_streamlit_starts(
        flag: str, url: str, why: str | None) -> None:
    # they were taken: the console started, and said what was wrong only in the browser (or "Invalid IPv6 URL")
    message = f"not an http(s) URL: {url!r}" + (f" ({why})" if why else "")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        streamlit_command(parse(flag, url))  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["http://h:8000/metrics file:///etc/passwd", "http://h:8000/metrics,ftp://h/m"])
def test_each_scrape_url_the_console_will_read_is_checked(given: str) -> None:
    # the console splits a --scrape value on commas and spaces: the second URL was read, never checked
    with pytest.raises(ValueError, match=r"^not an http"):
        streamlit_command(parse("--scrape", given))  # type: ignore[arg-type]
    _, env = streamlit_command(parse("--scrape", "http://a:1/m, http://b:2/m"))  # type: ignore[arg-type]
    assert ConsoleConfig.from_env(env).scrape == ("http://a:1/m", "http://b:2/m")


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1:9/m", "data:text/plain,x 1"])
def test_a_url_that_is_not_http_is_never_opened(url: str) -> None:
    import urllib.error

    from aiwatch.httpconfig import HTTPConfig
    from aiwatch.scrape import fetch_metrics

    with pytest.raises(urllib.error.URLError, match="not an http"):
        HTTPConfig().open(url, 1.0)
    with pytest.raises(urllib.error.URLError, match="not an http"):
        fetch_metrics(url, 1.0)


def test_the_console_configs_doctests() -> None:
    import doctest

    import aiwatch.console.config

    assert doctest.testmod(aiwatch.console.config).failed == 0
