"""``RedisStreamSink``: prediction rows appended to a Redis Stream (``XADD``), one entry per row.

Each entry's fields are the row's columns with JSON-encoded values (``json.loads`` gives the value back, typed);
null values are left out, and so are non-finite floats (NaN, ±inf: not JSON, so Go's and JavaScript's parsers
refuse them), which are null where nested. The stream is capped near ``maxlen`` entries (``MAXLEN ~``), so Redis
memory stays bounded when no consumer keeps up. Consumers read it with ``XREAD`` or a consumer group
(``XREADGROUP``).

What the log counts (``aiwatch_prediction_log_records_total``) follows Redis' replies, one per ``XADD``: a batch
whose replies are all entry ids is ``written``; one where Redis refused some entries and not others (``OOM`` at
``maxmemory`` under ``noeviction`` refuses every ``XADD`` from the moment memory crosses the limit, part-way through
a batch) raises :class:`~aiwatch.feedback.sink.RowsLost` with the refused ones, so the rest are ``written``; one
where Redis refused every entry (a ``WRONGTYPE`` key) is ``failed``. A batch that got no replies at all (the
connection failed or timed out) is counted ``failed`` too, though Redis may have stored some or all of its entries:
a command sent before the connection broke may have been applied, and one sent to a Redis that is frozen or only
slow is applied when it resumes.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from typing import Any

from aiwatch._optional import require
from aiwatch.amounts import shown
from aiwatch.feedback.schema import finite_only
from aiwatch.feedback.sink import RowsLost

#: Seconds the client the sink makes from a URL waits to connect, and for a reply, unless the URL's query sets
#: ``socket_connect_timeout`` / ``socket_timeout``: without one, a Redis that stops answering (frozen, or cut off by
#: a partition without a reset) held the writer thread in a socket read for ever under redis-py 5.
DEFAULT_TIMEOUT = 5.0

_MAX_MAXLEN = 2**63 - 1  # Redis reads MAXLEN as a signed 64-bit integer


def entry_fields(row: dict[str, Any]) -> dict[str, str]:
    """A row as the fields of a stream entry: strict JSON (RFC 8259), which Go's and JavaScript's parsers read. A
    non-finite float (NaN, ±inf) is null: left out, as a None is, and null where it is nested.

    >>> entry_fields({"x": 1.5, "y": float("nan"), "z": None, "v": [1.0, float("inf")]})
    {'x': '1.5', 'v': '[1.0, null]'}
    """
    fields = {}
    for name, value in row.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        try:
            fields[name] = json.dumps(value, allow_nan=False)
        except ValueError:  # a non-finite float nested in a list or dict (a row of the caller's own)
            fields[name] = json.dumps(finite_only(value), allow_nan=False)
    return fields


class RedisStreamSink:
    """Appends rows to the stream ``stream`` of ``client`` (a ``redis.Redis``, or a ``redis://`` URL), in one
    pipelined round trip per batch.

    A client made from a URL gets socket timeouts of :data:`DEFAULT_TIMEOUT` seconds; the URL's own
    ``socket_timeout`` / ``socket_connect_timeout`` query options win (``redis://host:6379/0?socket_timeout=2``).
    It makes no retries (redis-py's ``from_url`` default, unless the URL sets ``retry_on_timeout``).
    A client passed in belongs to the caller and is used as it is: give it a ``socket_timeout`` (a Redis that stops
    answering otherwise blocks the log's writer, and every record after is dropped), and no retries on timeouts
    (``retry=Retry(NoBackoff(), 0)``): redis-py re-sends a whole pipeline that timed out, so a batch that reached a
    Redis that was only slow is appended again.

    ``maxlen`` (a whole number >= 1, or ``None`` for no cap) bounds the stream; ``stream`` is a non-empty str or
    bytes. See the module docstring for how each batch is counted.
    """

    def __init__(self, client: Any, stream: str | bytes = "aiwatch:predictions", *,
                 maxlen: int | None = 1_000_000) -> None:
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)
                                   or not 1 <= maxlen <= _MAX_MAXLEN):
            raise ValueError(f"maxlen must be a whole number of entries from 1 to 2**63-1, or None for no cap, "
                             f"got {shown(maxlen)}")
        if not isinstance(stream, (str, bytes)) or not stream:
            raise ValueError(f"stream must be a non-empty str or bytes (a Redis key), got {shown(stream)}")
        self._owns_client = isinstance(client, str)
        if isinstance(client, str):
            # keyword arguments are defaults: redis-py lets the URL's query options win over them
            client = require("redis", "redis").Redis.from_url(
                client, socket_timeout=DEFAULT_TIMEOUT, socket_connect_timeout=DEFAULT_TIMEOUT)
        elif not callable(getattr(client, "pipeline", None)):
            raise TypeError(f"RedisStreamSink needs a redis.Redis client or a redis:// URL, "
                            f"got {type(client).__name__!r}")
        elif inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
            # its pipeline's execute() is a coroutine that the writer thread would never run: nothing stored
            raise TypeError("RedisStreamSink needs a synchronous client (redis.Redis), not an asyncio one: it writes "
                            "from the log's writer thread")
        self.client, self.stream, self.maxlen = client, stream, maxlen

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """``XADD`` each row, pipelined. Raises :class:`~aiwatch.feedback.sink.RowsLost` when Redis refused some
        of the entries and not others, Redis' first error when it refused every one, and the connection's error
        when there was no reply (see the module docstring)."""
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(self.stream, entry_fields(row), maxlen=self.maxlen, approximate=True)
        replies = pipe.execute(raise_on_error=False)  # an error reply per XADD refused, the others applied
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if not errors:
            return
        if len(errors) >= len(rows):
            raise errors[0]
        raise RowsLost(len(errors), 0, f"{len(errors)} of {len(rows)} XADDs refused: {errors[0]}") from errors[0]

    def flush(self) -> None:
        """Nothing to do: every batch is written when it arrives."""

    def close(self) -> None:
        """Close the client when this sink made it from a URL (a client passed in belongs to the caller)."""
        if self._owns_client:
            self.client.close()
