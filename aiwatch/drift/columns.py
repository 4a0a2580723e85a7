"""Raw columns: how values are typed, coerced, and told apart as valid, missing or wrong-typed.

Every drift path reads values through these rules, so a value that is missing for the profile builder is missing
for the streaming monitor and for the batch comparison too:

* a **numerical** value is an int or float (Python or numpy, not bool); None, NaN and ±inf are missing; anything
  else (strings, bools, lists...) is wrong-typed (:func:`to_float`, :func:`to_float_counting`);
* a **categorical** value is read as a string (:func:`category_key`); None and non-finite floats are missing
  (:func:`is_missing`); values that cannot be a category (lists, dicts...) are wrong-typed;
* a pandas extension dtype (nullable ``Int64``, ``boolean``, ``string``, Arrow-backed ``int64[pyarrow]``...) is
  read as its numpy counterpart, a missing value as missing (:func:`extension_column`); an integer column with a
  missing value (pandas or Arrow) as :class:`NullableInts`, its ints and where they are missing;
* pandas' and numpy's missing markers (``pd.NA``, which a nullable ``string``, ``boolean`` or ``Int64`` column holds
  where a value is missing, ``pd.NaT``, numpy's ``NaT``) are missing in either kind of feature.

Column types are inferred with Evidently's rules (:func:`infer_kind`); :func:`distinct_counts` counts a column's
distinct values.

    >>> to_float_counting([1, 2.5, None, "x"])
    (array([1. , 2.5, nan, nan]), 1)
    >>> category_key(3.0), category_key(True), category_key([1])
    ('3', 'True', None)
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from aiwatch._optional import require
from aiwatch.drift.errors import ProfileError
from aiwatch.floats import finite_or_infinite

FloatArray = npt.NDArray[np.float64]
#: Evidently's limit: an integer column with at most this many distinct values is categorical.
INTEGER_CARDINALITY_LIMIT = 10


# ---------------------------------------------------------------------------------------------------------------
# type inference (Evidently 0.7's evidently.core.datasets.infer_column_type, on numpy arrays and Python values)


def infer_kind(values: Any) -> str:
    """``numerical``, ``categorical``, ``text``, ``datetime`` or ``unknown``, with Evidently's column-type rules.

    float -> numerical; integer -> categorical with at most 10 distinct values, else numerical; bool (with or
    without missing values) and a pandas category Series -> categorical; strings -> text when more than half of the
    non-missing values are distinct, else categorical; datetimes (with a timezone or not, Python ``datetime`` and
    ``date`` objects too) -> datetime; bools with ints -> categorical when the ints alone would be (aiwatch's rule:
    Evidently types such an object column unknown). Plain Python lists are first given the dtype pandas would give
    them, but for ints with None, read as a nullable ``Int64`` column is (:func:`python_column`). (A profile reads a
    category column's values first, :func:`extension_column`, so there it is typed by its values.)

    >>> infer_kind([1.5, 2.0]), infer_kind([1, 2, 3]), infer_kind(list(range(50))), infer_kind(["a", "a", "a", "b"])
    ('numerical', 'categorical', 'numerical', 'categorical')
    """
    return infer_kind_counting(values)[0]


def infer_kind_counting(values: Any) -> tuple[str, Counter[Any] | None]:
    """:func:`infer_kind`, and the column's :func:`distinct_counts` when telling text from categories counted them
    (``None`` otherwise), so that a builder does not count the column twice."""
    if isinstance(values, NullableInts):  # typed as its object column of Python ints and None is
        if values.missing.all():
            return "unknown", None
        distinct = len(np.unique(values.values[~values.missing]))
        return ("categorical" if distinct <= INTEGER_CARDINALITY_LIMIT else "numerical"), None
    dtype_name = str(getattr(values, "dtype", ""))
    if not dtype_name:
        values = python_column(values)
        dtype_name = str(values.dtype)
    if dtype_name.startswith("float"):
        return "numerical", None
    if dtype_name.startswith(("int", "uint", "Int", "UInt")):
        distinct = len(np.unique(np.asarray(values)[~isna(values)]))
        return ("categorical" if distinct <= INTEGER_CARDINALITY_LIMIT else "numerical"), None
    if dtype_name in ("bool", "boolean", "category"):
        return "categorical", None
    if dtype_name.startswith("datetime"):
        return "datetime", None
    if dtype_name in ("string", "str", "object") or dtype_name.startswith("<U"):
        items = object_column(values)
        first = next((v for v in items if not is_missing(v)), None)
        last = next((v for v in items[::-1] if not is_missing(v)), None)
        if first is None:
            return "unknown", None
        if isinstance(first, str) and isinstance(last, str):
            try:
                counts = distinct_counts(items)
            except Exception:  # a value that cannot be hashed (a list among the strings): counted by category
                counts = _counts_by_category(items)
            present = [v for v in counts if not is_missing(v)]
            n_present = sum(counts[v] for v in present)
            return ("text" if len(present) > 0.5 * n_present else "categorical"), counts
        if isinstance(first, (bool, np.bool_)) and _bools_only(items):  # a bool column with None or pd.NA in it
            return "categorical", None
        if isinstance(first, _DATETIMES) and _datetimes_only(items):  # Python datetimes, with a timezone or not
            return "datetime", None
        return _numbers_among_text(items), None
    return "unknown", None


def _bools_only(items: npt.NDArray[Any]) -> bool:
    """Whether every present value of an object column is a bool (Python's or numpy's)."""
    return all(type(v) is bool or isinstance(v, np.bool_) for v in items.tolist() if not is_missing(v))


#: The values of a datetime column held as objects: Python's datetimes and dates (pandas' Timestamp is a datetime),
#: numpy's datetime64.
_DATETIMES = (date, np.datetime64)


def _datetimes_only(items: npt.NDArray[Any]) -> bool:
    """Whether every present value of an object column is a datetime or a date (:data:`_DATETIMES`)."""
    return all(isinstance(v, _DATETIMES) for v in items.tolist() if not is_missing(v))


def _numbers_among_text(items: npt.NDArray[Any]) -> str:
    """The kind of a column that holds numbers and something else (a CSV column of numbers with an "unknown" in
    it, as :func:`~aiwatch.drift.files.csv_column` reads it): the kind its numbers would have alone (ints: by their
    distinct count; any float: numerical), when more than half of its present values are numbers (Python's or
    numpy's ints and floats, not durations); else ``unknown``. Bools and ints alone are categorical when the ints
    would be (bools are; numpy makes such a list ints, so a numpy array of them was categorical where a list with a
    None in it was unknown)."""
    present = [v for v in items.tolist() if not is_missing(v)]
    numbers = [v for v in present if type(v) is float or type(v) is int or _plain_numpy_number(type(v))]
    if not numbers:
        return "unknown"
    # each pass once: a nullable Int64 column with a gap comes here
    ints = all(type(v) is int or isinstance(v, np.integer) for v in numbers)
    few_ints = ints and len(set(numbers)) <= INTEGER_CARDINALITY_LIMIT
    if few_ints and len(numbers) < len(present) and _ints_and_bools(present):
        return "categorical"
    if len(numbers) <= 0.5 * len(present):
        return "unknown"
    if ints:
        return "categorical" if few_ints else "numerical"
    return "numerical"


def _ints_and_bools(present: list[Any]) -> bool:
    """Whether every one of the present values is an int or a bool (Python's or numpy's)."""
    return all(type(v) is int or type(v) is bool or isinstance(v, np.bool_)
               or (isinstance(v, np.integer) and not isinstance(v, np.timedelta64)) for v in present)


def present_examples(values: Any, examples: int = 3) -> list[Any]:
    """Up to ``examples`` distinct present values of a column (in order of first appearance), for a message."""
    return _distinct((v for v in object_column(values).tolist() if not is_missing(v)), examples)


def _distinct(values: Iterable[Any], examples: int) -> list[Any]:
    """The first ``examples`` distinct ``values`` (:func:`_same`), in order of first appearance."""
    shown: list[Any] = []
    for v in values:
        if not any(_same(v, s) for s in shown):
            shown.append(v)
            if len(shown) == examples:
                break
    return shown


def _same(a: Any, b: Any) -> bool:
    """Whether two values are one value of one type (never raising: an array's ``==`` is an array)."""
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # a value's own __eq__ or __bool__ may raise anything
        return False


def python_column(values: Iterable[Any]) -> npt.NDArray[Any]:
    """A list as pandas would type it: all ints -> int64 (Python ints in an object column when one is past int64),
    ints/floats/None -> float64, bools -> bool, else object; except ints with None, which are read as a nullable
    ``Int64`` column is (:func:`extension_column`): Python ints and None in an object column, typed by its ints.
    pandas makes them floats, so that one None made a list of a few ints numerical where the same column in any
    other container is categorical."""
    items = list(values)
    present = [v for v in items if v is not None]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(items):
        return np.asarray(items, dtype=bool)
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                  and not isinstance(v, _NUMPY_TIMES) for v in present)
    if present and numeric:
        if all(isinstance(v, (int, np.integer)) for v in present):
            try:
                ints = np.asarray(present, dtype=np.int64)
            except OverflowError:  # an int past int64: Python ints in an object column, as an object array holds them
                return np.fromiter((None if v is None else int(v) for v in items), dtype=object, count=len(items))
            return ints if len(present) == len(items) else _ints_with_none(items, ints)
        try:
            return np.asarray([math.nan if v is None else v for v in items], dtype=np.float64)
        except OverflowError:  # an int past float64 too: infinite there (a missing value)
            return np.asarray([math.nan if v is None else to_float(v) for v in items], dtype=np.float64)
    return object_column(items)


def _ints_with_none(items: list[Any], ints: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """The object column of ``items`` (ints and None) with the present ones as the Python ints of ``ints``."""
    out = np.full(len(items), None, dtype=object)
    out[np.fromiter((v is not None for v in items), dtype=bool, count=len(items))] = ints.astype(object)
    return out


def extension_column(values: Any) -> Any:
    """A pandas column (Series or array) of an extension dtype as a numpy column typed as the dtype's numpy
    counterpart is (pandas' nullable ``Int64`` / ``Float64`` / ``boolean`` / ``string``, ``category``, Arrow-backed
    ``int64[pyarrow]``, ``double[pyarrow]``, ``bool[pyarrow]``, ``string[pyarrow]``...); any other column as it is.

    Without a missing value, the counterpart's own array (``Int64`` -> int64, ``boolean`` -> bool); with one, floats
    with NaN for a float dtype, its ints and where they are missing for an integer dtype (:class:`NullableInts`,
    read as its Python ints with None where one is missing), otherwise its Python values with None where one is
    missing. ``to_numpy()`` made an
    integer column with a missing value floats, so one missing value changed its kind (:func:`infer_kind`)."""
    if _is_arrow(values):
        return arrow_values(values)
    dtype = getattr(values, "dtype", None)
    if dtype is None or isinstance(dtype, np.dtype) or not hasattr(values, "to_numpy") or not hasattr(values, "isna"):
        return values
    categorical = getattr(values, "array", values)  # a Series' values: a Categorical for a category column
    if hasattr(categorical, "codes") and hasattr(categorical, "categories"):
        return _category_values(categorical)
    if getattr(dtype, "storage", None) == "pyarrow" and hasattr(categorical, "__arrow_array__"):
        # strings kept by Arrow (string[pyarrow], pandas 3's str): read from their Arrow array, one Python object
        # per category (arrow_values), where to_numpy() makes one per value; the same values, None where missing
        arrow = categorical.__arrow_array__()
        if _is_arrow(arrow) and is_text_type(arrow.type):
            return arrow_values(arrow)
    counterpart = getattr(dtype, "numpy_dtype", None)
    if getattr(dtype, "kind", None) == "M":  # a timezone-aware or Arrow-backed datetime column
        return _utc_datetimes(values, counterpart)
    if isinstance(counterpart, np.dtype) and counterpart.kind in "biuf":
        return _nullable_numbers(values, counterpart)
    if not isinstance(counterpart, np.dtype) or counterpart.kind in "OU":  # strings, categories, decimals...
        return values.to_numpy(dtype=object, na_value=None)
    return values.to_numpy()  # datetimes, durations: numpy's own types, NaT where missing


def _utc_datetimes(values: Any, counterpart: Any) -> Any:
    """A pandas datetime column of an extension dtype (``datetime64[ns, UTC]``, ``timestamp[us, tz=UTC][pyarrow]``)
    as numpy ``datetime64`` in UTC, NaT where missing, as pyarrow reads such a Parquet column; ``to_numpy()`` gave
    Timestamp objects, which were typed ``unknown``."""
    unit = counterpart if isinstance(counterpart, np.dtype) else f"datetime64[{getattr(values.dtype, 'unit', 'ns')}]"
    try:
        # NaT of the column's own unit: a unitless NaT is deprecated from NumPy 2.5 on, to become an error
        own_unit: Any = np.datetime_data(np.dtype(unit))[0]  # "ns", "us"...: numpy's stubs want a literal
        return values.to_numpy(dtype=unit, na_value=np.datetime64("NaT", own_unit))
    except (TypeError, ValueError):  # a datetime dtype that converts otherwise: its values as they are
        return values.to_numpy()


def _is_arrow(values: Any) -> bool:
    """Whether ``values`` is a pyarrow Array or ChunkedArray (by type: pyarrow need not be imported)."""
    return type(values).__module__.startswith("pyarrow") and hasattr(values, "null_count") \
        and hasattr(values, "to_numpy")


def arrow_values(column: Any) -> Any:
    """A pyarrow column (Array or ChunkedArray, from a Parquet file or handed over in memory) as numpy, as
    ``to_numpy`` gives it, except an integer column with a null, which that makes floats (so numerical, where the
    same column without a null is typed by its ints): its ints and where they are null (:class:`NullableInts`,
    read as its Python ints with None where a value is null). A
    dictionary-encoded column (what ``pa.array`` makes of a pandas category) is read as its values."""
    pa = require("pyarrow", "data")
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if is_text_type(column.type) and _few_distinct(column):
        try:
            return _deduplicated_strings(column)
        # past what one array holds (2 GiB of text in a string column), or a text type this pyarrow cannot encode
        except pa.ArrowException:
            pass
    if not column.null_count or not pa.types.is_integer(column.type):
        return column.to_numpy(zero_copy_only=False)
    return NullableInts(column.fill_null(0).to_numpy(zero_copy_only=False),
                        np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool))


def is_text_type(kind: Any) -> bool:
    """Whether an Arrow type is text: ``string``, ``large_string`` or ``string_view``. Parquet has one text type;
    a file written from a ``string_view`` column (Polars' strings, pyarrow's ``string_view()``) keeps that in its
    Arrow schema, and pyarrow (16 and later) reads it back as ``string_view``."""
    types = require("pyarrow", "data").types
    is_view = getattr(types, "is_string_view", None)  # pyarrow >= 16; the data extra allows 14
    return bool(types.is_string(kind) or types.is_large_string(kind) or (is_view is not None and is_view(kind)))


#: A text column whose first :data:`PROBE` values hold at most this share of distinct ones is read through a
#: dictionary of its distinct strings (:func:`_deduplicated_strings`).
_FEW_DISTINCT_SHARE = 0.25


def _few_distinct(column: Any) -> bool:
    head = column.slice(0, PROBE).to_pylist()
    return len(set(head)) <= _FEW_DISTINCT_SHARE * len(head)


def _deduplicated_strings(column: Any) -> npt.NDArray[Any]:
    """A pyarrow string column as ``to_numpy`` gives it (its strings, None where null), with one Python object per
    distinct string, as pandas reads a CSV: :func:`distinct_counts` then counts its categories by reference, where
    ``to_numpy``'s one object per value had every value hashed (about 40 against 215 ms to read and count a
    column of 1M values and 8 categories). Made by Arrow's dictionary encoding, which costs several times
    ``to_numpy`` on a column of mostly distinct strings: :func:`arrow_values` reads those as they are."""
    whole = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    encoded = whole.dictionary_encode()
    strings = encoded.dictionary.to_numpy(zero_copy_only=False)
    distinct = np.empty(len(strings) + 1, dtype=object)
    distinct[:-1] = strings
    distinct[-1] = None  # index -1: a null
    out: npt.NDArray[Any] = distinct.take(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False))
    return out


def _category_values(categorical: Any) -> npt.NDArray[Any]:
    """A pandas Categorical's values as Python objects, None where missing. Its ``to_numpy()`` makes integer
    categories floats once a value is missing (a float's kind is numerical, an int column's depends on its values)."""
    codes = np.asarray(categorical.codes)
    categories = np.asarray(categorical.categories.to_numpy(dtype=object), dtype=object)
    out = np.full(codes.size, None, dtype=object)
    present = codes >= 0
    out[present] = categories[codes[present]]
    return out


def _nullable_numbers(values: Any, counterpart: np.dtype[Any]) -> Any:
    """:func:`extension_column` of a bool, int or float extension dtype."""
    missing = np.asarray(values.isna(), dtype=bool)
    if not missing.any():
        return values.to_numpy(dtype=counterpart)
    if counterpart.kind == "f":
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    filled = values.to_numpy(dtype=counterpart, na_value=counterpart.type(0))
    if counterpart.kind in "iu":
        return NullableInts(filled, missing)
    out = filled.astype(object)
    out[missing] = None  # Python bools and None: several times faster than to_numpy(dtype=object)
    return out


class NullableInts:
    """An integer column with missing values (pandas' nullable ``Int64``..., an Arrow integer column with a null):
    its ints (any value where one is missing) and where they are missing. It stands for the object column of its
    Python ints with None where a value is missing (:meth:`objects`, what ``np.asarray`` of it gives), and reads
    as that column does everywhere, but the hot paths read the ints themselves: the kind (:func:`infer_kind`), the
    floats of a numerical column (:func:`to_float_flagging`: numpy's int -> float64 rounds as ``float()`` of a
    Python int does, to nearest, ties to even) and a categorical column's counts (:func:`distinct_counts`), without
    a Python object per value."""

    def __init__(self, values: npt.NDArray[Any], missing: npt.NDArray[np.bool_]) -> None:
        self.values, self.missing = values, missing

    def __len__(self) -> int:
        return int(self.values.size)

    def __repr__(self) -> str:
        return f"NullableInts({self.objects()!r})"

    def objects(self) -> npt.NDArray[Any]:
        """The object column this stands for: Python ints, None where a value is missing."""
        out = self.values.astype(object)
        out[self.missing] = None
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        out = self.objects()
        return out if dtype is None or np.dtype(dtype) == out.dtype else out.astype(dtype)

    def __iter__(self) -> Any:
        return iter(self.objects().tolist())

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return NullableInts(self.values[key], self.missing[key])
        return self.objects()[key]

    def floats(self) -> FloatArray:
        """float64 of the ints, NaN where a value is missing."""
        out = self.values.astype(np.float64)
        out[self.missing] = math.nan
        return out

    def counts(self) -> Counter[Any]:
        """:func:`distinct_counts` of :meth:`objects`: each distinct Python int's count, and None's, in the order of
        each one's first occurrence (the order a Counter of the objects meets them)."""
        present = np.flatnonzero(~self.missing)
        ints = self.values[present]
        if not ints.size:
            return Counter({None: int(self.values.size)} if self.values.size else {})
        distinct, sizes = np.unique(ints, return_counts=True)  # return_index would sort: several times slower
        seen = present[_first_occurrences(ints, distinct)]
        order = np.argsort(seen)
        found: list[tuple[Any, int]] = list(zip(distinct[order].tolist(), sizes[order].tolist(), strict=True))
        if present.size < self.values.size:
            at = int(np.searchsorted(seen[order], np.argmax(self.missing)))
            found.insert(at, (None, int(self.values.size - present.size)))
        return Counter(dict(found))


def object_column(values: Any) -> npt.NDArray[Any]:
    """``values`` as a 1-D object array, one element per value: ``np.asarray(values, dtype=object)`` reads a list or
    tuple among them as one more dimension (a column ``[[]]`` has no element at all) or refuses unequal ones."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        if values.dtype.kind in "mM":  # its scalars: astype(object) makes datetime64[ns] ints (nanoseconds)
            return np.fromiter(values, dtype=object, count=values.size)
        return values if values.dtype == object else values.astype(object)
    if not isinstance(values, list):
        arr = np.asarray(values, dtype=object)  # a Series or an Arrow array: its own conversion to Python values
        if arr.ndim == 1:
            return arr
        values = list(values)
    return np.fromiter(values, dtype=object, count=len(values))


# ---------------------------------------------------------------------------------------------------------------
# distinct values

def distinct_counts(values: Any) -> Counter[Any]:
    """How many times each distinct value occurs in a column (an unhashable value raises ``TypeError``, as a
    ``Counter`` of the values does).

    A numpy object array holds references, and one object is one value: its references are grouped first, as
    integers (one sort), and only the distinct objects are then counted by value. Columns read from files hold one
    object per distinct string (pandas and pyarrow deduplicate them), so this is several times faster than hashing
    every value; a column of mostly distinct objects is counted value by value. Numeric arrays (an integer column
    with few values is categorical) are counted by ``np.unique``."""
    if isinstance(values, NullableInts):
        return values.counts()
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.size:
        if values.dtype.kind == "O" and values.size >= _BY_REFERENCE_MIN:
            found = _count_by_reference(values)
            if found is not None:
                return found
        elif values.dtype.kind in "biuf":
            distinct, counts = np.unique(values, return_counts=True)
            return Counter(dict(zip(distinct.tolist(), counts.tolist(), strict=True)))
    items = values if isinstance(values, list) else object_column(values).tolist()
    return Counter(items)


def category_counts(values: Any, counts: Counter[Any] | None = None) -> Counter[Any]:
    """:func:`distinct_counts` (or ``counts``, already that) for reading each key's category: equal values of
    different types whose categories differ (``False == 0``, ``True == Decimal(1)``) are counted apart. A Counter
    keeps the first of them met, so ``[False, 0]`` counted both as ``False``, while one at a time they are the
    categories "False" and "0". Only a column holding such types (bools, or numbers other than int and float) is
    read again: its values are counted by category, as their category string, ``None`` when missing, or
    :data:`NO_CATEGORY`; so is a column holding a value that cannot be hashed (a list, a dict, a ``__hash__`` that
    raises), which is no category."""
    if isinstance(values, NullableInts):  # ints and None: no two types to mix up
        return values.counts() if counts is None else counts
    if counts is None:
        try:
            counts = distinct_counts(values)
        except Exception:  # a Counter of the values raises what a value's __hash__ (or __eq__) raises
            return _counts_by_category(values)
    counted = counts
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":  # one dtype: no two types to mix up
        return counted
    if all(type(k) is str or is_missing(k) for k in counted):  # a string equals strings only; None, NaN nothing
        return counted
    items = values if isinstance(values, list) else object_column(values).tolist()
    types = set(map(type, items))
    if types <= _BOOLS_APART or all(t in _SAME_CATEGORY_WHEN_EQUAL or _plain_numpy_number(t) for t in types):
        return counted
    return _counts_by_category(items)


def _counts_by_category(values: Any) -> Counter[Any]:
    """How many values of a column have each category string, ``None`` for the missing ones, :data:`NO_CATEGORY`
    for the others (no value is hashed)."""
    items = values if isinstance(values, list) else object_column(values).tolist()
    return Counter(map(_category_or_marker, items))


def _plain_numpy_number(t: type) -> bool:
    """Whether ``t`` is a numpy integer or float type that is not a duration (a duration equals its count of
    units, yet has no category)."""
    return issubclass(t, (np.integer, np.floating)) and not issubclass(t, _NUMPY_TIMES)


def _category_or_marker(value: Any) -> Any:
    if is_missing(value):
        return None
    key = category_key(value)
    return NO_CATEGORY if key is None else key


#: Types whose equal values have one category (1 and 1.0 are both "1"), where :func:`category_counts` need not
#: tell them apart.
_SAME_CATEGORY_WHEN_EQUAL = frozenset({str, int, float, type(None)})

#: Types among which a bool equals only a bool (of either type, one category): what a boolean column with a missing
#: value holds (:func:`extension_column`), counted right by :func:`distinct_counts`.
_BOOLS_APART = frozenset({bool, np.bool_, str, type(None)})


class _NoCategory:
    """A value that has no category (:func:`category_key` is None) and is not missing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_CATEGORY"


#: What :func:`category_counts` counts a value with no category under.
NO_CATEGORY = _NoCategory()


#: Below this many values a Counter of the values is as fast as grouping references.
_BY_REFERENCE_MIN = 1024


def _count_by_reference(values: npt.NDArray[Any]) -> Counter[Any] | None:
    """:func:`distinct_counts` of an object array through its references; ``None`` when most objects are distinct."""
    try:  # an object array's buffer holds its references (CPython: the objects' addresses), read without a copy
        references = np.frombuffer(np.ascontiguousarray(values), dtype=np.intp)
    except (TypeError, ValueError, BufferError):  # a numpy that refuses: count by value
        return None
    if references.size != values.size:
        return None
    found = _count_few_references(references)
    if found is None:
        found = _count_references_sorted(references)
        if found is None:
            return None
    first_seen, sizes = found
    # in the order of each object's first occurrence, as a Counter of the values would meet them: of equal keys
    # (1, 1.0, True) the first one met is the one kept
    by_first = np.argsort(first_seen)
    out: Counter[Any] = Counter()
    for obj, n in zip(values[first_seen[by_first]].tolist(), sizes[by_first].tolist(), strict=True):
        out[obj] += n  # equal objects that are not the same object meet here
    return out


#: Up to this many distinct references in a column's first values, each is counted by one comparison pass over the
#: column (cheaper than sorting the references while there are few).
_FEW_REFERENCES = 16
#: How many of a column's first values are probed for how distinct they are, before a pass over the whole column.
PROBE = 4096


def head_more_distinct(values: npt.NDArray[Any], limit: int) -> bool:
    """Whether the first :data:`PROBE` values hold more than ``limit`` distinct ones: the cheap probe before a full
    sort or pass (a column of few distinct values shows them early; one that passes is not few anyway)."""
    return bool(np.unique(values[:PROBE]).size > limit)


def _count_few_references(references: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] \
        | None:
    """Each distinct reference's first occurrence and count, when the first values hold at most
    :data:`_FEW_REFERENCES` distinct ones and the rest of the column holds no other; ``None`` otherwise."""
    distinct, first_seen = np.unique(references[:PROBE], return_index=True)
    if distinct.size > _FEW_REFERENCES:
        return None
    equal = np.empty(references.size, dtype=bool)
    sizes = np.array([np.count_nonzero(np.equal(references, r, out=equal)) for r in distinct.tolist()],
                     dtype=np.intp)
    if int(sizes.sum()) != references.size:  # a reference past the probe that is none of these
        return None
    return first_seen.astype(np.intp, copy=False), sizes


def _count_references_sorted(references: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp],
                                                                        npt.NDArray[np.intp]] | None:
    """Each distinct reference's first occurrence and count, by one sort of the references; ``None`` when more than
    a quarter of them are distinct."""
    grouped = np.sort(references)
    first = np.empty(grouped.size, dtype=bool)
    first[0] = True
    np.not_equal(grouped[1:], grouped[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if starts.size > references.size // 4:
        return None
    return _first_occurrences(references, grouped[starts]), np.diff(starts, append=grouped.size)


def _first_occurrences(references: npt.NDArray[Any], distinct: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Index of the first occurrence of each of the (sorted) ``distinct`` references (or ints). Usually every distinct
    object turns up within the first few thousand values, so growing prefixes are searched before the whole
    column (an argsort, several times the cost of the plain sort that found ``distinct``)."""
    size = PROBE
    while size < references.size:
        found, index = np.unique(references[:size], return_index=True)
        if found.size == distinct.size:  # the same sorted set: the prefix holds every distinct reference
            return index
        size *= 8
    order = np.argsort(references)
    starts = np.searchsorted(references[order], distinct)
    return np.minimum.reduceat(order, starts)


# ---------------------------------------------------------------------------------------------------------------
# missing values and coercion


def is_missing(v: Any) -> bool:
    """None, NaN or ±inf (a Python or numpy float of any width), and pandas' and numpy's missing markers: ``pd.NA``
    (what a nullable ``string``, ``boolean`` or ``Int64`` column holds where a value is missing), ``pd.NaT`` and
    numpy's ``NaT``."""
    if v is None:
        return True
    t = type(v)
    if t is str or t is int or t is bool:  # the common values: one type test
        return False
    if t is float:
        return not math.isfinite(v)
    return _missing_other(v)


def _missing_other(v: Any) -> bool:
    """:func:`is_missing` of a value that is not None, a str, an int, a bool or a float."""
    if isinstance(v, (float, np.floating)):
        return not math.isfinite(v)
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(v))
    # by type, not by value: pd.NA compares to nothing (``bool(pd.NA == x)`` raises); and from the pandas already
    # imported, not by the types' module names, which pandas 3 changed (pandas.api.typing): a value of its types
    # exists only once pandas is imported, and aiwatch does not import it (it is not on the request path)
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return False
    t = type(v)
    return t is type(getattr(pandas, "NA", None)) or t is type(getattr(pandas, "NaT", None))


def isna(values: Any) -> npt.NDArray[np.bool_]:
    """:func:`is_missing` of every value of a column."""
    if isinstance(values, NullableInts):
        return values.missing.copy()
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return np.asarray(~np.isfinite(arr), dtype=bool)
    if arr.dtype.kind == "O":
        return np.fromiter((is_missing(v) for v in arr.tolist()), dtype=bool, count=arr.size)
    return np.zeros(arr.shape, dtype=bool)


def finite_values(arr: FloatArray) -> FloatArray:
    """The finite values of a float array: ``arr`` itself when its extremes are finite (a NaN makes them NaN), else
    a copy without the others.

    >>> finite_values(np.array([2.0, np.nan, -np.inf, 1.0])).tolist()
    [2.0, 1.0]
    """
    if arr.size == 0 or (arr.min() > -np.inf and arr.max() < np.inf):
        return arr
    return arr[np.isfinite(arr)]


def finite_of_sorted(ordered: FloatArray) -> FloatArray:
    """The finite values of a sorted float array, a view of it: a sort puts -inf first and +inf then NaN last, so
    its two ends tell whether every value is finite (``ordered`` itself), and otherwise the finite values are its
    middle.

    >>> finite_of_sorted(np.sort(np.array([2.0, np.nan, -np.inf, 1.0, np.inf]))).tolist()
    [1.0, 2.0]
    """
    if ordered.size == 0 or (ordered[0] > -np.inf and ordered[-1] < np.inf):
        return ordered
    start = int(np.searchsorted(ordered, -np.inf, side="right"))
    stop = int(np.searchsorted(ordered, np.inf, side="left"))  # NaN sorts after +inf
    return ordered[start:stop]


class SortBuffer:
    """Sorted copies of columns made one after the other in one reused buffer: a new 8 MB array per 1M-value
    column costs more in page faults than its sort (the allocator returns such blocks to the system on free)."""

    def __init__(self) -> None:
        self._buffer = np.empty(0)

    def sorted_copy(self, values: FloatArray) -> FloatArray:
        """``np.sort(values)``, in the buffer: valid until the next call."""
        if self._buffer.size < values.size:
            self._buffer = np.empty(values.size)
        ordered = self._buffer[: values.size]
        np.copyto(ordered, values)
        ordered.sort()
        return ordered


def to_float(v: Any) -> float | None:
    """The float of one numerical value (NaN for a missing marker: None, ``pd.NA``, ``NaT``; non-finite for a
    missing number), None when ``v`` is wrong-typed.

    >>> to_float(2), to_float(None), to_float(True), to_float("1.5")
    (2.0, nan, None, None)
    """
    if v is None:
        return math.nan
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, _NUMPY_TIMES):  # np.timedelta64 is a numpy integer: not a number here, as in a column of them
        return math.nan if np.isnat(v) else None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return finite_or_infinite(v)
    return math.nan if _missing_other(v) else None


#: numpy's durations and datetimes, neither numbers nor categories (``np.timedelta64`` subclasses
#: ``np.signedinteger``): their NaT is missing, any other value wrong-typed, as in a column of them.
_NUMPY_TIMES = (np.timedelta64, np.datetime64)


def to_float_counting(values: Any) -> tuple[FloatArray, int]:
    """float64 array of ``values`` (:func:`to_float` of each); wrong-typed entries become NaN and are counted."""
    arr, wrong_typed = to_float_flagging(values)
    return arr, 0 if wrong_typed is None else int(np.count_nonzero(wrong_typed))


def to_float_flagging(values: Any) -> tuple[FloatArray, npt.NDArray[np.bool_] | None]:
    """:func:`to_float_counting`, with where the wrong-typed entries are (``None`` when there are none), for a
    caller that keeps the values and must tell a wrong-typed value from a missing one."""
    if isinstance(values, NullableInts):
        return values.floats(), None
    arr = values if isinstance(values, np.ndarray) else object_column(values)
    if arr.dtype.kind == "O" and arr.size and _plain_numbers(arr):
        with contextlib.suppress(OverflowError):  # an int past float64: converted one by one below
            arr = arr.astype(np.float64)
    if arr.dtype.kind in "fiu":
        with np.errstate(over="ignore"):  # a longdouble past float64's range: infinite, so missing, as 10**400 is
            return arr.astype(np.float64, copy=False), None
    if arr.dtype.kind in "mM":  # datetimes, durations: not numbers (tolist() gave datetime64[ns] as ints), NaT missing
        wrong = ~np.isnat(arr.ravel())
        return np.full(arr.size, math.nan), wrong if wrong.any() else None
    out = np.empty(arr.size, dtype=np.float64)
    wrong_typed: npt.NDArray[np.bool_] | None = None
    for i, v in enumerate(arr.ravel().tolist()):
        f = to_float(v)
        if f is None:
            out[i] = math.nan
            if wrong_typed is None:
                wrong_typed = np.zeros(arr.size, dtype=np.bool_)
            wrong_typed[i] = True
        else:
            out[i] = f
    return out, wrong_typed


#: The types of an object column that numpy converts to float64 as :func:`to_float` does (None: NaN): what a
#: nullable integer column with a missing value holds (:func:`extension_column`).
_PLAIN_NUMBERS = frozenset({float, int, type(None)})


def _plain_numbers(arr: npt.NDArray[Any]) -> bool:
    """Whether an object array holds only :data:`_PLAIN_NUMBERS` (its first value tells most other columns apart
    before every value's type is read)."""
    items = arr.tolist()
    return type(items[0]) in _PLAIN_NUMBERS and set(map(type, items)) <= _PLAIN_NUMBERS


def fitting_none(kind: str, values: Any, examples: int = 3) -> list[Any] | None:
    """A few of the (distinct) values of a column given the ``kind`` ``numerical`` or ``categorical`` when values
    are present and none of them is of that kind (each would be wrong-typed: a profile of them is empty); ``None``
    when one fits or none is present."""
    if isinstance(values, NullableInts):  # an int is either kind's value
        return None
    if kind == "numerical":
        arr, wrong_typed = to_float_flagging(values)
        if wrong_typed is None or bool(np.isfinite(arr).any()):
            return None
        found = object_column(values)[wrong_typed].tolist()
    else:
        column = values if isinstance(values, np.ndarray) else object_column(values)
        if column.dtype.kind in "biufU":  # not "S": numpy bytes are no category (category_key)
            return None
        found = []
        for v in object_column(column).tolist():
            if not is_missing(v):
                if category_key(v) is not None:
                    return None
                found.append(v)
    return _distinct(found, examples) or None


def describe_values(values: Sequence[Any]) -> str:
    """``text: 'a', 'b'`` (the kinds of the values, then the values) for an error message."""
    def kind(v: Any) -> str:
        if isinstance(v, str):
            return "text"
        if isinstance(v, (np.datetime64, datetime)):
            return "datetime"
        return "bool" if isinstance(v, (bool, np.bool_)) else type(v).__name__

    kinds = ", ".join(dict.fromkeys(map(kind, values)))
    return f"{kinds}: " + ", ".join(map(_shown, values))


def _shown(value: Any) -> str:
    """A value as an error message shows it: a string's repr, another value's str, else its repr, else its type's
    name (a value's own __str__ and __repr__ may raise)."""
    for show in (repr,) if isinstance(value, str) else (str, repr):
        try:
            return show(value)
        except Exception:
            continue
    return f"<{type(value).__name__}>"


def category_key(value: Any) -> str | None:
    """The category string of a live or reference value (None when it cannot be a category).

    Integral floats read as ints (a CSV column 1, 2, NaN is float in pandas but categories "1", "2")."""
    if isinstance(value, str):  # a subclass's own str (its __hash__ or __eq__ may raise, or be another's)
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, _NUMPY_TIMES):  # a duration is a numpy integer: not its nanoseconds
        return None
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return None


