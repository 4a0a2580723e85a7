"""Feature-store cache hits: count every lookup as a hit, a miss or an error, and time it.

Three ways to wrap a lookup, all recording ``aiwatch_feature_cache_requests_total{cache,result}`` and
``aiwatch_feature_cache_lookup_duration_seconds{cache,result}`` and adding the lookup's time to the current
request's ``features`` phase::

    import aiwatch

    users = aiwatch.FeatureCache("user_features")

    @users.wrap                              # decorator (sync or async, not a generator): None is a miss
    def load(user_id): return store.get(user_id)

    with users.lookup() as lk:               # context manager: say what happened
        row = store.get(user_id)
        lk.found(row)                        # hit if row is not None, else miss (or lk.hit() / lk.miss(n))

    store = aiwatch.instrument_redis(redis.Redis(...), cache="user_features")   # wrapper objects
    local = aiwatch.instrument_mapping(cachetools.LRUCache(10_000), cache="local_features")

Results: ``hit`` / ``miss`` / ``error`` (the lookup raised, or was cancelled or interrupted: an
``asyncio.CancelledError`` from a timeout, a ``KeyboardInterrupt``, which propagate as usual). A batch lookup
(``mget``) counts each key; its one duration observation is labelled ``error`` if it raised, ``miss`` if any key
missed, else ``hit``. The app's own
exceptions (a Redis connection error, a ``KeyError`` from a mapping) are counted and re-raised untouched; aiwatch's
own recording failures are counted in ``aiwatch_instrumentation_errors_total{component="cache"}`` and swallowed.
"""

from __future__ import annotations

import copy
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from prometheus_client import CollectorRegistry

from aiwatch.amounts import MAX_COUNT, MAX_SECONDS, as_seconds, count, shown
from aiwatch.cardinality import guard_for
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.safety import errors_of
from aiwatch.timing import phase as _phase
from aiwatch.timing import record_phase

HIT = "hit"
MISS = "miss"
ERROR = "error"

F = TypeVar("F", bound=Callable[..., Any])
_clock = time.perf_counter
_MISSING = object()


def _not_none(value: Any) -> bool:
    return value is not None


