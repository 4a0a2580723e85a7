"""Django: the route template of each request, for aiwatch's WSGI or ASGI middleware around Django's handler.

Django matches the URL inside its handler, where middleware wrapped around the handler cannot see it: without
this, every request of a Django app is ``__unmatched__``. Add :class:`AiwatchDjangoRouteMiddleware` to the top of
``MIDDLEWARE`` and instrument the handler::

    # settings.py
    MIDDLEWARE = ["aiwatch.middleware.django.AiwatchDjangoRouteMiddleware", ...]

    # wsgi.py (asgi.py: the same with get_asgi_application)
    import aiwatch
    from django.core.wsgi import get_wsgi_application

    application = aiwatch.instrument(get_wsgi_application(), service="recommender")

The route is Django's own template of the URL pattern that matched (``request.resolver_match.route``:
``api/v1/predict/<int:model_id>/``, or a ``re_path`` regex), as OpenTelemetry's Django instrumentation sets
``http.route``; the site root (Django's empty route) is ``/``, and the language code ``i18n_patterns`` put at
its start (from the URL) is ``<language>``. A request no pattern matched (a 404) stays
``__unmatched__``. The middleware stores the template as soon as the URL is matched (its ``process_view``, before any
view middleware and the view run), so that a route rule's traffic class is the request's from then on and its
outgoing calls forward it; and again once the rest of the chain returned, so that a request another middleware
answered after the URL was matched (CSRF's 403) is labelled with its route too. It is ``async_capable``: under ASGI
it runs on the event loop, with no thread hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from aiwatch.middleware._common import ROUTE_KEY
from aiwatch.safety import record_error
from aiwatch.timing import current_timeline, metrics_of

__all__ = ["MIDDLEWARE_PATH", "AiwatchDjangoRouteMiddleware", "django_route"]

MIDDLEWARE_PATH = "aiwatch.middleware.django.AiwatchDjangoRouteMiddleware"
"""The entry to add to Django's ``MIDDLEWARE`` setting."""

#: the label of Django's empty route (the site root, ``path("", view)``): a label is never empty
ROOT_ROUTE = "/"

#: what stands for the language code that begins a route matched through ``i18n_patterns`` (``en/predict/`` ->
#: ``<language>/predict/``): the code comes from the URL, one of ``settings.LANGUAGES`` (99 by default)
LANGUAGE_PREFIX = "<language>"

#: Django's route -> its label, for the routes seen so far (templates, so few); a label is worked out once
_labels: dict[str, str] = {}
_MAX_LABELS = 10_000


def django_route(request: Any) -> str | None:
    """The template of the URL pattern that matched ``request``, ``None`` if none did."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    label = _labels.get(route)
    if label is None:
        label = _language_neutral(request, route) or ROOT_ROUTE
        if len(_labels) < _MAX_LABELS:
            _labels[route] = label
    return label


def _language_neutral(request: Any, route: str) -> str:
    """``route`` with the language code Django's ``i18n_patterns`` matched at its start (from the URL) replaced by
    :data:`LANGUAGE_PREFIX`: each language was a route label of its own, so a scan of the language codes filled the
    route label's bound with one endpoint."""
    from django.conf import settings
    from django.conf.urls.i18n import is_language_prefix_patterns_used

    code, slash, rest = route.partition("/")
    if not slash or not is_language_prefix_patterns_used(getattr(request, "urlconf", None) or
                                                         settings.ROOT_URLCONF)[0]:
        return route
    codes = {str(language[0]) for language in settings.LANGUAGES} | {settings.LANGUAGE_CODE}
    return f"{LANGUAGE_PREFIX}/{rest}" if code in codes else route


def store_route(request: Any) -> None:
    """Store ``request``'s route template where aiwatch's middleware reads it: the ASGI scope (``request.scope``)
    or the WSGI environ (``request.environ``), which are the very dicts the server handed the middleware. Never
    raises: a failure is counted under ``component="route"``, in the metrics of the request's recorder (outside
    a request, of :func:`aiwatch.instrument`'s)."""
    try:
        route = django_route(request)
        if route is None:
            return
        scope = getattr(request, "scope", None)
        target = scope if isinstance(scope, dict) else getattr(request, "environ", None)
        if isinstance(target, dict):
            target[ROUTE_KEY] = route
    except Exception as exc:
        record_error("route", exc, metrics_of(current_timeline()))


class AiwatchDjangoRouteMiddleware:
    """Django middleware that hands aiwatch the route template each request matched (see the module's text)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            # Django's chain then sees a coroutine function: the wrapper that turns an exception into a response
            # awaits this middleware (not marked, it would hand the coroutine on un-awaited and convert nothing)
            markcoroutinefunction(self)
        # Django adapts a process_view of the other mode with a thread hop (sync_to_async under ASGI, the shared
        # thread): the instance takes the one of the handler's mode, unless a subclass has its own
        if getattr(type(self), "process_view", None) is None:
            self.process_view = self._process_view_async if self.is_async else self._process_view

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._call_async(request)
        try:
            return self.get_response(request)
        finally:
            store_route(request)

    def _process_view(self, request: Any, view: Any, args: Any, kwargs: Any) -> None:
        store_route(request)

    async def _process_view_async(self, request: Any, view: Any, args: Any, kwargs: Any) -> None:
        store_route(request)

    async def _call_async(self, request: Any) -> Any:
        response: Awaitable[Any] = self.get_response(request)
        try:
            return await response
        finally:
            store_route(request)
