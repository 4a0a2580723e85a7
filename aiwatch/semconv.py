"""What OpenTelemetry's semantic conventions say aiwatch's spans carry: names, attributes and statuses.

- HTTP server and client spans follow the stable HTTP conventions (``http.request.method``, ``http.route``,
  ``http.response.status_code``, ``url.*``, ``server.*``, ``network.protocol.version``, ``error.type``; on servers
  ``client.address`` and ``user_agent.original``; ERROR for 5xx on servers, 4xx and 5xx on clients). Headers are
  captured as configured (:mod:`aiwatch.headercapture`).
- gRPC spans carry what opentelemetry-instrumentation-grpc emits by default (``rpc.system``, ``rpc.service``,
  ``rpc.method``, ``rpc.grpc.status_code``; ERROR for the codes it treats as server errors, for any code but ``OK``
  on clients), or under ``OTEL_SEMCONV_STABILITY_OPT_IN=rpc`` the stable RPC set (``rpc.system.name``, ``rpc.method``
  = ``pkg.Service/Method``, ``rpc.response.status_code``, ``error.type``, ``server.address`` / ``server.port``),
  and with ``rpc/dup`` both, the way opentelemetry-instrumentation's ``_semconv`` reads its opt-in values.

The integrations call these only when a span exists, so with tracing off none of this runs.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry.semconv._incubating.attributes import rpc_attributes as _rpc
from opentelemetry.semconv._incubating.attributes.http_attributes import HTTP_METHOD as OLD_HTTP_METHOD
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import (
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_PROTOCOL_VERSION,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import Status, StatusCode

from aiwatch.env import HTTP_KNOWN_METHODS, SEMCONV_STABILITY_OPT_IN
from aiwatch.servertiming import is_token
from aiwatch.status import GRPC_SERVER_ERRORS as _GRPC_SERVER_ERROR_CODES

RPC_SYSTEM = _rpc.RPC_SYSTEM
RPC_SERVICE = _rpc.RPC_SERVICE
RPC_METHOD = _rpc.RPC_METHOD
RPC_GRPC_STATUS_CODE = _rpc.RPC_GRPC_STATUS_CODE
# The stable RPC set is in opentelemetry-semantic-conventions from 0.61b0; the names as written there, for older
# installs (tests/test_semconv.py checks them against the installed package).
RPC_SYSTEM_NAME: str = getattr(_rpc, "RPC_SYSTEM_NAME", "rpc.system.name")
RPC_METHOD_ORIGINAL: str = getattr(_rpc, "RPC_METHOD_ORIGINAL", "rpc.method_original")
RPC_RESPONSE_STATUS_CODE: str = getattr(_rpc, "RPC_RESPONSE_STATUS_CODE", "rpc.response.status_code")
# captured request metadata: the default set's rpc.grpc.request.metadata.<key>, the stable set's
# rpc.request.metadata.<key> (not in 0.46b0, the floor)
RPC_GRPC_REQUEST_METADATA: str = getattr(_rpc, "RPC_GRPC_REQUEST_METADATA_TEMPLATE", "rpc.grpc.request.metadata")
RPC_REQUEST_METADATA: str = getattr(_rpc, "RPC_REQUEST_METADATA_TEMPLATE", "rpc.request.metadata")
# the peer on gRPC server spans in the default set, as opentelemetry-instrumentation-grpc names it (the conventions'
# deprecated names; its port is an int here, as the conventions type it); spelled here because 0.46b0, the floor, has
# no net_attributes module (tests/test_semconv.py checks them against the installed package)
NET_PEER_IP = "net.peer.ip"
NET_PEER_PORT = "net.peer.port"

#: Methods reported as they are by default (RFC 9110's, PATCH from RFC 5789 and QUERY from RFC 10008, as
#: OpenTelemetry's instrumentations and FastAPI know them); any other is ``_OTHER`` (the original in
#: ``http.request.method_original``). ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` replaces them:
#: :func:`known_http_methods`.
DEFAULT_KNOWN_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                        "PATCH", "QUERY"})
OTHER_METHOD = "_OTHER"
#: The most methods ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` may list: each is a value of the ``method`` label
#: (IANA's method registry holds about 40).
MAX_KNOWN_HTTP_METHODS = 64

#: The gRPC codes opentelemetry-instrumentation-grpc (and the stable gRPC conventions) count as server errors: the
#: same codes the metrics count as errors (aiwatch.status, the one definition).
GRPC_SERVER_ERRORS = frozenset(_GRPC_SERVER_ERROR_CODES)

#: Query parameters whose values the HTTP conventions say to redact from ``url.full`` and ``url.query`` (semantic
#: conventions 1.3x: AWS SigV4's, Azure's SAS ``sig``, Google's signed URLs), the SigV2 pair the earlier list
#: named (``AWSAccessKeyId``, ``Signature``): still in presigned URLs, and two that carry a credential whole:
#: ``key``, a Google API key (Gemini's REST API takes ``?key=AIza...`` on every call), and ``access_token``, RFC
#: 6750's bearer token in a query. Redacting more leaks less.
REDACTED_QUERY_PARAMS = ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig", "X-Goog-Signature",
                         "AWSAccessKeyId", "Signature", "key", "access_token")
#: finds a query that may hold one (one scan, not one per key: this runs for every traced request with a query)
_MAY_BE_REDACTED = re.compile("|".join(re.escape(f"{p}=") for p in REDACTED_QUERY_PARAMS))
#: in free text (an exception's message: urllib3's "Max retries exceeded with url: /o?X-Amz-Signature=..."), a
#: redacted parameter's value in a query (after ``?`` or ``&``, up to the next ``&``, ``#``, quote or space: not a
#: ``key=`` in a traceback's source line) and a URL's ``user:password@``
_SECRET_PARAM_IN_TEXT = re.compile(r"(?<=[?&])(" + "|".join(re.escape(p) for p in REDACTED_QUERY_PARAMS)
                                   + r")=[^&#\s'\"]*")
_USERINFO_IN_TEXT = re.compile(r"(?<=//)[^/?#\s@'\"]*@")
#: The words of a header's, metadata key's or query parameter's name (:func:`is_credential_name`) that say it holds
#: a credential.
_CREDENTIAL_WORDS = frozenset({"token", "secret", "password", "passwd", "pwd", "apikey", "key", "auth", "sig",
                               "signature", "credential", "credentials", "session", "sessionid", "jwt",
                               "authorization", "cookie"})
#: The words that, just before a credential word, make the name one of a value anyone may read: an idempotency key
#: (chosen by the client to make a retry safe, worth seeing on a span to tie the retries together), a cache,
#: partition or sort key, a public key, a pagination token.
_NOT_SECRET_BEFORE = {"key": frozenset({"idempotency", "cache", "partition", "sort", "routing", "public"}),
                      "token": frozenset({"page", "next", "continuation"})}
_REDACTED_PARAMS = frozenset(name.lower() for name in REDACTED_QUERY_PARAMS)
_NOT_A_WORD = re.compile(r"[^a-z0-9]+")
_ERROR = Status(StatusCode.ERROR)


# --- HTTP ----------------------------------------------------------------------------------------------------
def known_http_methods(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The HTTP methods reported as they are: ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` (comma-separated,
    case-sensitive, spaces around each ignored; a full override of the defaults, as the HTTP conventions define
    it), else :data:`DEFAULT_KNOWN_HTTP_METHODS` when it lists none (unset, empty). A method that is no HTTP token,
    or more than :data:`MAX_KNOWN_HTTP_METHODS`, is a ``ValueError`` naming the variable.

        >>> sorted(known_http_methods({"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET, PROPFIND"}))
        ['GET', 'PROPFIND']
        >>> known_http_methods({}) == DEFAULT_KNOWN_HTTP_METHODS
        True
    """
    methods = frozenset(m.strip() for m in HTTP_KNOWN_METHODS.raw(env).split(",") if m.strip())
    if not methods:
        return DEFAULT_KNOWN_HTTP_METHODS
    for method in sorted(methods):
        if not is_token(method):
            raise ValueError(f"{HTTP_KNOWN_METHODS.name}: {method[:40]!r} is no HTTP method (a method is a token: "
                             "letters, digits and !#$%&'*+-.^_`|~)")
    if len(methods) > MAX_KNOWN_HTTP_METHODS:
        raise ValueError(f"{HTTP_KNOWN_METHODS.name} lists {len(methods)} methods: at most {MAX_KNOWN_HTTP_METHODS} "
                         "(each is a value of the method label)")
    return methods


