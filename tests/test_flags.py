"""An on/off option given in code is a bool (or numpy's bool): ``server_timing="false"`` is a non-empty string, true
to Python, and turned on what the caller meant off. Each public option documented as a bool refuses anything else
with a TypeError naming the option and the value, when the object is made (:mod:`aiwatch.flags`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import AiwatchMiddleware, AiwatchWSGIMiddleware, GpuCollector, Metrics, MicroBatcher
from aiwatch.flags import flag


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "", None, 0, 1, 1.0, np.int64(0)])
@pytest.mark.parametrize("option", ["server_timing", "payload_sizes"])
@pytest.mark.parametrize("middleware", [AiwatchMiddleware, AiwatchWSGIMiddleware], ids=["asgi", "wsgi"])
def test_a_middleware_refuses_a_switch_that_is_no_bool(middleware: Any, option: str, value: object) -> None:
    app = asgi_app if middleware is AiwatchMiddleware else wsgi_app
    with pytest.raises(TypeError, match=f"^{option} must be True or False, got {re.escape(repr(value))} of type "):
        middleware(app, registry=CollectorRegistry(), **{option: value})


@pytest.mark.parametrize("app", [asgi_app, wsgi_app], ids=["asgi", "wsgi"])
def test_instrument_refuses_a_string_switch_before_instrumenting(app: Any) -> None:
    with pytest.raises(TypeError, match=r"^server_timing must be True or False, got 'false' of type str$"):
        aiwatch.instrument(app, server_timing="false", registry=CollectorRegistry())


def test_a_middleware_reads_numpy_bools_as_the_bools_they_are() -> None:
    middleware = AiwatchWSGIMiddleware(wsgi_app, registry=CollectorRegistry(), server_timing=np.False_,
                                       payload_sizes=np.bool_(True))
    assert middleware.server_timing is False and middleware.payload_sizes is True
    sent: list[list[tuple[str, str]]] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "SERVER_NAME": "h", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1"}
    body = middleware(environ, lambda status, headers, *exc: sent.append(headers))
    assert b"".join(body) == b"ok"
    getattr(body, "close", lambda: None)()
    assert not [name for name, _ in sent[0] if name.lower() == "server-timing"]


@pytest.mark.parametrize("option", ["return_exceptions", "record_phases"])
def test_the_micro_batcher_refuses_a_string_switch(option: str) -> None:
    with pytest.raises(TypeError, match=rf"^{option} must be True or False, got 'off' of type str$"):
        MicroBatcher(lambda items: items, registry=CollectorRegistry(), **{option: "off"})


def test_metrics_refuses_a_string_in_process() -> None:
    with pytest.raises(TypeError, match=r"^in_process must be True or False, got 'false' of type str$"):
        Metrics(CollectorRegistry(), in_process="false")  # type: ignore[arg-type]


def test_the_gpu_collector_refuses_a_string_start_before_it_starts_a_poller() -> None:
    registry = CollectorRegistry()
    with pytest.raises(TypeError, match=r"^start must be True or False, got 'false' of type str$"):
        GpuCollector(registry=registry, start="false")  # type: ignore[arg-type]
    assert list(registry.collect()) == []  # nothing registered


def test_flag() -> None:
    assert flag(True, "x") is True and flag(np.True_, "x") is True and flag(np.False_, "x") is False
    with pytest.raises(TypeError, match=r"^x must be True or False, got None of type NoneType$"):
        flag(None, "x")
