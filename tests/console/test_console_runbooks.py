"""The console serves aiwatch's runbooks: a Runbooks view with one page per alert, read from the package, opened
by ``?runbook=<AlertName>`` (what a rules config's runbook_url can point at), and safe with any text in the link."""

from __future__ import annotations

from typing import Any

import pytest

from aiwatch import runbooks
from aiwatch.console.markdown import escape, link
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
        f"No runbook for an alert named “{escape(wanted)}”. aiwatch's alerts: pick one below."]
    assert at.selectbox(key="runbook").value == runbooks.names()[0]
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


@pytest.mark.parametrize(("text", "shows"), [
    ("[log in](https://evil.invalid/)", "[log in](https://evil.invalid/)"),
    ("![x](https://evil.invalid/p.png)", "![x](https://evil.invalid/p.png)"),
    ("$x^2$ :red[red] <b>b</b> *em* `code` # head", "$x^2$ :red[red] <b>b</b> *em* `code` # head"),
    ("two\nlines", "two lines"),
])
def test_escaped_text_reads_back_as_itself(text: str, shows: str) -> None:
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(escape(text))
    assert "<a " not in html and "<img" not in html and "<b>" not in html and "<em>" not in html
    assert "<code>" not in html and "<h1>" not in html
    import html as html_module

    assert html_module.unescape(html.strip().removeprefix("<p>").removesuffix("</p>")) == shows


def test_links_only_to_http_urls_and_this_page() -> None:
    assert link("runbook", "?runbook=AiwatchTargetDown") == "[runbook](?runbook=AiwatchTargetDown)"
    assert link("r", "https://wiki.example.com/x y)z") == "[r](https://wiki.example.com/x%20y%29z)"
    for bad in ("javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "//evil.invalid/x"):
        assert "](" not in link("r", bad)
