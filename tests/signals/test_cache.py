"""FeatureCache: decorator, context manager and mapping adapter; results, durations and the features phase."""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aiwatch.metrics import Metrics
from aiwatch.signals.cache import FeatureCache, instrument_mapping
from aiwatch.timing import RequestRecorder
from tests.hostile_numbers import BAD_COUNTS, BAD_SECONDS, OTHER_COUNTS, OTHER_SECONDS, exact_float


def count(registry: CollectorRegistry, cache: str, result: str) -> float:
    return registry.get_sample_value("aiwatch_feature_cache_requests_total", {"cache": cache, "result": result}) or 0


def timed(registry: CollectorRegistry, cache: str, result: str) -> float:
    return registry.get_sample_value("aiwatch_feature_cache_lookup_duration_seconds_count",
                                     {"cache": cache, "result": result}) or 0


def test_decorator_classifies_results_and_reraises_errors(registry: CollectorRegistry, metrics: Metrics) -> None:
    users = FeatureCache("users", metrics=metrics)
    store = {"u1": {"age": 31}}

    @users.wrap
    def load(key: str) -> dict[str, int] | None:
        if key == "boom":
            raise ConnectionError("store down")
        return store.get(key)

    assert load.__name__ == "load"
    assert load("u1") == {"age": 31}
    assert load("u2") is None
    with pytest.raises(ConnectionError, match="store down"):
        load("boom")
    assert (count(registry, "users", "hit"), count(registry, "users", "miss"), count(registry, "users", "error")) \
        == (1, 1, 1)
    assert (timed(registry, "users", "hit"), timed(registry, "users", "miss"), timed(registry, "users", "error")) \
        == (1, 1, 1)


async def test_async_decorator_with_custom_is_hit(registry: CollectorRegistry, metrics: Metrics) -> None:
    items = FeatureCache("items", metrics=metrics)

    @items.wrap(is_hit=lambda row: bool(row))
    async def load(key: str) -> dict[str, int]:
        if key == "bad":
            raise KeyError(key)
        return {"price": 3} if key == "i1" else {}

    assert await load("i1") == {"price": 3}
    assert await load("i2") == {}
    with pytest.raises(KeyError):
        await load("bad")
    assert (count(registry, "items", "hit"), count(registry, "items", "miss"), count(registry, "items", "error")) \
        == (1, 1, 1)


def test_a_broken_is_hit_hook_never_breaks_the_lookup(registry: CollectorRegistry, metrics: Metrics) -> None:
    c = FeatureCache("hooked", metrics=metrics)
    wrapped = c.wrap(lambda: 5, is_hit=lambda v: 1 / 0)
    assert wrapped() == 5
    assert count(registry, "hooked", "hit") == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "cache"}) == 1


def test_wrap_refuses_generator_functions_naming_them(metrics: Metrics) -> None:
    c = FeatureCache("gen", metrics=metrics)

    def rows(key: str) -> Any:
        yield key

    async def arows(key: str) -> Any:
        yield key

    with pytest.raises(TypeError, match=r"'test_wrap_refuses.*<locals>\.rows'.* a generator function.*lookup\(\)"):
        c.wrap(rows)
    with pytest.raises(TypeError, match=r"<locals>\.arows'.* an async generator function.*lookup\(\)"):
        c.wrap(is_hit=bool)(arows)
    with pytest.raises(TypeError, match="a generator function"):
        c.wrap(functools.partial(rows, "k"))


def test_context_manager(registry: CollectorRegistry, metrics: Metrics) -> None:
    c = FeatureCache("ctx", metrics=metrics)
    with c.lookup() as lk:
        assert lk.found("row") == "row"
    with c.lookup() as lk:
        lk.found(None)
    with c.lookup() as lk:
        lk.hit(3)
        lk.miss(2)
    with c.lookup():
        pass  # says nothing: one hit
    with pytest.raises(TimeoutError), c.lookup():
        raise TimeoutError("slow store")
    assert (count(registry, "ctx", "hit"), count(registry, "ctx", "miss"), count(registry, "ctx", "error")) \
        == (5, 3, 1)
    # one duration per lookup: error if it raised, miss if anything missed, else hit
    assert (timed(registry, "ctx", "hit"), timed(registry, "ctx", "miss"), timed(registry, "ctx", "error")) \
        == (2, 2, 1)


