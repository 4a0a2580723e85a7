from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch import safety
from aiwatch.cardinality import MAX_VALUE_LENGTH, OVERFLOW, LabelGuard, guard_for
from aiwatch.metrics import Metrics
from aiwatch.timing import RequestRecorder, record_phase, set_model


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


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_a_bound_below_one_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("AIWATCH_MAX_LABEL_VALUES", bad)
    with pytest.raises(ValueError, match=rf"^AIWATCH_MAX_LABEL_VALUES must be an integer of at least 1, got {bad}$"):
        LabelGuard()


@pytest.mark.parametrize("bad", [True, 2.5, "10"])
def test_a_bound_that_is_not_an_integer_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^max_values must be an integer of at least 1, got "):
        LabelGuard(max_values=bad)  # type: ignore[arg-type]


def test_known_values_of_a_label_never_seen_are_none() -> None:
    guard = LabelGuard(max_values=2)
    assert guard.known("never") == frozenset()
    guard.fold("route", "/a")
    assert guard.known("route") == frozenset({"/a"})


def test_a_bound_only_grows() -> None:
    guard = LabelGuard(max_values=2)
    guard.widen(1)
    assert guard.max_values == 2
    guard.widen(5)
    assert guard.max_values == 5
    with pytest.raises(ValueError, match="max_values"):
        guard.widen(0)


@pytest.fixture
def every_warning_logged() -> Iterator[None]:
    safety.set_burst_seconds(0.0)  # rate limiting off: each fold's warning is logged
    yield
    safety.set_burst_seconds(60.0)


def test_a_fold_is_counted_and_logged_with_the_label_and_its_bound(
        every_warning_logged: None, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    guard = guard_for(metrics, 1)
    guard.fold("fold_logged_route", "/a")
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        assert guard.fold("fold_logged_route", "/b") == OVERFLOW
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "fold_logged_route"}) == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        "aiwatch: label 'fold_logged_route' reached its bound of 1 distinct values; new values are recorded as "
        "'__overflow__' (aiwatch_label_overflow_total counts them; raise max_label_values or "
        "AIWATCH_MAX_LABEL_VALUES if they are legitimate)"]


def test_an_overflow_counter_that_fails_is_counted_as_an_instrumentation_error(
        every_warning_logged: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics(CollectorRegistry())
    guard = guard_for(metrics, 1)
    guard.fold("broken_counter", "/a")

    def broken(*labels: str) -> None:
        raise RuntimeError("counter gone")

    monkeypatch.setattr(metrics.label_overflow, "labels", broken)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        assert guard.fold("broken_counter", "/b") == OVERFLOW  # the fold still happens
    assert metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total",
                                             {"component": "cardinality"}) == 1.0
    failure = next(r for r in caplog.records if "failed and was skipped" in r.getMessage())
    assert failure.getMessage() == "aiwatch: cardinality failed and was skipped: RuntimeError('counter gone')"
    assert any("reached its bound of 1" in r.getMessage() for r in caplog.records)


def test_a_value_utf8_cannot_encode_is_escaped_once_and_then_known() -> None:
    guard = LabelGuard(max_values=2)
    assert guard.fold("model", "a\ud800") == "a\\ud800"  # the exposition cannot write the surrogate itself
    assert guard.fold("model", "a\ud800") == "a\\ud800" and guard.known("model") == {"a\\ud800"}
    assert guard.fold("model", "b") == "b"
    assert guard.fold("model", "c\udfff") == OVERFLOW  # escaped, it still takes a place under the bound
    assert guard.fold("queue", 7) == 7  # type: ignore[arg-type]  # not text: passed on as before


def test_a_route_named_as_the_fold_is_folded_and_counted_each_time() -> None:
    # a catch-all handler or resolver naming its route "__overflow__": the recorder's cache of request children
    # skipped the guard for it, so those folds went uncounted
    from aiwatch.timing import RequestRecorder

    m = Metrics(CollectorRegistry())
    recorder = RequestRecorder(metrics=m, service="svc", guard=guard_for(m, 2))
    for route in ["/a", "/b", "/c", "/d", *["__overflow__"] * 5]:
        recorder.finish(recorder.begin_with(None, "GET"), route, "GET", "200")
    assert m.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "route"}) == 7


