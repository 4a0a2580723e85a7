from __future__ import annotations

import pytest

from aiwatch.servertiming import format_server_timing, parse_server_timing, server_total


def test_round_trip() -> None:
    value = format_server_timing([("features", 0.012), ("inference", 0.030)], overhead=0.003, total=0.045)
    parsed = parse_server_timing(value)
    assert parsed == pytest.approx({"features": 0.012, "inference": 0.030, "overhead": 0.003, "total": 0.045})


def test_other_servers_entries() -> None:
    parsed = parse_server_timing('cache;desc="Cache Read";dur=23.2, db;dur=53, app;dur=47.2, miss')
    assert parsed == pytest.approx({"cache": 0.0232, "db": 0.053, "app": 0.0472})
    assert server_total("db;dur=53") is None


@pytest.mark.parametrize("bad", ["total;dur=abc", "total;dur=-1", "bad name;dur=1", "total;dur=nan", "total;dur"])
def test_malformed_values_raise_naming_the_entry(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed Server-Timing entry"):
        parse_server_timing(bad)
