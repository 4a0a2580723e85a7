"""Optional dependencies: imported only when a feature that needs them is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from types import ModuleType
from typing import Any


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


class Unavailable:
    """What a package's lazy attribute (``aiwatch.GpuCollector``) is when the module defining it needs an extra
    that is not installed: the name exists, so ``from aiwatch import *`` and ``inspect.getmembers(aiwatch)`` work
    on a bare install, and using it (calling it, reading an attribute, subclassing it, an isinstance check) raises
    a MissingExtraError naming the extra."""

    def __init__(self, name: str, error: MissingExtraError) -> None:
        self._name = name
        self._message = str(error)
        self.__doc__ = f"{name} is unavailable: {error}"

    def _raise(self) -> MissingExtraError:
        return MissingExtraError(f"{self._name} cannot be used: {self._message}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise self._raise()

    def __getattr__(self, attribute: str) -> object:
        if attribute.startswith("__") and attribute.endswith("__"):  # protocol probes (copy, pickle, inspect)
            raise AttributeError(attribute)
        raise self._raise()

    def __mro_entries__(self, bases: tuple[object, ...]) -> tuple[type, ...]:
        raise self._raise()

    def __instancecheck__(self, instance: object) -> bool:
        raise self._raise()

    def __repr__(self) -> str:
        return f"<{self._name}, unavailable: {self._message}>"


def lazy_attribute(package: str, namespace: MutableMapping[str, Any], lazy: Mapping[str, str], name: str) -> Any:
    """A package's module ``__getattr__``: the attribute ``name`` of the module ``lazy[name]``, imported on first
    access and kept in the package's ``namespace``, or an :class:`Unavailable` (not kept: a later access imports
    again) when that module needs an extra that is not installed."""
    module = lazy.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except MissingExtraError as exc:
        return Unavailable(f"{package}.{name}", exc)
    if not isinstance(value, Unavailable):  # a subpackage's own placeholder
        namespace[name] = value
    return value
