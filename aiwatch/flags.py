"""The rule every on/off option given in code is checked by: a ``bool``, or numpy's bool.

``server_timing="false"`` is a non-empty string, true to Python: read as it is, it turned on what the caller meant
off, with nothing said. So an option documented as a ``bool`` refuses anything else (a string, ``None``, ``0`` or
``1``) with a TypeError naming the option and the value, when the object is made. numpy's bool (``np.True_``, what
``np.any`` returns) is accepted and read as the ``bool`` it is: it has only the two values. Environment variables are
strings, parsed by :meth:`aiwatch.env.EnvVar.switch` (``on``/``off``, ``true``/``false``, ``1``/``0``,
``yes``/``no``; anything else a ValueError naming the variable).

    >>> flag(False, "server_timing")
    False
    >>> flag("false", "server_timing")
    Traceback (most recent call last):
    ...
    TypeError: server_timing must be True or False, got 'false' of type str
"""

from __future__ import annotations

__all__ = ["flag"]


def flag(value: object, name: str) -> bool:
    """``value`` as a ``bool``: a ``bool`` or a numpy bool; anything else is a TypeError naming ``name``."""
    if isinstance(value, bool):
        return value
    kind = type(value)
    if kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} of type {kind.__name__}")
