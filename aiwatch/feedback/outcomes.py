"""Realised model quality: delayed labels joined to the prediction log, per time window.

Labels arrive late (a purchase, a chargeback, a human review): a CSV or Parquet file of ``request_id -> actual
outcome``. Joined on ``request_id`` to the log's predictions, they give each window's realised quality:
accuracy, precision and recall for a classifier (binary: ``positive`` is the positive class), MAE and RMSE for a
regressor. :func:`export_quality` sets ``aiwatch_model_quality{model, metric}`` (the latest window per model) and
``aiwatch_model_quality_objective`` (the bound an alert compares it with); ``aiwatch quality`` does the same from
the command line and writes them to a node_exporter textfile.

Only the log's ``request_id``, ``timestamp``, ``model`` (and with ``by_version`` ``model_version``) and prediction
columns are read (``--since/--until`` pushed down); the join runs in Arrow. Requests that were logged but not
(yet) labelled are left out of the window's quality and counted apart (``labelled`` / ``logged``), and so are
labelled requests whose prediction cannot be scored (``unscored``): a missing prediction, or a NaN one, and for a
regressor one that is infinite or not a number. A
regressor's predictions or outcomes held as text (a log whose files disagree on the column's type is read as text)
are read as numbers, each that is one, as Python's ``float()`` reads it, so a double comes back bit for bit. A
classifier's bools, and the text true / false, are the classes 1 and 0; in text, numbers compare as numbers. A
request logged twice under one model and id counts once (its latest row), and logged rows without a finite
timestamp are left out: :func:`quality_report` counts both. Each labelled request counts in the metrics as the
``1 / sample_rate`` requests it stands for (the log's ``sample_rate``; 1 where that is no probability above 0), so
that a sampling policy keeping more of the slow and failed requests does not make their quality the model's.
``by_version=True`` splits each model's windows by ``model_version`` (a canary beside the stable version;
:func:`latest_per_version`); the gauges stay per model.

    >>> import numpy as np
    >>> classifier_metrics(np.array([1., 1., 0., 0.]), np.array([1., 0., 0., 1.]), positive=1.0)
    {'accuracy': 0.5, 'precision': 0.5, 'recall': 0.5}
    >>> regressor_metrics(np.array([1., 2.]), np.array([2., 4.]))
    {'mae': 1.5, 'rmse': 1.5811388300841898}
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from aiwatch._optional import require
from aiwatch.amounts import period
from aiwatch.drift.columns import is_text_type
from aiwatch.drift.datasets import open_dataset, read_as_text, time_filter
from aiwatch.drift.files import numbers_in_text
from aiwatch.flags import flag
from aiwatch.metrics import Metrics

Kind = Literal["classifier", "regressor"]
#: How a labels CSV's text column reads pyarrow's missing-value markers: as missing labels, or as classes.
NaLabels = Literal["missing", "class"]
#: Metrics where higher is better (an alert fires below the objective); the others fire above it.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall"})
METRICS: dict[str, tuple[str, ...]] = {"classifier": ("accuracy", "precision", "recall"),
                                       "regressor": ("mae", "rmse")}


@dataclass
class WindowQuality:
    """One model's realised quality over ``[start, end)`` (Unix seconds): ``labelled`` of the ``logged`` requests
    have a label, and ``unscored`` of those a prediction that cannot be scored (left out of the metrics).
    ``model_version``: ``None`` for a window of the whole model; with ``quality_report(..., by_version=True)`` the
    version whose requests it holds (``""``: an empty, null or missing ``model_version``)."""

    model: str
    start: float
    end: float
    logged: int
    labelled: int
    metrics: dict[str, float] = field(default_factory=dict)
    unscored: int = 0
    model_version: str | None = None

    @property
    def scored(self) -> int:
        """The labelled requests the metrics rest on."""
        return self.labelled - self.unscored

    def to_dict(self) -> dict[str, Any]:
        """The window as JSON-ready values; ``model_version`` only for a window of one version."""
        version = {} if self.model_version is None else {"model_version": self.model_version}
        return {"model": self.model, **version, "start": self.start, "end": self.end, "logged": self.logged,
                "labelled": self.labelled, "unscored": self.unscored,
                "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}}


def classifier_metrics(predicted: npt.NDArray[Any], actual: npt.NDArray[Any], positive: Any,
                       weights: npt.NDArray[np.float64] | None = None) -> dict[str, float]:
    """Accuracy, and precision / recall of the ``positive`` class (NaN when undefined: nothing predicted or
    actually positive). ``weights``: how many requests each one stands for (``1 / sample_rate``; default 1 each).

    >>> classifier_metrics(np.array([1., 0.]), np.array([1., 1.]), positive=1.0, weights=np.array([1., 3.]))
    {'accuracy': 0.25, 'precision': 1.0, 'recall': 0.25}
    """
    hit = predicted == actual
    predicted_pos, actual_pos = predicted == positive, actual == positive
    if weights is None:
        true_pos = float(np.sum(predicted_pos & actual_pos))
        n_pred, n_act = float(np.sum(predicted_pos)), float(np.sum(actual_pos))
        return {"accuracy": float(np.mean(hit)) if hit.size else math.nan,
                "precision": true_pos / n_pred if n_pred else math.nan,
                "recall": true_pos / n_act if n_act else math.nan}
    total = float(np.sum(weights))
    true_pos = float(np.sum(weights[predicted_pos & actual_pos]))
    n_pred, n_act = float(np.sum(weights[predicted_pos])), float(np.sum(weights[actual_pos]))
    return {"accuracy": float(np.sum(weights[hit])) / total if hit.size and total else math.nan,
            "precision": true_pos / n_pred if n_pred else math.nan,
            "recall": true_pos / n_act if n_act else math.nan}


def regressor_metrics(predicted: npt.NDArray[np.float64], actual: npt.NDArray[np.float64],
                      weights: npt.NDArray[np.float64] | None = None) -> dict[str, float]:
    """Mean absolute error and root mean squared error; ``weights`` as for :func:`classifier_metrics`."""
    if predicted.size == 0:
        return {"mae": math.nan, "rmse": math.nan}
    error = predicted.astype(np.float64) - actual.astype(np.float64)
    magnitude = np.abs(error)
    # Squares overflow from ~1e154 and sums near 1e308: errors scaled by the largest keep both means finite
    # wherever the true value is.
    scale = float(np.max(magnitude))
    if scale == 0.0 or not math.isfinite(scale):
        return {"mae": scale, "rmse": scale}
    relative = magnitude / scale
    return {"mae": scale * float(np.average(relative, weights=weights)),
            "rmse": scale * math.sqrt(float(np.average(relative * relative, weights=weights)))}


def read_labels(path: str | os.PathLike[str], id_column: str = "request_id", outcome_column: str = "outcome", *,
                na_labels: NaLabels = "missing") -> Any:
    """The labels file (``.csv`` or ``.parquet``) as an Arrow table of ``request_id`` and ``outcome``; a request
    labelled twice keeps its last label.

    In a CSV, an empty field is a missing outcome, and so are pyarrow's missing-value markers (``NA``, ``N/A``,
    ``NaN``, ``null``, ``#N/A``...: ``pyarrow.csv.ConvertOptions().null_values``) in a column of numbers or true /
    false. In a column of text they are missing outcomes too with ``na_labels="missing"`` (pandas and R read them
    so; R's ``write.csv`` writes a missing label as ``NA``), classes as written with ``na_labels="class"`` (``NA``:
    Namibia, not applicable). A column of nothing but markers and empty fields holds no label either way, nor does
    a Parquet outcome column of type null; a Parquet file's text is read as written."""
    return read_labels_counting_markers(path, id_column, outcome_column, na_labels=na_labels)[0]


