"""A small Django project for tests/http/test_http_django.py: its settings, URL patterns and views, in one module
(``ROOT_URLCONF`` is this module)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import LocalePrefixPattern, URLResolver, include, path, re_path

from aiwatch.middleware.django import MIDDLEWARE_PATH, AiwatchDjangoRouteMiddleware

CSRF = "django.middleware.csrf.CsrfViewMiddleware"
LOCALE = "django.middleware.locale.LocaleMiddleware"


def configure() -> None:
    """Django's settings for this process (once): aiwatch's route middleware first, then CSRF's."""
    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="aiwatch-tests", ROOT_URLCONF=__name__,
                           MIDDLEWARE=[MIDDLEWARE_PATH, CSRF], INSTALLED_APPS=[], USE_TZ=True,
                           LOGGING_CONFIG=None)
        django.setup()


#: the thread each async view ran in, by request path (the event loop's under ASGI)
view_threads: dict[str, int] = {}


def root(request: HttpRequest) -> HttpResponse:
    return HttpResponse("root")


def predict(request: HttpRequest, model_id: int) -> JsonResponse:
    return JsonResponse({"model": model_id})


async def predict_async(request: HttpRequest, model_id: int) -> JsonResponse:
    view_threads[request.path] = threading.get_ident()
    await asyncio.sleep(0)
    return JsonResponse({"model": model_id})


def item(request: HttpRequest, pk: str) -> HttpResponse:
    return HttpResponse(pk)


def item_n(request: HttpRequest, n: int) -> HttpResponse:
    return HttpResponse(str(n))


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


def form(request: HttpRequest) -> HttpResponse:
    return HttpResponse("accepted")


#: what the ``forward/`` view calls: ``client`` (an instrumented HTTP client) and the peer's ``base`` URL, set by a test
peer_call: dict[str, Any] = {}


def forward(request: HttpRequest) -> JsonResponse:
    """Calls the peer once and answers with the headers it received."""
    return JsonResponse(peer_call["client"].get(f"{peer_call['base']}/ok").json())


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield from (b"a" * 100 for _ in range(5))

    return StreamingHttpResponse(chunks())


api = [path("predict/<int:model_id>/", predict), path("predict-async/<int:model_id>/", predict_async)]

urlpatterns = [
    path("", root),
    path("api/v1/", include(api)),
    re_path(r"^items/(?P<pk>[0-9]+)/$", item),
    path("boom/", boom),
    path("form/", form),
    path("stream/", stream),
    path("forward/", forward),
    # i18n_patterns(path("translated/<int:n>/", item_n)), which reads the settings at import: the language code of
    # the URL (one of settings.LANGUAGES, Django's 99) activated by LocaleMiddleware where MIDDLEWARE lists it
    URLResolver(LocalePrefixPattern(), [path("translated/<int:n>/", item_n)]),
]


class _RouteThatRaises:
    @property
    def route(self) -> str:
        raise RuntimeError("resolver_match broken by another middleware")


class BreakMatchMiddleware:
    """A middleware inside aiwatch's that leaves a ``resolver_match`` whose ``route`` raises (a fault injected into
    what aiwatch reads)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = self.get_response(request)
        request.resolver_match = _RouteThatRaises()  # type: ignore[assignment]
        return response


class OwnRouteMiddleware(AiwatchDjangoRouteMiddleware):
    """An app's own subclass of aiwatch's route middleware, listed in ``MIDDLEWARE`` instead of it."""
