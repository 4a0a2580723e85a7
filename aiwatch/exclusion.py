"""Which HTTP requests aiwatch leaves alone: URLs excluded the way OpenTelemetry's instrumentations exclude them.

OpenTelemetry's ``OTEL_PYTHON_EXCLUDED_URLS`` (and its per-instrumentation variants) is a comma-separated list of
regular expressions, each searched (``re.search``) in the request's full URL (``scheme://host[:port]/path``); aiwatch
reads the same lists with the same meaning, plus its own ``AIWATCH_EXCLUDED_URLS``: one regular expression, so that
one with a comma in it (``\\d{1,3}``) can be written. An excluded request is neither timed nor traced.

The parsing mirrors ``opentelemetry.util.http.parse_excluded_urls``; that package is not a dependency because it
declares none itself while importing names that only its own release of ``opentelemetry-semantic-conventions``
has, so an install that pairs it with an older one fails at import.

    >>> rule = ExcludedUrls.parse("healthz, /internal/.*", r"/v\\d{1,3}/ping$")
    >>> rule.excludes("http://svc:8000/healthz"), rule.excludes("http://svc/v12/ping"), rule.excludes("http://svc/x")
    (True, True, False)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiwatch.env import EXCLUDED_URLS, otel_excluded_urls


class ExcludedUrls:
    """A compiled exclusion rule; :attr:`active` is false when nothing is excluded (then no URL is built)."""

    __slots__ = ("_regex", "active")

    def __init__(self, regex: re.Pattern[str] | None) -> None:
        self._regex = regex
        self.active = regex is not None

    @classmethod
    def parse(cls, otel_list: str, own_regex: str = "") -> ExcludedUrls:
        """The rule of an OpenTelemetry comma-separated list and aiwatch's single regex (either may be empty)."""
        parts = [item.strip() for item in otel_list.split(",")] if otel_list else []
        if own_regex:
            parts.append(f"(?:{own_regex})")
        parts = [p for p in parts if p]
        return cls(re.compile("|".join(parts)) if parts else None)

    @classmethod
    def from_env(cls, instrumentation: str, env: Mapping[str, str] | None = None) -> ExcludedUrls:
        """The rule the environment sets for ``instrumentation`` (``ASGI``, ``WSGI``, ``FASTAPI``, ``STARLETTE``,
        ``FLASK``): :func:`aiwatch.env.otel_excluded_urls` plus ``AIWATCH_EXCLUDED_URLS``."""
        return cls.parse(otel_excluded_urls(instrumentation, env), EXCLUDED_URLS.raw(env))

    def excludes(self, url: str) -> bool:
        return self._regex is not None and self._regex.search(url) is not None


def asgi_url(scope: Mapping[str, Any]) -> str:
    """The full URL OpenTelemetry's ASGI middleware matches its exclusions against: ``scheme://host/path`` with the
    ``Host`` header as host, else the server's address (its port left out when 80)."""
    host = None
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server") or ("0.0.0.0", 80)
        host = server[0] if str(server[1]) == "80" else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


def wsgi_url(environ: Mapping[str, Any]) -> str:
    """The full URL OpenTelemetry's WSGI middleware matches its exclusions against (PEP 3333 URL reconstruction,
    without the query string)."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = str(environ.get("SERVER_PORT", ""))
        if port and port != {"https": "443"}.get(scheme, "80"):
            host = f"{host}:{port}"
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
