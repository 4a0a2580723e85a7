"""The one reader of scraped /metrics (aiwatch.scrape): the Prometheus text format and OpenMetrics read the same,
``_created`` and exemplars are dropped, NaN is kept, and the console and the demo read real endpoints through it."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from aiwatch.console import ScrapeSource
from aiwatch.console.scrape import Snapshot
from aiwatch.demo import scrape as demo_scrape
from aiwatch.metrics import Metrics
from aiwatch.scrape import fetch_metrics, parse_metrics
from tests.servers import handler_server, registry_endpoint, wait_until

AWKWARD = 'a"b\\c}\nd'
TRACE = {"trace_id": "0af7651916cd43dd8448eb211c80319c"}


def populated() -> Metrics:
    m = Metrics(CollectorRegistry())
    m.child(m.request_duration, (AWKWARD, "/p", "POST", "200", "realtime")).observe(0.02, TRACE)
    m.feature_cache_requests.labels("features", "hit").inc(3)
    m.queue_depth.labels("predict").set(4)
    m.drift_pvalue.labels("m", "x", "psi").set(math.nan)
    return m


def same(a: dict[str, dict[tuple[tuple[str, str], ...], float]],
         b: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> bool:
    """Equal samples, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        a[n].keys() == b[n].keys() and all(a[n][k] == b[n][k] or (math.isnan(a[n][k]) and math.isnan(b[n][k]))
                                           for k in a[n]) for n in a)


def test_text_and_openmetrics_read_the_same() -> None:
    registry = populated().registry
    text = parse_metrics(generate_latest(registry).decode())
    openmetrics_text = generate_openmetrics(registry).decode()
    assert " # {trace_id=" in openmetrics_text  # the exemplar is there to be dropped
    assert same(parse_metrics(openmetrics_text, OPENMETRICS_TYPE), text)
    labels = (("method", "POST"), ("route", "/p"), ("service", AWKWARD), ("status", "200"),
              ("traffic_class", "realtime"))
    assert text["aiwatch_request_duration_seconds_count"] == {labels: 1.0}
    assert text["aiwatch_request_duration_seconds_bucket"][(("le", "0.025"), *labels)] == 1.0
    assert text["aiwatch_feature_cache_requests_total"] == {(("cache", "features"), ("result", "hit")): 3.0}
    assert math.isnan(text["aiwatch_drift_pvalue"][(("feature", "x"), ("model", "m"), ("test", "psi"))])
    assert not [name for name in text if name.endswith("_created")]


def test_labels_are_added_to_every_series_and_bad_text_is_a_value_error() -> None:
    samples = parse_metrics('g{a="1"} 2\n', labels={"instance": "http://x/metrics"})
    assert samples == {"g": {(("a", "1"), ("instance", "http://x/metrics")): 2.0}}
    with pytest.raises(ValueError):
        parse_metrics("this is { not an exposition\n")


