"""Which HTTP headers go on the spans aiwatch makes, configured as OpenTelemetry's HTTP instrumentations are.

``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{SERVER,CLIENT}_{REQUEST,RESPONSE}`` list the headers captured:
comma-separated regular expressions, each matched against a whole header name in any case.
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` lists those whose values are captured as
``[REDACTED]``: regular expressions searched in the name, in any case. That is how opentelemetry-util-http reads them.
A header named like a credential (:func:`aiwatch.semconv.is_credential_name`: ``Authorization``, ``Cookie``,
``Set-Cookie``, ``X-Api-Key``, ``X-Auth-Token``...) is captured as ``[REDACTED]`` whatever the variable says (it adds
to them): a wide pattern (``.*``) with no sanitize list put bearer tokens and session cookies on every span, as
OpenTelemetry's instrumentations do.

A captured header is the attribute ``http.request.header.<name>`` or ``http.response.header.<name>``, its name
lowercased with its dashes kept, as the stable HTTP conventions name it (opentelemetry-util-http 0.66b2 still turns
dashes into underscores, the conventions' old form). Its value is a list of strings: one per header line where the
server or client keeps them apart (ASGI, httpx), else the one comma-joined value it gives (WSGI, requests).

Nothing is captured unless configured, since headers can hold credentials. A span OpenTelemetry's instrumentation
started (its middleware in front of aiwatch) is that instrumentation's to fill; the integrations put the headers on
the spans aiwatch starts and on those of another owner (FastAPI's built-in telemetry captures none).

    >>> capture = HeaderCapture.server({
    ...     "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "content-type, x-.*",
    ...     "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "x-api-key"})
    >>> capture.request_attributes([("Content-Type", "application/json"), ("X-Api-Key", "s3cr3t"),
    ...                             ("x-tenant", "a"), ("X-Tenant", "b"), ("accept", "*/*")])
    {'http.request.header.content-type': ['application/json'], 'http.request.header.x-api-key': ['[REDACTED]'], \
'http.request.header.x-tenant': ['a', 'b']}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_HEADER_TEMPLATE,
    HTTP_RESPONSE_HEADER_TEMPLATE,
)

from aiwatch.env import (
    CAPTURE_CLIENT_REQUEST_HEADERS,
    CAPTURE_CLIENT_RESPONSE_HEADERS,
    CAPTURE_HEADERS_SANITIZE_FIELDS,
    CAPTURE_SERVER_REQUEST_HEADERS,
    CAPTURE_SERVER_RESPONSE_HEADERS,
    EnvVar,
)
from aiwatch.semconv import is_credential_name

__all__ = ["REDACTED", "HeaderCapture", "environ_headers"]

#: The value a sanitized header is captured with (opentelemetry-util-http's).
REDACTED = "[REDACTED]"
REQUEST_PREFIX = HTTP_REQUEST_HEADER_TEMPLATE + "."
RESPONSE_PREFIX = HTTP_RESPONSE_HEADER_TEMPLATE + "."
#: The environ keys of a WSGI request's headers that have no ``HTTP_`` prefix (PEP 3333).
_UNPREFIXED = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}
#: Header names whose decision (captured or not, redacted or not) a capture remembers per direction; past it the
#: decisions are forgotten and made again (names come from traffic: a client sending new names costs only time).
MAX_DECIDED_NAMES = 512
#: Names longer than this are decided each time, never remembered (what the memo holds stays under 64 KiB).
MAX_DECIDED_NAME_LENGTH = 128
_UNDECIDED: Any = object()


def header_patterns(variable: EnvVar, env: Mapping[str, str] | None = None) -> re.Pattern[str] | None:
    """The regular expressions ``variable`` lists (comma-separated, spaces around each ignored) as one
    case-insensitive pattern; ``None`` when it lists none. One that is no regular expression is a ``ValueError``
    naming the variable and the pattern."""
    patterns = [p.strip() for p in variable.raw(env).split(",") if p.strip()]
    if not patterns:
        return None
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{variable.name}: {pattern[:60]!r} is no regular expression ({exc})") from None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error as exc:  # each compiles alone, not together: a global flag such as (?i) not at the start
        raise ValueError(f"{variable.name}: its patterns cannot be combined into one ({exc}); inline flags "
                         "such as (?i) are not needed (the match ignores case)") from None


class NameDecisions:
    """Whether each header name is captured, under which attribute, and whether redacted: decided once per name
    (a regex match is most of a capture's cost), at most :data:`MAX_DECIDED_NAMES` remembered. Lock-free: two
    threads deciding one name at once both store the same answer."""

    __slots__ = ("_decided", "_pattern", "_prefix", "_sanitize")

    def __init__(self, pattern: re.Pattern[str], sanitize: re.Pattern[str] | None, prefix: str) -> None:
        self._pattern = pattern
        self._sanitize = sanitize
        self._prefix = prefix
        self._decided: dict[str | bytes, tuple[str, bool] | None] = {}

    def decide(self, name: str | bytes, text: str) -> tuple[str, bool] | None:
        """``(attribute, redacted)`` for the header ``name`` (``text``: its text), ``None`` when not captured."""
        lowered = text.lower()
        decision = None
        if self._pattern.fullmatch(lowered) is not None:
            decision = (self._prefix + lowered, is_credential_name(lowered)
                        or (self._sanitize is not None and self._sanitize.search(lowered) is not None))
        if len(name) <= MAX_DECIDED_NAME_LENGTH:
            if len(self._decided) >= MAX_DECIDED_NAMES:
                self._decided.clear()
            self._decided[name] = decision
        return decision

    def capture(self, headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        captured: dict[str, list[str]] = {}
        decided = self._decided
        for name, value in headers:
            decision = decided.get(name, _UNDECIDED)
            if decision is _UNDECIDED:
                decision = self.decide(name, name)
            if decision is not None:  # requests takes bytes values too
                _add(captured, decision, value if value.__class__ is str else _text(value))
        return captured

    def capture_raw(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
        """:meth:`capture` of an ASGI message's headers (bytes, read as Latin-1 as ASGI sends them); a name or a
        captured value that is not bytes raises (the server's fault: the caller counts it)."""
        captured: dict[str, list[str]] = {}
        decided = self._decided
        for name, value in headers:
            decision = decided.get(name, _UNDECIDED)
            if decision is _UNDECIDED:
                decision = self.decide(name, name.decode("latin-1"))
            if decision is not None:
                _add(captured, decision, value.decode("latin-1"))
        return captured


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


def _add(captured: dict[str, list[str]], decision: tuple[str, bool], value: str) -> None:
    key, redacted = decision
    if redacted:
        value = REDACTED
    values = captured.get(key)
    if values is None:
        captured[key] = [value]
    else:
        values.append(value)


@dataclass(frozen=True)
class HeaderCapture:
    """The request and response headers one side (server or client) captures, and the names sanitized."""

    request: re.Pattern[str] | None = None
    response: re.Pattern[str] | None = None
    sanitize: re.Pattern[str] | None = None
    _request: NameDecisions | None = field(init=False, repr=False, compare=False, default=None)
    _response: NameDecisions | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.request is not None:
            object.__setattr__(self, "_request", NameDecisions(self.request, self.sanitize, REQUEST_PREFIX))
        if self.response is not None:
            object.__setattr__(self, "_response", NameDecisions(self.response, self.sanitize, RESPONSE_PREFIX))

    @classmethod
    def server(cls, env: Mapping[str, str] | None = None) -> HeaderCapture:
        """The SERVER spans' capture: ``..._SERVER_REQUEST``, ``..._SERVER_RESPONSE`` and ``..._SANITIZE_FIELDS``."""
        return cls._of(CAPTURE_SERVER_REQUEST_HEADERS, CAPTURE_SERVER_RESPONSE_HEADERS, env)

    @classmethod
    def client(cls, env: Mapping[str, str] | None = None) -> HeaderCapture:
        """The CLIENT spans' capture: ``..._CLIENT_REQUEST``, ``..._CLIENT_RESPONSE`` and ``..._SANITIZE_FIELDS``."""
        return cls._of(CAPTURE_CLIENT_REQUEST_HEADERS, CAPTURE_CLIENT_RESPONSE_HEADERS, env)

    @classmethod
    def _of(cls, request: EnvVar, response: EnvVar, env: Mapping[str, str] | None) -> HeaderCapture:
        return cls(header_patterns(request, env), header_patterns(response, env),
                   header_patterns(CAPTURE_HEADERS_SANITIZE_FIELDS, env))

    def request_attributes(self, headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        """The ``http.request.header.*`` attributes of ``headers`` (name, value pairs); ``{}`` when none is
        captured."""
        return self._request.capture(headers) if self._request is not None else {}

    def response_attributes(self, headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        """The ``http.response.header.*`` attributes of ``headers``; ``{}`` when none is captured."""
        return self._response.capture(headers) if self._response is not None else {}

    def client_request_attributes(self, headers: Any) -> dict[str, list[str]]:
        """:meth:`request_attributes` of an HTTP client's header mapping (:func:`client_header_pairs`)."""
        return self._request.capture(client_header_pairs(headers)) if self._request is not None else {}

    def client_response_attributes(self, headers: Any) -> dict[str, list[str]]:
        """:meth:`response_attributes` of an HTTP client's header mapping (:func:`client_header_pairs`)."""
        return self._response.capture(client_header_pairs(headers)) if self._response is not None else {}

    def asgi_request_attributes(self, headers: Iterable[tuple[bytes, bytes]] | None) -> dict[str, list[str]]:
        """:meth:`request_attributes` of an ASGI scope's headers (bytes)."""
        return self._request.capture_raw(headers or ()) if self._request is not None else {}

    def asgi_response_attributes(self, headers: Iterable[tuple[bytes, bytes]] | None) -> dict[str, list[str]]:
        """:meth:`response_attributes` of an ``http.response.start`` message's headers (bytes)."""
        return self._response.capture_raw(headers or ()) if self._response is not None else {}


def client_header_pairs(headers: Any) -> Any:
    """An HTTP client's headers as (name, value) pairs: httpx's ``multi_items()`` (a repeated header's lines
    apart), else ``items()`` (requests joins them)."""
    multi_items = getattr(headers, "multi_items", None)
    return multi_items() if multi_items is not None else headers.items()


def environ_headers(environ: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A WSGI request's headers from its environ (PEP 3333): the ``HTTP_*`` keys, named as OpenTelemetry's WSGI
    instrumentation names them (``HTTP_X_API_KEY`` is ``x-api-key``), and ``CONTENT_TYPE`` / ``CONTENT_LENGTH``.
    A repeated header is the one value the server joined."""
    for key, value in environ.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-"), value
        elif key in _UNPREFIXED:
            yield _UNPREFIXED[key], value