def http_method(raw: str, known: frozenset[str]) -> str:
    """``http.request.method``: the method when it is a ``known`` one, else ``_OTHER``."""
    return raw if raw in known else OTHER_METHOD


def http_span_name(method: str, route: str | None = None) -> str:
    """``{method} {route}``, or ``{method}`` without a route; ``HTTP`` stands for an ``_OTHER`` method."""
    name = "HTTP" if method == OTHER_METHOD else method
    return f"{name} {route}" if route else name


def _method_attributes(raw: str, known: frozenset[str]) -> dict[str, Any]:
    method = http_method(raw, known)
    attributes: dict[str, Any] = {HTTP_REQUEST_METHOD: method}
    if method != raw:
        attributes[HTTP_REQUEST_METHOD_ORIGINAL] = raw
    return attributes


def port_number(text: str) -> int | None:
    """The port ``text`` names: 0 to 65535 in ASCII digits; ``None`` for anything else. A ``Host`` header comes
    from traffic: a Unicode digit (``²``) is no port for ``int()``, and a number past 2**63 on a span would make an
    OTLP exporter refuse the whole batch it is in.

        >>> port_number("8443"), port_number("²"), port_number("99999999999999999999")
        (8443, None, None)
    """
    if text.isascii() and text.isdigit() and len(text) <= 5:
        number = int(text)
        if number <= 65535:
            return number
    return None