def read_labels_counting_markers(path: str | os.PathLike[str], id_column: str = "request_id",
                                 outcome_column: str = "outcome", *,
                                 na_labels: NaLabels = "missing") -> tuple[Any, int]:
    """:func:`read_labels`' table, and how many of its labels with a request id are missing because their
    outcome, in a CSV column of text, is a missing-value marker (``NA``, ``null``...) that ``na_labels="class"``
    reads as a class (0 with ``na_labels="class"``)."""
    if na_labels not in ("missing", "class"):
        raise ValueError(f"na_labels must be 'missing' or 'class', got {na_labels!r}")
    pa = require("pyarrow", "data")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"labels file {os.fspath(path)!r} does not exist")
    parquet = p.suffix.lower() in (".parquet", ".pq")
    if not parquet and p.suffix.lower() != ".csv":
        raise ValueError(f"cannot read labels {os.fspath(path)!r}: expected a .csv or .parquet file")
    try:
        names = _label_file_columns(p, parquet)
        missing = [c for c in dict.fromkeys((id_column, outcome_column)) if c not in names]
        if missing:
            raise ValueError(f"labels {os.fspath(path)!r} have no {', '.join(map(repr, missing))} column (its columns: "
                             f"{_shown_names(names)}); name the columns with --id-column and --outcome-column")
        table = require("pyarrow.parquet", "data").read_table(p, columns=[id_column, outcome_column]) \
            if parquet else _read_csv_labels(p, id_column, outcome_column)
        table = table.rename_columns(["request_id", "outcome"]) \
            if table.column_names == [id_column, outcome_column] \
            else table.select([id_column, outcome_column]).rename_columns(["request_id", "outcome"])
        id_type = table.schema.field("request_id").type
        if pa.types.is_dictionary(id_type):  # a pandas categorical's ids
            id_type = id_type.value_type
            table = table.set_column(0, "request_id", table.column("request_id").cast(id_type))
        if pa.types.is_floating(id_type) or pa.types.is_decimal(id_type):
            table = table.set_column(0, "request_id", _whole_number_ids(table.column("request_id"), path, id_column))
        elif not (is_text_type(id_type) or pa.types.is_integer(id_type) or pa.types.is_null(id_type)):
            raise ValueError(f"labels {os.fspath(path)!r}: the id column {id_column!r} is {id_type}; request ids "
                             "must be text or whole numbers")
        table = _null_outcomes_as_text(table)
        markers = 0
        if not parquet:
            table = _last_label_of_each_request(_csv_ids(table, path, id_column))
            table, markers = _missing_text_as_null(table, na_labels)
        else:
            table = _last_label_of_each_request(table)
        return table.cast(
            pa.schema([("request_id", pa.string()), ("outcome", table.schema.field("outcome").type)])), markers
    except pa.ArrowException as exc:  # pyarrow's messages may span lines and need not name the file
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read labels {os.fspath(path)!r}: {detail}") from None


def _whole_number_ids(ids: Any, path: str | os.PathLike[str], id_column: str) -> Any:
    """A float or decimal id column (pandas writes int ids with a gap as float64) as int64, so that ``7.0`` is the
    id ``"7"``; a NaN id is a missing one (null: pandas writes a missing id as NaN). An id that is not a whole number
    (``7.5``, infinity, a float from the first int its type cannot hold on, which stands for several ints: 2**53
    for a double, 2**53 + 1 being read as 2**53; 2**24 for a float32, 2**11 for a float16; or a decimal past int64)
    is an error: it would match no logged request, or the wrong one."""
    ints, bad = _whole_numbers(ids)
    if bad is None:
        return ints
    raise ValueError(f"labels {os.fspath(path)!r}: the id column {id_column!r} is {ids.type} and holds {bad}, "
                     "which is not a request id; a float or decimal id column is read when each id is a whole "
                     f"number (below {_FLOAT_LIMITS_TEXT})")


#: Below these (by a float type's bits) every int has its own float: 2**53 + 1 is stored as the double 2**53,
#: 2**24 + 1 as the float32 2**24, 2**11 + 1 as the float16 2**11.
_FLOAT_EXACT_LIMITS = {16: 2.0 ** 11, 32: 2.0 ** 24, 64: 2.0 ** 53}
_FLOAT_LIMITS_TEXT = "2**53 for a double, 2**24 for a float32, 2**11 for a float16"


def _float_limit(kind: Any) -> float:
    """The bound below which a float of type ``kind`` is an int's exact value (:data:`_FLOAT_EXACT_LIMITS`)."""
    return _FLOAT_EXACT_LIMITS.get(kind.bit_width, 2.0 ** 53)


def _whole_numbers(ids: Any, limit: float | None = None) -> tuple[Any, str | None]:
    """A float or decimal id column as int64 (a NaN id null), and ``None``; or, where an id is not a whole number
    that one type holds exactly (a fraction, infinity, a float from the first int its type cannot hold on: 2**53
    for a double, 2**24 for a float32, 2**11 for a float16, :func:`_float_limit`; a decimal past int64), ``None``
    and that id's text. ``limit``: that bound, where the values were read from floats of a narrower type."""
    pa = require("pyarrow", "data")
    if pa.types.is_decimal(ids.type):
        try:
            return ids.cast(pa.int64()), None  # safe: a fraction or an overflow raises
        except pa.ArrowInvalid:
            return None, "a fraction or a number past int64"
    pc = require("pyarrow.compute", "data")
    if limit is None:
        limit = _float_limit(ids.type)
    ids = ids.cast(pa.float64())  # exact from a float16 or float32
    ids = pc.if_else(pc.is_nan(ids), pa.scalar(None, ids.type), ids)
    values = np.asarray(ids.drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        wrong = ~(np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < limit))
    if not wrong.any():
        return ids.cast(pa.int64()), None
    return None, repr(float(values[np.flatnonzero(wrong)[0]]))