# ---------------------------------------------------------------------------------------------------------------
# tables


def _one_column_per_name(pairs: list[tuple[Any, Any]], values: bool = True) -> dict[str, Any]:
    """The (key, column) pairs as a dict by ``str(key)``, refusing a name given twice and, when ``values``, a
    column that is one value (a string, bytes, a mapping, a number, None) or a numpy column that is not 1-D."""
    out: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for key, column in pairs:
        name = str(key)
        if name in keys:
            first = keys[name]
            raise ProfileError(f"column {name!r} is given twice" if first == key else
                               f"columns {first!r} and {key!r} are both named {name!r} (names are read as text)")
        # a string, bytes or a mapping iterates, as its characters, small ints or keys: one row's value passed
        # where its column belongs
        if values and (isinstance(column, (str, bytes, bytearray, Mapping)) or not isinstance(column, Iterable)):
            raise ProfileError(f"column {name!r} is a {type(column).__name__}, not a column of values (one per "
                               "row): pass a list or an array")
        if isinstance(column, np.ndarray) and column.ndim != 1:
            raise ProfileError(f"column {name!r} has shape {column.shape}: a column holds one value per row "
                               "(one dimension)")
        keys[name], out[name] = key, frame_column(column) if values else column
    return out


def frame_column(column: Any) -> Any:
    """A DataFrame's column, or a column handed over in a mapping or a table, as a numpy array when it is a pandas
    Series of a numpy dtype (read as a DataFrame's: a duration Series was read as ``pd.Timedelta`` objects where the
    DataFrame's column gave numpy durations), :func:`extension_column` of any other."""
    if isinstance(getattr(column, "dtype", None), np.dtype) and hasattr(column, "to_numpy"):
        return column.to_numpy()
    return extension_column(column)


