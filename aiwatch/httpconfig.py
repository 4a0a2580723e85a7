"""How aiwatch authenticates to the HTTP endpoints it reads: Prometheus' HTTP API (the console, ``aiwatch
diagnose``; through Thanos, Mimir or Cortex too) and ``/metrics`` endpoints (the console's scrape source).

One :class:`HTTPConfig` holds what a real deployment asks for, as Prometheus' own ``http_config`` does: extra
headers, a bearer token or basic auth, a tenant (Mimir's and Cortex's ``X-Scope-OrgID``), a CA bundle and a client
certificate. Secrets are kept off command lines and out of messages:

- a token or a password comes from a file, read again on every request (so a rotated Kubernetes service-account
  token is picked up), or from the environment; the ``aiwatch`` commands take file paths and variable names only
  (``--header`` takes its value: one named like a credential, :func:`~aiwatch.semconv.is_credential_name`, is
  warned of);
- ``repr()`` and every error message name files and header names, never a secret or a header's value;
- a redirect to another host does not take the configured headers with it.

    >>> cfg = HTTPConfig(tenant="team-a", headers=(("X-Source", "aiwatch"),))
    >>> cfg.request_headers()
    {'X-Source': 'aiwatch', 'X-Scope-OrgID': 'team-a'}
    >>> HTTPConfig(username="ops", password="s3cret")
    HTTPConfig(username='ops', password=<hidden>)
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import itertools
import logging
import os
import re
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from aiwatch import clock
from aiwatch import env as _env
from aiwatch.semconv import is_credential_name, redact_text

_log = logging.getLogger("aiwatch")

TENANT_HEADER = "X-Scope-OrgID"
"""The header naming the tenant of a multi-tenant Prometheus (Mimir, Cortex, Thanos' receive/query-frontend)."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: what a header name may be
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than tab: header injection
_NOT_LATIN1 = re.compile(r"[^\x00-\xff]")  # http.client sends header values as Latin-1 and fails on the rest
_MAX_SECRET = 1 << 16  # characters read from a token or password file
_SECRETS = ("bearer_token", "password")
_BEARER = ("bearer_token", "bearer_token_file")
_BASIC = ("username", "password", "password_file")
#: The fields an overriding field clears (from_env): each way of authenticating replaces the others.
_REPLACES = {
    "bearer_token": ("bearer_token_file", *_BASIC),
    "bearer_token_file": ("bearer_token", *_BASIC),
    "username": _BEARER,
    "password": ("password_file", *_BEARER),
    "password_file": ("password", *_BEARER),
}
#: The environment variable of each field (aiwatch/env.py's table).
ENV: dict[str, _env.EnvVar] = {
    "headers": _env.PROMETHEUS_HEADERS,
    "bearer_token": _env.PROMETHEUS_BEARER_TOKEN,
    "bearer_token_file": _env.PROMETHEUS_BEARER_TOKEN_FILE,
    "username": _env.PROMETHEUS_BASIC_AUTH_USER,
    "password": _env.PROMETHEUS_BASIC_AUTH_PASSWORD,
    "password_file": _env.PROMETHEUS_BASIC_AUTH_PASSWORD_FILE,
    "tenant": _env.PROMETHEUS_TENANT,
    "ca_file": _env.PROMETHEUS_CA_FILE,
    "cert_file": _env.PROMETHEUS_CERT_FILE,
    "key_file": _env.PROMETHEUS_KEY_FILE,
}


class CredentialsError(OSError):
    """A token or password file could not be read when a request was about to be sent (the message names the
    file, never its content)."""


@dataclass(frozen=True)
class HTTPConfig:
    """Headers, credentials and TLS for the requests aiwatch sends to one kind of endpoint.

    - ``headers``: extra ``(name, value)`` headers sent with every request;
    - ``bearer_token`` / ``bearer_token_file``: ``Authorization: Bearer <token>`` (the file is read on every
      request and stripped of surrounding whitespace and a byte-order mark; at most 65536 characters);
    - ``username`` with ``password`` / ``password_file``: basic auth (not with a bearer token);
    - ``tenant``: sent as ``X-Scope-OrgID``;
    - ``ca_file``: the CA bundle that verifies the server's certificate (default: the system's);
    - ``cert_file`` / ``key_file``: a client certificate and its key (the key may be in ``cert_file``).

    Invalid combinations, header names or values, and files that cannot be read raise ``ValueError`` here, so a
    command fails on its arguments before its first request.
    """

    headers: tuple[tuple[str, str], ...] = ()
    bearer_token: str = ""
    bearer_token_file: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    tenant: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in self.headers))
        for name, value in self.headers:
            _check_header(name, value)
        if self.tenant:
            _check_header(TENANT_HEADER, self.tenant, "the tenant")
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("give a bearer token or a bearer token file, not both")
        if self.password and self.password_file:
            raise ValueError("give a basic-auth password or a password file, not both")
        if (self.password or self.password_file) and not self.username:
            raise ValueError("a basic-auth password needs a username")
        if self.username and (self.bearer_token or self.bearer_token_file):
            raise ValueError("use basic auth or a bearer token, not both")
        if ":" in self.username:
            raise ValueError("a basic-auth username cannot hold ':'")
        if self.key_file and not self.cert_file:
            raise ValueError("a client key file needs its certificate file")
        authorizes = bool(self.username or self.bearer_token or self.bearer_token_file)
        for name, _ in self.headers:
            if authorizes and name.lower() == "authorization":
                raise ValueError("an Authorization header and a bearer token or basic auth cannot both be given")
        for secret in _SECRETS:
            if _BAD_VALUE.search(getattr(self, secret)):
                raise ValueError(f"the {secret.replace('_', ' ')} holds a control character")
        if _NOT_LATIN1.search(self.bearer_token):  # a password is sent base64-encoded: any character goes
            raise ValueError("the bearer token holds a character an HTTP header cannot carry (beyond Latin-1)")
        for path_field in ("bearer_token_file", "password_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, path_field)
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{path_field.replace('_', ' ')} {path!r} cannot be read")
        if self.ca_file or self.cert_file:
            self.ssl_context  # noqa: B018 - load the files now: a bad one fails here, not on the first request

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value:
                text = "<hidden>" if f.name in _SECRETS else repr(_redacted_headers(value) if f.name == "headers"
                                                                   else value)
                shown.append(f"{f.name}={text}")
        return f"HTTPConfig({', '.join(shown)})"

    __str__ = __repr__

    # --- what a request carries -----------------------------------------------------------------------------
    def request_headers(self) -> dict[str, str]:
        """The headers to send: the extra headers, the tenant and ``Authorization``. Files are read now; one that
        cannot be read raises :class:`CredentialsError` naming it."""
        out = dict(self.headers)
        if self.tenant:
            out[TENANT_HEADER] = self.tenant
        token = self.bearer_token or (_read_secret(self.bearer_token_file, "bearer token file", header=True)
                                      if self.bearer_token_file else "")
        if token:
            out["Authorization"] = f"Bearer {token}"
        elif self.username:
            password = self.password or (_read_secret(self.password_file, "basic-auth password file")
                                         if self.password_file else "")
            basic = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
            out["Authorization"] = f"Basic {basic}"
        return out

    def header_names(self) -> frozenset[str]:
        """The names (lower case) of every header this config may send: never carried to another host."""
        names = {name.lower() for name, _ in self.headers}
        if self.tenant:
            names.add(TENANT_HEADER.lower())
        if self.username or self.bearer_token or self.bearer_token_file:
            names.add("authorization")
        return frozenset(names)

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context with ``ca_file`` and the client certificate; ``None`` when neither is given (the
        system's defaults apply). ``ValueError`` naming the file when one is not what it should be."""
        if not (self.ca_file or self.cert_file):
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"CA file {self.ca_file!r} is not a PEM bundle of certificates: {_reason(exc)}") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"client certificate {self.cert_file!r}"
                                 f"{f' with key {self.key_file!r}' if self.key_file else ''} cannot be loaded: "
                                 f"{_reason(exc)}") from None
        return context

    @cached_property
    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener with this TLS context that drops this config's headers on a redirect to another host,
        and whose connections must bring the answer's head (status line and headers) within the timeout."""
        return urllib.request.build_opener(_SameOriginRedirects(self.header_names()), _HTTPHandler(),
                                           _HTTPSHandler(self.ssl_context))

    def open(self, url: str, timeout: float, headers: Mapping[str, str] | None = None) -> Any:
        """GET ``url`` with this config's headers (plus ``headers``); urllib's response, or urllib's errors
        (:class:`CredentialsError` when a secret file cannot be read; ``TimeoutError`` when the connection, the
        TLS handshake and the answer's head take longer than ``timeout``, each hop of a redirect afresh). The body
        is the caller's to read against its own deadline. A URL that is not http(s) is a URLError: urllib's opener
        would read ``file:`` and ``ftp:`` URLs too, and a redirect to one is refused already."""
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError(f"not an http(s) URL: {url!r}")
        request = urllib.request.Request(url, headers={**(headers or {}), **self.request_headers()})
        return self.opener.open(request, timeout=timeout)

    # --- the environment ------------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> HTTPConfig:
        """The config of the ``AIWATCH_PROMETHEUS_*`` variables, each replaced by a non-empty ``overrides`` entry
        (the command line wins over the environment)."""
        values: dict[str, Any] = {name: var.raw(env).strip() if name != "headers" else var.raw(env)
                                  for name, var in ENV.items()}
        values["headers"] = parse_headers_env(values["headers"])
        for name, value in overrides.items():
            if name not in ENV:
                raise TypeError(f"HTTPConfig has no field {name!r}")
            if value:
                values[name] = value
                for other in _REPLACES.get(name, ()):  # a token on the command line replaces basic auth from the
                    if not overrides.get(other):       # environment, and the other way round
                        values[other] = ""
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables :meth:`from_env` reads back into this config (for a child process's environment, which
        no other user can read, unlike its command line)."""
        out = {var.name: getattr(self, name) for name, var in ENV.items() if name != "headers"}
        out[ENV["headers"].name] = ",".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in self.headers)
        return out


def parse_header(text: str) -> tuple[str, str]:
    """One header as written on a command line: ``Name: value`` (curl's way) or ``Name=value``.

    >>> parse_header("X-Scope-OrgID: team-a"), parse_header("X-Key=a=b")
    (('X-Scope-OrgID', 'team-a'), ('X-Key', 'a=b'))
    """
    found = re.match(r"\s*([^:=\s]+)\s*[:=]\s?(.*)$", text, re.S)
    if found is None:
        raise ValueError(f"a header is written 'Name: value', got {_redacted(text)!r}")
    _check_header(found[1], found[2])
    return found[1], found[2]


def parse_headers_env(text: str) -> tuple[tuple[str, str], ...]:
    """Headers as OpenTelemetry's ``OTEL_EXPORTER_OTLP_HEADERS`` writes them: ``name=value`` pairs separated by
    commas, values percent-encoded.

    >>> parse_headers_env("X-Scope-OrgID=team-a, X-Note=a%2Cb")
    (('X-Scope-OrgID', 'team-a'), ('X-Note', 'a,b'))
    """
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{ENV['headers'].name}: each header is written name=value, got {name.strip()!r}")
        header = (name.strip(), urllib.parse.unquote(value.strip()))
        _check_header(*header)
        out.append(header)
    return tuple(out)


def _check_header(name: str, value: str, what: str = "") -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not an HTTP header name")
    if _BAD_VALUE.search(value):
        raise ValueError(f"{what or f'header {name}'} holds a control character (a line break would start "
                         "another header)")
    if _NOT_LATIN1.search(value):
        raise ValueError(f"{what or f'header {name}'} holds a character an HTTP header cannot carry (beyond "
                         "Latin-1)")


def refuse_credentials(url: str, what: str) -> None:
    """A ``ValueError`` when ``url`` holds credentials (``http://user:password@host``, or a query parameter named
    like one: ``?token=``, ``?access_token=``, ``?api_key=``, a signature): every message that names the URL (a
    scrape that failed, the console's "reading ..." line, its page) would print them. Read before any other check
    of the URL, so that no message about a malformed one prints them either; the error names the URL with its
    credentials left out.

        >>> refuse_credentials("http://ops:s3cret@10.0.0.7:8000/metrics", "the /metrics URL")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the /metrics URL http://10.0.0.7:8000/metrics holds credentials (user:password@): give them ...
    """
    scheme, sep, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0] if sep else ""
    if "@" in authority:
        shown = scheme + sep + rest.replace(authority, authority.rpartition("@")[2], 1)
        raise ValueError(f"{what} {shown} holds credentials (user:password@): give them as basic auth or a token "
                         "file instead, so that no message prints them")
    query = rest.partition("?")[2].partition("#")[0] if sep else ""
    named = [name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True) if is_credential_name(name)]
    if named:
        shown = redact_text(re.sub(r"(?<=[?&])(" + "|".join(map(re.escape, named)) + r")=[^&#]*", r"\1=REDACTED",
                                   url))
        raise ValueError(f"{what} {shown} holds credentials in its query ({', '.join(dict.fromkeys(named))}): give "
                         "them as a token file, basic auth or a header instead, so that no message prints them")


def _redacted(text: str) -> str:
    """A header as written, its value left out (it may be a secret)."""
    name = re.split(r"[:=\s]", text.strip(), maxsplit=1)[0]
    return f"{name}..." if name != text.strip() else name


def _redacted_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(name for name, _ in headers)


def _read_secret(path: str, what: str, header: bool = False) -> str:
    """The secret in ``path``, stripped of whitespace and of a byte-order mark an editor may have written;
    ``header``: it is sent as it is in a header, so it must be Latin-1."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            secret = fh.read(_MAX_SECRET + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read the {what} {path!r}: {_reason(exc)}") from None
    if len(secret) > _MAX_SECRET:
        raise CredentialsError(f"the {what} {path!r} is larger than {_MAX_SECRET} characters")
    secret = secret.strip()
    if not secret or _BAD_VALUE.search(secret):
        raise CredentialsError(f"the {what} {path!r} is empty or holds a control character")
    if header and _NOT_LATIN1.search(secret):
        raise CredentialsError(f"the {what} {path!r} holds a character an HTTP header cannot carry (beyond "
                               "Latin-1)")
    return secret


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https URLs only (urllib would follow one to ftp: to any host, with no deadline),
    and leaves out the configured headers (credentials) when one leads to another scheme, host or port, as curl and
    requests do."""

    def __init__(self, sensitive: frozenset[str]) -> None:
        self.sensitive = sensitive

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(req.full_url, code, f"{msg}: a redirect to a {scheme}: URL is not followed",
                                         headers, fp)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(req.full_url):
            for store in (new.headers, new.unredirected_hdrs):
                for name in [n for n in store if n.lower() in self.sensitive]:
                    del store[name]
        return new


class TooLarge(ValueError):
    """An answer longer than its reader's limit (:func:`read_body`)."""


def read_body(resp: Any, started: float, timeout: float, limit: int, who: str) -> bytes:
    """The body of ``resp`` (an answer of :meth:`HTTPConfig.open`), read one socket read at a time until its end.
    ``TimeoutError`` once ``timeout`` seconds have passed since ``started`` (:func:`aiwatch.clock.monotonic`): each
    read is bounded by the socket's timeout, but a server dripping a byte at a time could otherwise hold the reader
    for ever. :class:`TooLarge` past ``limit`` bytes; http.client's ``IncompleteRead`` for a connection closed before
    the length the answer declared. ``who`` (the server, or its URL) begins the errors' text."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if clock.monotonic() - started > timeout:
            raise TimeoutError(f"{who} did not finish its answer within {timeout:g} s")
        chunk = resp.read1(min(1 << 16, limit + 1 - size))  # one socket read: read() would wait for all it asked
        if not chunk:
            if getattr(resp, "length", None):  # read1 takes a connection closed early for the end of the answer
                raise http.client.IncompleteRead(b"".join(chunks), resp.length)
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{who} answered more than {limit} bytes")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


_Armed = tuple[float, int, Callable[[], None]]  # deadline (clock.monotonic()), order armed, cut-off


class _Watchdog:
    """One daemon thread that runs each armed cut-off when its deadline passes, in place of a timer thread per
    connection: the console opens dozens of connections per refresh. A cut-off runs under the lock, so once
    :meth:`disarm` returns it has either run to its end or never will; a cut-off must therefore be quick and must not
    arm or disarm. The thread starts on the first :meth:`arm`, and again in a forked child (which has no thread but the
    one that forked) or if it ever ended."""

    NAME = "aiwatch-http-deadline"

    def __init__(self) -> None:
        self._count = itertools.count()  # kept across a fork: a token armed before one never equals one armed after
        self._reset()

    def _reset(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._heap: list[_Armed] = []
        self._thread: threading.Thread | None = None

    def arm(self, delay: float, cut_off: Callable[[], None]) -> _Armed:
        """Runs ``cut_off`` on the watchdog's thread in ``delay`` seconds unless :meth:`disarm` is given the returned
        token first."""
        with self._wake:
            entry = (clock.monotonic() + delay, next(self._count), cut_off)
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.NAME, daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:  # sooner than what the thread waits for
                self._wake.notify()
        return entry

    def disarm(self, token: _Armed) -> None:
        """Forgets an armed cut-off (nothing if it has run, or was armed before a fork)."""
        with self._wake, contextlib.suppress(ValueError):
            self._heap.remove(token)
            heapq.heapify(self._heap)  # linear, as remove is: the heap holds the connections now opening

    def armed(self) -> int:
        """How many cut-offs wait for their deadline."""
        with self._wake:
            return len(self._heap)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = clock.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    cut_off = heapq.heappop(self._heap)[2]
                    try:
                        cut_off()
                    except Exception:  # one failed cut-off must not end the deadlines of every other connection
                        _log.exception("aiwatch: cutting off a late HTTP connection failed")
                self._wake.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # POSIX
    # A forked child has only the thread that forked: its copy of the lock may be held by a thread that is gone, and
    # its copy of the heap holds the parent's connections.
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


class _Deadline(http.client.HTTPConnection):
    """A connection that shuts its socket when the answer's head has not come ``timeout`` after connecting: the
    socket's own timeout bounds each read, so a server sending a byte just inside it could hold a caller for ever
    (in a TLS handshake, a proxy's tunnel, or a header line)."""

    _late = False
    _armed: _Armed | None = None

    def connect(self) -> None:
        if isinstance(self.timeout, (int, float)):
            self._disarm()
            self._armed = _WATCHDOG.arm(self.timeout, self._cut_off)
        try:
            super().connect()
        except BaseException as exc:
            self._disarm()
            if isinstance(exc, Exception):  # the error of a socket the deadline shut: a broken pipe, a reset...
                self._give_up_if_late()
            raise
        self._give_up_if_late()  # a late connection's deadline has already left the watchdog

    def getresponse(self) -> http.client.HTTPResponse:
        try:
            response = super().getresponse()
        except Exception:
            self._disarm()  # before looking at _late: a cut-off is final once disarm returns
            self._give_up_if_late()
            raise
        finally:
            self._disarm()
        self._give_up_if_late()
        return response

    def close(self) -> None:
        self._disarm()  # urllib closes a connection whose request could not be sent, with no getresponse
        super().close()

    def _cut_off(self) -> None:
        self._late = True
        if self.sock is not None:
            # the plain socket's shutdown: an SSLSocket's would also drop its state under the reading thread
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def _give_up_if_late(self) -> None:
        if self._late:
            raise TimeoutError(f"{self.host}:{self.port} did not answer within {self.timeout:g} s") from None

    def _disarm(self) -> None:
        if self._armed is not None:
            _WATCHDOG.disarm(self._armed)
            self._armed = None


class _DeadlineHTTPS(_Deadline, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_Deadline, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self.tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPS, req, context=self.tls)