def _ids_read_exactly(dataset: Any) -> tuple[Any, bool]:
    """``dataset``, with its ``request_id`` read as text where its files hold it as ints in some and floats in
    others (Arrow would read them all as double, and refuses an int from 2**53 on, which no double holds exactly)
    or as signed ints in some and unsigned in others (Arrow would read them all as one, and refuses a uint64 past
    int64 or a negative int64), and whether it is: each int is then its digits, each double its text, which
    :func:`_log_request_ids` reads."""
    pa = require("pyarrow", "data")
    index = dataset.schema.get_field_index("request_id")
    if index < 0 or not (pa.types.is_floating(dataset.schema.field(index).type)
                         or pa.types.is_integer(dataset.schema.field(index).type)):
        return dataset, False  # text where any file holds text: read as it is
    if _mixed_numbers(dataset, "request_id") is None:
        return dataset, False
    for fragment in dataset.get_fragments():  # a float32's text (16777216) reads as an int's digits: held here
        found = fragment.physical_schema.get_field_index("request_id")
        kind = fragment.physical_schema.field(found).type if found >= 0 else None
        if kind is not None and pa.types.is_floating(kind) and kind.bit_width < 64:
            bad = _whole_numbers(fragment.to_table(columns=["request_id"]).column(0).combine_chunks())[1]
            if bad is not None:
                _bad_log_id(f"ints in some files and {kind} in others", bad)
    ds = require("pyarrow.dataset", "data")
    schema = dataset.schema.set(index, pa.field("request_id", pa.string()))
    # not replace_schema, which refuses a double read as text; each fragment keeps its partition's values
    return ds.FileSystemDataset(list(dataset.get_fragments()), schema, dataset.format, dataset.filesystem), True


def _mixed_numbers(dataset: Any, name: str) -> str | None:
    """How the log's files hold the column ``name`` where they hold it as more than one kind of number, which one
    type for all cannot hold exactly: ``"ints in some and doubles in others"`` or ``"signed ints in some and
    unsigned in others"``; else ``None``."""
    pa = require("pyarrow", "data")
    kinds = [s.field(i).type for s in (f.physical_schema for f in dataset.get_fragments())
             if (i := s.get_field_index(name)) >= 0]
    ints = [k for k in kinds if pa.types.is_integer(k)]
    if ints and any(pa.types.is_floating(k) for k in kinds):
        return "ints in some and doubles in others"
    if len({pa.types.is_signed_integer(k) for k in ints}) > 1:
        return "signed ints in some and unsigned in others"
    return None


def _float_id_parts(dataset: Any) -> list[Any] | None:
    """Where the log's ``request_id`` is read as text (some file holds it as text) and some files hold it as
    floats: the dataset split into those float files, by float type, each read with its ids as that type, and the
    others, read as text; else ``None``. Read as text, a double id would be Arrow's text of it (``1e+15``, not the
    id ``1000000000000000``); read as a float, it is held to the whole-number rule (:func:`_ids_as_text`)."""
    pa = require("pyarrow", "data")
    ds = require("pyarrow.dataset", "data")
    index = dataset.schema.get_field_index("request_id")
    if index < 0 or not (pa.types.is_string(dataset.schema.field(index).type)
                         or pa.types.is_large_string(dataset.schema.field(index).type)):
        return None
    def float_kind(fragment: Any) -> Any:
        found = fragment.physical_schema.get_field_index("request_id")
        kind = fragment.physical_schema.field(found).type if found >= 0 else None
        return kind if kind is not None and pa.types.is_floating(kind) else None

    # runs of files in their order, not groups by type: a repeated request's tie is broken as stored
    runs = [(kind, list(fragments)) for kind, fragments in itertools.groupby(dataset.get_fragments(), float_kind)]
    if all(kind is None for kind, _ in runs):
        return None
    return [ds.FileSystemDataset(fragments, dataset.schema if kind is None else
                                 dataset.schema.set(index, pa.field("request_id", kind)),
                                 dataset.format, dataset.filesystem) for kind, fragments in runs]


def _ids_as_text(table: Any) -> Any:
    """``table`` (a part of :func:`_float_id_parts`) with its request ids as the text they are matched by
    (:func:`_log_request_ids`)."""
    pa = require("pyarrow", "data")
    index = table.schema.get_field_index("request_id")
    return table.set_column(index, pa.field("request_id", pa.string()),
                            _log_request_ids(table.column("request_id")).cast(pa.string()))


#: An int's text (a log's int ids read as text by :func:`_ids_read_exactly`).
_INT_TEXT = r"^-?[0-9]+$"