class FeatureCache:
    """Records the lookups of one feature cache (the ``cache`` label).

    - ``phase``: the request phase the lookup time goes to (default ``features``; ``None`` for none).
    - ``model``: the ``model`` label of that phase (default: the request's model).
    - ``metrics`` / ``registry``: where the metrics go (default prometheus_client's global registry).
    """

    def __init__(self, cache: str, *, phase: str | None = "features", model: str | None = None,
                 metrics: Metrics | None = None, registry: CollectorRegistry | None = None) -> None:
        if not isinstance(cache, str) or not cache:
            raise ValueError(f"a feature cache needs a non-empty name, got {cache!r}")
        if phase is not None:
            _phase(phase)  # validates the name now rather than on every lookup
        self.cache = cache
        self.phase = phase
        self.model = model
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        self._error = errors_of("cache", shown(cache), self.metrics)
        m = self.metrics
        label = guard_for(m).fold("cache", cache)
        self._counts = {r: m.child(m.feature_cache_requests, (label, r)) for r in (HIT, MISS, ERROR)}
        self._durations = {r: m.child(m.feature_cache_lookup_duration, (label, r)) for r in (HIT, MISS, ERROR)}

    def record(self, seconds: float, hits: int = 0, misses: int = 0, errors: int = 0) -> None:
        """Record one lookup call that took ``seconds`` and found ``hits`` keys, missed ``misses`` and failed
        ``errors`` (a single-key lookup passes a 1 in one of them). Never raises.

        The counts are integers from 0 to 2**53 (``int`` or numpy integers) and ``seconds`` a number of seconds
        from 0 to 1e9 (:mod:`aiwatch.amounts`). A bad number is counted as aiwatch's error (component ``cache``)
        and what depends on it is left out: bad counts leave out the lookup's counts and duration, bad seconds its
        duration and its phase time."""
        counted = timed = True
        if not (hits.__class__ is misses.__class__ is errors.__class__ is int  # the common case: ints in range
                and 0 <= hits <= MAX_COUNT and 0 <= misses <= MAX_COUNT and 0 <= errors <= MAX_COUNT):
            try:
                hits, misses, errors = count(hits, "hits"), count(misses, "misses"), count(errors, "errors")
            except (TypeError, ValueError) as exc:
                self._error(exc)
                counted = False
        if seconds.__class__ is not float or not 0.0 <= seconds <= MAX_SECONDS:
            checked = as_seconds(seconds)
            if checked is None:
                self._error(ValueError(f"a lookup's seconds must be a number of seconds from 0 to 1e9, got "
                                       f"{shown(seconds)}"))
                timed = False
            else:
                seconds = checked
        if counted:
            try:
                if hits:
                    self._counts[HIT].inc(hits)
                if misses:
                    self._counts[MISS].inc(misses)
                if errors:
                    self._counts[ERROR].inc(errors)
                if timed:
                    self._durations[ERROR if errors else MISS if misses else HIT].observe(seconds)
            except Exception as exc:
                self._error(exc)
        if timed and self.phase is not None:
            try:
                record_phase(self.phase, seconds, self.model)
            except Exception as exc:
                self._error(exc)

    def lookup(self) -> Lookup:
        """A context manager (``with`` / ``async with``) timing one lookup; see :class:`Lookup`."""
        return Lookup(self)

    @overload
    def wrap(self, fn: F) -> F: ...

    @overload
    def wrap(self, fn: None = None, *, is_hit: Callable[[Any], bool] | None = None) -> Callable[[F], F]: ...

    def wrap(self, fn: F | None = None, *, is_hit: Callable[[Any], bool] | None = None) -> F | Callable[[F], F]:
        """Decorate a lookup function (sync or async): its return value is a hit when ``is_hit(value)`` (default:
        not ``None``), an exception is an error (re-raised).

        A generator or async generator function is refused with a ``TypeError``: calling it only creates the
        generator, so there is no lookup to time; time the lookup inside it with :meth:`lookup` instead."""
        check = is_hit or _not_none

        def decorate(func: F) -> F:
            if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
                kind = "an async generator" if inspect.isasyncgenfunction(func) else "a generator"
                name = getattr(func, "__qualname__", None) or repr(func)
                raise TypeError(f"FeatureCache.wrap() cannot time {name!r}: it is {kind} function, and calling it "
                                f"only creates the generator; time the lookup inside it with "
                                f"'with cache.lookup() as lk:' instead")
            if inspect.iscoroutinefunction(func):
                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    start = _clock()
                    try:
                        value = await func(*args, **kwargs)
                    except BaseException:  # a cancelled lookup (a timeout) is a failed one too
                        self.record(_clock() - start, errors=1)
                        raise
                    self._classified(start, value, check)
                    return value

                return cast(F, async_wrapper)

            def classify(value: Any) -> tuple[int, int]:
                return (1, 0) if check(value) else (0, 1)

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                # a sync function may still return an awaitable (a partial of a coroutine function): call() awaits it
                return self.call(func, args, kwargs, classify=classify)

            return cast(F, wrapper)

        return decorate(fn) if fn is not None else decorate

    def _classified(self, start: float, value: Any, check: Callable[[Any], bool]) -> None:
        seconds = _clock() - start
        try:
            hit = bool(check(value))
        except Exception as exc:  # the user's is_hit broke: count the lookup as a hit and the hook as an error
            self._error(exc)
            hit = True
        self.record(seconds, hits=int(hit), misses=int(not hit))

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, *,
             classify: Callable[[Any], tuple[int, int]] | None = None, keys: int = 1) -> Any:
        """Call ``fn(*args, **kwargs)`` as a lookup of ``keys`` keys; ``classify(result) -> (hits, misses)``
        (default: one key, a hit unless ``None``).

        If ``fn`` returns an awaitable (an asyncio client), the returned awaitable records when it completes.
        Exceptions (``BaseException`` too: a cancelled lookup) count ``keys`` errors and are re-raised untouched."""
        if classify is None:
            classify = _one
        if kwargs is None:
            kwargs = {}
        start = _clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            self.record(_clock() - start, errors=keys)
            raise
        if inspect.isawaitable(result):
            return self._await(result, start, classify, keys)
        self._counted(start, result, classify, keys)
        return result

    async def _await(self, awaitable: Awaitable[Any], start: float, classify: Callable[[Any], tuple[int, int]],
                     keys: int) -> Any:
        try:
            result = await awaitable
        except BaseException:  # a cancelled lookup (a timeout) is a failed one too
            self.record(_clock() - start, errors=keys)
            raise
        self._counted(start, result, classify, keys)
        return result

    def _counted(self, start: float, result: Any, classify: Callable[[Any], tuple[int, int]], keys: int) -> None:
        seconds = _clock() - start
        try:
            hits, misses = classify(result)
        except Exception as exc:
            self._error(exc)
            hits, misses = keys, 0
        self.record(seconds, hits=hits, misses=misses)