def status_number(text: str) -> int | None:
    """The HTTP status ``text`` (a WSGI status line's code) names: three ASCII digits at most, else ``None``."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None


def split_host(host: str) -> tuple[str, int | None]:
    """``("example.com", 8080)`` for ``example.com:8080``; brackets of an IPv6 literal removed; ``None`` port when
    there is none or it is no port (:func:`port_number`). A bracket left open is no address and port: the whole text
    and no port.

        >>> split_host("[::1]:8080"), split_host("[::1:8080")
        (('::1', 8080), ('[::1:8080', None))
    """
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        address, rest = host[1:end], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, sep, port = host.rpartition(":")
        if not sep:
            address, port = host, ""
    return address, port_number(port) if port else None


def http_server_attributes(raw_method: str, scheme: str, path: str, query: str, host: str | None,
                           server: tuple[str, int | None] | None, protocol_version: str | None,
                           known_methods: frozenset[str], client_address: str | None,
                           user_agent: str | None) -> dict[str, Any]:
    """A server span's attributes known when the request starts (given to the span when it starts, as the
    conventions ask of those a sampler may read). ``host`` is the ``Host`` header (``server.*`` come from it, else
    from ``server``, the address the request arrived on); ``known_methods``: the integration's
    :func:`known_http_methods`; ``client_address``: the peer the server names (``client.address``: the client
    behind a proxy when the server is told it, as uvicorn's ``--proxy-headers`` does; forwarding headers, which any
    client can write, are not read here); ``user_agent``: the first ``User-Agent`` header
    (``user_agent.original``)."""
    attributes = _method_attributes(raw_method, known_methods)
    attributes[URL_SCHEME] = scheme
    attributes[URL_PATH] = path
    if query:
        attributes[URL_QUERY] = redact_query(query)
    address, port = split_host(host) if host else server or (None, None)
    if address:
        attributes[SERVER_ADDRESS] = address
        if port is not None:
            attributes[SERVER_PORT] = int(port)
    if protocol_version:
        attributes[NETWORK_PROTOCOL_VERSION] = protocol_version
    if client_address:
        attributes[CLIENT_ADDRESS] = client_address
    if user_agent:
        attributes[USER_AGENT_ORIGINAL] = user_agent
    return attributes


def end_http_server_span(span: Any, owned: bool, method: str, route: str | None, status_code: int | None,
                         error: BaseException | None) -> None:
    """Describe a finished request on its server span. On a span another instrumentation owns (``owned`` false:
    OpenTelemetry's middleware in front of aiwatch) only the route is added, and the name made ``{method} {route}``;
    that instrumentation sets the rest and ends it."""
    if not owned:
        if route:
            span.set_attribute(HTTP_ROUTE, route)
            span.update_name(http_span_name(_owners_method(span, method), route))
        return
    text = None  # a status that is no int: its own text, for error.type
    # ASGI wants an int; a server may pass "503". A negative one is no status, as OpenTelemetry reads it; nor is one
    # past 999 (RFC 9110's are three digits; past 2**63 an OTLP exporter would refuse the batch the span is in)
    if status_code is not None and (status_code.__class__ is not int or not 0 <= status_code <= 999):
        status_code, text = http_status(status_code)
    # one set_attributes() (the SDK's set_attribute() is a set_attributes() of one, each taking the span's lock)
    attributes: dict[str, Any] = {}
    if route:
        attributes[HTTP_ROUTE] = route
    if status_code is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status_code
    if attributes:
        span.set_attributes(attributes)
    if route:
        span.update_name(http_span_name(method, route))
    if error is not None:
        record_http_server_error(span, error)
    elif status_code is None:
        if text is not None:
            span.set_attribute(ERROR_TYPE, text)
            span.set_status(Status(StatusCode.ERROR, "Non-integer HTTP status: " + text))
    elif status_code >= 500 or status_code < 100:  # OpenTelemetry's http_status_to_status_code for a server span
        span.set_attribute(ERROR_TYPE, text if text is not None else str(status_code))
        span.set_status(_ERROR)


def _owners_method(span: Any, method: str) -> str:
    """The method a span another instrumentation owns already carries (``http.request.method``, else the old
    conventions' ``http.method``), so that the name aiwatch gives it agrees with it when the two know different
    methods (opentelemetry-util-http 0.66b2 reads no ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS``); ``method``,
    aiwatch's, when it carries neither."""
    attributes = getattr(span, "attributes", None)
    if attributes:
        owners = attributes.get(HTTP_REQUEST_METHOD) or attributes.get(OLD_HTTP_METHOD)
        if isinstance(owners, str) and owners:
            return owners
    return method


def http_status(value: object) -> tuple[int | None, str]:
    """A response status that is no int, read as OpenTelemetry's ASGI middleware reads it (``set_status_code``): its
    ``int()`` when it has one from 0 to 999 (``"503"`` is 503), else no status code; and the value's text (its class
    name when even that raises), which is ``error.type`` when the status is an error or no number."""
    try:
        text = str(value)
    except Exception:
        text = type(value).__qualname__
    try:
        number = int(value)  # type: ignore[call-overload]
    except Exception:
        return None, text
    return (number if 0 <= number <= 999 else None), text


def record_http_server_error(span: Any, error: BaseException) -> None:
    """Put the app's exception on a server span: its ``exception`` event, ``error.type`` and ERROR status, also when
    a response was already sent (an error middleware inside aiwatch answered 500, then re-raised)."""
    span.record_exception(error)
    span.set_attribute(ERROR_TYPE, type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))


def redact_query(query: str) -> str:
    """``url.query`` as the conventions want it: the values of :data:`REDACTED_QUERY_PARAMS` (keys matched
    case-sensitively) replaced by ``REDACTED``, the keys and everything else kept.

        >>> redact_query("X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ab12&part=3")
        'X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&part=3'
    """
    if _MAY_BE_REDACTED.search(query) is None:
        return query
    return "&".join(f"{k}=REDACTED" if (k := item.partition("=")[0]) in REDACTED_QUERY_PARAMS and "=" in item
                    else item for item in query.split("&"))


def redact_text(text: str) -> str:
    """``text`` (an exception's message or traceback, which may quote the URL it failed on) with what
    :func:`redact_url` hides in a URL hidden: the values of :data:`REDACTED_QUERY_PARAMS` and a ``user:password@``.

        >>> redact_text("Max retries exceeded with url: /o?part=1&X-Amz-Signature=ab12 (Caused by ...)")
        'Max retries exceeded with url: /o?part=1&X-Amz-Signature=REDACTED (Caused by ...)'
        >>> redact_text("cannot open 'http://alice:hunter2@10.0.0.7/m'")
        "cannot open 'http://REDACTED:REDACTED@10.0.0.7/m'"
    """
    if "@" in text:
        text = _USERINFO_IN_TEXT.sub("REDACTED:REDACTED@", text)
    if _MAY_BE_REDACTED.search(text) is not None:
        text = _SECRET_PARAM_IN_TEXT.sub(r"\1=REDACTED", text)
    return text


def is_credential_name(name: str) -> bool:
    """Whether the header, gRPC metadata key or query parameter ``name`` holds a credential, by its name: the one
    answer for the spans (a header or key so named is captured as ``[REDACTED]`` whatever the sanitize list says),
    the console's ``--header`` warning and its refusal of a URL whose query holds one. ``Authorization``,
    ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Api-Key``, Azure OpenAI's ``api-key``, ``X-Auth-Token``,
    ``access_token``, ``apiKey``, the :data:`REDACTED_QUERY_PARAMS`: a name any of whose words (split at what is not
    a letter or digit, any case: a header's name has no case) names a credential, unless the word before it makes
    it a value anyone may read (``Idempotency-Key``, ``page_token``).

        >>> [is_credential_name(n) for n in ("Set-Cookie", "X-Auth-Token", "apiKey", "Ocp-Apim-Subscription-Key",
        ...                                  "Idempotency-Key", "next_page_token", "X-Scope-OrgID", "author")]
        [True, True, True, True, False, False, False, False]
    """
    if name.lower() in _REDACTED_PARAMS:
        return True
    words = _NOT_A_WORD.split(name.lower())
    return any(word in _CREDENTIAL_WORDS and (i == 0 or words[i - 1] not in _NOT_SECRET_BEFORE.get(word, ()))
               for i, word in enumerate(words))


def redact_url(url: str) -> str:
    """``url.full`` as the conventions want it: credentials and signature query parameters replaced by
    ``REDACTED`` (:func:`redact_query`); a URL that cannot be parsed (an unclosed ``[``), as text
    (:func:`redact_text`)."""
    if "@" not in url and _MAY_BE_REDACTED.search(url) is None:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), parts.fragment))


