"""The WSGI middleware on Flask and bare WSGI apps (werkzeug's test client, fresh registry per test)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, Response, abort, stream_with_context
from prometheus_client import CollectorRegistry, generate_latest
from werkzeug.test import Client

import aiwatch
from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware
from aiwatch.servertiming import parse_server_timing


def count(registry: CollectorRegistry, route: str, status: str = "200", method: str = "GET") -> float | None:
    return registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": route, "method": method, "status": status, "traffic_class": "realtime"})


def flask_app(registry: CollectorRegistry, **options: Any) -> Flask:
    app = Flask("wsgi_test")

    @app.post("/predict/<model_name>")
    def predict(model_name: str) -> dict[str, str]:
        aiwatch.set_model(model_name)
        with aiwatch.phase("inference"):
            time.sleep(0.003)
        return {"model": model_name}

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for i in range(3):
                observed.append(count(registry, "/stream"))
                time.sleep(0.02)
                yield f"c{i}".encode()

        return Response(stream_with_context(chunks()))

    @app.get("/fail")
    def fail() -> str:
        raise app.config["ERROR"]

    observed: list[float | None] = []
    app.config["OBSERVED"] = observed
    return aiwatch.instrument(app, registry=registry, service="svc", **options)


def test_flask_route_template_model_and_server_timing(registry: CollectorRegistry) -> None:
    client = flask_app(registry).test_client()
    resp = client.post("/predict/ranker", buffered=True)
    assert resp.status_code == 200 and resp.json == {"model": "ranker"}
    assert count(registry, "/predict/<model_name>", method="POST") == 1
    timing = parse_server_timing(resp.headers["Server-Timing"])
    assert timing["inference"] >= 0.003 and timing["total"] >= timing["inference"]
    inference = registry.get_sample_value("aiwatch_phase_duration_seconds_count",
                                          {"model_version": "",
                                           "service": "svc", "model": "ranker", "phase": "inference"})
    overhead = registry.get_sample_value("aiwatch_phase_duration_seconds_count",
                                         {"model_version": "",
                                          "service": "svc", "model": "ranker", "phase": "overhead"})
    assert inference == 1 and overhead == 1


def test_flask_unmatched_path_never_becomes_a_label(registry: CollectorRegistry) -> None:
    client = flask_app(registry).test_client()
    for i in range(3):
        assert client.get(f"/nothing/{i}", buffered=True).status_code == 404
    assert count(registry, "__unmatched__", "404") == 3
    assert b"/nothing" not in generate_latest(registry)


def test_a_request_a_url_value_preprocessor_refused_keeps_its_route(registry: CollectorRegistry) -> None:
    """Flask runs the URL value preprocessors before every ``before_request`` function: one that aborts (a language
    prefix the app does not serve: 404) or fails (500) left a matched request ``__unmatched__``, its 500s out of
    every per-route view."""
    app = Flask("wsgi_test")
    localized = Blueprint("localized", "wsgi_test", url_prefix="/<lang>")

    @localized.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, Any] | None) -> None:
        lang = (values or {}).pop("lang", None)
        if lang == "broken":
            raise RuntimeError("the language table is not loaded")
        if lang not in ("en", "fr"):
            abort(404)

    @localized.get("/predict/<int:user_id>")
    def predict(user_id: int) -> str:
        return "ok"

    app.register_blueprint(localized)
    client = aiwatch.instrument(app, registry=registry, service="svc").test_client()
    statuses = [client.get(f"/{lang}/predict/3", buffered=True).status_code for lang in ("en", "xx", "broken")]
    assert statuses == [200, 404, 500]
    route = "/<lang>/predict/<int:user_id>"
    assert (count(registry, route), count(registry, route, "404"), count(registry, route, "500")) == (1, 1, 1)
    assert count(registry, "__unmatched__", "404") is None


def test_flask_streaming_is_timed_until_the_body_is_closed(registry: CollectorRegistry) -> None:
    app = flask_app(registry)
    resp = app.test_client().get("/stream", buffered=True)
    assert resp.data == b"c0c1c2"
    assert app.config["OBSERVED"] == [None, None, None]
    assert count(registry, "/stream") == 1
    duration = registry.get_sample_value("aiwatch_request_duration_seconds_sum",
                                         {"traffic_class": "realtime",
                                          "service": "svc", "route": "/stream", "method": "GET", "status": "200"})
    assert duration is not None and duration >= 0.06


def test_request_is_recorded_only_when_the_server_closes_the_body(registry: CollectorRegistry) -> None:
    app = flask_app(registry)
    resp = app.test_client().post("/predict/m")  # not buffered: the body is still open
    assert count(registry, "/predict/<model_name>", method="POST") is None
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 1
    resp.close()
    assert count(registry, "/predict/<model_name>", method="POST") == 1
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


def test_flask_handled_error_is_recorded_as_its_500(registry: CollectorRegistry) -> None:
    app = flask_app(registry)
    app.config["ERROR"] = ValueError("handled by Flask")
    assert app.test_client().get("/fail", buffered=True).status_code == 500
    assert count(registry, "/fail", "500") == 1


def test_propagated_app_exception_passes_through_untouched(registry: CollectorRegistry) -> None:
    app = flask_app(registry)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    error = ValueError("the app's own")
    app.config["ERROR"] = error
    with pytest.raises(ValueError) as raised:
        app.test_client().get("/fail", buffered=True)
    assert raised.value is error
    assert count(registry, "/fail", "500") == 1
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


def test_exception_while_iterating_the_body_is_recorded_as_500(registry: CollectorRegistry) -> None:
    error = OSError("disk gone")

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        raise error

    wrapped = aiwatch.instrument(app, registry=registry, service="svc", route_resolver=lambda environ: "/gen")
    with pytest.raises(OSError) as raised:
        Client(wrapped).get("/gen", buffered=True)
    assert raised.value is error
    assert count(registry, "/gen", "500") == 1


def test_bare_wsgi_callable_is_wrapped_and_returned(registry: CollectorRegistry) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    wrapped = aiwatch.instrument(app, registry=registry, service="svc")
    assert isinstance(wrapped, AiwatchWSGIMiddleware) and wrapped.app is app
    resp = Client(wrapped).get("/x", buffered=True)
    assert resp.status_code == 201 and "Server-Timing" in resp.headers
    assert count(registry, "__unmatched__", "201") == 1


def test_instrumenting_an_instrumented_wsgi_callable_again_is_a_no_op(registry: CollectorRegistry) -> None:
    # the returned middleware is itself a WSGI callable: instrumenting it again wrapped it again, and every request
    # was timed and counted twice
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = aiwatch.instrument(app, registry=registry, service="svc")
    assert aiwatch.instrument(wrapped, registry=registry, service="svc") is wrapped
    Client(wrapped).get("/x", buffered=True)
    assert count(registry, "__unmatched__", "200") == 1


def test_server_timing_off_metrics_path_and_excluded_paths(registry: CollectorRegistry) -> None:
    app = flask_app(registry, server_timing=False, exclude_paths=["/stream"])
    client = app.test_client()
    resp = client.post("/predict/a", buffered=True)
    assert "Server-Timing" not in resp.headers
    client.get("/stream", buffered=True)
    assert count(registry, "/stream") is None
    scrape = client.get("/metrics", buffered=True)
    assert scrape.status_code == 200
    assert b'route="/predict/<model_name>"' in scrape.data


@pytest.mark.parametrize("paths", ["/stream", ("/stream", 7)])
def test_exclude_paths_that_are_no_collection_of_str_paths_are_refused(registry: CollectorRegistry,
                                                                       paths: Any) -> None:
    with pytest.raises(TypeError, match="exclude_paths"):
        flask_app(registry, exclude_paths=paths)


def test_flask_instrument_twice_is_a_no_op(registry: CollectorRegistry) -> None:
    app = flask_app(registry)
    first = app.wsgi_app
    aiwatch.instrument(app, registry=registry, service="svc")
    assert app.wsgi_app is first
    app.test_client().post("/predict/m", buffered=True)
    assert count(registry, "/predict/<model_name>", method="POST") == 1


def test_unknown_methods_fold_into_other(registry: CollectorRegistry) -> None:
    client = flask_app(registry).test_client()
    for i in range(3):
        client.open("/stream", method=f"BREW{i}", buffered=True)
    assert count(registry, "__unmatched__", "405", method="_OTHER") == 3  # werkzeug matches no rule
    assert b"BREW" not in generate_latest(registry)


def test_a_body_the_server_drops_unclosed_is_recorded_by_the_next_scrape(registry: CollectorRegistry,
                                                                           exporter: Any, provider: Any) -> None:
    """PEP 3333 says the server closes the body, and aiwatch records the request then. A server that drops it
    unclosed (werkzeug's development server on a reset connection) lost the request; now it is recorded, ending
    when it was dropped, by the next scrape of the registry (or the middleware's next call), and counted as
    unclosed."""
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "4")])
        return [b"ok", b"ok"]

    mw = aiwatch.instrument(app, registry=registry, service="svc", tracer_provider=provider,
                            route_resolver=lambda environ: environ["PATH_INFO"])
    client = Client(mw)
    started = time.perf_counter()
    body = mw(_environ("/dropped"), lambda status, headers, exc_info=None: None)
    chunks = iter(body)
    assert next(chunks) == b"ok"
    del chunks, body  # dropped half read, never closed
    dropped, dropped_ns = time.perf_counter(), time.time_ns()
    assert len(mw.metrics.deferred) == 1  # the finalizer recorded nothing itself
    assert exporter.get_finished_spans() == ()
    time.sleep(0.2)  # the scrape comes later: the request still ends when it was dropped

    assert count(registry, "/dropped") == 1
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) == 1
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0
    duration = registry.get_sample_value("aiwatch_request_duration_seconds_sum", {
        "service": "svc", "route": "/dropped", "method": "GET", "status": "200", "traffic_class": "realtime"})
    assert duration is not None and 0 <= duration <= dropped - started
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["GET /dropped"].end_time <= dropped_ns
    assert spans["GET /dropped"].attributes["http.response.status_code"] == 200

    # recorded once; closed by the test client: recorded once, not as unclosed
    assert client.get("/closed", buffered=True).data == b"okok"
    assert count(registry, "/closed") == 1 and count(registry, "/dropped") == 1
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) == 1


def test_a_body_the_server_drops_unclosed_is_recorded_by_the_next_call(registry: CollectorRegistry) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = aiwatch.instrument(app, registry=registry, service="svc", route_resolver=lambda environ: environ["PATH_INFO"])
    body = mw(_environ("/dropped"), lambda status, headers, exc_info=None: None)
    del body
    assert len(mw.metrics.deferred) == 1
    assert Client(mw).get("/next", buffered=True).data == b"ok"
    assert not mw.metrics.deferred  # the call recorded it, before any scrape
    assert count(registry, "/dropped") == 1 and count(registry, "/next") == 1


def _environ(path: str) -> dict[str, Any]:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    return environ


def test_a_dropped_body_is_logged_with_its_request(registry: CollectorRegistry,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = aiwatch.instrument(app, registry=registry, service="svc")
    path = "/dropped\nFAKE LOG LINE" + "x" * 500  # from traffic: a decoded %0A, and no end
    body = mw(_environ(path), lambda status, headers, exc_info=None: None)
    del body
    caplog.set_level(logging.WARNING, logger="aiwatch")
    Client(mw).get("/next", buffered=True)
    assert [r.getMessage() for r in caplog.records] == [
        "aiwatch: the WSGI server dropped a response body without closing it (PEP 3333), so the request was "
        f"recorded as it stood when dropped: GET {path[:200]!r}"]
    assert "\n" not in caplog.records[0].getMessage()


def test_a_scrape_of_the_middlewares_metrics_records_a_dropped_body_first(registry: CollectorRegistry) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = aiwatch.instrument(app, registry=registry, service="svc")
    body = mw(_environ("/anything"), lambda status, headers, exc_info=None: None)
    del body  # dropped before the server iterated it
    scrape = Client(mw).get("/metrics", buffered=True).get_data(as_text=True)
    assert 'aiwatch_unclosed_responses_total{service="svc"} 1.0' in scrape
    assert ('aiwatch_request_duration_seconds_count{method="GET",route="__unmatched__",service="svc",status="200",'
            'traffic_class="realtime"} 1.0') in scrape


@pytest.mark.parametrize(("method", "status", "headers", "taken", "recorded"), [
    ("GET", "200 OK", [], 1, "499"),  # closed after one of two chunks: the client went away
    ("GET", "200 OK", [("Content-Length", "4")], 1, "499"),  # two of the four declared bytes
    ("GET", "200 OK", [("content-length", "2")], 1, "200"),  # its declared length given whole: complete
    ("HEAD", "200 OK", [], 0, "200"),  # a server need not iterate a body it sends none of
    ("GET", "204 No Content", [], 0, "204"),
    ("GET", "304 Not Modified", [], 0, "304"),
    ("GET", "200 OK", [], 2, "200"),  # iterated to its end (StopIteration) and closed
])
def test_a_body_closed_before_its_end_is_499_unless_complete(registry: CollectorRegistry, method: str, status: str,
                                                             headers: list[tuple[str, str]], taken: int,
                                                             recorded: str) -> None:
    """What a server does when the client leaves mid-stream (tests/http/test_http_wsgi_server.py): it closes the
    body without taking it to its end. Recorded as 499, as the ASGI middleware does, except for a body that is
    complete without that end: its declared ``Content-Length`` given whole, or a response that has no body."""
    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response(status, headers)
        return iter([b"ok", b"ok"])

    mw = aiwatch.instrument(app, registry=registry, service="svc")
    environ = _environ("/x")
    environ["REQUEST_METHOD"] = method
    body = mw(environ, lambda status, headers, exc_info=None: None)
    chunks = iter(body)
    for _ in range(taken):
        next(chunks)
    if taken == 2:
        assert list(chunks) == []
    body.close()  # type: ignore[attr-defined]
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": "__unmatched__", "method": method, "status": recorded,
        "traffic_class": "realtime"}) == 1


@pytest.mark.parametrize(("option", "given"), [("exclude_paths", ["health"]), ("metrics_path", "metrics")])
def test_a_path_without_its_leading_slash_is_refused_by_the_wsgi_middleware(option: str, given: Any) -> None:
    # PATH_INFO starts with "/": exclude_paths=["health"] timed every health check, metrics_path="metrics" served no
    # /metrics, silently; "" (a mounted app's root) stays a path
    with pytest.raises(ValueError, match=rf"^{option}: '(health|metrics)' matches no request"):
        AiwatchWSGIMiddleware(lambda environ, start: [], registry=CollectorRegistry(), **{option: given})
    with pytest.raises(ValueError, match=rf"^{option}: '(health|metrics)' matches no request"):
        aiwatch.instrument(Flask("x"), registry=CollectorRegistry(), **{option: given})
    AiwatchWSGIMiddleware(lambda environ, start: [], registry=CollectorRegistry(), exclude_paths=[""])
