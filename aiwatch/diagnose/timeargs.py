"""Durations and instants as a person writes them on the command line: ``5m``, ``1h30m``, ``90s``, ``300``;
``1700000000`` or ``2025-03-01T12:00:00Z``.

    >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration("250ms"), parse_duration("300")
    (5400.0, 90.0, 0.25, 300.0)
    >>> parse_time("2023-11-14T22:13:20Z"), parse_time("1700000000")
    (1700000000.0, 1700000000.0)
"""

from __future__ import annotations

import datetime as dt
import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a Prometheus-style duration (``5m``, ``1h30m``, ``250ms``) or a number of seconds.
    ``ValueError`` unless it is a positive, finite duration."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.fullmatch(value):
            raise ValueError(f"not a duration: {text!r} (write e.g. 90s, 5m, 1h, 1h30m or a number of seconds)"
                             ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


def parse_time(text: str) -> float:
    """Unix seconds from ``text``: unix seconds, or an RFC 3339 / ISO 8601 time (``2025-03-01T12:00:00Z``,
    ``2025-03-01 12:00:00+01:00``; a time without an offset is UTC)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {text!r} (write unix seconds or RFC 3339, e.g. 2025-03-01T12:00:00Z)"
                             ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp()
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"not a time: {text!r}")
    return seconds


class FutureTimeError(ValueError):
    """An incident window's end (``--at``) after now."""


def not_in_future(at: float, now: float, clock: str = "this machine's clock") -> float:
    """``at``, the end of an incident window, unless it is later than ``now`` (read on ``clock``): Prometheus has no
    samples there, so the window's counts would cover only its past part (a load that looks lower than it is) or
    nothing at all. :class:`FutureTimeError` saying by how much, with the usual mistakes (milliseconds, a local time
    without its offset)."""
    if at > now:
        raise FutureTimeError(f"the incident window must end by now, but it ends at {_or_number(at)}, "
                              f"{at - now:.0f} s after now ({format_time(now)} on {clock}): unix milliseconds "
                              "instead of seconds, or a local time written without its offset (a time without one "
                              "is UTC)?")
    return at


def _or_number(t: float) -> str:
    try:
        return format_time(t)
    except (ValueError, OverflowError, OSError):  # past the year 9999
        return f"{t:.0f}"


def format_time(t: float) -> str:
    """``t`` (unix seconds) as ``YYYY-MM-DD HH:MM:SS UTC``.

    >>> format_time(1700000000)
    '2023-11-14 22:13:20 UTC'
    """
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
