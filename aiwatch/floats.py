"""One rule for a number past float64's range, shared by the drift tests and the prediction log.

``float(10**400)`` raises OverflowError, where ``float(Decimal("1e400"))`` is ``inf``: an int (or fraction) that
large is infinite as a float here too, so it is a missing value to the drift tests (as every non-finite value is)
and is logged as ±inf, instead of failing the row or the record it came in.

    >>> finite_or_infinite(2), finite_or_infinite(-(10**400))
    (2.0, -inf)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_or_infinite"]


def finite_or_infinite(number: Any) -> float:
    """``float(number)``, or ±inf for a number past float64's range (``float`` raises OverflowError there)."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf
