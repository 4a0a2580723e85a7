"""Evidently DataDriftPreset HTML reports (needs ``pip install "aiwatch[evidently]"``)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from aiwatch._optional import require

log = logging.getLogger("aiwatch.drift")


def evidently_html(reference: Any, current: Any, path: str | os.PathLike[str],
                   columns: list[str] | None = None, *, kinds: Mapping[str, str] | None = None) -> None:
    """Write Evidently's DataDriftPreset report for two pandas DataFrames (or dicts of columns) to ``path``.

    ``kinds`` (``{"x": "numerical", "c": "categorical"}``, as a profile's features have them) types those columns
    for Evidently; without it each column of the reference is typed as aiwatch's profile types it (Evidently's
    rules, plus pandas' nullable ``Int64`` and an ``object`` column of ints and ``None``, which Evidently types
    unknown and leaves out: with no column left it divided by zero). Columns of no numerical or categorical kind
    (text, datetimes, all missing) are left out, as aiwatch's comparison leaves them out; when none is left, a
    ``ValueError`` says so. A column with no value in either frame (every value missing, infinite or wrong-typed),
    which Evidently refuses ("An empty column ... was provided"), is left out with a warning of the
    ``aiwatch.drift`` logger (a ``ValueError`` when no other column is left). A numerical column is handed over as
    the float64 values aiwatch's numerical tests read (missing and wrong-typed values NaN); a categorical one as its
    categories, the text the profile reads each value as (:func:`category_texts`: ints mixed with text, which failed
    in Evidently, are text alike in both frames, and an int past 2**53 is its exact digits, where a frame with a
    missing value made it a float).

    Evidently needs the reference *data* (not a profile) and holds both frames in memory."""
    evidently = require("evidently", "evidently")
    presets = require("evidently.presets", "evidently")
    pd = require("pandas", "evidently")
    ref = reference if isinstance(reference, pd.DataFrame) else pd.DataFrame(reference)
    cur = current if isinstance(current, pd.DataFrame) else pd.DataFrame(current)
    if columns is not None:
        ref, cur = ref[columns], cur[columns]
    # kinds are keyed by str names (a profile's, profile_kinds'): a frame's int names (DataFrame(ndarray)) too; two
    # names that are one as text (0 and "0") are refused first, as a profile refuses them
    from aiwatch.drift.columns import check_column_names

    for frame in (ref, cur):
        check_column_names(frame.columns)
    ref, cur = (frame.rename(columns=str) for frame in (ref, cur))
    for side, frame in (("reference", ref), ("current data", cur)):
        if not len(frame):  # Evidently's own error for it names a column, as if one were at fault
            raise ValueError(f"the {side} has no rows to report")
    if kinds is None:
        kinds = profile_kinds(ref)
    typed = [c for c in ref.columns if c in kinds and c in cur.columns]
    numerical = [c for c in typed if kinds[c] == "numerical"]
    categorical = [c for c in typed if kinds[c] == "categorical"]
    if not numerical and not categorical:
        left_out = ", ".join(f"{c!r} {_why_left_out(c, kinds, cur.columns)}" for c in list(ref.columns)[:20])
        raise ValueError("no numerical or categorical column to report" + (f" ({left_out})" if left_out else ""))
    ref, cur = (_typed(pd, frame[numerical + categorical], numerical) for frame in (ref, cur))
    # a column with no value in a frame (every value missing, infinite or wrong-typed) failed the whole report
    # in Evidently ("An empty column 'c' was provided for drift calculation in the current dataset"), where
    # aiwatch's comparison reports that feature insufficient_data and tests the others: it is left out, and said so
    sides = {c: [side for side, frame in (("reference", ref), ("current data", cur)) if not frame[c].notna().any()]
             for c in cur.columns}
    empty = {c: found for c, found in sides.items() if found}
    if empty:
        said = ", ".join(f"{c!r} (no value in the {' or the '.join(found)})" for c, found in empty.items())
        if len(empty) == len(numerical) + len(categorical):
            raise ValueError(f"no column with values to report: {said}")
        log.warning("aiwatch: the Evidently report leaves out %s: every value missing or wrong-typed (aiwatch "
                    "reports such a feature insufficient_data)", said)
        numerical, categorical = ([c for c in names if c not in empty] for names in (numerical, categorical))
        ref, cur = ref[numerical + categorical], cur[numerical + categorical]
    definition = evidently.DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    # No warnings.catch_warnings() here: it changes the process's warning filters, so a host app's other threads
    # could lose their warnings while the report runs (it is not thread-safe before Python 3.14). The frames are
    # typed so that Evidently's replace(inf, NaN) has nothing to downcast (pandas' FutureWarning); a category the
    # reference never had gives a chi-square p-value of 0 through a division by zero in scipy, which np.errstate
    # (this thread's floating-point state only) keeps quiet.
    with np.errstate(divide="ignore"):
        snapshot = evidently.Report([presets.DataDriftPreset()]).run(
            evidently.Dataset.from_pandas(cur, data_definition=definition),
            evidently.Dataset.from_pandas(ref, data_definition=definition))
    snapshot.save_html(os.fspath(path))


def _why_left_out(name: str, kinds: Mapping[str, str], current: Any) -> str:
    """Why the reference's column ``name`` is not in the report: absent from ``current``, of no kind, or its
    kind (neither numerical nor categorical)."""
    if name not in current:
        return "not in the current data"
    return kinds.get(name, "no kind given")


def profile_kinds(frame: Any) -> dict[str, str]:
    """Each column's kind as :class:`~aiwatch.drift.profile.ReferenceProfile` types a reference column:
    ``numerical``, ``categorical``, or what left it out (``text``, ``datetime``, ``unknown``)."""
    from aiwatch.drift.columns import columns_of, infer_kind

    return {str(name): infer_kind(values) for name, values in columns_of(frame).items()}


def _typed(pd: Any, frame: Any, numerical: list[str]) -> Any:
    """``frame``'s columns as aiwatch's tests read them: a numerical one as its float64 values (a missing, infinite
    or wrong-typed value, such as a string or a bool, NaN), a categorical one as its categories, the text the
    profile reads each value as (:func:`category_texts`), in both frames alike. Its values as they were failed in
    Evidently where ints and text are mixed (a Z-test sorted them: ``TypeError``)."""
    from aiwatch.drift.columns import frame_column, to_float_counting

    columns: dict[str, Any] = {}
    for name in frame.columns:
        values = frame_column(frame[name])
        if name in numerical:  # infinite is missing for aiwatch's tests too
            floats = to_float_counting(values)[0]
            columns[name] = np.where(np.isinf(floats), np.nan, floats)
        else:
            columns[name] = pd.Series(category_texts(values), index=frame.index, dtype=object)
    return pd.DataFrame(columns, index=frame.index)


def category_texts(values: Any) -> Any:
    """A categorical column as the profile reads it: each value's category, its text
    (:func:`~aiwatch.drift.columns.category_key`: ``1`` and ``1.0`` are ``"1"``, ``True`` is ``"True"``, an int
    past 2**53 its exact digits), None where it is missing or has no category (a list), as an object array.

    >>> category_texts([1, 1.0, "x", None, float("nan"), True, [2]]).tolist()
    ['1', '1', 'x', None, None, 'True', None]
    """
    from aiwatch.drift.columns import NullableInts, category_key, is_missing, object_column

    if isinstance(values, NullableInts):
        out = values.values.astype(str).astype(object)
        out[values.missing] = None
        return out
    if isinstance(values, np.ndarray) and (values.dtype.kind == "U" or (values.dtype.kind in "iu" and
                                                                       _mostly_distinct(values))):
        return values.astype(str).astype(object)  # the same text, without a call per value
    # pd.factorize refuses a buffer that is not native (a big-endian file's column): the loop below reads it
    if isinstance(values, np.ndarray) and values.dtype.isnative and (values.dtype.kind in "biu" or
                                                                      values.dtype in _FLOATS):
        return _distinct_texts(values, category_key)
    items = object_column(values).tolist()
    out = np.empty(len(items), dtype=object)  # None where nothing is written
    memo: dict[Any, str | None] = {}
    for k, v in enumerate(items):
        if type(v) is str:
            key: Any = v
        elif v is None or (isinstance(v, (float, np.floating)) and v != v):  # NaN: each one would be a new key
            continue
        else:
            key = (type(v), v)  # False == 0, yet their categories differ
        try:
            text = memo[key]
        except KeyError:
            text = memo[key] = None if is_missing(v) else category_key(v)
        except Exception:  # unhashable, or a __hash__ / __eq__ that raises
            text = None if is_missing(v) else category_key(v)
        out[k] = text
    return out


#: The float dtypes whose values ``float()`` reads exactly (a longdouble past float64's range is missing, not inf).
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _mostly_distinct(values: Any, probe: int = 10_000) -> bool:
    """Whether more than a tenth of ``values``' first ``probe`` are distinct (ids, hashes): then ``astype(str)``
    is faster than :func:`_distinct_texts` (1M distinct int64: 0.29 s, against 0.42 s)."""
    head = values[:probe]
    return len(np.unique(head)) * 10 > len(head)


def _distinct_texts(values: Any, category_key: Callable[[Any], str | None]) -> Any:
    """:func:`category_texts` of a numpy array of bools, ints or floats: each distinct value's text found once
    (``pd.factorize``), then taken for every value; NaN and ±inf (missing) are None. About 10x faster than a
    Python call (or ``astype(str)``) per value where few values are distinct."""
    pd = require("pandas", "evidently")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # NaN: code -1, the None appended last
    if values.dtype.kind in "biu":  # exact digits (an int past 2**53 too), True / False
        texts = uniques.astype(str).astype(object)
    else:
        texts = np.array([category_key(u) if math.isfinite(u) else None for u in uniques.tolist()], dtype=object)
    return np.append(texts, np.array([None], dtype=object))[codes]