def http_client_attributes(raw_method: str, url: str, scheme: str, host: str, port: int | None,
                           route: str | None, known_methods: frozenset[str]) -> tuple[str, dict[str, Any]]:
    """A client span's name (``{method}``, or ``{method} {route}`` when the call names its route template) and its
    attributes known when the call starts; ``known_methods``: the recorder's :func:`known_http_methods`."""
    attributes = _method_attributes(raw_method, known_methods)
    attributes[URL_FULL] = redact_url(url)
    if scheme:
        attributes[URL_SCHEME] = scheme
    if host:
        attributes[SERVER_ADDRESS] = host
        attributes[SERVER_PORT] = port if port is not None else {"http": 80, "https": 443}.get(scheme, 0)
    return http_span_name(attributes[HTTP_REQUEST_METHOD], route), attributes


def end_http_client_span(span: Any, status: str, error: BaseException | None,
                         protocol_version: str | None = None, end_time: int | None = None) -> None:
    """Describe a finished call (``status``: the HTTP status, or the client error's name) and end its span (at
    ``end_time``, nanoseconds since the epoch, when given; else now)."""
    code = int(status) if status.isdigit() else None
    if code is not None:
        span.set_attribute(HTTP_RESPONSE_STATUS_CODE, code)
    if protocol_version:
        span.set_attribute(NETWORK_PROTOCOL_VERSION, protocol_version)
    if error is not None:
        record_client_exception(span, error)
        span.set_attribute(ERROR_TYPE, type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
    elif code is not None and code >= 400:
        span.set_attribute(ERROR_TYPE, str(code))
        span.set_status(_ERROR)
    span.end(end_time=end_time)


def record_client_exception(span: Any, error: BaseException) -> None:
    """A client's exception on its span, its message and traceback (:func:`redact_text`) hiding what ``url.full``
    hides: requests' ``ConnectionError`` quotes the path and query it failed on, a presigned URL's signature
    included, and the span's ``exception`` event would carry it to the tracing backend."""
    message = str(error)
    stacktrace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    hidden_message, hidden_stacktrace = redact_text(message), redact_text(stacktrace)
    if hidden_message == message and hidden_stacktrace == stacktrace:
        span.record_exception(error)
    else:
        span.record_exception(error, attributes={EXCEPTION_MESSAGE: hidden_message,
                                                 EXCEPTION_STACKTRACE: hidden_stacktrace})


# --- gRPC ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RpcConventions:
    """Which RPC attribute sets a gRPC span carries: ``old`` (opentelemetry-instrumentation-grpc's default) and/or
    ``new`` (the stable RPC conventions)."""

    old: bool = True
    new: bool = False


def rpc_conventions(env: Mapping[str, str] | None = None) -> RpcConventions:
    """The sets ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for: ``rpc/dup`` both (it wins over ``rpc``), ``rpc`` the
    stable set only, else the default set only (values comma-separated, spaces ignored, as contrib reads them).

        >>> rpc_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, rpc"})
        RpcConventions(old=False, new=True)
        >>> rpc_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "rpc,rpc/dup"})
        RpcConventions(old=True, new=True)
    """
    values = {item.strip() for item in SEMCONV_STABILITY_OPT_IN.raw(env).split(",")}
    if "rpc/dup" in values:
        return RpcConventions(old=True, new=True)
    if "rpc" in values:
        return RpcConventions(old=False, new=True)
    return RpcConventions()


def grpc_target_address(target: str) -> tuple[str, int | None]:
    """``server.address`` / ``server.port`` from a channel target, as the gRPC conventions parse it: ``host:port``
    and ``dns:[//authority/]host:port`` give the host and port, ``unix:`` the socket path, anything else (a list of
    addresses, another resolver) the whole target and no port."""
    rest = target
    if rest.startswith("dns:"):
        rest = rest[4:]
        if rest.startswith("//"):
            rest = rest[2:].partition("/")[2]
    elif rest.startswith("unix:"):
        path = rest[5:]
        return (path[2:] if path.startswith("//") else path), None
    if "," in rest or ("://" in rest) or rest.startswith(("ipv4:", "ipv6:", "unix-abstract:", "vsock:")):
        return target, None
    address, port = split_host(rest)
    return (address, port) if port is not None else (target, None)


def grpc_peer(peer: str) -> tuple[str, int | None] | None:
    """The address and port in grpcio's peer string (``context.peer()``): ``ipv4:10.0.0.7:51234``,
    ``ipv6:%5B::1%5D:51234`` (grpcio percent-encodes the brackets), ``unix:/run/app.sock`` (no port); ``None`` for
    a peer that names no address (``unix:`` of an unnamed socket) or another kind.

        >>> grpc_peer("ipv6:%5B::1%5D:51234"), grpc_peer("unix:")
        (('::1', 51234), None)
    """
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        address, port = split_host(unquote(rest))
        return (address, port) if address else None
    if kind == "unix" and rest:
        return unquote(rest), None
    return None


def grpc_peer_attributes(peer: str, conventions: RpcConventions) -> dict[str, Any]:
    """A gRPC server span's peer: ``net.peer.ip`` / ``net.peer.port`` in the default set (as
    opentelemetry-instrumentation-grpc sets them), ``network.peer.address`` / ``network.peer.port`` in the stable
    set; ``{}`` when the peer names no address."""
    found = grpc_peer(peer)
    if found is None:
        return {}
    address, port = found
    attributes: dict[str, Any] = {}
    if conventions.old:
        attributes[NET_PEER_IP] = address
        if port is not None:
            attributes[NET_PEER_PORT] = port
    if conventions.new:
        attributes[NETWORK_PEER_ADDRESS] = address
        if port is not None:
            attributes[NETWORK_PEER_PORT] = port
    return attributes


def grpc_span_start(full_method: str, conventions: RpcConventions, target: str | None = None) -> tuple[
        str, dict[str, Any]]:
    """A gRPC span's name (``pkg.Service/Method``) and its attributes known when the call starts; ``target`` (the
    channel's, client side) gives ``server.address`` / ``server.port`` in the stable set."""
    name = full_method.lstrip("/")
    service, _, method = name.rpartition("/")
    attributes: dict[str, Any] = {}
    if conventions.old:
        attributes[RPC_SYSTEM] = "grpc"
        attributes[RPC_SERVICE] = service
        attributes[RPC_METHOD] = method
    if conventions.new:
        attributes[RPC_SYSTEM_NAME] = "grpc"
        attributes[RPC_METHOD] = name  # the stable set's rpc.method is fully qualified (it wins under rpc/dup)
        if target:
            address, port = grpc_target_address(target)
            attributes[SERVER_ADDRESS] = address
            if port is not None:
                attributes[SERVER_PORT] = port
    return name, attributes


def end_grpc_span(span: Any, conventions: RpcConventions, status: str, code: int | None,
                  error: BaseException | None, server: bool) -> None:
    """Describe a finished RPC (``status``: the gRPC status name, ``code`` its number) on its span. ERROR is set
    for :data:`GRPC_SERVER_ERRORS` on a server, for any status but ``OK`` on a client; an unhandled exception is
    recorded on the span."""
    failed = status in GRPC_SERVER_ERRORS if server else status != "OK"
    if conventions.old and code is not None:
        span.set_attribute(RPC_GRPC_STATUS_CODE, code)
    if conventions.new:
        span.set_attribute(RPC_RESPONSE_STATUS_CODE, status)
        if failed:
            span.set_attribute(ERROR_TYPE, status)
    if error is not None:
        span.record_exception(error)
    if failed:
        span.set_status(Status(StatusCode.ERROR, status))
