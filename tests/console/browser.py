"""A real headless Chromium driven over the DevTools protocol (a small websocket client, no Selenium).

Streamlit renders client-side over a websocket, which ``--virtual-time-budget`` does not wait for, so the test
navigates, polls the live DOM until the key elements are there, then captures a screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.servers import Process, http_get, require_binary, wait_until

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1000"]


class Page:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> Any:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        """Poll until the JS ``expression`` is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.5)
        text = self.evaluate("document.body ? document.body.innerText : ''")
        raise AssertionError(f"timed out waiting for {expression}; page text:\n{str(text)[:2000]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def dom(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))


@contextmanager
def chromium(url: str, width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """Open ``url`` in a fresh headless Chromium; yields a :class:`Page`."""
    binary = require_binary("chromium")
    with tempfile.TemporaryDirectory(prefix="aiwatch-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        proc = Process([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                        "--remote-debugging-address=127.0.0.1", "about:blank"], Path(tmp) / "chromium.log")
        try:
            port_file = profile / "DevToolsActivePort"
            wait_until(lambda: proc.alive() and port_file.exists() and port_file.read_text().count("\n") >= 1,
                       30, what="chromium DevTools port")
            port = int(port_file.read_text().split("\n")[0])
            targets = json.loads(http_get(f"http://127.0.0.1:{port}/json/list")[1])
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
            with connect(ws_url, max_size=64 * 2**20, open_timeout=30) as ws:
                page = Page(ws)
                page.call("Page.enable")
                page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                          mobile=False)
                page.call("Page.navigate", url=url)
                yield page
        except (TimeoutError, subprocess.SubprocessError) as exc:
            raise AssertionError(f"chromium failed: {exc}\n{proc.output()}") from exc
        finally:
            proc.stop()
