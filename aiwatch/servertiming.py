"""W3C Server-Timing: how a server reports its phases, its total and its name back to the caller.

aiwatch writes one entry per phase plus ``overhead`` and ``total``, durations in milliseconds; the ``total`` entry's
``desc`` is the server's ``service`` name, so that the caller can label its network time with the peer's own name
without any configuration::

    >>> format_server_timing([("inference", 0.030)], overhead=0.002, total=0.045, service="ranker")
    'inference;dur=30.000, overhead;dur=2.000, total;dur=45.000;desc="ranker"'
    >>> timing = parse('inference;dur=30.000, total;dur=45.000;desc="ranker"')
    >>> timing.total, timing.service
    (0.045, 'ranker')

A response may carry more than one ``total``: an app that forwards its upstream's Server-Timing (a gateway's common
practice) leaves the upstream's in front of the one aiwatch adds, for aiwatch's server appends its value after every
header or trailer the app set. So the caller reads the **last** ``total``: its own peer's::

    >>> timing = parse('total;dur=5.000;desc="upstream", overhead;dur=1.000, total;dur=200.000;desc="gateway"')
    >>> timing.total, timing.service
    (0.2, 'gateway')

The same text travels in gRPC trailing metadata under the key ``server-timing``. An aiwatch gRPC server answering an
attempt the channel retried (gRFC A6: the attempt carries ``grpc-previous-rpc-attempts``) adds the attempt's number
to the ``total`` entry, as an extension parameter ``attempt`` (2 for the first retry). The total then covers that
attempt only, not the earlier ones nor the backoff the caller waited, so the caller records no network time::

    >>> format_server_timing([], overhead=0.002, total=0.045, service="ranker", attempt=2)
    'overhead;dur=2.000, total;dur=45.000;desc="ranker";attempt=2'
    >>> parse('total;dur=45.000;desc="ranker";attempt=2').retried
    True

The value is kept small, because proxies and clients refuse a response whose headers pass their limit, and the
host app's response would fail with it: nginx reads all of an upstream's response headers into ``proxy_buffer_size``
(one memory page by default, 4 or 8 KiB) and answers 502 "upstream sent too big header" past it; Node's HTTP parser
and h11 stop at 16 KiB of headers, grpc-core's clients fail a call whose metadata passes 8 KiB (at random between 8
and 16 KiB) with RESOURCE_EXHAUSTED. So the value is at most :data:`MAX_LENGTH` characters (a quarter of nginx's
smaller page, leaving the rest to the app's own headers), on HTTP as on gRPC: phase entries that would pass it are
left out (:func:`fit`), the ``overhead`` and ``total`` entries are always sent, their values unchanged (the
``overhead`` is still the time outside every phase, the left-out ones included). The ``desc`` carries at most
:data:`MAX_DESC` characters of the service name, so that the two always fit::

    >>> fit("a;dur=1.000, " * 100, "overhead;dur=0.000, total;dur=100.000", 64)
    ('a;dur=1.000, a;dur=1.000, overhead;dur=0.000, total;dur=100.000', 98)

Parsing follows the header's grammar (https://www.w3.org/TR/server-timing/#the-server-timing-header-field)::

    Server-Timing             = #server-timing-metric
    server-timing-metric      = metric-name *( OWS ";" OWS server-timing-param )
    metric-name               = token
    server-timing-param       = server-timing-param-name OWS "=" OWS server-timing-param-value
    server-timing-param-name  = token
    server-timing-param-value = token / quoted-string

so a quoted ``desc`` may hold commas, semicolons and escaped quotes without forging another entry. As the spec's
processing model says, the first ``dur`` (and the first ``desc``, ``attempt``) of an entry wins and other parameters
are ignored; aiwatch also takes the first entry of a repeated name. A value that does not follow the grammar, or an
``attempt`` that is no whole number from 1 to 9999999999, raises :class:`ValueError` naming the problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

HEADER = "server-timing"
TOTAL = "total"
OVERHEAD = "overhead"
#: the ``total`` entry's parameter: the number of the attempt that answered, when the channel retried the call
ATTEMPT = "attempt"
#: the longest Server-Timing value aiwatch sends (the HTTP header, the gRPC trailer), in characters (= bytes: it is
#: Latin-1 on HTTP, ASCII on gRPC). A quarter of nginx's default ``proxy_buffer_size`` (4 KiB on most platforms),
#: which must hold the status line and every response header; 30-40 phase entries fit.
MAX_LENGTH = 1024
#: the most characters of the service name the ``total`` entry's ``desc`` carries (before escaping): the longest
#: name an aiwatch client takes as a ``peer`` label, and short enough that the ``overhead`` and ``total`` entries
#: always fit in :data:`MAX_LENGTH`
MAX_DESC = 128

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OWS = re.compile(r"[ \t]*")
# qdtext and quoted-pair of RFC 9110: any visible or obs-text character but DQUOTE and backslash, or an escape
_QUOTED = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"')
_ESCAPE = re.compile(r"\\(.)")
_ATTEMPT = re.compile(r"[0-9]{1,10}")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def is_token(name: str) -> bool:
    """Whether ``name`` is a valid Server-Timing metric name (an RFC 9110 token)."""
    return _TOKEN.fullmatch(name) is not None


def quote(text: str, limit: int | None = None) -> str:
    """``text`` as a quoted-string (backslash and double quote escaped; other control characters and characters
    past Latin-1 dropped). ``limit``: at most this many of the kept characters (before escaping)."""
    kept = "".join(c for c in text if c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff")
    if limit is not None:
        kept = kept[:limit]
    return '"' + kept.replace("\\", "\\\\").replace('"', '\\"') + '"'


def timing_tail(service: str, ascii_only: bool = False) -> str:
    """The end of every Server-Timing value of ``service``'s server: the ``overhead`` and ``total`` entries, as a
    %-format of their durations in milliseconds, the total's ``desc`` the service name (at most :data:`MAX_DESC`
    characters of it; ``ascii_only``, for gRPC metadata: in printable ASCII, :func:`printable_ascii`)."""
    desc = quote(printable_ascii(service, MAX_DESC)) if ascii_only else quote(service, MAX_DESC)
    return f"{OVERHEAD};dur=%.3f, {TOTAL};dur=%.3f;desc={desc.replace('%', '%%')}"


def fit(entries: str, end: str, limit: int = MAX_LENGTH) -> tuple[str, int]:
    """``entries`` then ``end`` within ``limit`` characters, and how many entries were left out for it.

    ``entries``: phase entries, each followed by ``", "`` (aiwatch's phase names are tokens and its ``dur`` a
    number, so no entry holds ``", "``); ``end``: the ``overhead`` and ``total`` entries, always kept. The entries
    that fit are kept in order, each one that would pass ``limit`` left out (a later, shorter one may still fit). An
    ``end`` longer than ``limit`` on its own is returned alone (:func:`timing_tail` keeps it well within
    :data:`MAX_LENGTH`)."""
    if len(entries) + len(end) <= limit:
        return entries + end, 0
    room = limit - len(end)
    kept: list[str] = []
    left_out = 0
    for entry in entries[:-2].split(", ") if entries else ():
        size = len(entry) + 2
        if size <= room:
            kept.append(entry)
            room -= size
        else:
            left_out += 1
    return "".join(entry + ", " for entry in kept) + end, left_out


def printable_ascii(text: str, limit: int | None = None) -> str:
    """``text`` with each character outside printable ASCII (0x20-0x7E) written as the ``%XX`` escapes of its UTF-8
    bytes (``café`` -> ``caf%C3%A9``, a tab -> ``%09``): gRPC metadata values must be printable ASCII (grpc-core fails
    the call on any other byte), where an HTTP header may hold Latin-1. Printable characters, ``%`` included, are
    kept. ``limit``: at most this many characters, cut between characters (never inside an escape)."""
    if limit is None and text.isascii() and text.isprintable():
        return text
    out: list[str] = []
    size = 0
    for c in text:
        piece = c if " " <= c <= "~" else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        if limit is not None and size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


@dataclass(frozen=True)
class Entry:
    """One server-timing metric: its name, ``dur`` in seconds, ``desc`` and ``attempt`` (``None`` when absent)."""

    name: str
    seconds: float | None = None
    desc: str | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class ServerTiming:
    """A parsed Server-Timing value: its entries in order, the first of each name winning in lookups, but for the
    ``total``, whose last entry is the peer's own (the module's docstring says why)."""

    entries: tuple[Entry, ...]

    def get(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    @property
    def _total(self) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.name == TOTAL), None)

    @property
    def total(self) -> float | None:
        """The last ``total`` entry's duration in seconds."""
        entry = self._total
        return entry.seconds if entry is not None else None

    @property
    def service(self) -> str | None:
        """The last ``total`` entry's ``desc``: the reporting server's service name (aiwatch servers send it)."""
        entry = self._total
        return entry.desc or None if entry is not None else None

    @property
    def retried(self) -> bool:
        """Whether the last ``total`` is that of a retried attempt (its ``attempt`` is above 1): it does not cover
        the whole call."""
        entry = self._total
        return entry is not None and entry.attempt is not None and entry.attempt > 1

    def durations(self) -> dict[str, float]:
        """name -> seconds for the entries with a ``dur`` (the first entry of a name wins)."""
        out: dict[str, float] = {}
        for entry in self.entries:
            if entry.seconds is not None and entry.name not in out:
                out[entry.name] = entry.seconds
        return out