class Lookup:
    """One timed lookup (from :meth:`FeatureCache.lookup`). Inside the block, say what happened with
    :meth:`hit`, :meth:`miss` or :meth:`found`; an exception leaving the block is an ``error`` (and propagates);
    a block that says nothing counts as one hit (one that says ``hit(0)``, a batch of no keys, counts none). A
    ``BaseException`` that is not an ``Exception`` (a cancelled task, ``KeyboardInterrupt``, ``GeneratorExit``) is
    one ``error`` too, unless the block had already said what it found: that is then counted, as the lookup itself
    was done. Each block counts once: a ``Lookup`` used in
    several ``with`` blocks starts each from nothing."""

    __slots__ = ("_cache", "_said", "_start", "hits", "misses")

    def __init__(self, cache: FeatureCache) -> None:
        self._cache = cache
        self._start = 0.0
        self.hits = 0
        self.misses = 0
        #: whether the block said what it found (``hit(0)`` of an empty batch too: that is no hit)
        self._said = False

    def hit(self, n: int = 1) -> None:
        """Count ``n`` keys found. ``n`` is an integer from 0 to 2**53; anything else is counted as aiwatch's error
        (component ``cache``) and ignored, never raised."""
        if n.__class__ is not int or not 0 <= n <= MAX_COUNT:
            n = self._count(n, "hit")
        self.hits += n
        self._said = True

    def miss(self, n: int = 1) -> None:
        """Count ``n`` keys missed; ``n`` as for :meth:`hit`."""
        if n.__class__ is not int or not 0 <= n <= MAX_COUNT:
            n = self._count(n, "miss")
        self.misses += n
        self._said = True

    def _count(self, n: Any, method: str) -> int:
        try:
            return count(n, f"Lookup.{method}(n)")
        except (TypeError, ValueError) as exc:
            self._cache._error(exc)
            return 0

    def found(self, value: Any) -> Any:
        """Count ``value`` as a hit unless it is ``None``; returns ``value``."""
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        self._said = True
        return value

    def __enter__(self) -> Lookup:
        self._start = _clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        seconds = _clock() - self._start
        hits, misses, said = self.hits, self.misses, self._said
        self.hits = self.misses = 0
        self._said = False
        if exc is None or (not isinstance(exc, Exception) and said):
            self._cache.record(seconds, hits=hits if said else 1, misses=misses)
        else:
            self._cache.record(seconds, errors=max(hits + misses, 1))

    async def __aenter__(self) -> Lookup:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def _one(value: Any) -> tuple[int, int]:
    return (0, 1) if value is None else (1, 0)


