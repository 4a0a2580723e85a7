"""requests integration: an HTTPAdapter that times each call and measures the network time to the peer.

    import requests
    import aiwatch.client

    session = aiwatch.client.instrument_requests(requests.Session(), service="gateway")
    with aiwatch.client.route("/predict"):
        session.post("http://inference:8000/predict", json=payload)

A call is timed until its body is read; with ``stream=True`` only until the response headers arrive. A call that
urllib3 retried (the adapter's ``max_retries``) gives no network time: its time holds every attempt and the backoff
between them, the peer's ``Server-Timing`` only the last attempt's server time (the peer's name in it still labels
the call).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiwatch._optional import require
from aiwatch.client._core import ClientRecorder, body_length, headers_arrived
from aiwatch.recording import CLIENT_RECORDER_OPTIONS, resolve_client_recorder

require("requests", "http")
from requests import PreparedRequest, Response, Session  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

__all__ = ["AiwatchHTTPAdapter", "instrument_requests"]


class AiwatchHTTPAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that records each call. Positional and non-aiwatch keyword arguments go to
    ``HTTPAdapter`` (``max_retries``, ``pool_maxsize``...); ``recorder`` or the client recorder options
    (``service``, ``peer``, ``registry``/``metrics``, ``tracer_provider``, ``route_resolver``,
    ``max_label_values``: :class:`~aiwatch.client.ClientRecorder`) configure aiwatch."""

    def __init__(self, *args: Any, recorder: ClientRecorder | None = None, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in CLIENT_RECORDER_OPTIONS}
        super().__init__(*args, **kwargs)
        self.aiwatch_recorder = resolve_client_recorder(recorder, options)

    def send(self, request: PreparedRequest, stream: bool = False, timeout: Any = None, verify: Any = True,
             cert: Any = None, proxies: Any = None) -> Response:
        recorder = self.aiwatch_recorder
        url = request.url or ""
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme, parts.hostname or "", parts.port
        except ValueError:
            scheme, host, port = "", "", None
        call = recorder.start(request.method or "GET", scheme, host, port, url, request.headers)
        token = recorder.enter(call)
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
            headers_at = None
            if not stream:
                headers_at = headers_arrived(response.headers)
                _ = response.content  # what Session.send does next anyway: time the body too
        except BaseException as exc:
            recorder.finish(call, type(exc).__name__, None, exc)
            raise
        finally:
            recorder.leave(token)
        server_timing = response.headers.get("server-timing")
        recorder.finish(call, str(response.status_code), server_timing,
                        sent=body_length(request.body, request.headers),
                        received=_streamed_length(request, response) if stream else body_length(
                            response.content, response.headers),
                        headers_at=headers_at, retried=_retried(response))
        return response


def _streamed_length(request: PreparedRequest, response: Response) -> int | None:
    """The body size of a response left unread: its ``Content-Length``, unless it has no body whatever that says
    (RFC 9110 §6.4.1: the answer to a HEAD, a 1xx, 204 or 304)."""
    status = response.status_code
    if request.method == "HEAD" or not isinstance(status, int) or status < 200 or status in (204, 304):
        return None
    return body_length(None, response.headers)


def _retried(response: Response) -> bool:
    """Whether urllib3 made more than one attempt at the call (the adapter's ``max_retries``)."""
    try:
        retries = response.raw.retries
        return retries is not None and bool(retries.history)
    except Exception:  # no urllib3 response (a test double), or one that kept no retries
        return False


def instrument_requests(session: Session, *, recorder: ClientRecorder | None = None, **options: Any) -> Session:
    """Mount an :class:`AiwatchHTTPAdapter` on ``session`` for ``http://`` and ``https://`` (keeping the
    ``max_retries`` of the adapters it replaces); returns ``session``. A second call is a no-op. ``recorder`` or
    the client recorder options configure aiwatch, as for :class:`AiwatchHTTPAdapter`."""
    if not isinstance(session, Session):
        raise TypeError(f"instrument_requests() needs a requests.Session, got {type(session).__name__}")
    recorder = resolve_client_recorder(recorder, options)
    for prefix in ("https://", "http://"):
        current = session.adapters.get(prefix)
        if isinstance(current, AiwatchHTTPAdapter):
            continue
        retries = getattr(current, "max_retries", 0)
        session.mount(prefix, AiwatchHTTPAdapter(max_retries=retries, recorder=recorder))
    return session
