"""The system's headless Chromium driven by Playwright (``executable_path``: no browser download).

Streamlit renders client-side over a websocket, so the tests navigate, then wait until the key elements are in the
live DOM (:func:`wait_for`) before reading text or taking a screenshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.servers import require_binary

if TYPE_CHECKING:
    from playwright.sync_api import Page


@contextmanager
def chromium(url: str, width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """Open ``url`` in a fresh headless system Chromium; yields Playwright's :class:`Page`."""
    from playwright.sync_api import sync_playwright  # the dev extra; imported here so test modules collect without it

    binary = require_binary("chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, headless=True,
                                     args=["--disable-gpu", "--disable-quic", "--hide-scrollbars"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


def wait_for(page: Page, expression: str, timeout: float = 60.0) -> None:
    """Wait until the JS ``expression`` is truthy; on timeout, fail showing the page's text."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(expression, timeout=timeout * 1000, polling=500)
    except PlaywrightTimeout:
        text = page.evaluate("document.body ? document.body.innerText : ''")
        raise AssertionError(f"timed out waiting for {expression}; page text:\n{str(text)[:2000]}") from None


def open_view(page: Page, name: str) -> None:
    """Switch the console's view through the sidebar's radio, as a person would."""
    page.get_by_test_id("stRadio").get_by_text(name, exact=True).click()
