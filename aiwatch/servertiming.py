"""W3C Server-Timing: how a server reports its phases and total back to the caller.

aiwatch writes one entry per phase plus ``overhead`` and ``total``, durations in milliseconds::

    >>> format_server_timing([("inference", 0.030)], overhead=0.002, total=0.045)
    'inference;dur=30.000, overhead;dur=2.000, total;dur=45.000'
    >>> parse_server_timing('inference;dur=30.000, total;dur=45.000')
    {'inference': 0.03, 'total': 0.045}

The same text travels in gRPC trailing metadata under the key ``server-timing``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HEADER = "server-timing"
TOTAL = "total"
OVERHEAD = "overhead"

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def is_token(name: str) -> bool:
    """Whether ``name`` is a valid Server-Timing metric name (an RFC 7230 token)."""
    return bool(_TOKEN.match(name))


def format_server_timing(phases: Iterable[tuple[str, float]], overhead: float | None, total: float) -> str:
    """Server-Timing header value for ``phases`` (name, seconds), the ``overhead`` and the ``total``."""
    parts = [f"{name};dur={seconds * 1000.0:.3f}" for name, seconds in phases]
    if overhead is not None:
        parts.append(f"{OVERHEAD};dur={overhead * 1000.0:.3f}")
    parts.append(f"{TOTAL};dur={total * 1000.0:.3f}")
    return ", ".join(parts)


def parse_server_timing(value: str) -> dict[str, float]:
    """Entries of a Server-Timing value as name -> seconds (entries without ``dur`` are skipped).

    Raises ValueError naming the offending entry when the value is malformed. Repeated names add up.
    """
    result: dict[str, float] = {}
    for raw_entry in value.split(","):
        entry = raw_entry.strip()
        if not entry:
            continue
        name, *params = (p.strip() for p in entry.split(";"))
        if not is_token(name):
            raise ValueError(f"malformed Server-Timing entry {entry!r}: bad metric name")
        for param in params:
            key, sep, raw = param.partition("=")
            if key.strip().lower() != "dur":
                continue
            raw = raw.strip().strip('"')
            try:
                millis = float(raw)
            except ValueError:
                raise ValueError(f"malformed Server-Timing entry {entry!r}: dur={raw!r} is not a number") from None
            if not sep or millis != millis or millis < 0 or millis == float("inf"):
                raise ValueError(f"malformed Server-Timing entry {entry!r}: dur must be a finite number >= 0")
            result[name] = result.get(name, 0.0) + millis / 1000.0
    return result


def server_total(value: str) -> float | None:
    """The ``total`` duration in seconds from a Server-Timing value, ``None`` if it has none.

    Raises ValueError when the value is malformed.
    """
    return parse_server_timing(value).get(TOTAL)
