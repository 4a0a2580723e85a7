"""The ``Content-Length`` format: a body's declared size, read as HTTP defines it, not as Python's ``int()`` does.

RFC 9110 §8.6: ``Content-Length = 1*DIGIT``, ASCII digits only. ``int()`` takes more: ``+7``, ``1_000``, ``-5``,
``٣`` (a non-ASCII digit), numbers of hundreds of digits. A value sent by a client is not trusted until it is a
count of bytes aiwatch can record (0 to :data:`aiwatch.amounts.MAX_COUNT`); anything else is no size at all, which
is the client's fault, not aiwatch's: each caller falls back to what it does when no size is declared.

    >>> content_length(b"1234"), content_length(" 12\\t")
    (1234, 12)
    >>> [content_length(v) for v in ("+7", "1_000", "-5", "٣", "5, 5", "", None)]
    [None, None, None, None, None, None, None]
"""

from __future__ import annotations

from aiwatch.amounts import MAX_COUNT

__all__ = ["content_length"]


def content_length(value: str | bytes | None) -> int | None:
    """A ``Content-Length`` value (a header's ``bytes``, an environ's ``str``) as a number of bytes from 0 to 2**53,
    or ``None`` when it is none: absent or empty, anything but ASCII digits, past 2**53, or not text at all.

    Whitespace (spaces and tabs) around the digits is not part of the value (RFC 9110 §5.5), and is ignored:
    uvicorn (with httptools) and wsgiref hand the app the trailing whitespace the client sent (``b"5 "``), and
    werkzeug reads it as the number. A list (``5, 5``, which RFC 9110 §8.6 lets a recipient accept or reject) is
    refused: h11 collapses a list of identical values to one before the app sees it, and llhttp, gunicorn and
    werkzeug refuse it, so no app reads a body of that size either."""
    if not value:
        return None
    try:
        if value.isdigit() and len(value) < 16 and value.isascii():  # the common case: at most 15 digits < 2**53
            return int(value)
    except AttributeError:  # neither text nor bytes
        return None
    return _unusual(value)


def _unusual(value: str | bytes) -> int | None:
    """:func:`content_length` of a value with whitespace around it, of 16 digits or more, or of no number."""
    text = value.decode("latin-1") if isinstance(value, bytes | bytearray) else value
    text = text.strip(" \t")
    if not (text.isdigit() and text.isascii()):
        return None
    text = text.lstrip("0") or "0"
    if len(text) > 16:  # past 2**53, and no int() of thousands of digits (which raises past 4300)
        return None
    number = int(text)
    return number if number <= MAX_COUNT else None