def _log_request_ids(ids: Any, ints_and_floats: bool = False) -> Any:
    """The log's request ids as text, as the labels' are (:func:`read_labels`): an int id its digits; a float or
    decimal id (a foreign log's: pandas writes int ids with a gap as float64) its int's digits when it is a whole
    number below 2**53 for a double (2**24 for a float32, 2**11 for a float16; ``7.0`` the id ``7``, ``1e15`` the
    id ``1000000000000000``, not Arrow's text ``1e+15``), a NaN id a missing one; any other (``7.5``, infinity, a
    double from 2**53 on, which stands for several ints) is a ValueError naming the column and the value: it would
    match no label, or the wrong one. ``ints_and_floats``: the ids are text read from files of ints and files of
    floats (:func:`_ids_read_exactly`, which holds a float32 or float16 file's ids to their own bound first, as
    their text may read as an int's digits), so each that is not an int's digits is a double's text, read back as
    that double and held to the same rule."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    kind = str(ids.type)
    if ints_and_floats:
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        is_int = pc.fill_null(pc.match_substring_regex(ids, _INT_TEXT), True)
        floats = pc.filter(ids, pc.invert(is_int))
        if len(floats):
            parsed, bad = _whole_numbers(pa.array([float(v) for v in floats.to_pylist()], type=pa.float64()))
            if bad is not None:
                _bad_log_id("ints in some files and doubles in others", bad)
            ids = pc.replace_with_mask(ids, pc.invert(is_int), parsed.cast(pa.string()))
        return pc.if_else(pc.equal(ids, "-0"), "0", ids)
    if pa.types.is_floating(ids.type) or pa.types.is_decimal(ids.type):
        ids, bad = _whole_numbers(ids)
        if bad is not None:
            _bad_log_id(kind, bad)
    return ids.cast(pa.string())


def _bad_log_id(kind: str, bad: str) -> None:
    raise ValueError(f"the log's 'request_id' column is {kind} and holds {bad}, which is not a request id: a float "
                     "or decimal id is read as its int only when it is a whole number (below 2**53 for a double, "
                     "2**24 for a float32, 2**11 for a float16: from there on a float stands for several ints, "
                     "2**53 + 1 is stored as the double 2**53); log request "
                     "ids as text (ParquetSink does) or ints")


def _scan_error(dataset: Any, columns: list[str], exc: Exception, ids_as_text: bool = False) -> str:
    """The message for a log that Arrow cannot read: the columns its files hold as more than one kind of number
    (ints in some and floats in others, read as double, which refuses an int from 2**53 on; signed ints in some
    and unsigned in others, read as one, which refuses the other's values; :func:`_mixed_numbers`), named, else
    Arrow's first line. ``ids_as_text``: ``request_id`` is read as text (:func:`_ids_read_exactly`), so not it."""
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    mixed = {name: how for name in columns
             if not (ids_as_text and name == "request_id") and (how := _mixed_numbers(dataset, name)) is not None}
    if not mixed:
        return f"cannot read the log: {detail}"
    return (f"cannot read the log's {', '.join(map(repr, mixed))} column: its files hold it as "
            f"{' or '.join(dict.fromkeys(mixed.values()))}, and one type cannot hold every value ({detail}); write "
            "the column with one type in every file (text for ids and classes)")


#: A CSV id written as a whole-number decimal (pandas' ``df.to_csv`` of int ids with a gap writes ``7.0``): its
#: int part, and its sign. Not ``007.0`` (ids with leading zeros are codes) nor ``7.5``.
_WHOLE_DECIMAL = r"^(-?)(0|[1-9][0-9]*)\.0+$"
#: 2**53 in digits: a whole-number decimal from it on may be a double's text, which stands for several ints
#: (pandas writes the float64 of 2**53 + 1 as ``9007199254740992.0``).
_DOUBLE_EXACT_LIMIT = str(2 ** 53)


def _csv_ids(table: Any, path: str | os.PathLike[str], id_column: str) -> Any:
    """A CSV's ids (read as text) with an empty id null (left out and counted by :func:`drop_unusable`) and a
    whole-number decimal (``7.0``, ``7.00``) as its int text (``7``; ``-0.0`` is ``0``), as a Parquet float id
    column's are (:func:`_whole_number_ids`); a whole-number decimal from 2**53 on is an error, as there: it may be
    a double's text, another request's id."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    ids = table.column("request_id")
    whole = pc.fill_null(pc.match_substring_regex(ids, _WHOLE_DECIMAL), False)
    if pc.any(whole).as_py():
        digits = pc.replace_substring_regex(ids, _WHOLE_DECIMAL, "\\2")
        length = pc.utf8_length(digits)
        limit = len(_DOUBLE_EXACT_LIMIT)
        large = pc.and_(whole, pc.or_(pc.greater(length, limit),
                                      pc.and_(pc.equal(length, limit),
                                              pc.greater_equal(digits, _DOUBLE_EXACT_LIMIT))))
        if pc.any(large).as_py():
            bad = pc.filter(ids, large)[0].as_py()
            raise ValueError(f"labels {os.fspath(path)!r}: the id column {id_column!r} holds {bad!r}, which is not "
                             "a request id: a whole-number decimal is read as its int only below 2**53 (from there "
                             "on it may be a double's text, which stands for several ints); write the ids as ints "
                             "or text")
        ints = pc.replace_substring_regex(ids, _WHOLE_DECIMAL, "\\1\\2")
        ids = pc.if_else(whole, pc.if_else(pc.equal(ints, "-0"), "0", ints), ids)
    ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, ids.type), ids)
    return table.set_column(0, "request_id", ids)


def _read_csv_labels(path: Path, id_column: str, outcome_column: str) -> Any:
    """A labels CSV's id (as text) and outcome columns, the outcomes typed by pyarrow: in a column of numbers (or
    true / false) its missing-value markers are missing numbers; a column of text keeps them as written. A column of
    nothing but markers and empty fields, which pyarrow types as nulls, is read again as text: which of them are
    labels is :func:`_missing_text_as_null`'s choice, as in any text column (a day's file of nothing but the class
    ``NA`` under ``na_labels="class"``; under the default, the markers counted)."""
    pa = require("pyarrow", "data")
    csv = require("pyarrow.csv", "data")
    columns = [id_column, outcome_column]
    table = csv.read_csv(path, convert_options=csv.ConvertOptions(include_columns=columns,
                                                                 column_types={id_column: pa.string()}))
    if pa.types.is_null(table.schema.field(outcome_column).type):
        table = csv.read_csv(path, convert_options=csv.ConvertOptions(
            include_columns=columns, column_types={id_column: pa.string(), outcome_column: pa.string()}))
    return table


def _null_outcomes_as_text(table: Any) -> Any:
    """``table`` with an outcome column of type null (a Parquet column of nothing but nulls, a pandas column of
    ``None``) as text nulls, which Arrow's join takes (it refuses a null column) and :func:`drop_unusable` leaves
    out: the run then says no window has enough labels, not Arrow's "Data type null is not supported"."""
    pa = require("pyarrow", "data")
    if "outcome" not in table.column_names or not pa.types.is_null(table.schema.field("outcome").type):
        return table
    return table.set_column(table.schema.get_field_index("outcome"), "outcome", pa.nulls(table.num_rows, pa.string()))


def _missing_text_as_null(table: Any, na_labels: NaLabels) -> tuple[Any, int]:
    """A CSV's text outcomes with an empty field made null (pyarrow reads it as ``""`` in a text column), and with
    ``na_labels="missing"`` each missing-value marker too (``NA``, ``null``...: a label not known yet, left out
    rather than scored as the class ``NA``); and how many markers of a request with an id were made null."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    outcome = table.column("outcome")
    if not is_text_type(outcome.type):
        return table, 0
    empty = pc.equal(outcome, "")
    if na_labels == "class":
        missing, markers = empty, 0
    else:
        # the markers pyarrow reads as missing in a column of numbers, so that "1,0,NA" and "spam,ham,NA" agree
        markers_text = pa.array(require("pyarrow.csv", "data").ConvertOptions().null_values, type=outcome.type)
        marker = pc.and_(pc.is_in(outcome, value_set=markers_text), pc.invert(empty))
        missing = pc.or_(empty, marker)
        markers = pc.sum(pc.and_(marker, pc.is_valid(table.column("request_id")))).as_py() or 0
    return table.set_column(1, "outcome", pc.if_else(missing, pa.scalar(None, outcome.type), outcome)), markers


def _last_label_of_each_request(table: Any) -> Any:
    """``table`` with one row per request id, its last, in the file's order; rows without an id all stay (left out
    and counted by :func:`drop_unusable`). The ids are hashed once in Arrow (a Python dict of 3M ids cost 0.7 GB)."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    encoded = pc.dictionary_encode(table.column("request_id")).combine_chunks()
    if len(encoded.dictionary) + encoded.null_count == table.num_rows:  # no id twice
        return table
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    last = len(codes) - 1 - np.unique(codes[::-1], return_index=True)[1]  # each code's last row
    keep = np.union1d(last[codes[last] >= 0], np.flatnonzero(codes < 0))
    return table.take(pa.array(keep))