@contextmanager
def openmetrics_endpoint(registry: CollectorRegistry, seen: list[dict[str, str]]) -> Iterator[str]:
    """An endpoint that answers OpenMetrics whatever it is asked, recording each request's headers."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = generate_openmetrics(registry)
            self.send_response(200)
            self.send_header("Content-Type", OPENMETRICS_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with handler_server(Handler) as url:
        yield f"{url}/metrics"


@contextmanager
def text_endpoint(registry: CollectorRegistry) -> Iterator[str]:
    with registry_endpoint(registry) as address:
        yield f"http://{address}/metrics"


def test_fetch_reads_both_formats_and_sends_headers() -> None:
    registry = populated().registry
    seen: list[dict[str, str]] = []
    with text_endpoint(registry) as text_url, openmetrics_endpoint(registry, seen) as om_url:
        from_text = fetch_metrics(text_url)
        from_om = fetch_metrics(om_url, headers={"Authorization": "Bearer t0ken"})
    assert same(from_om, from_text) and from_text["aiwatch_queue_depth"] == {(("queue", "predict"),): 4.0}
    assert seen[0]["Authorization"] == "Bearer t0ken" and seen[0]["Accept"].startswith("text/plain")


def test_the_console_and_the_demo_read_endpoints_through_the_reader() -> None:
    registry = populated().registry
    with text_endpoint(registry) as text_url, openmetrics_endpoint(registry, []) as om_url:
        snapshot = demo_scrape.scrape_all([text_url, om_url])
        src = ScrapeSource([text_url, om_url], interval=1.0, start=False)
        src.scrape_once()
    assert demo_scrape.total(snapshot, "aiwatch_queue_depth", queue="predict") == 8.0
    assert demo_scrape.total(snapshot, "aiwatch_queue_depth", instance=om_url) == 4.0
    assert [h.up for h in src.health()] == [True, True]
    assert [s.last for s in src.queue_depth()] == [8.0]


@contextmanager
def raw_endpoint(answer: bytes, drip: bytes = b"", hung_up: threading.Event | None = None) -> Iterator[str]:
    """A loopback server that reads a request and sends ``answer`` as it is, then ``drip`` every 0.1 s (for 30 s at
    most, until the client hangs up: then ``hung_up`` is set), then closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_one(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
            for _ in range(300 if drip else 0):
                time.sleep(0.1)
                try:
                    conn.sendall(drip)
                except OSError:
                    if hung_up is not None:
                        hung_up.set()
                    return

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer_one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/metrics"
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        listener.close()


@pytest.mark.parametrize(("answer", "error"), [
    (b"garbage\r\n\r\n", "broken HTTP answer (BadStatusLine)"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nup 1\n", "broken HTTP answer (IncompleteRead)"),
])
def test_a_broken_http_answer_is_a_failed_scrape_and_the_other_endpoints_are_still_scraped(answer: bytes,
                                                                                         error: str) -> None:
    """http.client's errors are not OSErrors: one escaping scrape_once would end the console's scraping thread."""
    with raw_endpoint(answer) as broken, text_endpoint(populated().registry) as good:
        src = ScrapeSource([broken, good], interval=1.0, start=False)
        src.scrape_once()
        src.scrape_once()
    assert [(h.up, h.error) for h in src.health()] == [(False, error), (True, "")]
    assert [s.last for s in src.queue_depth()] == [4.0]


def test_a_metrics_endpoint_dripping_its_answer_is_cut_off_at_the_timeout() -> None:
    """Each byte comes well within the socket timeout, so only a deadline on the whole answer ends the read."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n# "
    hung_up = threading.Event()
    with raw_endpoint(head, b"x", hung_up) as url, text_endpoint(populated().registry) as good:
        with pytest.raises(TimeoutError, match=f"^{url} did not finish its answer within 1 s$"):
            fetch_metrics(url, timeout=1)
        assert hung_up.wait(10)  # the reader hung up while the server was still dripping
        src = ScrapeSource([url, good], interval=1.0, timeout=1, start=False)
        src.scrape_once()
    assert [(h.up, h.error) for h in src.health()] == [
        (False, f"{url} did not finish its answer within 1 s"), (True, "")]


def test_a_metrics_answer_larger_than_max_bytes_is_refused() -> None:
    with raw_endpoint(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"up 1\n" * 1000) as url:
        with pytest.raises(ValueError, match=f"^{url} answered more than 4096 bytes$"):
            fetch_metrics(url, max_bytes=4096)
        assert fetch_metrics(url, max_bytes=5000) == {"up": {(): 1.0}}


@pytest.mark.parametrize("content_type", ["Application/OpenMetrics-Text; version=1.0.0; charset=utf-8",
                                          "APPLICATION/OPENMETRICS-TEXT;version=1.0.0"])
def test_openmetrics_is_recognised_whatever_the_case_of_its_media_type(content_type: str) -> None:
    """Media types are case-insensitive (RFC 9110): an OpenMetrics answer cut short before its ``# EOF`` is refused
    as OpenMetrics, not read as a complete Prometheus text exposition."""
    whole = b"# TYPE up gauge\nup 1\n# EOF\n"
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n".encode()
    with raw_endpoint(head + whole) as url, raw_endpoint(head + whole[:-6]) as cut_short:
        assert fetch_metrics(url) == {"up": {(): 1.0}}
        with pytest.raises(ValueError, match="Missing # EOF"):
            fetch_metrics(cut_short)


@contextmanager
def held_endpoint(release: threading.Event, asked: threading.Event) -> Iterator[str]:
    """An endpoint that answers ``up 1`` only once ``release`` is set (30 s at most), setting ``asked`` first."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.set()
            release.wait(30)
            body = b"up 1\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with handler_server(Handler, release) as url:
        yield f"{url}/metrics"


def snapshots(src: ScrapeSource, url: str) -> list[Snapshot]:
    return next(snaps for found, snaps in src._copy() if found == url)


def test_a_slow_endpoint_holds_up_no_other_endpoints_scrape() -> None:
    """Endpoints are scraped at once, each stamped when its own scrape began: before, the fast endpoint waited in
    line behind the slow one and was stamped when the slow one had answered."""
    release, asked = threading.Event(), threading.Event()
    with held_endpoint(release, asked) as slow, text_endpoint(populated().registry) as fast:
        src = ScrapeSource([slow, fast], interval=1.0, timeout=30, start=False)
        scraping = threading.Thread(target=src.scrape_once)
        scraping.start()
        wait_until(lambda: len(snapshots(src, fast)) == 1, what="the fast endpoint's scrape")
        assert asked.is_set() and snapshots(src, slow) == []  # the slow one is still answering
        released = time.time()
        release.set()
        scraping.join(30)
    assert not scraping.is_alive()
    assert [(h.up, h.error) for h in src.health()] == [(True, ""), (True, "")]
    assert snapshots(src, fast)[0].ts < released and snapshots(src, slow)[0].ts < released


def test_the_fast_endpoint_keeps_its_interval_while_a_slow_one_answers() -> None:
    """The background thread starts each endpoint's scrape every interval; an endpoint still answering its last
    scrape is not asked again meanwhile (so a hung endpoint never piles up requests)."""
    release, asked = threading.Event(), threading.Event()
    with held_endpoint(release, asked) as slow, text_endpoint(populated().registry) as fast:
        src = ScrapeSource([slow, fast], interval=0.2, history=60, timeout=30)
        try:
            wait_until(lambda: len(snapshots(src, fast)) >= 4, what="four scrapes of the fast endpoint")
            assert snapshots(src, slow) == []
            release.set()
            wait_until(lambda: len(snapshots(src, slow)) >= 1, what="the slow endpoint's scrape")
        finally:
            src.close()
    times = [s.ts for s in snapshots(src, fast)]
    assert times == sorted(times) and all(s.ok for s in snapshots(src, fast))


def test_a_scrape_larger_than_max_bytes_is_a_failed_scrape() -> None:
    with raw_endpoint(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"up 1\n" * 1000) as url:
        src = ScrapeSource([url], interval=1.0, max_bytes=4096, start=False)
        src.scrape_once()
        roomy = ScrapeSource([url], interval=1.0, max_bytes=5000, start=False)
        roomy.scrape_once()
    assert [(h.up, h.error) for h in src.health()] == [(False, f"{url} answered more than 4096 bytes")]
    assert [h.up for h in roomy.health()] == [True]
    with pytest.raises(ValueError, match=r"^max_bytes must be an int >= 1, got 0$"):
        ScrapeSource([url], max_bytes=0, start=False)


def test_a_source_left_open_at_interpreter_exit_leaves_without_a_traceback() -> None:
    # At exit the interpreter stops concurrent.futures' pools from taking work; the scraping thread of a source
    # nobody closed (the console's shared source) then died in submit() with "cannot schedule new futures after
    # shutdown", printed as a thread traceback. The scrapes now run on daemon threads of the source's own pool, which
    # that exit step does not stop: the thread goes on scraping until the process ends. The child process runs that
    # step by hand, then ends with the source still open.
    code = textwrap.dedent("""
        import time
        import concurrent.futures.thread as pools
        from aiwatch.console.scrape import ScrapeSource
        src = ScrapeSource(["http://127.0.0.1:9/metrics"], interval=0.05, timeout=0.5)
        time.sleep(0.3)
        pools._python_exit()
        time.sleep(0.5)
        print("scraping" if src._thread.is_alive() else "ended")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "scraping"


def test_a_scrape_that_ends_after_close_adds_nothing_to_the_history() -> None:
    """``close()`` does not wait for a scrape under way (its thread is a daemon), but what that scrape brings back
    later is dropped: before, it was appended to the closed source's history (a failed snapshot when the endpoint
    had gone meanwhile, which made the fast-endpoint test above fail now and then)."""
    release, asked = threading.Event(), threading.Event()
    with held_endpoint(release, asked) as slow:
        before = set(threading.enumerate())
        src = ScrapeSource([slow], interval=0.2, history=60, timeout=30)
        wait_until(asked.is_set, what="the slow endpoint's scrape to begin")
        src.close()
        release.set()
        for worker in set(threading.enumerate()) - before:
            worker.join(30)  # its pool's workers end once their running scrape has returned
    assert snapshots(src, slow) == []