def _nonempty(value: Any) -> tuple[int, int]:
    return (1, 0) if value else (0, 1)


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _each(values: Any) -> tuple[int, int]:
    hits = sum(1 for v in values if v is not None)
    return hits, len(values) - hits


class InstrumentedRedis:
    """A redis-py client (``redis.Redis`` or ``redis.asyncio.Redis``) whose ``get``, ``mget`` and ``hgetall`` are
    recorded as feature-cache lookups; every other attribute is the client's own.

    ``get``: ``None`` is a miss. ``mget``: each key is a hit or a miss. ``hgetall``: an empty dict is a miss.
    Redis errors are counted as ``error`` and re-raised unchanged."""

    def __init__(self, client: Any, cache: FeatureCache) -> None:
        self.client = client
        self.feature_cache = cache

    def get(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        return self.feature_cache.call(self.client.get, (name, *args), kwargs, classify=_one)

    def hgetall(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        return self.feature_cache.call(self.client.hgetall, (name, *args), kwargs, classify=_nonempty)

    def mget(self, keys: Any, *args: Any, **kwargs: Any) -> Any:
        # what redis-py's list_or_args() takes for one key or for a list of them; an iterator is read once here,
        # then handed to redis as a list
        if isinstance(keys, (str, bytes, bytearray, memoryview)) or not _iterable(keys):
            count = 1 + len(args)
        else:
            keys = list(keys)
            count = len(keys) + len(args)
        return self.feature_cache.call(self.client.mget, (keys, *args), kwargs, classify=_each, keys=count)

    def __getattr__(self, name: str) -> Any:
        if name in ("client", "feature_cache"):
            raise AttributeError(name)
        return getattr(self.client, name)

    # ``with`` and ``async with`` look these up on the type, not through __getattr__: the client's own run, and the
    # block gets this wrapper, so lookups inside it are recorded too
    def __enter__(self) -> InstrumentedRedis:
        self.client.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.client.__exit__(*exc_info)

    async def __aenter__(self) -> InstrumentedRedis:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.client.__aexit__(*exc_info)

    def __repr__(self) -> str:
        return f"InstrumentedRedis({self.client!r}, cache={self.feature_cache.cache!r})"


class InstrumentedMapping(MutableMapping[Any, Any]):
    """A dict, an LRU cache or any mapping whose lookups (``m[key]``, ``m.get(key)``) are recorded.

    ``m[key]`` raising ``KeyError`` is a miss (the ``KeyError`` propagates as usual), and so is ``m[key]`` of a key
    that was absent from a mapping with ``__missing__`` (a ``defaultdict``, a loading cache); ``m.get(key)`` of an
    absent key is a miss. Any other exception is an error. Everything else is the mapping's own and unrecorded: writes,
    ``in``, ``len``, iteration, ``keys()`` / ``values()`` / ``items()``, ``==``, ``pop`` / ``popitem`` /
    ``setdefault`` / ``update`` / ``clear``, ``reversed()``, ``|`` / ``|=``, and other attributes (``cache_info``,
    ``maxsize``...). ``copy.copy`` / ``copy.deepcopy`` copy the mapping into a new wrapper of the same cache."""

    def __init__(self, mapping: Any, cache: FeatureCache) -> None:
        if not hasattr(mapping, "__getitem__"):
            raise TypeError(f"instrument_mapping() needs a mapping, got {type(mapping).__name__!r}")
        self.mapping = mapping
        self.feature_cache = cache

    def __getitem__(self, key: Any) -> Any:
        start = _clock()
        mapping = self.mapping
        try:
            # a mapping with __missing__ (a defaultdict, a dict that loads what it lacks) answers an absent key
            # instead of raising KeyError: whether the key was there is asked first
            present = key in mapping if hasattr(type(mapping), "__missing__") else True
            value = mapping[key]
        except KeyError:
            self.feature_cache.record(_clock() - start, misses=1)
            raise
        except BaseException:
            self.feature_cache.record(_clock() - start, errors=1)
            raise
        self.feature_cache.record(_clock() - start, hits=int(present), misses=int(not present))
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        start = _clock()
        try:
            getter = getattr(self.mapping, "get", None)
            if getter is not None:
                value = getter(key, _MISSING)
            else:
                try:
                    value = self.mapping[key]
                except KeyError:
                    value = _MISSING
        except BaseException:
            self.feature_cache.record(_clock() - start, errors=1)
            raise
        if value is _MISSING:
            self.feature_cache.record(_clock() - start, misses=1)
            return default
        self.feature_cache.record(_clock() - start, hits=1)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.mapping[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.mapping[key]

    def __contains__(self, key: object) -> bool:
        return key in self.mapping

    def __iter__(self) -> Iterator[Any]:
        return iter(self.mapping)

    def __len__(self) -> int:
        return len(self.mapping)

    # MutableMapping's mixins would read every value through __getitem__ and count each as a lookup: these go to
    # the mapping itself
    def keys(self) -> Any:
        return self.mapping.keys() if hasattr(self.mapping, "keys") else KeysView(self.mapping)

    def values(self) -> Any:
        return self.mapping.values() if hasattr(self.mapping, "values") else ValuesView(self.mapping)

    def items(self) -> Any:
        return self.mapping.items() if hasattr(self.mapping, "items") else ItemsView(self.mapping)

    def __eq__(self, other: object) -> bool:
        return bool(self.mapping == (other.mapping if isinstance(other, InstrumentedMapping) else other))

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def pop(self, key: Any, *default: Any) -> Any:
        return self.mapping.pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        return self.mapping.popitem()  # type: ignore[no-any-return]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return self.mapping.setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.mapping.update(*args, **kwargs)

    def clear(self) -> None:
        self.mapping.clear()

    # special methods are looked up on the type, not through __getattr__: these are the mapping's own (a dict's
    # reversed() and |), and a copy copies the mapping (into a wrapper of the same cache), not just the wrapper
    def __reversed__(self) -> Iterator[Any]:
        return cast(Iterator[Any], reversed(self.mapping))

    def __or__(self, other: Any) -> Any:
        return self.mapping | (other.mapping if isinstance(other, InstrumentedMapping) else other)

    def __ror__(self, other: Any) -> Any:
        return other | self.mapping

    def __ior__(self, other: Any) -> InstrumentedMapping:
        self.mapping |= other.mapping if isinstance(other, InstrumentedMapping) else other
        return self

    def __copy__(self) -> InstrumentedMapping:
        return InstrumentedMapping(copy.copy(self.mapping), self.feature_cache)

    def __deepcopy__(self, memo: dict[int, Any]) -> InstrumentedMapping:
        return InstrumentedMapping(copy.deepcopy(self.mapping, memo), self.feature_cache)

    def __getattr__(self, name: str) -> Any:
        if name in ("mapping", "feature_cache"):
            raise AttributeError(name)
        return getattr(self.mapping, name)

    def __repr__(self) -> str:
        return f"InstrumentedMapping({self.mapping!r}, cache={self.feature_cache.cache!r})"


def instrument_redis(client: Any, cache: str = "redis", **options: Any) -> InstrumentedRedis:
    """Wrap a redis-py client (sync or asyncio); ``options`` go to :class:`FeatureCache`."""
    if not callable(getattr(client, "get", None)) or not callable(getattr(client, "mget", None)):
        raise TypeError(f"instrument_redis() needs a redis-py client, got {type(client).__name__!r}")
    return InstrumentedRedis(client, FeatureCache(cache, **options))


def instrument_mapping(mapping: Any, cache: str = "local", **options: Any) -> InstrumentedMapping:
    """Wrap a dict / LRU cache / any mapping; ``options`` go to :class:`FeatureCache`."""
    return InstrumentedMapping(mapping, FeatureCache(cache, **options))