def test_a_guard_lock_held_at_a_fork_is_replaced_by_a_free_one_in_the_child(metrics: Metrics) -> None:
    from aiwatch import cardinality

    guard = guard_for(metrics)
    with guard._lock:  # held by a thread of the parent at the fork: the child's copy would never be released
        guard._renew_after_fork()
        assert guard._lock.acquire(blocking=False)
        guard._lock.release()
    assert guard.fold("route", "/a") == "/a"
    held = cardinality._guards_lock
    with held:
        cardinality._renew_guards_lock()
        assert cardinality._guards_lock is not held and cardinality._guards_lock.acquire(blocking=False)
        cardinality._guards_lock.release()
    assert guard_for(metrics) is guard


def test_each_labels_first_overflow_warning_is_logged_though_another_labels_was_logged_just_before(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fresh burst log whose bursts outlast the test: one label's warning must not open the burst of another's
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(burst_seconds=3600))
    metrics = Metrics(CollectorRegistry())
    guard = guard_for(metrics, 1)
    guard.fold("burst_route", "/a")
    guard.fold("burst_model", "m1")
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        assert guard.fold("burst_route", "/b") == OVERFLOW
        assert guard.fold("burst_model", "m2") == OVERFLOW
        assert guard.fold("burst_route", "/c") == OVERFLOW  # in the route's burst: counted, not logged
    assert [r.getMessage().split(" reached ")[0] for r in caplog.records] == [
        "aiwatch: label 'burst_route'", "aiwatch: label 'burst_model'"]
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "burst_route"}) == 2.0
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "burst_model"}) == 1.0


def test_a_value_longer_than_the_limit_is_folded_and_counted_never_admitted() -> None:
    # before: only the number of values was bounded, not their size: a hundred 100 kB model names a client sent made
    # the registry's /metrics 540 MB (each value is written in every series of its label)
    folded: list[str] = []
    guard = LabelGuard(max_values=3, on_overflow=folded.append)
    at_limit = "m" * MAX_VALUE_LENGTH
    assert guard.fold("model", at_limit) == at_limit
    assert guard.fold("model", at_limit + "m") == OVERFLOW
    assert guard.fold("model", "\ud800" * (MAX_VALUE_LENGTH // 2)) == OVERFLOW  # its escapes are 6 characters each
    assert guard.known("model") == frozenset({at_limit})
    assert folded == ["model", "model"]


def test_a_long_model_name_from_a_request_stays_out_of_the_scrape(
        every_warning_logged: None, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    recorder = RequestRecorder(metrics, "gw")
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for i in range(20):  # an OpenAI-style gateway labelling each request with the model its body names
            tl = recorder.begin()
            set_model(f"{i}-" + "x" * 100_000)
            record_phase("inference", 0.01)
            recorder.finish(tl, "/v1/completions", "POST", "200")
    text = generate_latest(metrics.registry).decode()
    assert max(len(line) for line in text.splitlines()) < 2 * MAX_VALUE_LENGTH
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "model"}) == 20.0
    assert metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "gw", "model": OVERFLOW, "model_version": "", "phase": "inference"}) == 20.0
    assert any(f"longer than {MAX_VALUE_LENGTH} characters" in r.getMessage() for r in caplog.records)


def test_a_long_value_is_logged_once_a_minute_per_label_with_the_whole_message(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())  # kept: a guard whose metrics are gone logs nothing (below)
    guard = guard_for(metrics)
    long = "x" * (MAX_VALUE_LENGTH + 1)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        for label in ("model", "route", "model"):  # the second long model name within the minute: not logged
            assert guard.fold(label, long) == OVERFLOW
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "model"}) == 2.0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiwatch")] == [
        f"aiwatch: a value of label {label!r} is longer than {MAX_VALUE_LENGTH} characters; it is recorded as "
        f"{OVERFLOW!r} (aiwatch_label_overflow_total counts it)" for label in ("model", "route")]


def test_a_guard_whose_metrics_are_gone_folds_without_counting_or_logging(
        every_warning_logged: None, caplog: pytest.LogCaptureFixture) -> None:
    # a guard kept by its user after the metrics it reports into were collected: nothing to count into, and nothing
    # logged that would say it was counted
    import gc

    metrics = Metrics(CollectorRegistry())
    guard = guard_for(metrics, 1)
    assert guard.fold("model", "a") == "a"
    del metrics
    gc.collect()
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        assert guard.fold("model", "x" * (MAX_VALUE_LENGTH + 1)) == OVERFLOW
        assert guard.fold("model", "b") == OVERFLOW
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiwatch")] == []


def test_a_later_guard_for_the_same_metrics_raises_the_shared_bound_to_its_own() -> None:
    metrics = Metrics(CollectorRegistry())
    guard = guard_for(metrics, 10)
    assert guard_for(metrics, 500) is guard
    assert guard.max_values == 500
    assert guard_for(metrics, 20).max_values == 500  # a bound never shrinks
