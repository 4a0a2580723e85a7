"""Hostile numbers for the entry points that take a count or a number of seconds from the app
(:mod:`aiwatch.amounts`): what each must refuse, and the other kinds of numbers it must record as plain values."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

#: Not a number of seconds from 0 to 1e9: refused.
BAD_SECONDS: list[Any] = [
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
    pytest.param(-0.001, id="negative"),
    pytest.param(10**400, id="10**400"),
    pytest.param(2**53 + 1, id="2**53+1"),
    pytest.param(1.7e9, id="a-unix-timestamp"),
    pytest.param(Decimal("NaN"), id="Decimal-NaN"),
    pytest.param(Decimal("sNaN"), id="Decimal-sNaN"),
    pytest.param(Decimal("1e400"), id="Decimal-1e400"),
    pytest.param(np.float64(math.nan), id="numpy-nan"),
    pytest.param(True, id="True"),
    pytest.param("0.5", id="str"),
    pytest.param(None, id="None"),
]

#: Numbers of seconds of other types than float: recorded, as the float they are.
OTHER_SECONDS: list[Any] = [
    pytest.param(np.float64(0.5), id="numpy-float64"),
    pytest.param(np.float32(0.5), id="numpy-float32"),
    pytest.param(np.int64(1), id="numpy-int64"),
    pytest.param(Decimal("0.5"), id="Decimal"),
    pytest.param(Fraction(1, 2), id="Fraction"),
    pytest.param(2, id="int"),
]

#: What :func:`aiwatch.amounts.period` says after the setting's name when it refuses a value, before the value.
NOT_A_PERIOD = "must be a number of seconds above 0 and at most 1e9, got "

#: Not a count from 0 to 2**53: refused.
BAD_COUNTS: list[Any] = [
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
    pytest.param(-1, id="negative"),
    pytest.param(10**400, id="10**400"),
    pytest.param(2**53 + 1, id="2**53+1"),
    pytest.param(1.5, id="float"),
    pytest.param(np.float64(2.0), id="numpy-float64"),
    pytest.param(Decimal(2), id="Decimal"),
    pytest.param(Fraction(2, 1), id="Fraction"),
    pytest.param(True, id="True"),
    pytest.param("2", id="str"),
    pytest.param(None, id="None"),
]

#: Counts of other types than int: recorded.
OTHER_COUNTS: list[Any] = [
    pytest.param(np.int64(2), id="numpy-int64"),
    pytest.param(np.uint8(2), id="numpy-uint8"),
]


def exact_float(value: Any) -> bool:
    """Whether a sample is a plain float (a numpy float32 added to a sum keeps it float32 for good)."""
    return type(value) is float and math.isfinite(value)
