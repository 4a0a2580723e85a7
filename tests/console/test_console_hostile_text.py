"""Label values, feature names and alert annotations are shown as text in a real browser, never as Markdown or HTML
(issue 13, finding 8): a service called ``[Sign in again](https://evil.example/login)`` must not become a live link.

A real Prometheus scrapes a registry whose service, phase, feature and queue names are hostile Markdown, with an
alert rule whose summary templates a hostile label value and whose runbook_url is ``javascript:``; the real
``aiwatch console --prometheus`` serves it to headless Chromium, which visits every view.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from aiwatch.console.text import WORD_JOINER, md
from aiwatch.metrics import Metrics
from tests.console.browser import chromium, open_view, wait_for
from tests.servers import free_port, prometheus, python_app, python_env

pytestmark = pytest.mark.slow

SERVICE = "[Sign in again](https://evil.example/login)"
PHASE = "**urgent** https://evil.example/phase"
FEATURE = "<img src=https://evil.example/x.png> www.evil.example"
QUEUE = ":red[reset] [your password](https://evil.example/reset)"
MODEL = "m_1"
RULES = """
groups:
  - name: hostile
    rules:
      - alert: HostileQueue
        expr: aiwatch_queue_depth > 0
        labels: {severity: critical}
        annotations:
          summary: 'Queue {{ $labels.queue }} is stuck; write to admin@evil.example'
          runbook_url: 'javascript:alert(document.domain)'
"""
DANGER = ("[...document.querySelectorAll('a[href], img[src], iframe, script:not([src])')]"
          ".map(e => e.href || e.src || e.tagName)"
          ".filter(u => /evil|javascript/i.test(u))")
TEXT = f"document.body.innerText.replaceAll('{WORD_JOINER}', '')"


def _traffic(m: Metrics, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        for _ in range(5):
            m.request_duration.labels(SERVICE, "/predict", "POST", "200", "realtime").observe(0.05)
            m.phase_duration.labels(SERVICE, "", "", PHASE).observe(0.04)
        # a fifth of its requests' phases overlapped: the Latency view's warning names the service
        m.overhead_clamped.labels(SERVICE).inc()
        m.queue_depth.labels(QUEUE).set(3)
        m.drift_score.labels(MODEL, FEATURE, "psi").set(0.5)
        m.drift_detected.labels(MODEL, FEATURE, "psi").set(1)
        for b, share in (("0", 0.25), ("1", 0.75)):
            m.feature_reference_ratio.labels(MODEL, FEATURE, b, "r1").set(share)
            m.feature_bin.labels(MODEL, FEATURE, b, "r1").inc()


def test_hostile_names_render_as_text_in_every_view(tmp_path: Path) -> None:
    m = Metrics(CollectorRegistry())
    stop = threading.Event()
    feeder = threading.Thread(target=_traffic, args=(m, stop), daemon=True)
    feeder.start()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=m.registry)
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    port = free_port()
    try:
        with prometheus([f"127.0.0.1:{server.server_port}"], rule_files=[rules]) as prom:
            prom.wait_for('ALERTS{alertstate="firing"}')
            prom.wait_for("sum(rate(aiwatch_request_duration_seconds_count[5s])) > 0")
            with python_app(["-m", "aiwatch", "console", "--prometheus", prom.url, "--port", str(port),
                             "--window", "5", "--refresh", "0"],
                            f"http://127.0.0.1:{port}/_stcore/health", timeout=60, env=python_env()) as console, \
                    chromium(f"http://127.0.0.1:{port}/") as page:
                wait_for(page, f"{TEXT}.includes('{PHASE} share')", timeout=90)
                caveat = f"Overhead counted as 0 in the last 5s: {SERVICE} 20.0% of requests"
                wait_for(page, f"{TEXT}.includes({caveat!r})", timeout=60)
                latency = str(page.evaluate(TEXT))
                assert SERVICE in latency and PHASE in latency, latency[:2000]
                assert page.evaluate(DANGER) == [], "a label became a link or an image in the Latency view"

                open_view(page, "Drift")
                wait_for(page, f"{TEXT}.includes('Drift detected in 1 of 1 features: {FEATURE}')", timeout=60)
                wait_for(page, f"{TEXT}.includes('Reference vs live distribution of {FEATURE}')", timeout=60)
                assert page.evaluate(DANGER) == [], "a feature name became a link or an image in the Drift view"

                open_view(page, "Alerts")
                summary = f"Queue {QUEUE} is stuck; write to admin@evil.example"
                wait_for(page, f"{TEXT}.includes({summary!r})", timeout=60)
                text = str(page.evaluate(TEXT))
                assert "runbook_url is not an http(s) link: javascript:alert(document.domain)" in text
                assert page.evaluate(DANGER) == [], "an annotation became a link in the Alerts view"
                assert "Traceback" not in text
                time.sleep(0.5)
                assert "Traceback" not in console.output()
    finally:
        stop.set()
        feeder.join(5)
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_md_escapes_what_the_browser_test_relies_on() -> None:
    """The strings above are hostile only if unescaped: md() changes every one of them."""
    for value in (SERVICE, PHASE, FEATURE, QUEUE):
        assert md(value) != value
