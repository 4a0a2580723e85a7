"""Replacing an attribute of a module or class with a wrapper, and undoing it, as OpenTelemetry's instrumentors
patch the libraries they instrument.

If another instrumentor wrapped the same attribute after aiwatch, :meth:`Patch.remove` cannot take aiwatch's
wrapper out of the middle of that chain; it turns it into a pass-through instead (``patch.active`` is false).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Maker = Callable[[Callable[..., Any], "Patch"], Callable[..., Any]]
"""``(original, patch) -> wrapper``: the wrapper checks ``patch.active`` and calls ``original`` when it is false."""


class Patch:
    """One attribute ``owner.name`` replaced by the wrapper ``make`` builds around the original."""

    def __init__(self, owner: Any, name: str, make: Maker) -> None:
        self.owner = owner
        self.name = name
        self.original: Callable[..., Any] = getattr(owner, name)
        self.active = True
        self.wrapper = make(self.original, self)

    def apply(self) -> None:
        setattr(self.owner, self.name, self.wrapper)

    def remove(self) -> None:
        if getattr(self.owner, self.name) is self.wrapper:
            setattr(self.owner, self.name, self.original)
        self.active = False