def format_server_timing(phases: Iterable[tuple[str, float]], overhead: float | None, total: float,
                         service: str | None = None, attempt: int | None = None) -> str:
    """Server-Timing header value for ``phases`` (name, seconds), the ``overhead``, the ``total``, the server's
    ``service`` name and the ``attempt`` that answered (given only for a retried one)."""
    parts = [f"{name};dur={seconds * 1000.0:.3f}" for name, seconds in phases]
    if overhead is not None:
        parts.append(f"{OVERHEAD};dur={overhead * 1000.0:.3f}")
    parts.append(f"{TOTAL};dur={total * 1000.0:.3f}" + (f";desc={quote(service)}" if service else "")
                 + (f";{ATTEMPT}={attempt:d}" if attempt is not None else ""))
    return ", ".join(parts)


class _Scanner:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ows(self) -> None:
        self.pos = _OWS.match(self.text, self.pos).end()  # type: ignore[union-attr]  # always matches

    def at(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)

    def token(self) -> str | None:
        found = _TOKEN.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def value(self) -> str | None:
        found = _QUOTED.match(self.text, self.pos)
        if found is not None:
            self.pos = found.end()
            return _ESCAPE.sub(r"\1", found.group(1))
        return self.token()

    def where(self) -> str:
        return f"at character {self.pos + 1} of {self.text!r}"


