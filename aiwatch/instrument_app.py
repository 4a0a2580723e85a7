"""``aiwatch.instrument(app)``: one call that instruments a web app with aiwatch's middleware."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar, cast

from aiwatch.exclusion import ExcludedUrls, check_request_path, exclude_path_set
from aiwatch.flags import flag
from aiwatch.headercapture import HeaderCapture
from aiwatch.middleware._common import ROUTE_KEY, UNMATCHED_ROUTE, is_fastapi
from aiwatch.recording import RECORDER_OPTIONS, resolve_recorder
from aiwatch.safety import record_error, sync_hook
from aiwatch.semconv import known_http_methods
from aiwatch.timing import RequestRecorder, set_default_recorder

A = TypeVar("A")

_MARK = "_aiwatch_recorder"
#: On what an instrumentor (:mod:`aiwatch.middleware.instrumentor`) instrumented, what an explicit :func:`instrument`
#: call replaces: a Starlette app's ``user_middleware`` entry, a Flask app's :class:`ReplaceableWSGIApp`, ``True``
#: on the middleware wrapping a Django handler.
_AUTOMATIC = "_aiwatch_automatic"


def instrument(app: A, *, recorder: RequestRecorder | None = None, **options: Any) -> A:
    """Instrument ``app`` with aiwatch's middleware and return the app to serve.

    - **FastAPI / Starlette** (anything with ``add_middleware``): adds
      :class:`aiwatch.middleware.asgi.AiwatchMiddleware` and returns ``app`` itself.
    - **Flask** (anything with ``wsgi_app`` and ``before_request``): wraps ``app.wsgi_app`` in
      :class:`aiwatch.middleware.wsgi.AiwatchWSGIMiddleware`, registers a first ``url_value_preprocessor`` (it runs
      before every ``before_request`` function) that stores the matched rule as the route label, and returns
      ``app`` itself.
    - **Django's handler** (``get_wsgi_application()`` or ``get_asgi_application()``): returns a new WSGI or ASGI
      middleware wrapping it; Django's ``MIDDLEWARE`` must hold
      :class:`aiwatch.middleware.django.AiwatchDjangoRouteMiddleware`, which hands it the matched URL pattern (else a
      ``ValueError``, unless a ``route_resolver`` is given). Serve the returned object.
    - **A bare ASGI callable** (``async def app(scope, receive, send)`` or an object with such a ``__call__``):
      returns a new :class:`~aiwatch.middleware.asgi.AiwatchMiddleware` wrapping it. Serve the returned object.
    - **A bare WSGI callable** (``app(environ, start_response)``): returns a new
      :class:`~aiwatch.middleware.wsgi.AiwatchWSGIMiddleware` wrapping it. Serve the returned object.

    ``recorder`` and ``options`` are the middleware's keyword arguments (``recorder`` or the recorder options
    ``service``, ``model``, ``registry``/``metrics``, ``tracer_provider``, ``max_label_values``; and
    ``server_timing``, ``metrics_path``, ``exclude_paths``, ``route_resolver``, ``on_request_end``); they mean the
    same for ASGI and WSGI. Instrumenting a FastAPI or Flask app twice is a no-op the second time (as is instrumenting
    what this returned for a bare callable), except after
    :class:`~aiwatch.middleware.instrumentor.AiwatchStarletteInstrumentor` (``opentelemetry-instrument``) picked
    the app up: then this call's middleware replaces the instrumentor's, so that the options given here hold
    (before the app has served its first request, as for any middleware). Phases recorded outside any request (a
    background worker) go to the same recorder: its registry and service.

    ``excluded_urls`` (comma-separated regexes searched in each request's full URL) defaults to the environment as
    OpenTelemetry's instrumentation of the same framework reads it: ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``,
    ``..._STARLETTE_...``, ``..._FLASK_...``, ``..._DJANGO_...``, ``..._ASGI_...`` or ``..._WSGI_...`` (bare
    apps), else ``OTEL_PYTHON_EXCLUDED_URLS``; plus the regex in ``AIWATCH_EXCLUDED_URLS``. Matching requests are
    neither timed nor traced.
    """
    automatic = getattr(app, _AUTOMATIC, None)
    if _is_aiwatch_middleware(app):
        # a Django handler's, made by AiwatchDjangoInstrumentor: this call's options hold instead
        return instrument(cast(Any, app).app, recorder=recorder, **options) if automatic else app
    if getattr(app, _MARK, None) is not None and automatic is None:
        return app
    # checked here, not when Starlette builds its middleware at startup (under uvicorn's lifespan "auto", an error
    # there is logged as "lifespan unsupported" and raised again at every request)
    for hook in ("route_resolver", "on_request_end"):
        sync_hook(hook, options.get(hook))
    for switch in ("server_timing", "payload_sizes"):
        if switch in options:
            flag(options[switch], switch)
    from aiwatch.exposition import check_sample_directory

    check_sample_directory()  # a PROMETHEUS_MULTIPROC_DIR that is a file, or read-only: nothing would be recorded
    known_http_methods()  # a bad OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS is a ValueError here too
    HeaderCapture.server()  # and a bad OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_* regex
    if options.get("metrics_path", "/metrics") is not None:  # the /metrics app is made at the first scrape
        check_request_path(options.get("metrics_path", "/metrics"), "metrics_path")
        from aiwatch.exposition import check_serving_settings

        check_serving_settings()
    if "exclude_paths" in options:
        options["exclude_paths"] = exclude_path_set(options["exclude_paths"])
    django = _is_django_handler(app)
    if django and options.get("route_resolver") is None:
        _require_route_middleware()
    recorder_options = {k: v for k, v in options.items() if k in RECORDER_OPTIONS}
    middleware_options = {k: v for k, v in options.items() if k not in RECORDER_OPTIONS}
    recorder = resolve_recorder(recorder, recorder_options)

    if hasattr(app, "add_middleware") and hasattr(app, "user_middleware"):
        from aiwatch.middleware.asgi import AiwatchMiddleware

        if _drop_automatic_for_own(app):  # the app's code added one (add_middleware): a second timed each twice
            setattr(app, _MARK, recorder)
            return app
        framework = "FASTAPI" if is_fastapi(app) else "STARLETTE"
        middleware_options.setdefault("excluded_urls", ExcludedUrls.from_env(framework))
        app.add_middleware(AiwatchMiddleware, recorder=recorder, **middleware_options)
        if automatic is not None:
            app.user_middleware[:] = [m for m in app.user_middleware if m is not automatic]
            setattr(app, _AUTOMATIC, None)
        _mark(app, recorder)
        return app
    if hasattr(app, "wsgi_app") and hasattr(app, "before_request_funcs"):
        from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

        middleware_options.setdefault("excluded_urls", ExcludedUrls.from_env("FLASK"))
        if isinstance(automatic, ReplaceableWSGIApp):  # AiwatchFlaskInstrumentor's: its route hook stays
            automatic.middleware = AiwatchWSGIMiddleware(automatic.middleware.app, recorder=recorder,
                                                         **middleware_options)
            setattr(app, _AUTOMATIC, None)
            _mark(app, recorder)
            return app
        _instrument_flask(app, recorder, middleware_options)
        return app
    if django:
        middleware_options.setdefault("excluded_urls", ExcludedUrls.from_env("DJANGO"))
    if _is_asgi(app):
        from aiwatch.middleware.asgi import AiwatchMiddleware

        set_default_recorder(recorder)
        return AiwatchMiddleware(app, recorder=recorder, **middleware_options)  # type: ignore[arg-type,return-value]
    if callable(app):
        from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

        set_default_recorder(recorder)
        return AiwatchWSGIMiddleware(app, recorder=recorder, **middleware_options)  # type: ignore[return-value]
    raise TypeError(f"aiwatch.instrument() does not know how to instrument {type(app).__name__!r}: expected a "
                    "FastAPI/Starlette or Flask app, or an ASGI or WSGI callable")


class ReplaceableWSGIApp:
    """What :class:`~aiwatch.middleware.instrumentor.AiwatchFlaskInstrumentor` puts in a Flask app's ``wsgi_app``:
    it calls ``middleware``, which an explicit :func:`instrument` call replaces, even after the app's code wrapped
    ``wsgi_app`` again (``ProxyFix``)."""

    def __init__(self, middleware: Any) -> None:
        self.middleware = middleware

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.middleware(environ, start_response)


def instrument_automatically(app: A, recorder: RequestRecorder, options: dict[str, Any]) -> A:
    """:func:`instrument` for aiwatch's HTTP instrumentors (:mod:`aiwatch.middleware.instrumentor`): the middleware
    it adds is replaced by a later explicit :func:`instrument` call's, whose options are the ones the app's code
    chose. Returns the app to serve (a new middleware for a Django handler)."""
    if getattr(app, _MARK, None) is not None or _is_aiwatch_middleware(app):
        return app
    starlette_entries = (list(app.user_middleware)
                         if hasattr(app, "add_middleware") and hasattr(app, "user_middleware") else None)
    served = instrument(app, recorder=recorder, **options)
    if starlette_entries is not None:
        if len(app.user_middleware) == len(starlette_entries):  # type: ignore[attr-defined]
            return served  # the app was made with aiwatch's middleware (FastAPI(middleware=[...])): none added
        setattr(app, _AUTOMATIC, app.user_middleware[0])  # type: ignore[attr-defined]
        starlette = cast(Any, app)
        build = starlette.build_middleware_stack

        def build_middleware_stack() -> Any:
            # the app's code may add aiwatch's middleware itself after this (app.add_middleware(AiwatchMiddleware,
            # ...), as aiwatch.middleware.asgi shows): then it alone is served, with the options the code gave
            _drop_automatic_for_own(app)
            return build()

        starlette.build_middleware_stack = build_middleware_stack
    elif served is app:  # Flask
        replaceable = ReplaceableWSGIApp(app.wsgi_app)  # type: ignore[attr-defined]
        app.wsgi_app = replaceable  # type: ignore[attr-defined]
        setattr(app, _AUTOMATIC, replaceable)
    else:
        setattr(served, _AUTOMATIC, True)
    return served


def _drop_automatic_for_own(app: Any) -> bool:
    """Whether the Starlette ``app``'s code added aiwatch's middleware itself (``add_middleware``); if so, the one an
    instrumentor added is taken out of ``user_middleware``."""
    from aiwatch.middleware.asgi import AiwatchMiddleware

    automatic = getattr(app, _AUTOMATIC, None)
    own = [m for m in app.user_middleware if m is not automatic
           and isinstance(getattr(m, "cls", None), type) and issubclass(m.cls, AiwatchMiddleware)]
    if own and automatic is not None:
        app.user_middleware[:] = [m for m in app.user_middleware if m is not automatic]
        setattr(app, _AUTOMATIC, None)
    return bool(own)


def _mark(app: Any, recorder: RequestRecorder) -> None:
    setattr(app, _MARK, recorder)
    set_default_recorder(recorder)


def _is_aiwatch_middleware(app: Any) -> bool:
    """Whether ``app`` is what :func:`instrument` returned for a bare callable: wrapping it again would time and count
    each request twice."""
    from aiwatch.middleware.asgi import AiwatchMiddleware
    from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

    return isinstance(app, (AiwatchMiddleware, AiwatchWSGIMiddleware))


def _is_django_handler(app: Any) -> bool:
    """Whether ``app`` is Django's WSGI or ASGI handler (``get_wsgi_application()``, ``get_asgi_application()``)."""
    return any(cls.__module__.startswith("django.core.handlers.") for cls in type(app).__mro__)


def has_route_middleware() -> bool:
    """Whether Django's ``MIDDLEWARE`` has :class:`~aiwatch.middleware.django.AiwatchDjangoRouteMiddleware` (or a
    subclass)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    from aiwatch.middleware.django import MIDDLEWARE_PATH, AiwatchDjangoRouteMiddleware

    for entry in settings.MIDDLEWARE:
        if entry == MIDDLEWARE_PATH:
            return True
        try:
            middleware = import_string(entry)
        except ImportError:  # Django's handler imports every entry; one that fails is not aiwatch's to report
            continue
        if isinstance(middleware, type) and issubclass(middleware, AiwatchDjangoRouteMiddleware):
            return True
    return False


def _require_route_middleware() -> None:
    """A ``ValueError`` unless Django's ``MIDDLEWARE`` has
    :class:`~aiwatch.middleware.django.AiwatchDjangoRouteMiddleware` (or a subclass): without it, every request of
    the app would be ``__unmatched__``."""
    from aiwatch.middleware.django import MIDDLEWARE_PATH

    if has_route_middleware():
        return
    raise ValueError(f"aiwatch.instrument(): Django's MIDDLEWARE setting has no {MIDDLEWARE_PATH!r}, so aiwatch "
                     "cannot see which URL pattern a request matched and every request would be labelled "
                     f"{UNMATCHED_ROUTE!r}: add it at the top of MIDDLEWARE (before the handler is made), or pass "
                     "route_resolver=")


def _store_flask_route(request: Any) -> None:
    """Store the rule a Flask ``request`` matched where aiwatch's WSGI middleware reads the route template."""
    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE_KEY] = rule.rule


def _is_asgi(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - an object's __call__, not callable()
    return call is not None and not inspect.isfunction(app) and inspect.iscoroutinefunction(call)


def _instrument_flask(app: Any, recorder: RequestRecorder, middleware_options: dict[str, Any]) -> Any:
    from flask import request as request_proxy

    from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

    def store_route(endpoint: str | None, values: dict[str, Any] | None) -> None:
        # it runs inside the app's request: a failure of aiwatch's is counted, never raised into it (the request
        # goes on unlabelled, __unmatched__)
        try:
            # the request object itself, once: an import and two reads through Flask's context-local proxy cost 2 µs
            # per request here, this 0.2 µs
            _store_flask_route(request_proxy._get_current_object())  # type: ignore[attr-defined]  # typed proxy
        except Exception as exc:
            record_error("route", exc, recorder.metrics)

    # the app's first URL value preprocessor: they run before every before_request function, and one that aborts
    # (a blueprint's language prefix not served: 404) or fails (500) would leave a matched request unlabelled
    app.url_value_preprocessors.setdefault(None, []).insert(0, store_route)
    app.wsgi_app = AiwatchWSGIMiddleware(app.wsgi_app, recorder=recorder, **middleware_options)
    _mark(app, recorder)
    return app