def check_column_names(names: Iterable[Any]) -> None:
    """Refuse, by name, a column name given twice or two that are one as text (``0`` and ``"0"``): names are read
    as text."""
    _one_column_per_name([(name, None) for name in names], values=False)


def columns_of(data: Any) -> dict[str, Any]:
    """Column name -> values for a mapping of columns, a pandas DataFrame, a pyarrow Table or RecordBatch, a list of
    row dicts or a 2-D numpy array (rows x features, columns named ``"0"``, ``"1"``...); each column as
    :func:`extension_column` reads it (an integer column with a missing value: a :class:`NullableInts`, which
    ``np.asarray`` turns into its Python ints and None, not an ndarray). Two columns with one name
    (``1`` and ``"1"``, a DataFrame's or a table's repeated label), a numpy column of more than one dimension and a
    column that is one value (a string, bytes, a mapping, a number, None) are refused by name."""
    if isinstance(data, Mapping):
        return _one_column_per_name(list(data.items()))
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ProfileError(f"a numpy array must be 2-D (rows x features), got shape {data.shape}")
        return {str(i): data[:, i] for i in range(data.shape[1])}
    if type(data).__module__.startswith("pyarrow") and hasattr(data, "column_names"):  # a Table or RecordBatch
        return _one_column_per_name(list(zip(data.column_names, data.columns, strict=True)))
    if hasattr(data, "columns") and hasattr(data, "__getitem__"):  # pandas DataFrame (duck-typed)
        check_column_names(data.columns)  # first: data[c] of a repeated label is a frame
        return {str(c): frame_column(data[c]) for c in data.columns}
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        names: dict[str, None] = {}
        for row in data:
            if not isinstance(row, Mapping):
                raise ProfileError(f"rows must be dicts of feature -> value, got {type(row).__name__}")
            names.update(dict.fromkeys(row))
        return {str(n): python_column([row.get(n) for row in data]) for n in names}
    raise ProfileError(f"cannot read columns from {type(data).__name__}: pass a dict of columns, a list of row "
                       "dicts or a pandas DataFrame")