def parse(value: str) -> ServerTiming:
    """Parse a Server-Timing value by the W3C grammar. Raises ValueError naming what is wrong and where."""
    s = _Scanner(value)
    entries: list[Entry] = []
    while True:
        s.skip_ows()
        if s.pos >= len(value):
            break
        if s.at(","):  # empty list elements are allowed by the #rule
            s.pos += 1
            continue
        entries.append(_entry(s))
        s.skip_ows()
        if s.pos < len(value):
            if not s.at(","):
                raise ValueError(f"malformed Server-Timing: expected ',' or ';' {s.where()}")
            s.pos += 1
    return ServerTiming(tuple(entries))


def _entry(s: _Scanner) -> Entry:
    name = s.token()
    if name is None:
        raise ValueError(f"malformed Server-Timing entry: bad metric name {s.where()}")
    seconds: float | None = None
    desc: str | None = None
    attempt: int | None = None
    has_dur = has_desc = has_attempt = False
    while True:
        s.skip_ows()
        if not s.at(";"):
            return Entry(name, seconds, desc, attempt)
        s.pos += 1
        s.skip_ows()
        key = s.token()
        if key is None:
            raise ValueError(f"malformed Server-Timing entry {name!r}: bad parameter name {s.where()}")
        s.skip_ows()
        if not s.at("="):
            raise ValueError(f"malformed Server-Timing entry {name!r}: parameter {key!r} has no value {s.where()}")
        s.pos += 1
        s.skip_ows()
        raw = s.value()
        if raw is None:
            raise ValueError(f"malformed Server-Timing entry {name!r}: bad value of {key!r} {s.where()}")
        key = key.lower()
        if key == "dur" and not has_dur:
            has_dur = True
            seconds = _duration(name, raw)
        elif key == "desc" and not has_desc:
            has_desc = True
            desc = raw
        # attempt is the total's parameter; on another entry it is unknown, ignored as the grammar says
        elif key == ATTEMPT and name == TOTAL and not has_attempt:
            has_attempt = True
            if _ATTEMPT.fullmatch(raw) is None or int(raw) < 1:
                raise ValueError(f"malformed Server-Timing entry {name!r}: attempt={raw!r} is not a whole number "
                                 "from 1 to 9999999999")
            attempt = int(raw)


def _duration(name: str, raw: str) -> float:
    if _NUMBER.fullmatch(raw) is None:
        raise ValueError(f"malformed Server-Timing entry {name!r}: dur={raw!r} is not a number")
    millis = float(raw)
    if not math.isfinite(millis):
        raise ValueError(f"malformed Server-Timing entry {name!r}: dur must be a finite number >= 0, got {raw!r}")
    return millis / 1000.0


def parse_server_timing(value: str) -> dict[str, float]:
    """Entries of a Server-Timing value as name -> seconds (entries without ``dur`` skipped, the first entry of a
    repeated name wins). Raises ValueError when the value is malformed."""
    return parse(value).durations()


def server_total(value: str) -> float | None:
    """The (last) ``total`` duration in seconds from a Server-Timing value, ``None`` if it has none.

    Raises ValueError when the value is malformed.
    """
    return parse(value).total
