"""A project middleware that imports a model at module level, as many do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.contenttypes.models import ContentType


class ModelsMiddleware:
    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.model = ContentType

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)
