"""The share of the time each replica's event loop stood still (what AiwatchEventLoopDelayHigh fires on), from the
scrape source's recorded scrapes and from the Prometheus source's PromQL (on promtool), and the Latency view's table
of it: worst first, a replica whose sampler took no sample all window shown as stuck rather than hidden. No servers:
each scrape is recorded by hand."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from aiwatch.console import ScrapeSource
from aiwatch.console.queries import PanelQueries
from aiwatch.console.source import LoopStall
from tests.console.conftest import plain, run_view, texts
from tests.servers import require_binary

URL, OTHER = "http://127.0.0.1:9/metrics", "http://127.0.0.2:9/metrics"


def loop(**services: tuple[float, float]) -> str:
    """One scrape of the event loop samplers: per service, (seconds late so far, seconds watched so far)."""
    lines = ["# TYPE aiwatch_event_loop_delay_seconds histogram",
             "# TYPE aiwatch_event_loop_sampled_seconds counter"]
    for service, (late, watched) in services.items():
        samples = round(watched * 10) if math.isfinite(watched) else 0  # one sample per 0.1 s watched
        lines += [f'aiwatch_event_loop_delay_seconds_bucket{{service="{service}",le="+Inf"}} {samples}',
                  f'aiwatch_event_loop_delay_seconds_sum{{service="{service}"}} {late}',
                  f'aiwatch_event_loop_delay_seconds_count{{service="{service}"}} {samples}',
                  f'aiwatch_event_loop_sampled_seconds_total{{service="{service}"}} {watched}']
    return "\n".join(lines) + "\n"


def fed(*scrapes: tuple[str, str | None], interval: float = 1.0) -> ScrapeSource:
    """A scrape source given ``(url, text or None for a failed scrape)`` one second apart, the last one second ago."""
    src = ScrapeSource([URL, OTHER], interval=interval, history=60, start=False)
    t0 = time.time() - len(scrapes) - 1
    for i, (url, text) in enumerate(scrapes):
        src.record(url, text, ts=t0 + i, error="" if text is not None else "connection refused")
    return src


def test_the_share_is_the_delays_growth_over_the_time_watched_per_endpoint_and_service() -> None:
    src = fed((URL, loop(api=(1.0, 10.0), web=(0.0, 10.0))), (OTHER, loop(api=(0.0, 5.0))),
              (URL, loop(api=(1.5, 12.0), web=(0.01, 12.0))), (OTHER, loop(api=(0.01, 6.0))),
              (URL, loop(api=(2.0, 14.0), web=(0.02, 14.0))), (OTHER, loop(api=(0.02, 7.0))))
    rows = src.loop_stalls(30.0)
    # api on the first endpoint: 1.0 s late over 4.0 s watched; the other endpoint's api and web stay apart
    assert rows == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.25)),
                    LoopStall("api", "127.0.0.2:9", pytest.approx(0.01)),
                    LoopStall("web", "127.0.0.1:9", pytest.approx(0.005))]


def test_a_restarted_sampler_counts_from_zero() -> None:
    # watched 10 -> 12 -> 1 (the process restarted) -> 3: 2 + 1 + 2 = 5 s; late 0 -> 0.5 -> 0.5 -> 1.0: 0.5+0.5+0.5
    src = fed((URL, loop(api=(0.0, 10.0))), (URL, loop(api=(0.5, 12.0))), (URL, loop(api=(0.5, 1.0))),
              (URL, loop(api=(1.0, 3.0))))
    assert src.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", pytest.approx(1.5 / 5))]


def test_a_sampler_that_took_no_sample_while_scraped_is_stuck_not_hidden() -> None:
    """The time watched did not grow over the window, the scrapes succeeded: the loop took no sample all window
    (blocked, its /metrics served off the loop). Shown first, as 100%, marked stuck."""
    src = fed((URL, loop(hung=(1.0, 10.0), api=(0.0, 10.0))), (URL, loop(hung=(1.0, 10.0), api=(0.01, 11.0))),
              (URL, loop(hung=(1.0, 10.0), api=(0.02, 12.0))))
    assert src.loop_stalls(30.0) == [LoopStall("hung", "127.0.0.1:9", 1.0, stuck=True),
                                     LoopStall("api", "127.0.0.1:9", pytest.approx(0.01))]


def test_no_share_without_two_good_scrapes_a_failed_last_scrape_or_the_counter() -> None:
    # the latest scrape failed: the endpoint is down (its own panel says so), not a stuck loop
    down = fed((URL, loop(api=(1.0, 10.0))), (URL, loop(api=(1.0, 10.0))), (URL, None))
    assert down.loop_stalls(30.0) == []
    # one good scrape: no growth to read
    assert fed((URL, loop(api=(1.0, 10.0))), (URL, None)).loop_stalls(30.0) == []
    # no sampler (WSGI, or AIWATCH_EVENT_LOOP_INTERVAL=off): nothing, not stuck
    assert fed((URL, "other_metric 1\n"), (URL, "other_metric 2\n")).loop_stalls(30.0) == []
    # the time watched without the delays' histogram: no share (PromQL's division has no sample either)
    watched_only = 'aiwatch_event_loop_sampled_seconds_total{{service="api"}} {}\n'
    assert fed((URL, watched_only.format(1.0)), (URL, watched_only.format(2.0))).loop_stalls(30.0) == []
    # the counter gone from the latest scrape (a restart without the sampler): not stuck
    gone = fed((URL, loop(api=(1.0, 10.0))), (URL, loop(api=(1.0, 10.0))), (URL, "other_metric 1\n"))
    assert gone.loop_stalls(30.0) == []


def test_a_series_new_in_the_window_counts_from_its_first_value_as_promql_does() -> None:
    """PromQL's rule (what the alert reads): a series absent from the window's first good scrape is not charged its
    first value, and one seen in a single scrape has no growth yet."""
    # a replica's sampler appears in the second scrape with a startup stall (5 s late over its first 10 s), then is
    # prompt: 0.1 s late over 10 s watched since, 1% (counted from 0 it read (5.1) / 20 = 25.5%)
    late_start = fed((URL, "other_metric 1\n"), (URL, loop(api=(5.0, 10.0))), (URL, loop(api=(5.05, 15.0))),
                     (URL, loop(api=(5.1, 20.0))))
    assert late_start.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.01))]
    # it watched 1 s, then hung: its time watched stays flat over three scrapes: stuck (it read 1%)
    hung = fed((URL, "other_metric 1\n"), (URL, loop(api=(0.01, 1.0))), (URL, loop(api=(0.01, 1.0))),
               (URL, loop(api=(0.01, 1.0))))
    assert hung.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", 1.0, stuck=True)]
    # a service seen in the last scrape only, nothing watched yet: no growth, neither a share nor stuck (it was
    # listed as hung at 100%)
    new = fed((URL, loop(api=(0.1, 50.0))), (URL, loop(api=(0.2, 55.0))), (URL, loop(api=(0.3, 60.0), new=(0.0, 0.0))))
    assert new.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.02))]


@pytest.mark.parametrize("samples", [
    [None, (5.0, 10.0), (5.05, 15.0), (5.1, 20.0)],  # a replica new in the window, with a startup stall
    [None, (0.01, 1.0), (0.01, 1.0), (0.01, 1.0)],  # one new in the window that hung after 1 s watched
    [(10.0, 100.0), (10.1, 105.0), (10.2, 110.0)],  # a prompt one, there all along
], ids=["startup-stall", "hung-after-start", "steady"])
def test_the_scrape_source_reads_what_promql_reads_on_the_same_samples(
        tmp_path: Path, samples: list[tuple[float, float] | None]) -> None:
    """The same samples, 5 s apart, through promtool (the Prometheus source's two queries) and the scrape source:
    the same replica has the same share or is stuck in both. (Counters far from 0: PromQL's extrapolation stops a
    counter's at 0, which can scale the delays' growth and the time watched apart.)"""
    promtool = require_binary("promtool")
    q = PanelQueries(scope=())
    where = 'job="j", instance="i", service="api"'

    def values(i: int) -> str:
        return " ".join("_" if s is None else repr(s[i]) for s in samples)

    series = [{"series": f"aiwatch_event_loop_delay_seconds_sum{{{where}}}", "values": values(0)},
              {"series": f"aiwatch_event_loop_sampled_seconds_total{{{where}}}", "values": values(1)},
              {"series": 'up{job="j", instance="i"}', "values": " ".join(["1"] * len(samples))}]
    src = ScrapeSource([URL], interval=5.0, history=600, start=False)
    t0 = time.time() - 5 * len(samples)
    for i, s in enumerate(samples):
        src.record(URL, "other_metric 1\n" if s is None else loop(api=s), ts=t0 + 5 * i)
    rows = src.loop_stalls(30.0)
    assert len(rows) == 1
    # to a thousandth, as PromQL's round() does it: the last digits of the two divisions differ
    share = [] if rows[0].stuck else [{"labels": f"{{{where}}}",
                                       "value": math.floor(rows[0].stalled * 1000 + 0.5) / 1000}]
    stuck = [{"labels": f"{{{where}}}", "value": 0}] if rows[0].stuck else []
    at = f"{5 * (len(samples) - 1)}s"
    test = {"evaluation_interval": "5s", "tests": [{"interval": "5s", "input_series": series, "promql_expr_test": [
        {"eval_time": at, "expr": f"round({q.loop_stalled_ratio('30s')}, 0.001)", "exp_samples": share},
        {"eval_time": at, "expr": q.loop_unwatched("30s"), "exp_samples": stuck}]}]}
    path = tmp_path / "loop_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_share_that_is_not_a_finite_number_is_unknown_and_last() -> None:
    # an infinite delays' _sum: its growth is NaN; it was sorted first (NaN compares false) as "nan%"
    inf_late = fed((URL, loop(api=(math.inf, 10.0), b=(0.5, 10.0), c=(0.1, 10.0))),
                   (URL, loop(api=(math.inf, 15.0), b=(1.5, 15.0), c=(0.2, 15.0))))
    rows = inf_late.loop_stalls(30.0)
    assert [(r.service, r.stuck) for r in rows] == [("b", False), ("c", False), ("api", False)]
    assert rows[:2] == [LoopStall("b", "127.0.0.1:9", pytest.approx(0.2)),
                        LoopStall("c", "127.0.0.1:9", pytest.approx(0.02))]
    assert math.isnan(rows[2].stalled)
    # an infinite time watched: unknown too, not a loop that took no sample (hung?)
    inf_watched = fed((URL, loop(api=(1.0, math.inf))), (URL, loop(api=(2.0, math.inf))))
    [row] = inf_watched.loop_stalls(30.0)
    assert not row.stuck and math.isnan(row.stalled)


def test_latency_view_shows_an_unknown_share_as_unknown(console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(math.inf, 10.0), b=(0.5, 10.0))), (URL, loop(api=(math.inf, 15.0), b=(2.0, 15.0))))
    at = run_view(src, "Latency")
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table["service"]) == ["b", "api"]
    assert table["stood still %"].iloc[0] == pytest.approx(30.0) and math.isnan(table["stood still %"].iloc[1])
    assert list(table["note"]) == ["", "unknown: a counter is not a finite number"]
    warning = next(t for t in texts(at.warning) if t.startswith("Event loops standing still"))
    assert "nan" not in warning and "of api" not in warning and "of b: 30.0%" in warning


def test_latency_view_lists_each_replica_worst_first_with_the_stuck_one_named(
        console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(1.0, 10.0), hung=(2.0, 10.0))), (OTHER, loop(api=(0.0, 10.0))),
              (URL, loop(api=(1.5, 12.0), hung=(2.0, 10.0))), (OTHER, loop(api=(0.01, 11.0))),
              (URL, loop(api=(2.0, 14.0), hung=(2.0, 10.0))), (OTHER, loop(api=(0.02, 12.0))))
    at = run_view(src, "Latency")
    assert any(t.startswith("**Time each replica's event loop stood still") for t in texts(at.markdown))
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table.columns) == ["service", "instance", "stood still %", "note"]  # one job: none shown
    assert [tuple(r) for r in table[["service", "instance"]].itertuples(index=False)] == \
        [("hung", "127.0.0.1:9"), ("api", "127.0.0.1:9"), ("api", "127.0.0.2:9")]
    assert list(table["stood still %"]) == [100.0, pytest.approx(25.0), pytest.approx(1.0)]
    assert list(table["note"]) == ["no sample in the last 30s: hung?", "", ""]
    # the warning names the replicas above the alert's default 20%, the stuck one first; not the prompt one
    warning = next(t for t in texts(at.warning) if t.startswith("Event loops standing still"))
    assert warning == ("Event loops standing still more than 20% of the last 30s: 127.0.0.1:9 of hung: no sample "
                       "in the last 30s: hung?; 127.0.0.1:9 of api: 25.0%. Runbook AiwatchEventLoopDelayHigh.")
    assert any("fires above 20%" in plain(str(c.value)) for c in at.caption)


def test_latency_view_says_why_there_is_no_share(console_env: None) -> None:
    src = fed((URL, "other_metric 1\n"), (URL, "other_metric 2\n"))
    at = run_view(src, "Latency")
    assert any(t.startswith("No time stood still per replica: it needs aiwatch_event_loop_sampled_seconds_total")
               for t in texts(at.info))
    assert not [t for t in texts(at.warning) if t.startswith("Event loops standing still")]


def test_prometheus_queries_give_the_share_and_the_stuck_replicas_that_are_up(tmp_path: Path) -> None:
    """The Prometheus source's two queries, on promtool: replica a watched 60 s a minute and was late 6 s (10%);
    b's time watched stayed flat while its target is up (stuck: listed, value 0); c's stayed flat too but its
    target is down (AiwatchTargetDown's business, not a stuck loop); neither b nor c has a share."""
    promtool = require_binary("promtool")
    series = []
    for instance, watched, late, up in (("a:1", "0+60x20", "0+6x20", "1x20"), ("b:1", "100x20", "5x20", "1x20"),
                                        ("c:1", "100x20", "5x20", "0x20")):
        where = f'job="api", instance="{instance}"'
        series += [{"series": f'aiwatch_event_loop_sampled_seconds_total{{{where}, service="s"}}', "values": watched},
                   {"series": f'aiwatch_event_loop_delay_seconds_sum{{{where}, service="s"}}', "values": late},
                   {"series": f"up{{{where}}}", "values": up}]
    q = PanelQueries()  # scope cluster, namespace: absent here, so matched as empty on both sides
    test = {"evaluation_interval": "1m", "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
        {"eval_time": "10m", "expr": q.loop_stalled_ratio("5m"),
         "exp_samples": [{"labels": '{job="api", instance="a:1", service="s"}', "value": 0.1}]},
        {"eval_time": "10m", "expr": q.loop_unwatched("5m"),
         "exp_samples": [{"labels": '{job="api", instance="b:1", service="s"}', "value": 0}]},
    ]}]}
    path = tmp_path / "loop_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
