"""Building pandas test data that holds exactly the values a test names."""

from __future__ import annotations

from typing import Any

import numpy as np


def exact_array(values: list[Any], dtype: str) -> Any:
    """``pd.array(values, dtype=dtype)`` holding exactly ``values`` (None: missing). pandas 2 reads a list of ints
    through ``np.asarray``, which makes ints below and past 2**63 float64, and checks only the largest one for a lost
    digit: ``pd.array([2**53 + 1, 2**63], dtype="UInt64")`` holds 2**53, 2**63 (the list, the dict-of-lists path,
    still 2**53 + 1). From an object array its ints are cast one by one, exactly."""
    import pandas as pd

    if dtype in ("Int64", "UInt64"):
        out = pd.array(np.array(values, dtype=object), dtype=dtype)
        assert [None if v is pd.NA else v for v in out.tolist()] == values
        return out
    return pd.array(values, dtype=dtype)
