"""aiwatch's HTTP instrumentors: :func:`aiwatch.instrument` for every app of a framework created while instrumented,
so that ``opentelemetry-instrument python app.py`` (or ``opentelemetry-instrument gunicorn project.wsgi``) adds
aiwatch's middleware with no code change. Each is an OpenTelemetry ``BaseInstrumentor`` registered as an
``opentelemetry_instrumentor`` entry point, and patches what OpenTelemetry's instrumentation of the same framework
patches:

- ``AiwatchStarletteInstrumentor`` (entry point ``aiwatch_starlette``): the constructors of
  ``starlette.applications.Starlette`` and ``fastapi.applications.FastAPI`` (when FastAPI is installed; it does not
  call Starlette's), as OpenTelemetry's ``FastAPIInstrumentor`` instruments the FastAPI apps made after
  ``instrument()``;
- ``AiwatchFlaskInstrumentor`` (``aiwatch_flask``): the constructor of ``flask.Flask``, as OpenTelemetry's
  ``FlaskInstrumentor`` does;
- ``AiwatchDjangoInstrumentor`` (``aiwatch_django``): ``django.core.wsgi.get_wsgi_application`` and
  ``django.core.asgi.get_asgi_application``, which a project's ``wsgi.py`` / ``asgi.py`` and ``runserver`` call
  to make Django's handler. Each first puts
  :class:`~aiwatch.middleware.django.AiwatchDjangoRouteMiddleware` at the top of ``settings.MIDDLEWARE`` when it
  is not there (as OpenTelemetry's ``DjangoInstrumentor`` puts its own middleware there), then returns the handler
  wrapped as :func:`aiwatch.instrument` wraps it.

Each new app gets aiwatch's middleware exactly as :func:`aiwatch.instrument` adds it (``/metrics`` served,
Server-Timing, route templates, phases). Apps created before ``instrument()`` or after ``uninstrument()`` are left
alone, and apps created meanwhile keep their middleware (as gRPC servers keep their interceptors). An app whose own
code calls :func:`aiwatch.instrument` gets that call's middleware and options instead of the instrumentor's (for
Django, serve what that call returns, as always). A failure to instrument is counted under ``instrument`` and the
app starts uninstrumented. Bare ASGI/WSGI callables have no class to patch: call :func:`aiwatch.instrument` for them.

Options (to the constructor or ``instrument()``): ``recorder`` or the recorder options, and the middleware options of
:func:`aiwatch.instrument` (``server_timing``, ``metrics_path``, ``exclude_paths``, ``excluded_urls``...).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Collection
from typing import Any

from aiwatch.instrument_app import has_route_middleware, instrument_automatically
from aiwatch.instrumentor import PatchingInstrumentor
from aiwatch.patching import Maker, Patch
from aiwatch.recording import RECORDER_OPTIONS, resolve_recorder
from aiwatch.safety import record_error

__all__ = ["AiwatchDjangoInstrumentor", "AiwatchFlaskInstrumentor", "AiwatchStarletteInstrumentor"]


class _HttpInstrumentor(PatchingInstrumentor):
    """What the three share: a recorder and middleware options from the options, and constructors patched to
    instrument each app they make."""

    def _configure(self, options: dict[str, Any]) -> None:
        #: the recorder every app instrumented meanwhile records into
        self.recorder = resolve_recorder(options.get("recorder"),
                                         {k: v for k, v in options.items() if k in RECORDER_OPTIONS})
        self._middleware_options = {k: v for k, v in options.items()
                                    if k not in RECORDER_OPTIONS and k != "recorder"}

    def _instrumenting_constructor(self) -> Maker:
        recorder, middleware_options = self.recorder, self._middleware_options

        def make(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
            @functools.wraps(original)
            def __init__(app: Any, *args: Any, **kwargs: Any) -> None:
                original(app, *args, **kwargs)
                if patch.active:
                    try:
                        instrument_automatically(app, recorder, middleware_options)
                    except Exception as exc:  # the app still starts, uninstrumented
                        record_error("instrument", exc, recorder.metrics)

            return __init__

        return make


class AiwatchStarletteInstrumentor(_HttpInstrumentor):
    """Every Starlette and FastAPI app made while instrumented (see the module docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("starlette >= 0.13",)

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        from starlette.applications import Starlette

        make = self._instrumenting_constructor()
        targets: list[tuple[Any, str, Maker]] = [(Starlette, "__init__", make)]
        if importlib.util.find_spec("fastapi") is not None:
            from fastapi.applications import FastAPI

            targets.append((FastAPI, "__init__", make))
        return targets


class AiwatchFlaskInstrumentor(_HttpInstrumentor):
    """Every Flask app made while instrumented (see the module docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("flask >= 3",)

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        from flask import Flask

        return [(Flask, "__init__", self._instrumenting_constructor())]


class AiwatchDjangoInstrumentor(_HttpInstrumentor):
    """Every Django handler made while instrumented (see the module docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("django >= 5.2",)

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        import django.core.asgi
        import django.core.wsgi

        recorder, middleware_options = self.recorder, self._middleware_options

        def make(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
            @functools.wraps(original)
            def get_application(*args: Any, **kwargs: Any) -> Any:
                if not patch.active:
                    return original(*args, **kwargs)
                try:
                    _add_route_middleware()  # before the handler loads MIDDLEWARE
                except Exception as exc:  # the handler is still made; instrument() below refuses it, counted
                    record_error("instrument", exc, recorder.metrics)
                handler = original(*args, **kwargs)
                try:
                    return instrument_automatically(handler, recorder, middleware_options)
                except Exception as exc:  # the app still starts, uninstrumented
                    record_error("instrument", exc, recorder.metrics)
                    return handler

            return get_application

        return [(django.core.wsgi, "get_wsgi_application", make),
                (django.core.asgi, "get_asgi_application", make)]


def _add_route_middleware() -> None:
    """Put aiwatch's route middleware at the top of Django's ``MIDDLEWARE`` unless it (or a subclass) is there."""
    import django
    from django.conf import settings

    from aiwatch.middleware.django import MIDDLEWARE_PATH

    # what get_wsgi_application() does first: the apps loaded, so that importing the entries to look for a subclass
    # is safe for a middleware module that imports models (AppRegistryNotReady before)
    django.setup(set_prefix=False)
    if not has_route_middleware():
        settings.MIDDLEWARE = [MIDDLEWARE_PATH, *settings.MIDDLEWARE]
