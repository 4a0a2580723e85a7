"""The base of aiwatch's instrumentors: OpenTelemetry's ``BaseInstrumentor``, so that ``opentelemetry-instrument``
finds them through their ``opentelemetry_instrumentor`` entry points (pyproject.toml) and calls ``instrument()``
with no arguments, as it does for OpenTelemetry's own.

Needs ``opentelemetry-instrumentation`` (``pip install "aiwatch[otel]"``; the ``grpc`` extra brings it too).
``BaseInstrumentor`` makes each class a singleton: constructing one again returns the same object, and the options
given to the constructor or to ``instrument(**options)`` (which win) take effect at the next ``instrument()``.
``instrument()`` and ``uninstrument()`` are idempotent (a second call logs OpenTelemetry's warning and does nothing)
and ``uninstrument()`` restores what ``instrument()`` replaced.
"""

from __future__ import annotations

from typing import Any

from aiwatch._optional import require
from aiwatch.patching import Maker, Patch

require("opentelemetry.instrumentation.instrumentor", "otel")
# the module is "# type: ignore" as a whole, so mypy sees none of its names
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]  # noqa: E402

__all__ = ["PatchingInstrumentor"]


class PatchingInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An instrumentor that patches attributes (:mod:`aiwatch.patching`). Subclasses build what the patches use
    from the options in :meth:`_configure` (at construction, so that a wrong option fails there, and again at
    ``instrument(**options)`` when options are given) and say what to patch in :meth:`_targets`."""

    _options: dict[str, Any] = {}
    _patches: tuple[Patch, ...] = ()

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._configure(options)

    @property
    def is_instrumented(self) -> bool:
        """Whether ``instrument()`` is in effect."""
        return bool(self.is_instrumented_by_opentelemetry)

    def _configure(self, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def _targets(self) -> list[tuple[Any, str, Maker]]:
        raise NotImplementedError

    def _instrument(self, **kwargs: Any) -> None:
        if kwargs:
            self._configure({**self._options, **kwargs})
        patches = [Patch(owner, name, make) for owner, name, make in self._targets()]
        for patch in patches:
            patch.apply()
        self._patches = tuple(patches)

    def _uninstrument(self, **kwargs: Any) -> None:
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = ()
