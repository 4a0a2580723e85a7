"""The on-call path of the demo, in a real browser: ``aiwatch demo`` starts Prometheus and Alertmanager with its rules,
alerts fire during the fault stage, the console's Alerts view links them, and every firing alert's runbook link
opens its runbook page in the console (never a 404, never a repository that does not exist)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from aiwatch import runbooks
from tests.console.browser import chromium, wait_for
from tests.demo.process import lines_until_load
from tests.servers import free_port, http_get, python_env, require_binary, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.alone]

TEXT = "document.body.innerText"


class Demo:
    """``aiwatch demo ARGS`` in the background, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "aiwatch", "demo", *args], env=python_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def url(self, part: str) -> str:
        """The URL the demo printed for ``part`` (``prometheus``, ``console``...)."""
        found = re.search(rf"^\s+{part}\s+(http://\S+)", self.output, re.MULTILINE)
        if found is None:
            raise LookupError(part)
        return found.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


def firing(prometheus: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{prometheus}/api/v1/alerts")
    assert status == 200
    return [a for a in json.loads(body)["data"]["alerts"] if a["state"] == "firing"]


def test_every_firing_alert_links_to_its_runbook_page_in_the_console() -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    require_binary("chromium")
    pytest.importorskip("streamlit")
    port = free_port()
    demo = Demo("--scenario", "feature-store", "--severity-ms", "200", "--duration", "60", "--console-port",
                str(port))
    try:
        wait_until(lambda: "stage normal" in demo.output or demo.proc.poll() is not None, 120,
                   what="the demo's first stage")
        assert demo.proc.poll() is None, demo.output
        prometheus, console = demo.url("prometheus"), demo.url("console")
        assert console == f"http://127.0.0.1:{port}"
        assert f"reading {prometheus}" in demo.output  # the console reads the demo's Prometheus
        # the fault stage (a slow feature store, a flushed cache) fires the alerts of its part
        wait_until(lambda: {a["labels"]["alertname"] for a in firing(prometheus)} >= {
            "AiwatchFeatureCacheHitRatioLow", "AiwatchNonModelLatencyHigh"}, 150, 1.0,
            what=f"the feature-store alerts firing; demo output:\n{demo.output}")
        alerts = firing(prometheus)
        links = {a["labels"]["alertname"]: a["annotations"]["runbook_url"] for a in alerts}
        # every link points at the demo's console, on a page the package has
        assert links == {name: f"{console}/?runbook={name}" for name in links}
        assert set(links) <= set(runbooks.names())

        with chromium(f"{console}/?view=Alerts") as page:
            # the Alerts view lists the firing alerts with their links (the console reads the demo's Prometheus)
            wait_for(page, f"{TEXT}.includes('firing')", timeout=90)
            wait_for(page, "[...document.querySelectorAll('a')].some(a => a.innerText.trim() == 'runbook')",
                     timeout=60)
            hrefs = set(page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)"))
            assert any(f"?runbook={name}" in href for name in links for href in hrefs), hrefs
            # follow each firing alert's link, as the paged engineer does, and find its page
            for name, url in sorted(links.items()):
                page.goto(url)
                wait_for(page, f"[...document.querySelectorAll('h1')].some(h => h.innerText.trim() == {name!r})",
                         timeout=60)
                text = str(page.evaluate(TEXT))
                for section in ("Meaning", "Impact", "Diagnosis", "Mitigation"):
                    assert section in text, (name, section)
                assert "No runbook for an alert named" not in text
    finally:
        demo.stop()
    assert demo.proc.returncode == 130, demo.output


def test_without_prometheus_the_demo_says_how_to_get_it(tmp_path: Any) -> None:
    """With no prometheus / alertmanager on the PATH the demo runs on and says what to install."""
    env = python_env(PATH=str(tmp_path))  # a PATH on which neither binary is found (Python runs by its full path)
    proc = subprocess.Popen([sys.executable, "-m", "aiwatch", "demo", "--headless", "--duration", "600"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        lines = lines_until_load(proc, 120)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    output = "".join(lines)
    assert "alerts: Prometheus or Alertmanager not found" in output, output
    assert "sudo apt-get install prometheus prometheus-alertmanager" in output
