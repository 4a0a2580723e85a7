"""Text that UTF-8 can encode, for the places that must write it as UTF-8: Prometheus' exposition and Parquet.

A Python str may hold a lone surrogate (``"\\ud800"``), which a JSON body can carry as an escape and
``json.loads`` decodes, but which UTF-8 cannot encode: one such label value made every later ``/metrics`` scrape
fail, and one such log value lost the Parquet batch around it.

    >>> utf8_text("caf\\u00e9"), utf8_text("a\\ud800b")
    ('café', 'a\\\\ud800b')
"""

from __future__ import annotations

from typing import Any

__all__ = ["text_or_value", "utf8_text"]


def utf8_text(text: str) -> str:
    """``text`` if UTF-8 can encode it, else with each lone surrogate written out as its escape (``\\udXXX``)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def text_or_value(value: Any) -> Any:
    """:func:`utf8_text` of a str; any other value (an int label, None) as it is."""
    return utf8_text(value) if isinstance(value, str) else value
