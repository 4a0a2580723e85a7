"""A prediction log's rows made an equal-chance sample of the traffic again, for drift: thinning by ``sample_rate``.

:class:`~aiwatch.feedback.PredictionLog` keeps requests with different chances (5 % of them, but every slow or
failed one) and writes each kept row's chance in its ``sample_rate`` column. Read one row one vote, such a log is
mostly slow requests (10 % of the traffic slow, all of them kept: 69 % of the rows), and drift compares the
reference with the slow requests' inputs. Thinning keeps each row with chance ``min_rate / sample_rate``
(``min_rate``: the smallest rate among the rows compared), so every request served was kept with the same chance
``min_rate`` and the rows kept are an equal-chance sample of the traffic: bin counts, category counts and the
KS / Wasserstein sample all come from them, so every test is exactly the unweighted one on a smaller sample.

A row's decision is a function of the seed and of its position in the data
(:func:`~aiwatch.drift.sampling.row_keys` under a seed of its own, not the KS sample's: the same keys would keep
the rows with small keys of the often-kept requests, and the sample, the smallest keys, would favour them), so
files read in chunks on one machine and partitions counted on a cluster keep the same rows. A ``sample_rate``
that is no chance in (0, 1] (null, NaN, 0, negative, above 1, text) counts as 1, as the quality metrics read it
(:mod:`aiwatch.feedback.outcomes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aiwatch.drift.columns import FloatArray, NullableInts, object_column, to_float_counting
from aiwatch.drift.sampling import row_keys

#: The prediction log's column of each row's keep chance (:class:`~aiwatch.feedback.SamplingPolicy`).
SAMPLE_RATE = "sample_rate"

#: Mixed into the sample seed for the thinning's keys (an odd constant, SHA-256's first: no small multiple of
#: row_keys' step, so the two key streams do not meet on shifted rows).
_SALT = 0x6A09E667F3BCC909


def effective_rates(values: Any) -> tuple[FloatArray, int]:
    """Each row's keep chance (1 where ``sample_rate`` is no chance in (0, 1]), and how many were not."""
    arr, _ = to_float_counting(values)
    with np.errstate(invalid="ignore"):
        usable = (arr > 0.0) & (arr <= 1.0)
    bad = int(usable.size - np.count_nonzero(usable))
    return (arr if not bad else np.where(usable, arr, 1.0)), bad


RateBounds = tuple[float, float] | None


def rate_bounds(values: Any) -> RateBounds:
    """The smallest and the largest keep chance of some rows (None for no row): what decides the thinning."""
    rates, _ = effective_rates(values)
    return (float(rates.min()), float(rates.max())) if rates.size else None


def merge_bounds(a: RateBounds, b: RateBounds) -> RateBounds:
    if a is None or b is None:
        return a if b is None else b
    return min(a[0], b[0]), max(a[1], b[1])


@dataclass
class Thinning:
    """Keep each row with chance ``min_rate / its rate``; counts what it read and kept."""

    min_rate: float
    seed: int
    rows: int = 0
    kept: int = 0
    not_rates: int = 0

    def keep(self, values: Any, start: int) -> npt.NDArray[np.bool_]:
        """Which of rows ``start ..`` (their ``sample_rate`` values) are kept; counted."""
        rates, bad = effective_rates(values)
        with np.errstate(divide="ignore"):
            kept = row_keys(self.seed, start, rates.size) < self.min_rate / rates  # 1.0 exactly at min_rate: all
        self.rows += int(rates.size)
        self.kept += int(np.count_nonzero(kept))
        self.not_rates += bad
        return kept

    def counts(self) -> tuple[int, int, int]:
        return self.rows, self.kept, self.not_rates

    def add_counts(self, counts: tuple[int, int, int]) -> None:
        self.rows += counts[0]
        self.kept += counts[1]
        self.not_rates += counts[2]

    def fresh(self) -> Thinning:
        """The same decisions, counts at zero (a partition's)."""
        return Thinning(self.min_rate, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"column": SAMPLE_RATE, "min_rate": self.min_rate, "rows": self.rows, "kept": self.kept,
                "not_rates": self.not_rates}


def describe(thinned: dict[str, Any], doing: str = "compared") -> str:
    """One line for an operator of a report's ``sample_rate_thinning`` (:meth:`Thinning.to_dict`): what was
    ``doing`` (compared, profiled) and why."""
    bad = thinned.get("not_rates") or 0
    note = f"; {bad} rows whose {SAMPLE_RATE} is no chance in (0, 1] counted as 1" if bad else ""
    return (f"prediction log sampling: {doing} {thinned['kept']} of {thinned['rows']} rows, each kept with chance "
            f"{thinned['min_rate']:.4g} / its {SAMPLE_RATE}, so that every request counts as often as it was "
            f"served (the log keeps some requests, such as slow or failed ones, more often){note}; --no-reweight "
            f"reads every row")


def thinning(bounds: RateBounds, seed: int) -> Thinning | None:
    """The thinning of rows whose keep chances span ``bounds`` (:func:`rate_bounds`); None when they are all
    equal (every row would be kept: nothing to do). ``seed``: the sample keys' seed
    (:func:`~aiwatch.drift.sampling.key_seed`)."""
    if bounds is None or bounds[0] == bounds[1]:
        return None
    return Thinning(bounds[0], (seed ^ _SALT) % 2**64)


def thinning_of(columns: Iterable[Any], seed: int) -> Thinning | None:
    """:func:`thinning` of the ``sample_rate`` values of some chunks (the first pass)."""
    bounds: RateBounds = None
    for values in columns:
        bounds = merge_bounds(bounds, rate_bounds(values))
    return thinning(bounds, seed)


def take(values: Any, kept: npt.NDArray[np.bool_]) -> Any:
    """The kept rows of one chunk's column (a numpy array, :class:`NullableInts`, or any sequence)."""
    if isinstance(values, NullableInts):
        return NullableInts(values.values[kept], values.missing[kept])
    if isinstance(values, np.ndarray):
        return values[kept]
    return object_column(values)[kept]


class ThinnedChunk(dict[str, Any]):
    """The rows a thinning kept of one chunk, and ``kept``: which of the chunk's rows they are, so that a
    :class:`~aiwatch.drift.builder.ProfileBuilder` gives each the sample key of its position in the data."""

    kept: npt.NDArray[np.bool_]


def thinned_chunks(chunks: Iterable[Mapping[str, Any]], thinned: Thinning | None, *, start: int = 0,
                   keep_rate: bool = True) -> Iterator[Mapping[str, Any]]:
    """``chunks`` (rows numbered from ``start``), each cut to the rows ``thinned`` keeps (a :class:`ThinnedChunk`;
    a chunk without a ``sample_rate`` column, or every chunk when ``thinned`` is None, as it is). ``keep_rate``:
    leave the ``sample_rate`` column in the chunks (it is a column asked for), else drop it."""
    rows = start
    for chunk in chunks:
        if thinned is None or SAMPLE_RATE not in chunk:
            yield chunk
            continue
        kept = thinned.keep(chunk[SAMPLE_RATE], rows)
        rows += int(kept.size)
        out = ThinnedChunk({name: take(values, kept) for name, values in chunk.items()
                            if keep_rate or name != SAMPLE_RATE})
        out.kept = kept
        yield out
