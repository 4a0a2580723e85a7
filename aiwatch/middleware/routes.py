"""The route template of an ASGI request, as Starlette's and FastAPI's routers leave it in the scope.

Starlette's router stores the route it chose in ``scope["route"]``; a route under a ``Mount`` keeps the mount's
prefix, read from how far the mounts grew ``scope["root_path"]``. FastAPI (from about 0.16x) keeps an included
router as one route of its own instead of copying its routes with their prefix: the ``scope["route"]`` of an
``APIRoute`` under ``include_router(router, prefix="/v1")`` has the router's own path (``/predict``), and a plain
Starlette route of a FastAPI app is stored nowhere at all. FastAPI's telemetry names such requests from the route
context its router puts in ``scope["fastapi"]``, and so does aiwatch (``/v1/predict``); a plain route at the top of
a FastAPI app is found by matching the app's routes, as Starlette's router did.

Litestar's router stores the template of the route it chose in ``scope["path_template"]`` (``/items/{item_id}``,
the one its Prometheus plugin labels with), read by :func:`litestar_route`.

Nothing here imports Starlette, FastAPI or Litestar: a bare ASGI app has no route, and the middleware's
``route_resolver`` names it.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import MutableMapping
from typing import Any

from aiwatch.middleware._common import is_fastapi

Scope = MutableMapping[str, Any]

#: the template of a ``Mount`` whose app chose no route of its own (static files): the mount's prefix and this
MOUNT_REST = "/{path}"


def starlette_route(scope: Scope, root_path: str = "") -> str | None:
    """The route template of the request ``scope`` describes (``/items/{item_id}``), ``None`` if no route matched.
    ``root_path``: the scope's ``root_path`` when the request reached aiwatch (the mounts' prefix is what was added
    to it since)."""
    route = scope.get("route")
    routing = sys.modules.get("starlette.routing")
    context = _fastapi_route_context(scope)
    if context is not None:
        original = getattr(context, "original_route", None)
        if route is None or route is original:
            if routing is not None and isinstance(original, routing.Mount):
                return _prefixed(scope, root_path, MOUNT_REST)
            path = _context_path(context)
            if path:
                return _prefixed(scope, root_path, path)
    if route is None:
        route = _fastapi_plain_route(scope)
        if route is None:
            return None
    if routing is not None and isinstance(route, routing.Mount):
        # the mount's own path (and its router's prefix) is in root_path already; its app (static files) chose no
        # route of its own
        return _prefixed(scope, root_path, MOUNT_REST)
    path = getattr(route, "path", None)
    if not path:
        return None
    return _prefixed(scope, root_path, str(path))


def litestar_route(scope: Scope) -> str | None:
    """The template Litestar's router stored for the route it chose (``scope["path_template"]``), if any. Litestar
    writes it only once a route matched, so a 404 has none. For a mounted ASGI app (``@asgi(..., is_mount=True)``)
    Litestar 2.25 stores the template of the root route instead of the mount's (``/`` when the app has one): such a
    request is labelled with the mount's path, its routers' and controller's prefixes before it, and
    :data:`MOUNT_REST` after it (``/files/{path}``), as a Starlette ``Mount`` is."""
    handler = scope.get("route_handler")
    if getattr(handler, "is_mount", False) is True:
        return _litestar_mount(scope, handler)
    template = scope.get("path_template")
    if not isinstance(template, str) or not template:
        return None
    return template


def _litestar_mount(scope: Scope, handler: Any) -> str | None:
    """The template of a request to a Litestar mount: the mount's path after its owners' (app, routers,
    controller: ``ownership_layers``, the handler last); of a handler mounted at several paths, the one the
    request's path is under, the longest (``None`` when it is under none of them)."""
    layers = list(getattr(handler, "ownership_layers", ()))[:-1]
    prefix = "".join(_path_part(getattr(layer, "path", None)) for layer in layers)
    paths = getattr(handler, "paths", None)
    if not isinstance(paths, (set, frozenset, list, tuple)) or not paths:
        return None
    mounts = {prefix + _path_part(path) or "/" for path in paths if isinstance(path, str)}
    if len(mounts) > 1:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))
        mounts = {m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")}
    if not mounts:
        return None
    return max(mounts, key=len).rstrip("/") + MOUNT_REST  # the longest: "/" is under every path


def _path_part(path: object) -> str:
    """A route path as a prefix: ``/api`` for ``api``, ``/api/`` or ``/api``; empty for ``/`` or no path."""
    if not isinstance(path, str):
        return ""
    stripped = path.strip("/")
    return f"/{stripped}" if stripped else ""


def _prefixed(scope: Scope, root_path: str, path: str) -> str:
    prefix = scope.get("root_path", "")[len(root_path):]
    if prefix:
        prefix = _mount_templates(scope, root_path, prefix)
    return f"{prefix}{path}" if prefix else path


#: the most mounts within mounts :func:`_mount_templates` follows
_MAX_MOUNTS = 16


def _mount_templates(scope: Scope, root_path: str, added: str) -> str:
    """``added``, the path the mounts the request went into added to ``root_path``, written with the mounts'
    templates: Starlette's ``Mount`` adds the path it matched (``/tenants/acme`` for ``/tenants/{tenant}``), which
    is the raw path, never a label. Found by following, from the app's router (``scope["router"]``), the mounts
    that match the request, as the router did; ``added`` as it is when they cannot be followed (a mount inside a
    FastAPI included router). Never raises."""
    routing = sys.modules.get("starlette.routing")
    router = scope.get("router")
    if routing is None or router is None:
        return added
    target = scope.get("root_path", "")
    try:
        if not _has_mounts_with_parameters(router, routing):
            return added
        probe = {"type": "http", "path": scope.get("path", ""), "root_path": root_path}
        current = root_path
        template = ""
        routes = getattr(router, "routes", None)
        for _ in range(_MAX_MOUNTS):
            if not isinstance(routes, list):
                return added
            for route in routes:
                if not isinstance(route, routing.Mount):
                    continue
                probe["root_path"] = current
                match, child = route.matches(probe)
                grown = child.get("root_path") if match is routing.Match.FULL else None
                # a mount at "" adds nothing to the root path: the router went into it all the same
                if isinstance(grown, str) and target.startswith(grown) and (grown != current or not route.path):
                    template += str(route.path)
                    current = grown
                    routes = route.routes
                    break
            else:
                return added
            if current == target:
                return template
    except Exception:  # a route of the app's own making that matches otherwise: the path as it is
        pass
    return added


#: id(router) -> (the router, weakly; its number of routes; whether a mount within it has path parameters): most
#: apps' mounts have none, and their requests need not follow the mounts again (3 us for one mount beside 50
#: routes). By id: Starlette's Router defines __eq__ without __hash__.
_PARAMETER_MOUNTS: dict[int, tuple[weakref.ref[Any], int, bool]] = {}
_MAX_ROUTERS = 64


def _has_mounts_with_parameters(router: Any, routing: Any) -> bool:
    routes = router.routes
    known = _PARAMETER_MOUNTS.get(id(router))
    if known is None or known[0]() is not router or known[1] != len(routes):  # new, or routes added since
        if len(_PARAMETER_MOUNTS) >= _MAX_ROUTERS:
            _PARAMETER_MOUNTS.clear()
        known = (weakref.ref(router), len(routes), _any_parameters(routes, routing, _MAX_MOUNTS))
        _PARAMETER_MOUNTS[id(router)] = known
    return known[2]


def _any_parameters(routes: Any, routing: Any, depth: int) -> bool:
    for route in routes if isinstance(routes, list) else ():
        if isinstance(route, routing.Mount) and (
                "{" in str(route.path) or (depth > 1 and _any_parameters(route.routes, routing, depth - 1))):
            return True
    return False


def _fastapi_route_context(scope: Scope) -> Any:
    """The route context FastAPI's router stored for the request (``None``: none, or not FastAPI)."""
    fastapi_scope = scope.get("fastapi")
    if not isinstance(fastapi_scope, dict):
        return None
    return fastapi_scope.get("effective_route_context")


def _context_path(context: Any) -> str | None:
    """The full path of a FastAPI route context, its router's prefix included: a plain Starlette route's own path
    (FastAPI copies it with the prefix), else the context's."""
    path = getattr(getattr(context, "starlette_route", None), "path", None) or getattr(context, "path", None)
    return path if isinstance(path, str) and path else None


def _fastapi_plain_route(scope: Scope) -> Any:
    """The plain Starlette route at the top of the FastAPI app in ``scope["app"]`` that took the request (FastAPI's
    router stores none for one): a ``Route`` that matches it fully, or the ``Mount`` it went into (static files);
    ``None`` for any other app or request. Matching costs what the router's own matching cost: one pattern per
    route, for the requests that have no route stored (these, and 404s)."""
    app = scope.get("app")
    routing = sys.modules.get("starlette.routing")
    if routing is None or app is None or not is_fastapi(app):
        return None
    root_path = scope.get("root_path", "")
    probe = {"type": scope.get("type", "http"), "path": scope.get("path", ""), "root_path": root_path,
             "method": scope.get("method", "GET")}
    for route in getattr(getattr(app, "router", None), "routes", ()):
        kind = type(route)
        if kind is routing.Route and route.matches(probe)[0] is routing.Match.FULL:
            return route
        # a mount adds its path to root_path as it hands the request on: the one this request went into
        if kind is routing.Mount and route.path and root_path.endswith(route.path):
            return route
    return None
