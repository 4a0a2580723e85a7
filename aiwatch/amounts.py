"""The two rules every number the app hands aiwatch for a metric is checked by: a count and a number of seconds.

A histogram or a counter sums in float64. One NaN or infinity makes its ``_sum`` NaN or infinite for good (and
``rate(_sum) / rate(_count)`` with it); a negative count makes a counter raise and lands in a histogram's lowest
bucket; an integer past float64's range raises OverflowError when it is added; and one huge finite value swamps the
sum, so that the ordinary values added after it no longer change it. So:

* a **count** (tokens, bytes, cache keys) is an integer, ``int`` or a numpy integer (not a ``bool``, a float, a
  ``Decimal`` or a string), from 0 to :data:`MAX_COUNT`;
* a **number of seconds** (a phase's duration, a lookup's time) is a real number, ``int``, ``float``, a numpy
  number, a ``Decimal`` or a ``Fraction`` (not a ``bool`` or a string), from 0 to :data:`MAX_SECONDS`, and is used
  as a ``float``.

On the request path a number that breaks its rule is aiwatch's error (counted and logged by
:func:`aiwatch.safety.record_error`) and is skipped, with the rest of the request's signals kept; a setting given at
construction raises a ValueError naming it (:func:`period` for one that must also be above 0: an interval a thread
waits on, a window's length). The request path tests the common case inline (a ``float`` or an ``int``
within the bounds: one type test and one chained comparison) and calls these functions only when that fails:
:func:`as_count` / :func:`as_seconds` give the value or ``None``, :func:`count` / :func:`seconds` raise naming it.

    >>> count(3, "hits"), seconds(1, "seconds")
    (3, 1.0)
    >>> seconds(float("nan"), "seconds")
    Traceback (most recent call last):
    ...
    ValueError: seconds must be a number of seconds from 0 to 1e9, got nan
    >>> count(10**400, "input_tokens")
    Traceback (most recent call last):
    ...
    ValueError: input_tokens must be at most 2**53, got an integer of 1329 bits
"""

from __future__ import annotations

import logging
import operator
from typing import Any

__all__ = ["MAX_COUNT", "MAX_SECONDS", "as_count", "as_elapsed", "as_real", "as_seconds", "as_timeout", "count",
           "period", "seconds", "shown", "timeout", "warn_implausible"]

MAX_COUNT = 2**53
"""The largest count accepted: float64 holds every integer only up to 2**53."""

MAX_SECONDS = 1e9
"""The largest number of seconds accepted (about 32 years). Longer than any duration; shorter than any Unix time
since 2001, so a timestamp passed where a duration was meant is refused rather than recorded."""

