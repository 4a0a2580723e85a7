"""The console serves aiwatch's runbooks: a Runbooks view with one page per alert, read from the package, opened
by ``?runbook=<AlertName>`` (what a rules config's runbook_url can point at), and safe with any text in the link."""

from __future__ import annotations

from typing import Any

import pytest

from aiwatch import runbooks
from aiwatch.console.text import md
from tests.console.conftest import APP, texts

pytestmark = pytest.mark.usefixtures("console_env")


def open_console(**query: str) -> Any:
    """The console app as a browser opening ``http://CONSOLE/?<query>`` would run it."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_runbook_link_opens_that_alerts_page() -> None:
    at = open_console(runbook="AiwatchQueueBacklog")
    assert at.radio(key="view").value == "Runbooks"
    assert at.selectbox(key="runbook").value == "AiwatchQueueBacklog"
    page = texts(at.markdown)
    assert runbooks.page("AiwatchQueueBacklog").strip() in page
    assert not at.warning and not at.error


@pytest.mark.parametrize("alert", runbooks.names())
def test_every_alert_has_a_page_with_its_sections(alert: str) -> None:
    at = open_console(runbook=alert)
    text = "\n".join(texts(at.markdown))
    assert text.count(f"# {alert}\n") == 1
    for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
        assert section in text


@pytest.mark.parametrize("wanted", ["../../../etc/passwd", "NoSuchAlert", "[x](https://evil.invalid)"])
def test_an_unknown_runbook_is_a_message_and_never_a_path(wanted: str) -> None:
    at = open_console(runbook=wanted)
    assert [w for w in texts(at.warning) if w.startswith("No runbook for an alert named")] == [
        f"No runbook for an alert named “{wanted}”. aiwatch's alerts: pick one below."]
    assert at.selectbox(key="runbook").value == runbooks.names()[0]
    raw = [str(w.value) for w in at.warning if "No runbook" in str(w.value)]
    assert raw == [f"No runbook for an alert named “{md(wanted)}”. aiwatch's alerts: pick one below."]
    with pytest.raises(KeyError):
        runbooks.page(wanted)


def test_picking_another_runbook_shows_its_page() -> None:
    at = open_console(runbook="AiwatchTargetDown")
    at.selectbox(key="runbook").set_value("AiwatchModelLatencyHigh").run()
    assert runbooks.page("AiwatchModelLatencyHigh").strip() in texts(at.markdown)
    assert at.query_params["runbook"] == "AiwatchModelLatencyHigh"


def test_the_view_is_listed_and_opens_without_a_data_source() -> None:
    at = open_console(view="Runbooks")
    assert "Runbooks" in at.radio(key="view").options
    assert at.radio(key="view").value == "Runbooks"
    assert runbooks.page(runbooks.names()[0]).strip() in texts(at.markdown)


def test_no_page_shows_the_apps_own_notes() -> None:
    """Streamlit's magic draws every bare string of the app's module on every page: two constants' docstrings showed
    above each view, the Runbooks page included ("A caveat's share at or under this is 0: ...", with a raw
    ``:data:`` role). The page holds the runbook and the sidebar's text only."""
    import ast
    import re
    from pathlib import Path

    at = open_console(runbook="AiwatchQueueBacklog")
    shown = " ".join(texts(at.markdown))
    assert "A caveat's share" not in shown and not re.search(r":(data|meth|func|class):", shown), shown[:500]
    # nor any other: the module's only bare expressions are its docstring and the call of main()
    body = ast.parse(Path(APP).read_text()).body
    bare = [ast.unparse(n)[:80] for n in body[1:] if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Call)]
    assert bare == []