def _label_file_columns(path: Path, parquet: bool) -> list[str]:
    """The column names of a labels file, from the Parquet footer or the CSV header."""
    if parquet:
        return list(require("pyarrow.parquet", "data").read_schema(path).names)
    with require("pyarrow.csv", "data").open_csv(path) as reader:
        return list(reader.schema.names)


def _shown_names(names: list[str]) -> str:
    text = ", ".join(names)
    text = text if text.isprintable() else ascii(text)[1:-1]  # a binary file's "header"
    return text if len(text) <= 300 else text[:300] + "..."


def drop_unusable(labels: Any, kind: Kind | None = None) -> tuple[Any, int]:
    """The labels (:func:`read_labels`' table) without those that cannot be scored: no request id, or an outcome
    that is missing, NaN or infinite, or for a ``regressor`` not a number; and how many were left out.

    A regressor's outcomes written as text (one "unknown" makes a CSV reader type the whole column as text, and a
    careless export writes text) are read as numbers, each that is one: that one outcome is left out, not the run."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    if kind == "regressor":
        labels = _outcomes_as_numbers(labels)
    keep = pc.and_(pc.is_valid(labels.column("request_id")), pc.is_valid(labels.column("outcome")))
    outcome_type = labels.schema.field("outcome").type
    if pa.types.is_floating(outcome_type):
        keep = pc.and_(keep, pc.fill_null(pc.is_finite(labels.column("outcome")), False))
    kept = labels.filter(keep)
    return kept, labels.num_rows - kept.num_rows


def _outcomes_as_numbers(labels: Any) -> Any:
    """``labels`` with a text ``outcome`` column as float64, null where a value is not a number."""
    pa = require("pyarrow", "data")
    outcome = labels.column("outcome")
    if not is_text_type(outcome.type):
        return labels
    return labels.set_column(labels.schema.get_field_index("outcome"), "outcome",
                             pa.array(_text_as_numbers(outcome), type=pa.float64(), from_pandas=True))


def _text_as_numbers(text: Any) -> npt.NDArray[np.float64]:
    """An Arrow column of text as float64: each value that is a number the nearest double (Python's ``float()``:
    a double written with ``repr`` comes back bit for bit), NaN for the others ("unknown"; "1e400", which overflows)
    and for missing values."""
    # probe=False: the column is meant to hold numbers, so numbers after a run of text are numbers too
    parsed = numbers_in_text(text.to_numpy(zero_copy_only=False), exact=True, probe=False)
    if parsed.dtype == np.float64:  # numbers and missing values only
        return np.asarray(parsed, dtype=np.float64)
    return np.array([v if isinstance(v, float) else math.nan for v in parsed], dtype=np.float64)


def _as_numbers(values: Any, what: str) -> npt.NDArray[np.float64]:
    """A regressor's predictions or outcomes (an Arrow column) as float64, NaN where a value is missing or not a
    number; ``what`` names them in the error for a column that holds neither numbers nor text."""
    pa = require("pyarrow", "data")
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if is_text_type(values.type):
        return _text_as_numbers(values)
    kind = values.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind) or pa.types.is_null(kind)):
        raise ValueError(f"a regressor's {what} must be numbers, not {kind}")
    # safe=False: an int past 2**53 becomes the nearest double rather than an error
    return np.asarray(values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)


#: How many of the classes seen :attr:`QualityReport.classes` names.
SHOWN_CLASSES = 10


@dataclass
class QualityReport:
    """:func:`quality_report`'s windows, and the logged rows left out before the join: ``duplicates`` (a request
    logged again under the same model and id, whatever its ``model_version``: its latest row is kept) and
    ``untimed`` (a missing or non-finite timestamp: no window). ``positive_found``: for a classifier with labelled
    requests, whether ``positive`` is a class of any of their predictions or outcomes (when not, precision and
    recall are NaN everywhere: a misnamed class); ``None`` otherwise. ``classes``: the first
    :data:`SHOWN_CLASSES` of those classes, sorted, as compared.

    With ``by_version``, ``windows`` are per model and ``model_version``, ``model_windows`` the same log's windows
    per model (what :func:`export_quality`'s gauges, which have no version label, are set from), and
    ``unversioned`` counts the logged rows scored as the version ``""``: an empty ``model_version``
    (``PredictionLog.log``'s default), a null or NaN one, or a log without the column. Without it, ``model_windows`` is
    ``windows`` and ``unversioned`` 0.

    ``label_markers``: given the labels as a path, how many labels were left out because their outcome, in a CSV
    column of text, is a missing-value marker (``NA``, ``null``...: :func:`read_labels_counting_markers`), which
    ``na_labels="class"`` reads as classes; 0 with ``na_labels="class"``, for a Parquet file, and for labels given
    as a table (read already)."""

    windows: list[WindowQuality]
    duplicates: int = 0
    untimed: int = 0
    positive_found: bool | None = None
    classes: list[str] = field(default_factory=list)
    model_windows: list[WindowQuality] = field(default_factory=list)
    unversioned: int = 0
    label_markers: int = 0


def realised_quality(log: str | os.PathLike[str], labels: Any, *, kind: Kind = "classifier",
                     prediction: str = "output", positive: Any = 1, window_seconds: float = 3600.0,
                     since: datetime | None = None, until: datetime | None = None,
                     time_column: str = "timestamp", by_version: bool = False,
                     na_labels: NaLabels = "missing") -> list[WindowQuality]:
    """Quality per model and window of the prediction log ``log`` (a directory or glob of Parquet files) against
    ``labels`` (a path, or the table of :func:`read_labels`), oldest window first: :func:`quality_report`'s
    windows (``by_version``: per model and ``model_version``; ``na_labels``: as there)."""
    return quality_report(log, labels, kind=kind, prediction=prediction, positive=positive,
                          window_seconds=window_seconds, since=since, until=until, time_column=time_column,
                          by_version=by_version, na_labels=na_labels).windows


def quality_report(log: str | os.PathLike[str], labels: Any, *, kind: Kind = "classifier",
                   prediction: str = "output", positive: Any = 1, window_seconds: float = 3600.0,
                   since: datetime | None = None, until: datetime | None = None,
                   time_column: str = "timestamp", by_version: bool = False,
                   na_labels: NaLabels = "missing") -> QualityReport:
    """Quality per model and window (see :func:`realised_quality`), with the logged rows left out counted.

    ``by_version``: windows per model and ``model_version`` (a canary beside the stable version), each window's
    :attr:`WindowQuality.model_version` set; an empty or null version, or a log without the column, is the
    version ``""`` (counted in :attr:`QualityReport.unversioned`). A request logged again under the same model and
    id counts once either way, its latest row, whose version it counts towards.

    A naive ``since`` / ``until`` is UTC, as ``--since/--until`` are. A classifier's ``positive`` class is read
    as the predictions are: ``True`` / ``"true"`` / ``1`` / ``"1"`` are one class (as are ``False`` / ``"false"``
    / ``0`` / ``"0"``) when they are numbers or bools; when predictions and outcomes are both text (compared as
    written), such a ``positive`` names the one class written as that bool or number (:func:`_written_positive`).
    :attr:`QualityReport.positive_found` says whether it named a class at all.

    A Hive partition key that is also a column of the log's files (``model=ranker/`` directories over files with a
    ``model`` column, ``model_version=3/`` over an int ``model_version``): the column in a file is the data and
    wins over the directory's name for that file's rows, nulls included; the directory's value counts only in the
    files without the column, and where the types differ the column is read as text
    (:func:`~aiwatch.drift.datasets.open_dataset`). A ``model`` column that is not text or numbers is a ValueError.

    ``na_labels`` (``"missing"``, the default, or ``"class"``, as ``aiwatch quality --na-labels``): how a labels
    CSV's column of text reads pyarrow's missing-value markers (``NA``, ``null``...; :func:`read_labels`); the
    markers left out are counted in :attr:`QualityReport.label_markers`. It applies to ``labels`` given as a path:
    a table is taken as read (pass the same ``na_labels`` to :func:`read_labels`). Another value is a ValueError
    naming it."""
    if kind not in METRICS:
        raise ValueError(f"kind must be 'classifier' or 'regressor', got {kind!r}")
    if not isinstance(na_labels, str) or na_labels not in ("missing", "class"):
        raise ValueError(f"na_labels must be 'missing' or 'class', got {na_labels!r}")
    window_seconds = period(window_seconds, "window_seconds")
    by_version = flag(by_version, "by_version")
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    # a caller's own table may hold a request twice, which the join would count twice: its last label is kept
    markers = 0
    if isinstance(labels, pa.Table):
        read = _last_label_of_each_request(_null_outcomes_as_text(labels))
    else:
        read, markers = read_labels_counting_markers(labels, na_labels=na_labels)
    table_labels = drop_unusable(read, kind)[0]
    dataset = open_dataset(log)
    missing = [c for c in ("request_id", time_column, prediction) if dataset.schema.get_field_index(c) < 0]
    if missing:
        raise ValueError(f"the log has no {', '.join(map(repr, missing))} column (its columns: "
                         f"{', '.join(dataset.schema.names)}); set the prediction column with --prediction")
    columns = ["request_id", time_column, prediction] + [
        c for c in ("model", "model_version", SAMPLE_RATE) if (c != "model_version" or by_version)
        and c in dataset.schema.names and c not in (time_column, prediction)]
    dataset, ids_as_text = _ids_read_exactly(dataset)
    try:
        rows = time_filter(dataset, since, until, time_column)
        parts = None if ids_as_text else _float_id_parts(dataset)  # ints and floats only: each row's own text
        logged = (dataset.to_table(columns=columns, filter=rows) if parts is None else
                  pa.concat_tables([_ids_as_text(part.to_table(columns=columns, filter=rows)) for part in parts]))
    except pa.ArrowInvalid as exc:  # a column whose files hold more than one kind of number
        raise ValueError(_scan_error(dataset, columns, exc, ids_as_text)) from None
    logged, seconds, untimed = _timed_rows(logged, time_column)
    models = (_models(logged.column("model")) if "model" in logged.column_names
              else np.full(len(seconds), "", dtype=object))
    request_ids = _log_request_ids(logged.column("request_id"), ids_as_text)
    keep = _latest_row_of_each_request(models, request_ids, seconds)
    duplicates = logged.num_rows - len(keep)
    if duplicates:
        logged, seconds, models = logged.take(pa.array(keep)), seconds[keep], models[keep]
        request_ids = request_ids.take(pa.array(keep))
    window = _window_starts(seconds, window_seconds)
    versions: npt.NDArray[Any] | None = None
    unversioned = 0
    if by_version:
        versions = (_versions(logged.column("model_version"), "model_version" in read_as_text(dataset))
                    if "model_version" in logged.column_names else np.full(logged.num_rows, "", dtype=object))
        unversioned = int(np.count_nonzero(versions == ""))
    keyed = pa.table({"request_id": request_ids, "_row": pa.array(np.arange(logged.num_rows))})
    joined = keyed.join(table_labels, "request_id", join_type="inner")
    rows = joined.column("_row").to_numpy()
    outcome = joined.column("outcome")
    predicted = logged.column(prediction).take(pa.array(rows))
    found: bool | None = None
    classes: list[str] = []
    positive_value: Any = None
    if kind == "regressor":
        pred_np = _as_numbers(predicted, f"predictions (the log's {prediction!r} column)")
        act_np = _as_numbers(outcome, "outcomes")
        scored = np.isfinite(pred_np)
    else:
        # a missing or NaN prediction is no class: not a miss, not a match for any outcome
        scored = ~np.asarray(pc.is_null(predicted, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=np.bool_)
        pred_np, act_np, positive_value = _as_classes(predicted, outcome, positive)
        if rows.size:
            found = bool(np.any(pred_np == positive_value) or np.any(act_np == positive_value))
            classes = sorted({_number_text(v) for v in (*pred_np.tolist(), *act_np.tolist())
                              if v is not None and v == v})[:SHOWN_CLASSES]  # v == v: not NaN
    weights = (_weights(logged.column(SAMPLE_RATE)) if SAMPLE_RATE in logged.column_names
               and SAMPLE_RATE not in (time_column, prediction) else None)
    if weights is not None:
        weights = weights[rows]  # each labelled request's, as the predictions taken above

    def windows(by: npt.NDArray[Any] | None) -> list[WindowQuality]:
        return _windows(models, by, window, window_seconds, rows, scored, pred_np, act_np, kind, positive_value,
                        weights)

    per_model = windows(None)
    return QualityReport(windows(versions) if by_version else per_model, duplicates, untimed, found, classes,
                         per_model, unversioned, markers)


#: The log's column of the keep probability each request was sampled with (:class:`~aiwatch.feedback.SamplingPolicy`).
SAMPLE_RATE = "sample_rate"


def _weights(rates: Any) -> npt.NDArray[np.float64] | None:
    """How many requests each logged row stands for: ``1 / sample_rate``, so that the slow and failed requests a
    policy keeps more of count as often as they were served. A rate that is no probability above 0 (a foreign
    log's null, text or 2) counts as 1; ``None`` when every row's does (nothing to weigh)."""
    pa = require("pyarrow", "data")
    kind = rates.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind)):
        return None
    values = np.asarray(rates.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = (values > 0.0) & (values <= 1.0)
        weights = np.where(usable, 1.0 / np.where(usable, values, 1.0), 1.0)
    return None if bool(np.all(weights == 1.0)) else weights


def _window_starts(seconds: npt.NDArray[np.float64], window_seconds: float) -> npt.NDArray[np.float64]:
    """Each timestamp's window start. Where ``seconds / window_seconds`` overflows (a huge timestamp, a tiny
    window) the start is the timestamp itself: no such window is finer than a double's step there."""
    with np.errstate(over="ignore"):
        starts = np.floor(seconds / window_seconds) * window_seconds
    return np.where(np.isfinite(starts), starts, seconds)


#: The text Arrow's cast to string writes for every float NaN (sign and payload aside): in a ``model_version``
#: column read as text because its files disagree on the type, it is no version.
_NAN_TEXT = "nan"


def _versions(column: Any, read_as_text: bool = False) -> npt.NDArray[Any]:
    """A ``model_version`` column as text, ``""`` for a null or NaN one (no version); one that is not text or
    numbers (a list, a struct, bytes that are not UTF-8) is a ValueError naming it. ``read_as_text``: the column
    was read as text because its files disagree on the type (floats in one, text in another), so a float NaN
    arrives as the text ``nan``, which is then no version either: after that cast a text ``nan`` cannot be told
    from a NaN."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    try:
        if pa.types.is_floating(column.type):  # a NaN is no version, not the version "nan"
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        text = pc.fill_null(column.cast(pa.string()), "")
        if read_as_text:
            text = pc.if_else(pc.equal(text, _NAN_TEXT), "", text)
        return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        binary = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
        detail = "with bytes that are not UTF-8 text" if binary else "not text or numbers"
        raise ValueError(f"the log's 'model_version' column is {column.type}, {detail}: --by-version cannot read "
                         "it") from None


def _models(column: Any) -> npt.NDArray[Any]:
    """A ``model`` column as text, ``""`` for a null one; one that is not text or numbers (a list, a struct: a
    foreign log's, or the files' own column under ``model=`` directories, which is the data) is a ValueError
    naming it."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    try:
        return np.asarray(pc.fill_null(column.cast(pa.string()), "").to_numpy(zero_copy_only=False), dtype=object)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise ValueError(f"the log's 'model' column is {column.type}, not text or numbers: the quality is per model "
                         "and cannot read it") from None


def _codes(values: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], int]:
    """Each value's rank among the distinct values (sorted), and how many there are."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(-1), len(distinct)


def _windows(models: npt.NDArray[Any], versions: npt.NDArray[Any] | None, window: npt.NDArray[np.float64],
             window_seconds: float, rows: npt.NDArray[Any], scored: npt.NDArray[np.bool_], pred_np: npt.NDArray[Any],
             act_np: npt.NDArray[Any], kind: Kind, positive_value: Any,
             weights: npt.NDArray[np.float64] | None = None) -> list[WindowQuality]:
    """The windows of each model (and each model's version, given ``versions``), oldest first, then by model and
    version. Logged row ``i`` is in ``window[i]``; the ``j``-th labelled request is logged row ``rows[j]``. The
    rows are grouped by sorting, not by a pass per group, so a version per request (a careless client's) costs
    no more than one version."""
    key, _ = _codes(models)
    if versions is not None:
        version_code, n_versions = _codes(versions)
        key, _ = _codes(key * n_versions + version_code)
    window_code, n_starts = _codes(window)
    groups, first, group_of_row, logged = np.unique(key * n_starts + window_code, return_index=True,
                                                    return_inverse=True, return_counts=True)
    group_of_row = np.asarray(group_of_row, dtype=np.int64).reshape(-1)
    labelled_group = group_of_row[np.asarray(rows, dtype=np.int64)]
    order = np.argsort(labelled_group, kind="stable")  # within a group, in the join's order
    bounds = np.searchsorted(labelled_group[order], np.arange(len(groups) + 1))
    results: list[WindowQuality] = []
    for g, row in enumerate(first.tolist()):
        labelled = order[bounds[g]:bounds[g + 1]]
        used = labelled[scored[labelled]]
        used_weights = None if weights is None else weights[used]
        if kind == "classifier":
            values = classifier_metrics(pred_np[used], act_np[used], positive_value, used_weights)
        else:
            values = regressor_metrics(pred_np[used], act_np[used], used_weights)
        start = float(window[row])
        results.append(WindowQuality(str(models[row]), start, start + window_seconds, int(logged[g]), len(labelled),
                                     values, len(labelled) - len(used),
                                     None if versions is None else str(versions[row])))
    return sorted(results, key=lambda q: (q.start, q.model))  # stable: a model's versions stay in order


def _timed_rows(logged: Any, time_column: str) -> tuple[Any, npt.NDArray[np.float64], int]:
    """The logged rows with a finite timestamp, their Unix seconds, and how many were left out (a foreign log's
    null or NaN timestamps: each NaN would be a window of its own)."""
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    stamps = logged.column(time_column)
    if pa.types.is_timestamp(stamps.type):
        stamps = pc.divide(pc.cast(pc.cast(stamps, pa.timestamp("us", tz="UTC")), pa.int64()), 1_000_000.0)
    seconds = np.asarray(stamps.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    timed = np.isfinite(seconds)
    untimed = int(timed.size - np.count_nonzero(timed))
    if untimed:
        logged, seconds = logged.filter(pa.array(timed)), seconds[timed]
    return logged, seconds, untimed


def _latest_row_of_each_request(models: npt.NDArray[Any], request_ids: Any, seconds: npt.NDArray[np.float64],
                                ) -> npt.NDArray[np.int64]:
    """The rows to keep, in order: for each (model, request id) logged more than once (a retried request logged
    under the caller's id, on whichever ``model_version`` answered it) the latest (by timestamp, then as stored), so
    that its label counts once in its model's quality, which is per model; every row without a request id (it joins
    no label)."""
    pa = require("pyarrow", "data")
    n = len(seconds)
    order = np.lexsort((np.arange(n), seconds))  # by time, then as stored
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    has_id = np.asarray(request_ids.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    keys = pa.table({"model": pa.array(models[has_id], type=pa.string()),
                     "request_id": request_ids.filter(pa.array(has_id)),  # pyarrow < 15: a chunked array's mask
                     "rank": pa.array(rank[has_id])})
    if keys.num_rows == 0:
        return np.arange(n)
    latest = keys.group_by(["model", "request_id"], use_threads=False).aggregate([("rank", "max")])
    if latest.num_rows == keys.num_rows:
        return np.arange(n)
    kept = order[latest.column("rank_max").to_numpy()]
    return np.union1d(kept, np.flatnonzero(~has_id))


def _as_classes(predicted: Any, outcome: Any, positive: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any], Any]:
    """A classifier's predictions, outcomes and positive class, compared as floats when both sides are numbers or
    bools (the log stores ints as doubles; ``True`` is 1, ``False`` 0), else as text: read as numbers
    (:func:`_as_text`) when one side is numbers or bools (a prediction column that drifted to text in one batch
    holds its doubles as ``"1.0"``), as written when both are text (classes are codes: ``"007"`` is not ``"7"``)."""
    pa = require("pyarrow", "data")
    number = _class_number(positive)
    if _is_number_type(predicted.type) and number is not None:
        try:
            return (predicted.cast(pa.float64()).to_numpy(zero_copy_only=False),
                    outcome.cast(pa.float64()).to_numpy(zero_copy_only=False), number)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError):
            pass  # outcomes that are not all numbers ("true", "spam"): compared as text
    if _is_number_type(predicted.type) or _is_number_type(outcome.type):
        return _as_text(predicted.to_pylist()), _as_text(outcome.to_pylist()), _as_text([positive])[0]
    written_predicted, written_outcome = _as_written(predicted.to_pylist()), _as_written(outcome.to_pylist())
    return written_predicted, written_outcome, _written_positive(positive, written_predicted, written_outcome)


def _written_positive(positive: Any, predicted: npt.NDArray[Any], outcome: npt.NDArray[Any]) -> Any:
    """The class ``positive`` names among text classes compared as written: itself when a prediction or an outcome
    is written so; else, for a positive that names the class 1 or 0 (``1``, ``True``, ``"true"``; ``0``,
    ``False``, ``"false"``), the one class present that is written as that bool or number (``"1"``, ``"true"``,
    ``"True"``...), so that ``1``, ``true`` and ``True`` name one class whichever way the classes are written; as
    written when none or several are (``"True"`` and ``"true"`` both present are two classes)."""
    written = _as_written([positive])[0]
    present = {v for v in (*predicted.tolist(), *outcome.tolist()) if v is not None}
    if written in present:
        return written
    number = _class_number(positive)
    if number not in (0.0, 1.0):
        return written
    spelled = [c for c in present if _class_number(c) == number and c.strip().lower() in ("1", "0", "true", "false")]
    return spelled[0] if len(spelled) == 1 else written


def _is_number_type(kind: Any) -> bool:
    types = require("pyarrow", "data").types
    return bool(types.is_floating(kind) or types.is_integer(kind) or types.is_boolean(kind))


#: Text read as a bool class by a classifier, any case: the class 1 or 0, as the bools True and False are.
_BOOL_TEXT = {"true": "1", "false": "0"}


def _class_number(positive: Any) -> float | None:
    """``positive`` as the number of a class compared as numbers (``True`` / ``"true"`` 1, ``False`` /
    ``"false"`` 0), or ``None`` when it is none ("spam")."""
    if isinstance(positive, str):
        positive = _BOOL_TEXT.get(positive.strip().lower(), positive)
    try:
        return float(positive)
    except (TypeError, ValueError, OverflowError):
        return None


def _as_text(values: list[Any]) -> npt.NDArray[Any]:
    """Values compared as text, each in one spelling: numbers, and text that is a number, as the number (``1.0``,
    ``1``, ``"1.0"`` and ``"1"`` are the class ``"1"``: a log whose files disagree on the column's type holds its
    doubles as text); bools, and the text true / false in any case, as ``"1"`` / ``"0"``."""
    texts = [i for i, v in enumerate(values) if isinstance(v, str) and v.strip().lower() not in _BOOL_TEXT]
    if texts:
        parsed = numbers_in_text(np.array([values[i] for i in texts], dtype=object), exact=True, probe=False)
        for i, number in zip(texts, parsed.tolist(), strict=True):
            if isinstance(number, float) and not (number.is_integer() and abs(number) >= 2 ** 53):
                values[i] = number  # a whole number past 2**53 stays as written: its double is another number
    return np.asarray([_class_text(v) for v in values] + [None], dtype=object)[:-1]


def _as_written(values: list[Any]) -> npt.NDArray[Any]:
    """Text classes as written; a ``positive`` given as a number is its text (``1`` and ``1.0`` are ``"1"``)."""
    return np.asarray([v if v is None or isinstance(v, str) else _number_text(v) for v in values] + [None],
                      dtype=object)[:-1]


def _number_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _class_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return _BOOL_TEXT.get(value.strip().lower(), value)
    return _number_text(value)


K = TypeVar("K")


def _latest(results: list[WindowQuality], min_labelled: int, key: Callable[[WindowQuality], K],
            ) -> dict[K, WindowQuality]:
    """Each ``key``'s latest window with at least ``min_labelled`` scored labels."""
    latest: dict[K, WindowQuality] = {}
    for q in results:
        k = key(q)
        if q.scored >= min_labelled and (k not in latest or q.start > latest[k].start):
            latest[k] = q
    return latest


def latest_per_model(results: list[WindowQuality], min_labelled: int = 1) -> dict[str, WindowQuality]:
    """Each model's latest window with at least ``min_labelled`` labelled requests whose prediction was scored
    (:attr:`WindowQuality.scored`: what its metrics rest on)."""
    return _latest(results, min_labelled, lambda q: q.model)


def latest_per_version(results: list[WindowQuality], min_labelled: int = 1,
                       ) -> dict[tuple[str, str], WindowQuality]:
    """Each (model, version)'s latest window with at least ``min_labelled`` scored labels, of
    ``quality_report(..., by_version=True)``'s windows (a window of a whole model is the version ``""``)."""
    return _latest(results, min_labelled, lambda q: (q.model, q.model_version or ""))


def export_quality(results: list[WindowQuality], metrics: Metrics, objectives: Mapping[str, float] | None = None,
                   min_labelled: int = 1) -> dict[str, WindowQuality]:
    """Set ``aiwatch_model_quality`` (and ``_labelled``: the scored labels it rests on) from each model's latest
    window with at least
    ``min_labelled`` scored labels (:func:`latest_per_model`), and ``aiwatch_model_quality_objective`` from
    ``objectives`` (metric -> bound: a floor for accuracy / precision / recall, a ceiling for MAE / RMSE). Returns
    the windows exported."""
    latest = latest_per_model(results, min_labelled)
    for model, q in latest.items():
        metrics.child(metrics.model_quality_labelled, (model,)).set(q.scored)
        for name, value in q.metrics.items():
            if math.isfinite(value):
                metrics.child(metrics.model_quality, (model, name)).set(value)
        for name, bound in (objectives or {}).items():
            metrics.child(metrics.model_quality_objective, (model, name)).set(bound)
    return latest


def below_objective(q: WindowQuality, objectives: Mapping[str, float]) -> list[str]:
    """The metrics of ``q`` on the wrong side of their objective."""
    worse = []
    for name, bound in objectives.items():
        value = q.metrics.get(name, math.nan)
        if math.isfinite(value) and (value < bound if name in HIGHER_IS_BETTER else value > bound):
            worse.append(name)
    return worse
