"""The prediction log's schema: one flat row per logged request, and the field policy that keeps PII out.

A row holds the log's own columns (:data:`LOG_COLUMNS`), then one column per model input under the input's own
name (so a reference profile built from training data matches the log's columns), then the outputs: ``output``
for a single value, ``output.<name>`` for each value of a mapping. An input named like a log column, or whose name
starts with ``input.``, is written as ``input.<name>`` (so that ``model`` and ``input.model`` stay two columns).
Values are normalised so that a column keeps one type: numbers (ints included) become floats (±inf past float64's
range), booleans stay booleans, strings stay strings, ``None`` is a null, anything else is written as JSON text.

    >>> policy = FieldPolicy(deny={"email"}, hash={"user_id"}, hash_key=b"k")
    >>> rec = PredictionRecord("r1", 0.0, "ranker", "v1", None, 0.1, False, 1.0,
    ...                        {"user_id": 7, "email": "a@b", "basket_value": 3}, {"score": 0.5})
    >>> row = policy.row(rec)
    >>> row["basket_value"], row["output.score"], "email" in row, len(row["user_id"])
    (3.0, 0.5, False, 64)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import numbers
from collections.abc import Collection, Mapping
from typing import Any

from aiwatch.amounts import as_real, shown
from aiwatch.floats import finite_or_infinite
from aiwatch.utf8 import utf8_text

#: The log's own columns, in order. ``model`` is also the first partition key of the Parquet sink.
LOG_COLUMNS: tuple[str, ...] = ("request_id", "timestamp", "model", "model_version", "trace_id", "trace_sampled",
                                "latency_seconds", "error", "sample_rate")
OUTPUT = "output"
_OUTPUT_DOT = OUTPUT + "."
INPUT_PREFIX = "input."

#: Unix seconds of 0001-01-01 and of 9999-12-31T23:59:59 UTC: the timestamps a datetime (and so a sink) can hold.
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800.0, 253_402_300_799.0


def unix_seconds(timestamp: Any) -> float:
    """A record's ``timestamp`` as the float the sinks store; one that is not a finite time between the years 1 and
    9999 is refused here, so that it fails its own record and not the batch the sink writes it in.

    >>> unix_seconds(1790000000)
    1790000000.0
    """
    seconds = as_real(timestamp)  # not float(): it reads "1790000000" and True too, and neither is a time
    if seconds is None or not _FIRST_SECOND <= seconds <= _LAST_SECOND:  # NaN fails both comparisons
        raise ValueError(f"timestamp must be Unix seconds between the years 1 and 9999, got {shown(timestamp)}")
    return seconds


def text(value: Any) -> str | None:
    """An id column's value (``request_id``, ``model``, ``model_version``) as the text the sinks store: a client's
    int id, a model registry's version 3 are ids, not numbers, and a non-str value in one of these string columns
    failed the whole Parquet batch it was in. Bytes are :func:`bytes_text`. ``None`` stays null.

    >>> text(123), text("v1"), text(b"r-9"), text(None)
    ('123', 'v1', 'r-9', None)
    """
    if value is None:
        return None
    if type(value) is str:
        return utf8_text(value)
    if isinstance(value, _BYTES):
        return bytes_text(value)
    return utf8_text(str(value))


_TRACE_ID_LIMIT = 1 << 128
_BYTES = (bytes, bytearray, memoryview)


def trace_id_text(value: Any) -> str | None:
    """A ``trace_id`` as the log stores it: an int (OpenTelemetry's ``SpanContext.trace_id``) as the 32 lowercase
    hex digits W3C Trace Context writes, as aiwatch writes the current span's (:mod:`aiwatch.timing`); anything else
    as :func:`text`.

    >>> trace_id_text(0x4BF92F3577B34DA6A3CE929D0E0E4736), trace_id_text(1), trace_id_text(-1)
    ('4bf92f3577b34da6a3ce929d0e0e4736', '00000000000000000000000000000001', '-1')
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _TRACE_ID_LIMIT:
        return format(value, "032x")
    if isinstance(value, _BYTES):
        raw = bytes(value)
        if len(raw) == 16:  # a binary trace id (OTLP's protobuf, ``int.to_bytes(16, "big")``)
            return raw.hex()
        return bytes_text(raw)
    return text(value)


def bytes_text(value: bytes | bytearray | memoryview) -> str:
    """Bytes as the log stores them: the text they hold when they are UTF-8 (a raw ASGI header value), else their
    ``repr``, which reads them back unambiguously (``ast.literal_eval``); a released memoryview, which holds none, as
    its ``str``.

    >>> bytes_text(b"4bf92f35"), bytes_text(b"\\xff\\x00")
    ('4bf92f35', "b'\\\\xff\\\\x00'")
    """
    try:
        raw = bytes(value)
    except ValueError:  # a released memoryview
        return str(value)
    try:
        return utf8_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(raw)


def _json_default(value: Any) -> Any:
    """What JSON text holds for a value :mod:`json` cannot write: bytes as :func:`bytes_text`, numpy numbers and
    arrays as Python's, anything else as its ``str``."""
    if isinstance(value, _BYTES):
        return bytes_text(value)
    if hasattr(value, "tolist") and callable(value.tolist):
        try:
            return value.tolist()
        except Exception:
            pass
    return str(value)


def finite_only(value: Any) -> Any:
    """``value`` with every non-finite number in it, nested ones included, as None: strict JSON (RFC 8259) has no
    NaN or infinity, and Go's, JavaScript's and most SQL engines' parsers refuse Python's bare ``NaN``. numpy
    numbers and arrays inside are made Python's first (``np.float32`` is no ``float``).

    >>> import numpy as np
    >>> finite_only({"a": [np.float32("nan"), np.float32(0.5)], "b": np.array([0.25, np.inf])})
    {'a': [None, 0.5], 'b': [0.25, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_only(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_only(item) for item in value]
    if isinstance(value, (str, *_BYTES, bool, int)) or value is None:
        return value
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # a numpy array or scalar (np.float32 is no float), a tensor
        try:
            return finite_only(tolist())
        except Exception:
            return value
    if isinstance(value, numbers.Real):  # a Decimal, a Fraction
        return value if math.isfinite(value) else None
    return value


def json_text(value: Any) -> str:
    """``value`` as strict JSON text (RFC 8259), keys sorted: a non-finite float in it, nested ones included, is
    ``null``; bytes and objects JSON has no type for are written as :func:`_json_default` says.

    >>> json_text({"b": [1.0, float("nan")], "a": b"id-7"})
    '{"a": "id-7", "b": [1.0, null]}'
    """
    for sort_keys in (True, False):  # keys JSON cannot sort (an int beside a str): written as they come
        try:
            return json.dumps(value, default=_json_default, sort_keys=sort_keys, allow_nan=False)
        except ValueError:  # a non-finite number somewhere inside (a circular reference raises it too: see below)
            pass
        except TypeError:
            continue
        try:
            return json.dumps(finite_only(value), default=_json_default, sort_keys=sort_keys, allow_nan=False)
        except (ValueError, RecursionError):  # a circular container
            return str(value)
        except TypeError:
            continue
    return str(value)


class PredictionRecord:
    """What the request path queues: the caller's values (its mappings shallow-copied), no other work.
    :meth:`FieldPolicy.row` turns it into a row on the writer thread."""

    __slots__ = ("error", "inputs", "latency_seconds", "model", "model_version", "outputs", "request_id",
                 "sample_rate", "timestamp", "trace_id", "trace_sampled")

    def __init__(self, request_id: str, timestamp: float, model: str, model_version: str, trace_id: str | None,
                 latency_seconds: float | None, error: bool, sample_rate: float, inputs: Mapping[str, Any],
                 outputs: Any, trace_sampled: bool | None = None) -> None:
        self.request_id, self.timestamp, self.model = request_id, timestamp, model
        self.model_version, self.trace_id, self.latency_seconds = model_version, trace_id, latency_seconds
        self.error, self.sample_rate, self.inputs, self.outputs = error, sample_rate, inputs, outputs
        self.trace_sampled = trace_sampled


def normalise(value: Any) -> Any:
    """A value as the log stores it: float, bool, str (one UTF-8 can encode: :func:`~aiwatch.utf8.utf8_text`),
    None, or JSON text for anything else."""
    kind = type(value)
    if kind is float or kind is bool or value is None:  # the common cases, without ABC checks
        return value
    if kind is str:
        return utf8_text(value)
    if kind is int:
        return finite_or_infinite(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return utf8_text(str(value))
    if isinstance(value, _BYTES):
        return bytes_text(value)
    if isinstance(value, numbers.Real):  # ints, floats, numpy scalars
        return finite_or_infinite(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars and 0-d arrays, numpy bool_, tensors
        try:
            item = value.item()
        except (ValueError, RuntimeError):  # more than one value (an embedding): JSON text, as a list is
            if not callable(getattr(value, "tolist", None)):
                raise
            item = value.tolist()
        return normalise(item)
    return json_text(value)


class FieldPolicy:
    """Which input/output fields reach the log, and which are hashed.

    Field names are the row's column names: an input's name, ``output`` or ``output.<name>``. ``allow``
    (``None``: every field) keeps only the fields listed; ``deny`` removes fields; ``hash`` replaces a field's
    value with the hex HMAC-SHA256 of its text under ``hash_key``. The log's own columns are always written.

    Why a keyed hash and not plain SHA-256: the values worth hashing (user ids, emails, phone numbers) are few
    enough to enumerate, so anyone holding the log could hash every candidate and read the unsalted SHA-256 back.
    With HMAC, that needs the key, which stays with the service; the same value still hashes to the same text, so
    joins and distinct counts on the hashed column keep working. Rotating the key breaks those joins on purpose.
    """

    def __init__(self, allow: Collection[str] | None = None, deny: Collection[str] = (),
                 hash: Collection[str] = (), hash_key: bytes | str | None = None) -> None:
        for name, fields in (("allow", allow or ()), ("deny", deny), ("hash", hash)):
            if isinstance(fields, str):
                raise TypeError(f"{name} must be a collection of field names, not the string {fields!r}")
        self.allow = frozenset(allow) if allow is not None else None
        self.deny = frozenset(deny)
        self.hash = frozenset(hash)
        if self.hash and not hash_key:
            raise ValueError("hashing fields needs hash_key (a secret kept with the service; see FieldPolicy)")
        self._key = hash_key.encode() if isinstance(hash_key, str) else hash_key
        self._everything_plain = self.allow is None and not self.deny and not self.hash

    def keeps(self, field: str) -> bool:
        return field not in self.deny and (self.allow is None or field in self.allow)

    def _value(self, field: str, value: Any) -> Any:
        value = normalise(value)
        if field in self.hash and value is not None and self._key is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
        return value

    def row(self, record: PredictionRecord) -> dict[str, Any]:
        """The row written for ``record``."""
        latency = record.latency_seconds
        trace_id = trace_id_text(record.trace_id)
        row: dict[str, Any] = {
            "request_id": text(record.request_id),
            "timestamp": unix_seconds(record.timestamp),
            "model": text(record.model),
            "model_version": text(record.model_version),
            "trace_id": trace_id,
            # no flag without an id; bool() of a caller's truthy value (numpy bool_, 1)
            "trace_sampled": None if trace_id is None or record.trace_sampled is None else bool(record.trace_sampled),
            "latency_seconds": float(latency) if latency is not None and math.isfinite(latency) else None,
            "error": bool(record.error),
            "sample_rate": record.sample_rate,
        }
        plain = self._everything_plain
        for name, value in record.inputs.items():
            field = utf8_text(name if type(name) is str else str(name))
            if field in row or field == OUTPUT or field.startswith((_OUTPUT_DOT, INPUT_PREFIX)):
                field = INPUT_PREFIX + field
            if plain:
                row[field] = normalise(value)
            elif self.keeps(field):
                row[field] = self._value(field, value)
        outputs = record.outputs
        if isinstance(outputs, Mapping):
            for name, value in outputs.items():
                field = utf8_text(_OUTPUT_DOT + str(name))
                if plain:
                    row[field] = normalise(value)
                elif self.keeps(field):
                    row[field] = self._value(field, value)
        elif outputs is not None and self.keeps(OUTPUT):
            row[OUTPUT] = self._value(OUTPUT, outputs)
        return row
