from __future__ import annotations

import threading

import pytest

from aiwatch.cardinality import OVERFLOW, LabelGuard


def test_values_beyond_the_bound_fold_and_are_counted() -> None:
    folded: list[str] = []
    guard = LabelGuard(max_values=3, on_overflow=folded.append)
    out = [guard.fold("route", f"/r{i}") for i in range(5)]
    assert out == ["/r0", "/r1", "/r2", OVERFLOW, OVERFLOW]
    assert folded == ["route", "route"]
    assert guard.fold("route", "/r1") == "/r1"
    assert guard.fold("model", "m") == "m"  # each label has its own bound


def test_bound_holds_under_threads() -> None:
    guard = LabelGuard(max_values=10)

    def worker(offset: int) -> None:
        for i in range(200):
            guard.fold("peer", f"p{offset}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(guard.known("peer")) == 10


def test_invalid_bound_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="max_values"):
        LabelGuard(max_values=0)
    monkeypatch.setenv("AIWATCH_MAX_LABEL_VALUES", "lots")
    with pytest.raises(ValueError, match="AIWATCH_MAX_LABEL_VALUES"):
        LabelGuard()
