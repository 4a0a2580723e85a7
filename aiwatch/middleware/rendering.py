"""Timing response rendering in Starlette and FastAPI: a response class whose rendering is the ``render`` phase.

FastAPI turns an endpoint's return value into bytes in two steps: ``jsonable_encoder`` (and the response model's
validation) in the route, then the response class's ``render()`` (``json.dumps`` for ``JSONResponse``). The second
is where a large prediction (an embedding batch, a list of scored items) costs serialization time; it runs inside
the request, so a phase around it shows in the split::

    app = aiwatch.instrument(FastAPI(default_response_class=aiwatch.TimedJSONResponse))

Any response class can be timed the same way with :func:`timed_response_class` (``ORJSONResponse``...). The cost
is one phase per response (measured in bench/RESULTS.md), which is why it is a class to opt into, not a default.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiwatch._optional import require
from aiwatch.timing import phase

require("starlette", "demo")

from starlette.responses import JSONResponse, Response  # noqa: E402

RENDER = "render"
"""The phase name of response rendering."""

R = TypeVar("R", bound=type[Response])


def timed_response_class(cls: R, name: str = RENDER) -> R:
    """A subclass of the Starlette response class ``cls`` whose ``render()`` runs in phase ``name``."""

    def render(self: Any, content: Any) -> bytes:
        with phase(name):
            rendered: bytes = super(timed, self).render(content)
            return rendered

    timed: Any = type(f"Timed{cls.__name__}", (cls,), {
        "render": render, "__doc__": f"``{cls.__name__}`` whose ``render()`` runs in the ``{name}`` phase."})
    timed.__module__ = __name__
    return timed  # type: ignore[no-any-return]


TimedJSONResponse = timed_response_class(JSONResponse)

__all__ = ["RENDER", "TimedJSONResponse", "timed_response_class"]