_NOT_NUMBERS = (bool, str, bytes, bytearray)  # float() takes the last three, and True is 1


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, short for a huge integer (whose ``repr`` past 4300 digits raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def as_count(value: Any) -> int | None:
    """``value`` as a count (see the module docstring), or ``None`` when it is not one."""
    try:
        number = operator.index(value)  # ints and numpy integers; not floats, Decimals or strings
    except Exception:  # TypeError, or whatever an object's own __index__ raises
        return None
    if isinstance(value, bool) or not 0 <= number <= MAX_COUNT:
        return None
    return number


def count(value: Any, what: str) -> int:
    """``value`` as a count; a TypeError (not an integer) or ValueError (out of range) naming ``what``."""
    number = as_count(value)
    if number is not None:
        return number
    try:
        number = operator.index(value)
    except Exception:
        raise TypeError(f"{what} must be a non-negative integer, got {shown(value)}") from None
    if isinstance(value, bool) or number < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {shown(value)}")
    raise ValueError(f"{what} must be at most 2**53, got {shown(number)}")


def as_real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (NaN and infinities included), else ``None``: a ``bool`` or
    text (which ``float()`` reads too), or a value ``float()`` cannot take."""
    if isinstance(value, _NOT_NUMBERS):
        return None
    try:
        return float(value)
    except Exception:  # not a number, a signalling NaN, past float64's range, an object's own __float__ failing
        return None


def as_seconds(value: Any) -> float | None:
    """``value`` as a float number of seconds from 0 to :data:`MAX_SECONDS`, or ``None`` when it is not one."""
    number = as_real(value)
    return number if number is not None and 0.0 <= number <= MAX_SECONDS else None


def as_elapsed(start: Any, end: Any) -> float | None:
    """``end - start`` as a number of seconds (:func:`as_seconds`), or ``None`` when it is none or cannot be taken
    (a reading that is no number, or past float64's range)."""
    try:
        return as_seconds(end - start)
    except Exception:  # TypeError, OverflowError, whatever an object's own __sub__ raises
        return None


def seconds(value: Any, what: str) -> float:
    """``value`` as a float number of seconds from 0 to :data:`MAX_SECONDS`; a ValueError naming ``what``."""
    number = as_seconds(value)
    if number is None:
        raise ValueError(f"{what} must be a number of seconds from 0 to 1e9, got {shown(value)}")
    return number


def period(value: Any, what: str) -> float:
    """``value`` as a float number of seconds above 0 and at most :data:`MAX_SECONDS`: a setting such as an interval
    a thread waits on, where 0 or NaN would make it spin and infinity stop it. A ValueError naming ``what``
    otherwise, for a value of the wrong type too (as :func:`seconds`); a positive number so small that its float is
    0 (``Decimal("1e-400")``) is refused with 0.

    >>> period(0.5, "interval"), period(60, "interval")
    (0.5, 60.0)
    >>> period(0, "interval")
    Traceback (most recent call last):
    ...
    ValueError: interval must be a number of seconds above 0 and at most 1e9, got 0
    """
    number = as_seconds(value)
    if not number:  # None, 0.0 or -0.0
        raise ValueError(f"{what} must be a number of seconds above 0 and at most 1e9, got {shown(value)}")
    return number


#: the options :func:`warn_implausible` warned of, each once per process
_implausible_warned: set[str] = set()


def warn_implausible(seconds: float, what: str, *, above: float | None = None, below: float | None = None,
                     effect: str) -> None:
    """Log a warning, once per process for ``what``, when a setting in seconds is above ``above`` or below
    ``below``: a value so far from what the option is for that it was probably meant in another unit (``5000``
    meant as milliseconds where seconds are read). ``effect`` says what the value does. A warning, not a refusal:
    the value may be meant.

        >>> warn_implausible(0.005, "max_wait_seconds", above=1, effect="each request waits that long")  # no warning
    """
    if (above is None or seconds <= above) and (below is None or seconds >= below):
        return
    if what in _implausible_warned:
        return
    _implausible_warned.add(what)
    side = f"above {above:g} s" if above is not None and seconds > above else f"below {below:g} s"
    logging.getLogger("aiwatch").warning(
        "aiwatch: %s is %g seconds, %s: %s. It is read in seconds: a value meant in milliseconds (or minutes) "
        "is off by 1000 (or 60)", what, seconds, side, effect)


def timeout(value: Any, what: str) -> float:
    """:func:`as_timeout` of ``value``; a ValueError naming ``what`` when it is no number of seconds."""
    wait = as_timeout(value)
    if wait is None:
        raise ValueError(f"{what} must be a number of seconds (at most 1e9), got {shown(value)}")
    return wait


def as_timeout(value: Any) -> float | None:
    """A timeout in seconds to wait at most: a negative number waits not at all (0.0); ``None`` when it is no number
    of seconds (NaN, infinite, past :data:`MAX_SECONDS`, a ``bool``, a string, ``None``)."""
    number = as_seconds(value)
    if number is None and not isinstance(value, _NOT_NUMBERS):
        try:
            if value < 0:  # -inf and -(10**400) too
                return 0.0
        except Exception:
            pass
    return number
