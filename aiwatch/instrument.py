"""``aiwatch.instrument(app)``: one call that instruments a web app with aiwatch's middleware."""

from __future__ import annotations

from typing import Any, TypeVar

from aiwatch.timing import set_default_recorder

A = TypeVar("A")


def instrument(app: A, **options: Any) -> A:
    """Instrument ``app`` and return it.

    - FastAPI / Starlette: adds :class:`aiwatch.middleware.asgi.AiwatchMiddleware` (``options`` are its arguments).

    Phases recorded outside a request then go to the same registry and service.
    """
    if hasattr(app, "add_middleware") and hasattr(app, "user_middleware"):
        from aiwatch.middleware.asgi import AiwatchMiddleware

        app.add_middleware(AiwatchMiddleware, **options)
        # Starlette builds the middleware lazily; build one now to share its recorder for out-of-request phases.
        probe = AiwatchMiddleware(_noop_app, **options)
        set_default_recorder(probe.recorder)
        return app
    raise TypeError(f"aiwatch.instrument() does not know how to instrument {type(app).__name__!r}")


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    return None
