"""A real headless Chromium loads the running ``aiwatch console`` (a subprocess scraping the instrumented
workload), checks the key elements rendered, and saves a screenshot.

The screenshot goes to ``artifacts/console.png``; with ``AIWATCH_UPDATE_SCREENSHOT=1`` to
``docs/images/console-test.png``. Never to ``docs/images/console.png``: that is the README's picture of the demo's
flash sale, made by ``scripts/screenshot_demo.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.console.browser import chromium, open_view, wait_for
from tests.console.workload import MISSING_FEATURE, serve
from tests.servers import free_port, python_app, python_env

REPO = Path(__file__).resolve().parents[2]
METRICS = "document.querySelectorAll('[data-testid=\"stMetric\"]').length"
CHARTS = "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, [data-testid=\"stVegaLiteChart\"] svg').length"  # noqa: E501
TEXT = "document.body.innerText"


DEMO_SCREENSHOT = REPO / "docs" / "images" / "console.png"


def screenshot_path() -> Path:
    if os.environ.get("AIWATCH_UPDATE_SCREENSHOT") == "1":
        return REPO / "docs" / "images" / "console-test.png"
    return REPO / "artifacts" / "console.png"


def test_the_browser_test_never_overwrites_the_demo_screenshot(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("1", "0", None):
        if value is None:
            monkeypatch.delenv("AIWATCH_UPDATE_SCREENSHOT", raising=False)
        else:
            monkeypatch.setenv("AIWATCH_UPDATE_SCREENSHOT", value)
        assert screenshot_path().resolve() != DEMO_SCREENSHOT.resolve()


@pytest.mark.slow
def test_console_renders_in_a_real_browser() -> None:
    port = free_port()
    with serve(features=8, gpus=2, interval=0.2) as svc, python_app(
            ["-m", "aiwatch", "console", "--scrape", svc["url"], "--port", str(port), "--interval", "0.5",
             "--window", "30", "--refresh", "1"],
            f"http://127.0.0.1:{port}/_stcore/health", timeout=60, env=python_env()) as console:
        assert f"aiwatch console on http://127.0.0.1:{port}" in console.output()
        with chromium(f"http://127.0.0.1:{port}/") as page:
            # Latency view: per service (gateway, recommender) p50/p95/p99 + phase cards, and the charts drawn
            wait_for(page, f"{METRICS} >= 12 && {CHARTS} >= 7", timeout=90)
            wait_for(page, f"{TEXT}.includes('model share')")
            # the diagnosis opens the view: its heading and the verdict line of the entry service (the gateway)
            wait_for(page, f"{TEXT}.includes('Diagnosis: the last 30s against the 30s before')")
            wait_for(page, f"/gateway (p99|mean) [0-9.]+ -> [0-9.]+ ms at x[0-9.]+ load; /.test({TEXT})", timeout=60)
            # the page renders top to bottom: wait for the parts below the charts too, not only for those above
            expected = ("aiwatch console", "Latency: where the time goes", "request p50", "request p99",
                        "Time per request by phase, per service", "model vs not model", "gateway", "recommender",
                        "model share", "inference_call share", "Throughput", "Error ratio",
                        "Network time seen by callers", "What the split could not measure as it is",
                        "Network time counted as 0 in the last 30s: gateway → recommender", "Resources", "Drift",
                        "Alerts")
            wait_for(page, " && ".join(f"{TEXT}.includes({json.dumps(part)})" for part in expected))
            text = str(page.evaluate(TEXT))
            assert "Traceback" not in text and "Error" not in text.replace("Error ratio", "")
            time.sleep(5)  # a few more scrapes, so the charts in the screenshot show a stretch of time
            path = screenshot_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=path)
            dom = page.content()
            assert 'data-testid="stSidebar"' in dom and 'data-testid="stRadio"' in dom
            # switch to the Drift view through the sidebar, as a person would
            open_view(page, "Drift")
            wait_for(page, f"{TEXT}.includes('Drift detected in 1 of 8 features: basket_value')")
            wait_for(page, "document.querySelectorAll('[data-testid=\"stDataFrame\"]').length >= 1")
            # the broken input's missing share against its reference's, past AiwatchFeatureMissing's margin
            past = f"in the last 30s: {MISSING_FEATURE} of ranker [0-9.]+% \\(reference 2\\.0%\\)"
            wait_for(page, f"{TEXT}.includes('Missing values per feature: live share over 30s') && "
                           f"/{past}/.test({TEXT})")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < len(data) < 500_000, len(data)
