"""Which HTTP requests and gRPC calls aiwatch leaves alone: URLs and services excluded the way OpenTelemetry's
instrumentations exclude them.

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

gRPC: ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`` is a comma-separated list of full service names
(``grpc.health.v1.Health``); an RPC to one of them is neither timed, nor traced, nor given a ``server-timing``
trailer, on the server and the client side alike. The usual ones are the health service, which Kubernetes' gRPC
probes and load balancers call every few seconds (and whose ``Watch`` stream stays open for as long as its caller
watches), and server reflection. An interceptor's ``excluded_services=`` argument replaces the variable's list.

    >>> services = ExcludedServices.parse("grpc.health.v1.Health, grpc.reflection.v1.ServerReflection")
    >>> services.excludes("/grpc.health.v1.Health/Check"), services.excludes("/shop.Recommender/Rank")
    (True, False)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from aiwatch.env import EXCLUDED_URLS, GRPC_EXCLUDED_SERVICES, otel_excluded_urls_variable


class ExcludedUrls:
    """A compiled exclusion rule; :attr:`active` is false when nothing is excluded (then no URL is built)."""

    __slots__ = ("_own", "_regex", "active")

    def __init__(self, regex: re.Pattern[str] | None, own: re.Pattern[str] | None = None) -> None:
        self._regex = regex
        self._own = own
        self.active = regex is not None or own is not None

    @classmethod
    def parse(cls, otel_list: str, own_regex: str = "", *, otel_name: str = "excluded_urls",
              own_name: str = EXCLUDED_URLS.name) -> ExcludedUrls:
        """The rule of an OpenTelemetry comma-separated list and aiwatch's single regex (either may be empty). The
        single regex is compiled on its own, so that it may start with inline flags (``(?i)``). One that is no
        regular expression is a ``ValueError`` naming where it came from (``otel_name``, ``own_name``)."""
        parts = [p for p in (item.strip() for item in otel_list.split(",")) if p] if otel_list else []
        return cls(_compile(otel_name, "|".join(parts)) if parts else None,
                   _compile(own_name, own_regex) if own_regex else None)

    @classmethod
    def from_env(cls, instrumentation: str, env: Mapping[str, str] | None = None) -> ExcludedUrls:
        """The rule the environment sets for ``instrumentation`` (``ASGI``, ``WSGI``, ``FASTAPI``, ``STARLETTE``,
        ``FLASK``, ``DJANGO``): :func:`aiwatch.env.otel_excluded_urls` plus ``AIWATCH_EXCLUDED_URLS``."""
        variable = otel_excluded_urls_variable(instrumentation, env)
        return cls.parse(variable.raw(env), EXCLUDED_URLS.raw(env), otel_name=variable.name)

    def excludes(self, url: str) -> bool:
        regex, own = self._regex, self._own
        return ((regex is not None and regex.search(url) is not None)
                or (own is not None and own.search(url) is not None))


def exclude_path_set(paths: Iterable[str]) -> frozenset[str]:
    """The middleware's ``exclude_paths``: exact request paths passed through untimed. A str (or bytes) is a
    ``TypeError``, not the set of its characters (which excluded every request to ``/`` and no health check), and so
    is an item that is not a str (no request path equals it); a path without its leading ``/`` is a ValueError
    (:func:`check_request_path`)."""
    found = _str_set(paths, "exclude_paths", "path")
    for path in found:
        if path:  # "": a WSGI app's root, mounted under a SCRIPT_NAME
            check_request_path(path, "exclude_paths")
    return found


def check_request_path(path: str, source: str) -> str:
    """``path`` (the argument ``source``: ``metrics_path``, an item of ``exclude_paths``) as a request path is
    written: a str starting with ``/``, else a ValueError. ``"health"`` matched no request (an ASGI ``path`` and a
    WSGI ``PATH_INFO`` start with ``/``): the health checks were timed into the latency metrics, and ``/metrics``
    served the app's 404, with nothing said."""
    if not isinstance(path, str):
        raise TypeError(f"{source} must be a str path, got {path!r}")
    if not path.startswith("/"):
        raise ValueError(f"{source}: {path!r} matches no request: a request path starts with '/' (write "
                         f"{'/' + path.strip()!r})")
    return path


def _str_set(values: Iterable[str], source: str, noun: str) -> frozenset[str]:
    """``values`` (the argument ``source``, a collection of ``noun``s) as a set; a single str or bytes is a
    ``TypeError`` rather than the set of its characters, and so is an item that is not a str."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{source} must be a collection of {noun}s, got the single {type(values).__name__} "
                        f"{values!r}: write [{values!r}]")
    found = frozenset(values)
    for item in found:
        if not isinstance(item, str):
            raise TypeError(f"{source} must hold str {noun}s, got {item!r}")
    return found


class ExcludedServices:
    """A set of excluded gRPC service names; :attr:`active` is false when it is empty (then no method is split)."""

    __slots__ = ("active", "services")

    def __init__(self, services: Iterable[str] = (), *, source: str = "excluded_services") -> None:
        found = _str_set(services, source, "service name")
        for name in found:
            _check_service(name, source)
        #: the full service names excluded (``pkg.Service``)
        self.services = found
        self.active = bool(found)

    @classmethod
    def parse(cls, text: str, *, source: str = GRPC_EXCLUDED_SERVICES.name) -> ExcludedServices:
        """The rule of a comma-separated list, as opentelemetry-instrumentation-grpc reads it (each item stripped;
        empty items are left out). ``source`` names where it came from in errors."""
        return cls([item for item in (part.strip() for part in text.split(",")) if item], source=source)

    @classmethod
    def resolve(cls, services: Iterable[str] | None, env: Mapping[str, str] | None = None) -> ExcludedServices:
        """The rule an interceptor uses: ``services`` (the ``excluded_services=`` argument) when given, else
        ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``."""
        if services is None:
            return cls.parse(GRPC_EXCLUDED_SERVICES.raw(env))
        return cls(services)

    def excludes(self, method: str) -> bool:
        """Whether the RPC of full method name ``method`` (``/pkg.Service/Method``) is to a service excluded."""
        return self.active and service_of(method) in self.services


def service_of(method: str) -> str:
    """The service of a full method name: ``pkg.Service`` for ``/pkg.Service/Method`` (``""`` when it has none).

        >>> service_of("/grpc.health.v1.Health/Check"), service_of("Check")
        ('grpc.health.v1.Health', '')
    """
    return method.rpartition("/")[0].lstrip("/")


def _check_service(name: str, source: str) -> None:
    """A service name an RPC can have: no ``/`` (a full method name, or a name written with its leading slash, would
    never match any RPC, so it is refused rather than excluding nothing)."""
    if not name or "/" in name or name != name.strip():
        raise ValueError(f"{source}: {name!r} is no gRPC service name; write the full service name, "
                         "such as 'grpc.health.v1.Health' (no slash, no method)")


def _compile(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{name}: {pattern!r} is not a valid regular expression: {exc}") from None


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
