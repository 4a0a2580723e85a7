"""What a scraped endpoint exports beyond aiwatch's own well-formed series: a bucket whose ``le`` is no number, and
series of other libraries whose label values churn. Neither may take a panel down nor grow the scrape source's
memory without bound."""

from __future__ import annotations

import time

import pytest

from aiwatch.console import ScrapeSource
from tests.console.conftest import console_window, run_view, texts

URL = "http://127.0.0.1:9/metrics"


def requests(service: str, n: int, bad_le: str | None = None) -> str:
    """``n`` requests of 50 ms for ``service``; with ``bad_le``, one more bucket of another service whose ``le`` is
    that text (an exporter that is not aiwatch's; PromQL's histogram_quantile skips such a bucket)."""
    labels = f'service="{service}",route="/",method="POST",status="200",traffic_class="realtime"'
    lines = ["# TYPE aiwatch_request_duration_seconds histogram"]
    lines += [f'aiwatch_request_duration_seconds_bucket{{{labels},le="{le}"}} {n}' for le in ("0.1", "+Inf")]
    lines += [f"aiwatch_request_duration_seconds_count{{{labels}}} {n}",
              f"aiwatch_request_duration_seconds_sum{{{labels}}} {0.05 * n}"]
    if bad_le is not None:
        lines += ["# TYPE aiwatch_request_duration_seconds_bucket untyped",
                  f'aiwatch_request_duration_seconds_bucket{{service="other",le="{bad_le}"}} {n}']
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bad_le", ["abc", ""])
def test_a_bucket_whose_le_is_no_number_does_not_take_the_latency_panel_down(
        bad_le: str, monkeypatch: pytest.MonkeyPatch) -> None:
    console_window(monkeypatch, "5")
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 5
    for i in range(5):
        src.record(URL, requests("api", 10 * i, bad_le), ts=t0 + i)
    p99 = [s for s in src.latency_quantiles(5.0) if s.labels == {"service": "api", "quantile": "p99"}]
    assert len(p99) == 1 and p99[0].last == pytest.approx(0.099)
    at = run_view(src, "Latency")
    assert not [e for e in texts(at.error) if "could not be drawn" in e], texts(at.error)
    assert ("request p99", "99.0 ms") in [(m.label, m.value) for m in at.metric]


def test_series_of_other_libraries_with_churning_labels_do_not_grow_the_history() -> None:
    """An endpoint whose other metrics get a new label value each scrape (a session id): the history keeps aiwatch's
    series only, whose values it reads; it kept every series ever seen, so each scrape's array grew with all of them
    (300 new series a scrape: 230 MiB after 400 scrapes, and on without bound)."""
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 100
    for i in range(100):
        churn = "".join(f'app_session_seconds{{session="{i}-{j}"}} {j}\n' for j in range(50))
        src.record(URL, requests("api", 10 * i) + churn, ts=t0 + i)
    history = src._targets[0].snapshots
    assert {len(snap.values) for snap in history} == {4}  # the request histogram's two buckets, _count and _sum
    assert src.throughput(5.0)[0].last == pytest.approx(10.0)


def test_aiwatch_series_that_come_and_go_do_not_grow_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service whose drift profile is reloaded every minute: its fleet sketch's 400 series come back under a new
    ``reference`` each time, the old ones gone. The scrape source gave every series it ever saw a slot for good, so
    each scrape's array grew with all of them (+250 MiB in 8 hours of 5 s scrapes, and on). The history moves to a
    compact index once more slots are gone from all of it than present; every scrape in it reads as before."""
    from aiwatch.console import scrape

    def text(i: int) -> str:
        reference = f"r{i // 12}"
        lines = [f'aiwatch_feature_{name}{{model="m",feature="f{f}",bin="{b}",reference="{reference}"}} {value}'
                 for f in range(20) for b in range(10)
                 for name, value in (("bin_total", 5 * i + b), ("reference_ratio", 0.1))]
        return requests("api", 10 * i) + "\n".join(lines) + "\n"

    def fed() -> ScrapeSource:
        src = ScrapeSource([URL], interval=5.0, history=300, start=False)
        for i in range(300):
            src.record(URL, text(i), ts=t0 + 5 * i)
        return src

    t0 = time.time() - 5 * 300
    compact = fed()
    monkeypatch.setattr(scrape, "MIN_GONE_TO_COMPACT", 10**9, raising=False)
    whole = fed()
    slots = len(compact._targets[0].index.slots)
    assert len(whole._targets[0].index.slots) == 25 * 400 + 4  # every reference's series, and the requests'
    assert slots <= 2 * 6 * 400 + 4  # at most as many gone as the 6 references in the history
    [(_, kept)], [(_, every)] = compact._copy(), whole._copy()
    assert len(kept) == len(every) == 61
    names = ("aiwatch_feature_bin_total", "aiwatch_feature_reference_ratio", "aiwatch_request_duration_seconds_count")
    for a, b in zip(kept, every, strict=True):
        assert a.ts == b.ts and a.restarts == b.restarts
        for name in names:
            assert dict(a.series(name)) == dict(b.series(name))
    assert compact.throughput(60.0)[0].last == pytest.approx(2.0)
    rows = compact.feature_distribution("m", "f3", 60.0)
    assert len(rows) == 10 and rows == whole.feature_distribution("m", "f3", 60.0)
