"""Which HTTP headers go on the spans aiwatch makes, configured as OpenTelemetry's HTTP instrumentations are.

``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{SERVER,CLIENT}_{REQUEST,RESPONSE}`` list the headers captured:
comma-separated regular expressions, each matched against a whole header name in any case.
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` lists those whose values are captured as
``[REDACTED]``: regular expressions searched in the name, in any case. That is how opentelemetry-util-http reads them.

A captured header is the attribute ``http.request.header.<name>`` or ``http.response.header.<name>``, its name
lowercased with its dashes kept, as the stable HTTP conventions name it (opentelemetry-util-http 0.66b2 still turns
dashes into underscores, the conventions' old form). Its value is a list of strings: one per header line where the
server or client keeps them apart (ASGI, httpx), else the one comma-joined value it gives (WSGI, requests).

Nothing is captured unless configured, since headers can hold credentials, and only on spans aiwatch owns: a span
another instrumentation started (OpenTelemetry's middleware in front of aiwatch) is that instrumentation's to fill.

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
from dataclasses import dataclass
from typing import Any

from aiwatch.env import (
    CAPTURE_CLIENT_REQUEST_HEADERS,
    CAPTURE_CLIENT_RESPONSE_HEADERS,
    CAPTURE_HEADERS_SANITIZE_FIELDS,
    CAPTURE_SERVER_REQUEST_HEADERS,
    CAPTURE_SERVER_RESPONSE_HEADERS,
    EnvVar,
)

__all__ = ["REDACTED", "HeaderCapture", "asgi_headers", "environ_headers"]

#: The value a sanitized header is captured with (opentelemetry-util-http's).
REDACTED = "[REDACTED]"
REQUEST_PREFIX = "http.request.header."
RESPONSE_PREFIX = "http.response.header."
#: The environ keys of a WSGI request's headers that have no ``HTTP_`` prefix (PEP 3333).
_UNPREFIXED = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


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


@dataclass(frozen=True)
class HeaderCapture:
    """The request and response headers one side (server or client) captures, and the names sanitized."""

    request: re.Pattern[str] | None = None
    response: re.Pattern[str] | None = None
    sanitize: re.Pattern[str] | None = None

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
        if self.request is None:
            return {}
        return _captured(self.request, self.sanitize, REQUEST_PREFIX, headers)

    def response_attributes(self, headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        """The ``http.response.header.*`` attributes of ``headers``; ``{}`` when none is captured."""
        if self.response is None:
            return {}
        return _captured(self.response, self.sanitize, RESPONSE_PREFIX, headers)


def _captured(pattern: re.Pattern[str], sanitize: re.Pattern[str] | None, prefix: str,
              headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    captured: dict[str, list[str]] = {}
    for name, value in headers:
        name = name.lower()
        if pattern.fullmatch(name) is None:
            continue
        if sanitize is not None and sanitize.search(name) is not None:
            value = REDACTED
        key = prefix + name
        values = captured.get(key)
        if values is None:
            captured[key] = [value]
        else:
            values.append(value)
    return captured


def asgi_headers(raw: Iterable[tuple[bytes, bytes]] | None) -> Iterator[tuple[str, str]]:
    """An ASGI message's header pairs (bytes) as text, each read as Latin-1 as the ASGI spec sends them."""
    for name, value in raw or ():
        yield name.decode("latin-1"), value.decode("latin-1")


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
