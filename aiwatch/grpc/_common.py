"""Helpers shared by aiwatch's gRPC server and client interceptors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from aiwatch.tracing import MAX_PREFIXED, add_repeated

_NAMES: dict[Any, str] = {}
_VALUES: dict[str, int] = {}
for _code in grpc.StatusCode:
    _NAMES[_code] = _code.name
    _NAMES[_code.value[0]] = _code.name
    _VALUES[_code.name] = _code.value[0]


def status_value(name: str) -> int | None:
    """The number of the gRPC status ``name`` (``2`` for ``UNKNOWN``); ``None`` for a name grpcio does not know."""
    return _VALUES.get(name)


def status_name(code: Any) -> str | None:
    """``'INVALID_ARGUMENT'`` for ``grpc.StatusCode.INVALID_ARGUMENT`` (or its integer value); ``None`` for None."""
    if code is None:
        return None
    return _NAMES.get(code) or getattr(code, "name", None) or str(code)


def method_name(method: Any) -> str:
    """The full method name as text (grpc.aio passes it as bytes on the client side)."""
    return method.decode("utf-8", "replace") if isinstance(method, bytes) else str(method)


def metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    """The last value of ``key`` in gRPC metadata (pairs or ``grpc.aio.Metadata``), decoded; ``None`` if absent.
    The last: an aiwatch server appends its ``server-timing`` after any the servicer set (a forwarded upstream's)."""
    found = None
    for item in metadata or ():
        if item[0] == key:
            found = item[1]
    if found is None:
        return None
    return found.decode("latin-1") if isinstance(found, bytes) else str(found)


def metadata_dict(metadata: Iterable[Any] | None, names: tuple[str, ...],
                  prefix: tuple[str, ...] | None = None) -> dict[str, str]:
    """The text metadata (binary ``-bin`` entries skipped) whose keys are ``names`` (the global propagator's fields,
    lowercase as gRPC's keys are: :func:`aiwatch.tracing.carrier_fields`), or start with one of ``prefix``
    (Jaeger's ``uberctx-``: the first :data:`~aiwatch.tracing.MAX_PREFIXED` keys), as a dict, for trace-context
    extraction; a call's other metadata, however much, is left out. A repeated key is read as OpenTelemetry reads a
    repeated field (:func:`aiwatch.tracing.extract_context`): the first ``traceparent``; ``tracestate`` joined in
    order; the first ``baggage``; the first value of any other key."""
    out: dict[str, str] = {}
    prefixed = 0
    for item in metadata or ():
        k, v = item[0], item[1]
        if not isinstance(v, str):
            continue
        if k not in names:
            if prefix is None or not isinstance(k, str) or (prefixed == MAX_PREFIXED and k not in out) \
                    or not k.startswith(prefix):
                continue
            if k not in out:  # a repeated key counts once, as in OpenTelemetry's dict of the metadata
                prefixed += 1
        found = out.get(k)
        if found is None:
            out[k] = v
        else:
            add_repeated(out, k, v, found)
    return out
