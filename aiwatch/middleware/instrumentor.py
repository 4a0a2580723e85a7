"""``AiwatchStarletteInstrumentor``: ``aiwatch.instrument(app)`` for every Starlette or FastAPI app created while
instrumented, so that ``opentelemetry-instrument python app.py`` adds aiwatch's middleware with no code change.

What "picking up" an HTTP app means here: as OpenTelemetry's ``FastAPIInstrumentor`` instruments the FastAPI apps
made after ``instrument()``, this instrumentor patches the constructors of ``starlette.applications.Starlette`` and
``fastapi.applications.FastAPI`` (when FastAPI is installed; it does not call Starlette's), and each new app gets
:class:`~aiwatch.middleware.asgi.AiwatchMiddleware` exactly as :func:`aiwatch.instrument` adds it (``/metrics``
served, Server-Timing, route templates, phases). Apps created before ``instrument()`` or after ``uninstrument()``
are left alone, and apps created meanwhile keep their middleware (as gRPC servers keep their interceptors). An
app whose own code calls :func:`aiwatch.instrument` gets that call's middleware and options instead of this one's.
Flask and bare ASGI/WSGI callables have no class to patch that all apps share: call :func:`aiwatch.instrument` for
them.

Options (to the constructor or ``instrument()``): ``recorder`` or the recorder options, and the middleware options of
:func:`aiwatch.instrument` (``server_timing``, ``metrics_path``, ``exclude_paths``, ``excluded_urls``...). The
entry point is ``aiwatch_starlette``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Collection
from typing import Any

from aiwatch.instrument_app import instrument_automatically
from aiwatch.instrumentor import PatchingInstrumentor
from aiwatch.patching import Maker, Patch
from aiwatch.recording import RECORDER_OPTIONS, resolve_recorder
from aiwatch.safety import record_error

__all__ = ["AiwatchStarletteInstrumentor"]


class AiwatchStarletteInstrumentor(PatchingInstrumentor):
    """See the module docstring."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("starlette >= 0.13",)

    def _configure(self, options: dict[str, Any]) -> None:
        #: the recorder every app instrumented meanwhile records into
        self.recorder = resolve_recorder(options.get("recorder"),
                                         {k: v for k, v in options.items() if k in RECORDER_OPTIONS})
        self._middleware_options = {k: v for k, v in options.items()
                                    if k not in RECORDER_OPTIONS and k != "recorder"}

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        from starlette.applications import Starlette

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

        targets: list[tuple[Any, str, Maker]] = [(Starlette, "__init__", make)]
        if importlib.util.find_spec("fastapi") is not None:
            from fastapi.applications import FastAPI

            targets.append((FastAPI, "__init__", make))
        return targets
