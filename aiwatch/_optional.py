"""Optional dependencies: imported only when a feature that needs them is used."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ModuleNotFoundError):
    """A feature needs an optional dependency that is not installed. A ``ModuleNotFoundError``, so that
    ``opentelemetry-instrument`` skips an aiwatch instrumentor whose library is missing quietly, as it skips its
    own."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the aiwatch extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module} is not installed; this aiwatch feature needs it: pip install \"aiwatch[{extra}]\""
        ) from exc