async def test_async_context_manager(registry: CollectorRegistry, metrics: Metrics) -> None:
    c = FeatureCache("actx", metrics=metrics)
    async with c.lookup() as lk:
        lk.miss()
    assert count(registry, "actx", "miss") == 1


class LRU(collections.OrderedDict[str, int]):
    """A small LRU cache of the kind services keep in front of a feature store."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, key: str) -> int:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        if len(self) > self.maxsize:
            self.popitem(last=False)


@pytest.mark.parametrize("backing", [dict, functools.partial(LRU, 2)])
def test_mapping_adapter(registry: CollectorRegistry, metrics: Metrics, backing: type[dict[str, int]]) -> None:
    m = instrument_mapping(backing(), cache="local", metrics=metrics)
    m["a"] = 1
    m["b"] = 2
    assert m["a"] == 1
    assert m.get("b") == 2
    assert m.get("zz", -1) == -1
    with pytest.raises(KeyError):
        m["zz"]
    assert "a" in m and len(m) == 2 and sorted(m) == ["a", "b"]  # not lookups: not counted
    assert (count(registry, "local", "hit"), count(registry, "local", "miss")) == (2, 2)
    if backing is not dict:
        assert m.maxsize == 2  # the mapping's own attributes stay reachable
        m["c"] = 3  # evicts the least recently used entry: the one the app's reads through aiwatch left oldest
        bare = backing()  # the same reads on the mapping alone: aiwatch's lookups must not change which one that is
        bare["a"], bare["b"] = 1, 2
        assert bare["a"] == 1 and bare.get("b") == 2
        bare["c"] = 3
        assert list(m) == list(bare) == ["a", "c"]  # OrderedDict.get does not make "b" recent


def test_mapping_errors_are_counted_and_reraised(registry: CollectorRegistry, metrics: Metrics) -> None:
    class Failing(dict[str, int]):
        def __getitem__(self, key: str) -> int:
            raise OSError("disk cache unreadable")

        def get(self, key: str, default: object = None) -> int:  # type: ignore[override]
            raise OSError("disk cache unreadable")

    m = instrument_mapping(Failing(), cache="disk", metrics=metrics)
    with pytest.raises(OSError, match="unreadable"):
        m["a"]
    with pytest.raises(OSError, match="unreadable"):
        m.get("a")
    assert count(registry, "disk", "error") == 2


def test_a_mapping_that_fills_an_absent_key_through_missing_counts_a_miss(registry: CollectorRegistry,
                                                                        metrics: Metrics) -> None:
    # before: m[key] on a loading cache (a dict whose __missing__ fetches and stores the value) or a defaultdict never
    # raised KeyError, so every first lookup of a key was counted as a hit: a hit ratio of 100 %
    fetched: list[str] = []

    class Loading(dict[str, str]):
        def __missing__(self, key: str) -> str:
            fetched.append(key)
            self[key] = value = key.upper()
            return value

    loading = instrument_mapping(Loading(), cache="loading", metrics=metrics)
    assert [loading["a"], loading["a"], loading["b"]] == ["A", "A", "B"]
    assert fetched == ["a", "b"]
    assert results(registry, "loading") == (1, 2, 0)
    assert (timed(registry, "loading", "hit"), timed(registry, "loading", "miss")) == (1, 2)
    groups = instrument_mapping(collections.defaultdict(list), cache="groups", metrics=metrics)
    groups["x"].append(1)
    groups["x"].append(2)
    assert groups.mapping == {"x": [1, 2]}
    assert results(registry, "groups") == (1, 1, 0)
    with pytest.raises(TypeError, match="unhashable"):
        groups[["not", "hashable"]]
    assert results(registry, "groups") == (1, 1, 1)


def test_lookups_feed_the_features_phase_of_the_request(registry: CollectorRegistry, metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc", model="ranker")
    m = instrument_mapping({"k": 1}, cache="local", metrics=metrics)
    tl = recorder.begin()
    m.get("k")
    m.get("missing")
    assert list(tl.phases) == [("features", "ranker")]
    recorder.finish(tl, "/predict", "POST", "200")
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_count",
                                     {"model_version": "",
                                      "service": "svc", "model": "ranker", "phase": "features"}) == 1.0
    # a cache with phase=None records no phase
    quiet = instrument_mapping({"k": 1}, cache="quiet", phase=None, metrics=metrics)
    tl = recorder.begin()
    quiet.get("k")
    assert tl.phases == {}
    recorder.finish(tl, "/predict", "POST", "200")


def test_bad_arguments_are_clear_errors(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        FeatureCache("", metrics=metrics)
    with pytest.raises(ValueError, match="phase name"):
        FeatureCache("x", phase="not a token", metrics=metrics)
    with pytest.raises(TypeError, match="needs a mapping"):
        instrument_mapping(42, metrics=metrics)


def test_failing_metrics_never_break_a_lookup(registry: CollectorRegistry, metrics: Metrics) -> None:
    m = instrument_mapping({"a": 1}, cache="broken", metrics=metrics)

    class Broken:
        def inc(self, *a: object) -> None:
            raise RuntimeError("metrics down")

        observe = inc

    fc = m.feature_cache
    fc._counts = {r: Broken() for r in ("hit", "miss", "error")}
    assert m["a"] == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "cache"}) == 1.0


def duration_sum(registry: CollectorRegistry, cache: str, result: str) -> float | None:
    return registry.get_sample_value("aiwatch_feature_cache_lookup_duration_seconds_sum",
                                     {"cache": cache, "result": result})


def features_phase(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("aiwatch_phase_duration_seconds_sum",
                                     {"service": "svc", "model": "", "model_version": "", "phase": "features"})


def cache_errors(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "cache"}) or 0


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_a_lookup_time_that_is_no_number_of_seconds_is_refused_and_its_counts_kept(
        registry: CollectorRegistry, metrics: Metrics, bad: Any) -> None:
    # before: NaN made the duration histogram's _sum NaN for good (and inf, -inf, a negative, 2**53+1 or a Unix
    # timestamp went into it as they were); 10**400 and a Decimal were lost as cache and metrics errors
    recorder = RequestRecorder(metrics, service="svc")
    users = FeatureCache("users", metrics=metrics)
    tl = recorder.begin()
    users.record(bad, hits=1)
    users.record(0.25, hits=1)
    recorder.finish(tl, "/p", "GET", "200")
    assert cache_errors(registry) == 1
    assert count(registry, "users", "hit") == 2
    assert (duration_sum(registry, "users", "hit"), timed(registry, "users", "hit")) == (0.25, 1)
    assert features_phase(registry) == 0.25


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_a_count_that_is_no_count_is_refused_and_the_lookups_time_kept(registry: CollectorRegistry,
                                                                         metrics: Metrics, bad: Any) -> None:
    # before: NaN or inf made the hit counter NaN or inf for good; 1.5, 2**53+1 and numpy floats were counted as
    # they were, True as one hit; a negative, 10**400, a Decimal or a str failed the rest of the lookup's counts
    recorder = RequestRecorder(metrics, service="svc")
    users = FeatureCache("users", metrics=metrics)
    tl = recorder.begin()
    users.record(0.5, hits=bad, misses=1)
    users.record(0.25, hits=1)
    recorder.finish(tl, "/p", "GET", "200")
    assert cache_errors(registry) == 1
    assert (count(registry, "users", "hit"), count(registry, "users", "miss")) == (1, 0)
    assert (duration_sum(registry, "users", "hit"), timed(registry, "users", "hit"), timed(registry, "users", "miss")) \
        == (0.25, 1, 0)
    assert features_phase(registry) == 0.75  # the refused lookup's time is still the request's


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_a_lookup_told_a_bad_number_of_keys_counts_an_error_and_raises_nothing(registry: CollectorRegistry,
                                                                                metrics: Metrics, bad: Any) -> None:
    # before: a str or None raised TypeError out of the app's with-block; NaN poisoned the hit counter
    users = FeatureCache("users", metrics=metrics)
    with users.lookup() as lk:
        lk.hit(bad)
        lk.miss(bad)
        lk.miss()
    with users.lookup() as lk:
        lk.hit(2)
    assert cache_errors(registry) == 2
    assert (count(registry, "users", "hit"), count(registry, "users", "miss")) == (2, 1)


@pytest.mark.parametrize("other", OTHER_SECONDS)
def test_a_lookup_time_of_another_numeric_type_is_recorded_as_a_float(registry: CollectorRegistry,
                                                                       metrics: Metrics, other: Any) -> None:
    # before: a numpy float32 made the duration's _sum a float32 for good, a Decimal was lost as an error
    users = FeatureCache("users", metrics=metrics, phase=None)
    users.record(other, hits=1)
    users.record(0.25, misses=1)
    total = duration_sum(registry, "users", "hit")
    assert total == float(other) and exact_float(total)
    assert cache_errors(registry) == 0


@pytest.mark.parametrize("other", OTHER_COUNTS)
def test_numpy_integer_counts_are_counted(registry: CollectorRegistry, metrics: Metrics, other: Any) -> None:
    users = FeatureCache("users", metrics=metrics, phase=None)
    users.record(0.5, hits=other)
    with users.lookup() as lk:
        lk.miss(other)
    assert (count(registry, "users", "hit"), count(registry, "users", "miss")) == (2, 2)
    assert cache_errors(registry) == 0


async def test_sync_function_returning_an_awaitable_is_timed_when_awaited(registry: CollectorRegistry,
                                                                         metrics: Metrics) -> None:
    c = FeatureCache("lazy", metrics=metrics)

    async def fetch(key: str) -> str | None:
        return None if key == "nope" else key.upper()

    lookup = c.wrap(lambda key: fetch(key))  # e.g. a lambda around an asyncio client call
    pending = lookup("a")
    assert count(registry, "lazy", "hit") == 0  # nothing is known until it is awaited
    assert await pending == "A"
    assert await lookup("nope") is None
    assert (count(registry, "lazy", "hit"), count(registry, "lazy", "miss")) == (1, 1)


def results(registry: CollectorRegistry, cache: str) -> tuple[float, float, float]:
    return count(registry, cache, "hit"), count(registry, cache, "miss"), count(registry, cache, "error")


def test_a_batch_lookup_of_no_keys_counts_no_hit(registry: CollectorRegistry, metrics: Metrics) -> None:
    # before: a block saying hit(0) / miss(0) (a batch with no keys) was taken for one that said nothing and counted
    # as one hit: two empty batches and one batch of two misses read as a 50 % hit ratio
    c = FeatureCache("batches", metrics=metrics)
    for keys in ([], [], ["a", "b"]):
        with c.lookup() as lk:
            rows: list[None] = [None for _ in keys]
            lk.hit(sum(row is not None for row in rows))
            lk.miss(sum(row is None for row in rows))
    assert results(registry, "batches") == (0, 2, 0)
    with c.lookup():
        pass  # a block that says nothing is still one hit
    assert results(registry, "batches") == (1, 2, 0)


def test_a_lookup_used_in_several_blocks_counts_each_block_once(registry: CollectorRegistry,
                                                                metrics: Metrics) -> None:
    # before: the hits and misses of every earlier block were counted again at the end of each later one (6 hits)
    c = FeatureCache("reused", metrics=metrics)
    lk = c.lookup()
    for row in ("a", None, "b"):
        with lk:
            lk.found(row)
    assert results(registry, "reused") == (2, 1, 0)
    assert (timed(registry, "reused", "hit"), timed(registry, "reused", "miss")) == (2, 1)


async def test_a_lookup_cancelled_by_a_timeout_is_an_error(registry: CollectorRegistry, metrics: Metrics) -> None:
    # before: a lookup cancelled by asyncio.wait_for (a CancelledError, no Exception) was not counted at all, so the
    # slowest lookups vanished from the counts, the durations and the features phase
    c = FeatureCache("cancelled", metrics=metrics)
    never = asyncio.Event()

    @c.wrap
    async def load(key: str) -> str:
        await never.wait()
        return key

    async def load_in_block(key: str) -> str:
        async with c.lookup() as lk:
            await never.wait()
            return str(lk.found(key))

    lazy = c.wrap(lambda key: load.__wrapped__(key))  # type: ignore[attr-defined]  # a sync lambda, awaited later
    for lookup in (load, load_in_block, lazy):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lookup("k"), 0.01)
    assert results(registry, "cancelled") == (0, 0, 3)
    assert timed(registry, "cancelled", "error") == 3


def test_a_lookup_interrupted_by_a_base_exception_passes_it_on_and_counts_sensibly(registry: CollectorRegistry,
                                                                                   metrics: Metrics) -> None:
    c = FeatureCache("interrupted", metrics=metrics)

    @c.wrap
    def load(key: str) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load("k")
    with pytest.raises(KeyboardInterrupt), c.lookup():
        raise KeyboardInterrupt
    assert results(registry, "interrupted") == (0, 0, 2)

    def rows() -> Any:
        with c.lookup() as lk:
            yield lk.found("row")  # the lookup is done; the consumer then stops early

    consumer = rows()
    assert next(consumer) == "row"
    consumer.close()  # GeneratorExit leaves the block: the hit stands
    assert results(registry, "interrupted") == (1, 0, 2)
