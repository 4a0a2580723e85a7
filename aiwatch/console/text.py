r"""Untrusted text in the console: label values, feature names, alert annotations, error messages, URLs.

Streamlit renders the body of ``st.markdown``, ``st.caption``, ``st.info`` / ``st.warning`` / ``st.error``, metric
labels and help tooltips as Markdown (with links, images, emphasis, LaTeX ``$...$``, colour directives
``:red[...]`` and emoji shortcodes). A label value comes from traffic, so written there as is it can become a live
link (``[Sign in again](https://evil.example)``), and GitHub-flavoured Markdown turns a bare ``https://...``,
``www.`` or ``name@host`` into a link even when escaped. :func:`md` makes any string render as exactly its text
(checked in a real browser by ``tests/console/test_console_hostile_text.py``). :func:`latency_text` writes a tile's
latency, short enough for the tile.

    >>> md("[Sign in](https://evil.example) **now** $x$ :red[alarm]").replace(WORD_JOINER, "+")
    '\\[Sign in\\]\\(https+\\:\\/\\/evil\\.example\\) \\*\\*now\\*\\* \\$x\\$ \\:red\\[alarm\\]'
"""

from __future__ import annotations

import re
import urllib.parse

from aiwatch.httpconfig import refuse_credentials

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character: CommonMark lets each be escaped
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\x0b\x0c\x85\u2028\u2029]")
_LEADING_SPACE = re.compile(r"^[ \t]+")
#: An invisible character that breaks no line; put where a bare URL or e-mail address would be auto-linked.
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(https?|www)(?=\\[:.])|(?=\\@)")


def md(text: object) -> str:
    """``text`` as Markdown that renders as exactly that text: every ASCII punctuation character backslash-escaped
    (no link, emphasis, code, heading, list, table, HTML, math, directive or shortcode can start), an invisible
    :data:`WORD_JOINER` after ``http``, ``https`` and ``www`` and before ``@`` (no bare URL or address is
    auto-linked), line breaks shown as spaces, and leading blanks kept from starting a code block."""
    escaped = _AUTOLINK.sub(lambda m: (m.group(1) or "") + WORD_JOINER, _PUNCTUATION.sub(r"\\\1", str(text)))
    escaped = _LINE_BREAKS.sub(" ", escaped)
    return _LEADING_SPACE.sub(lambda m: "&#32;" * len(m.group()), escaped)


def latency_text(seconds: float | None, at_least: bool = False) -> str:
    """A tile's latency, short enough for a tile in a service's column of two (about seven characters): "—"
    without a value, one decimal below 100 ms, none from 100 ms on, in seconds from 1 s on; "≥ " before a value
    that is only a lower bound.

    >>> latency_text(0.01234), latency_text(0.5504), latency_text(60.0, at_least=True), latency_text(None)
    ('12.3 ms', '550 ms', '≥ 60 s', '—')
    """
    if seconds is None:
        return "—"
    ms = seconds * 1000
    # the unit is chosen on the rounded value: 999.96 ms reads "1 s", not "1000 ms"
    if abs(ms) < 99.95:
        text = f"{ms:.1f} ms"
    elif abs(ms) < 999.5:
        text = f"{ms:.0f} ms"
    elif abs(seconds) < 99.95:
        text = f"{seconds:.1f}".removesuffix(".0") + " s"
    else:
        text = f"{seconds:.0f} s"
    return f"≥ {text}" if at_least else text


def safe_url(url: str) -> str | None:
    """``url`` when it is an absolute http(s) URL fit for a link (no whitespace or control characters), else None:
    a ``javascript:`` or ``data:`` runbook URL must not become a link."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if any(c.isspace() or not c.isprintable() for c in url):
        return None
    return url


def md_link(label: str, url: str) -> str:
    """A Markdown link to ``url`` (http(s) only, with the characters Markdown would end it on percent-encoded;
    brackets are kept, an IPv6 host's) labelled with ``label`` as text; just the label when the URL is not a safe
    link.

    >>> md_link("runbook", "http://[::1]:9093/runbooks/(x)")
    '[runbook](http://[::1]:9093/runbooks/%28x%29)'
    >>> md_link("runbook", "javascript:alert(1)")
    'runbook'
    """
    target = safe_url(url)
    if target is None:
        return md(label)
    return f"[{md(label)}]({urllib.parse.quote(target, safe=':/?#@!$&*+,;=%~.-_[]')})"


#: What a trace link template (``AIWATCH_CONSOLE_TRACE_URL``) holds where the trace's id goes.
TRACE_ID_FIELD = "{trace_id}"


def check_trace_url(template: str, name: str) -> str:
    """``template`` when it is a trace link template: an http(s) URL holding :data:`TRACE_ID_FIELD`; else a
    ValueError naming ``name`` (the variable) and what is wrong. A template holding credentials
    (``https://user:password@grafana...``) is refused: every console viewer would get them in each link."""
    refuse_credentials(template, name)
    if TRACE_ID_FIELD not in template:
        raise ValueError(f"{name} must hold {TRACE_ID_FIELD} where the trace's id goes, got {template!r}")
    if trace_link(template, "0" * 32) is None:
        raise ValueError(f"{name} must be an http(s) URL (no spaces or control characters), got {template!r}")
    return template


def trace_link(template: str, trace_id: str) -> str | None:
    """The link to the trace ``trace_id`` (a label value: any text) by ``template``: the id percent-encoded into
    it, so that no id can change where the link goes beyond its own path segment; None when the result is no safe
    http(s) link (:func:`safe_url`).

    >>> trace_link("https://tempo.example/trace/{trace_id}", "4bf92f3577b34da6a3ce929d0e0e4736")
    'https://tempo.example/trace/4bf92f3577b34da6a3ce929d0e0e4736'
    >>> trace_link("https://tempo.example/trace/{trace_id}", "../../admin?x=1#")
    'https://tempo.example/trace/..%2F..%2Fadmin%3Fx%3D1%23'
    """
    return safe_url(template.replace(TRACE_ID_FIELD, urllib.parse.quote(trace_id, safe="")))
