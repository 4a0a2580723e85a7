"""``RedisStreamSink``: prediction rows appended to a Redis Stream (``XADD``), one entry per row.

Each entry's fields are the row's columns with JSON-encoded values (``json.loads`` gives the value back, typed);
null values are left out. The stream is capped near ``maxlen`` entries (``MAXLEN ~``), so Redis memory stays
bounded when no consumer keeps up. Consumers read it with ``XREAD`` or a consumer group (``XREADGROUP``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiwatch._optional import require


def entry_fields(row: dict[str, Any]) -> dict[str, str]:
    """A row as the fields of a stream entry."""
    return {name: json.dumps(value) for name, value in row.items() if value is not None}


class RedisStreamSink:
    """Appends rows to the stream ``stream`` of ``client`` (a ``redis.Redis``, or a ``redis://`` URL), in one
    pipelined round trip per batch."""

    def __init__(self, client: Any, stream: str = "aiwatch:predictions", *, maxlen: int | None = 1_000_000) -> None:
        self._owns_client = isinstance(client, str)
        if isinstance(client, str):
            client = require("redis", "redis").Redis.from_url(client)
        self.client, self.stream, self.maxlen = client, stream, maxlen

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(self.stream, entry_fields(row), maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def flush(self) -> None:
        """Nothing to do: every batch is written when it arrives."""

    def close(self) -> None:
        """Close the client when this sink made it from a URL (a client passed in belongs to the caller)."""
        if self._owns_client:
            self.client.close()
