"""The streaming drift monitor: cheap counting on the request path, exact tests off it.

    >>> import numpy as np
    >>> from prometheus_client import CollectorRegistry
    >>> from aiwatch.drift import DriftMonitor, ReferenceProfile
    >>> rng = np.random.default_rng(1)
    >>> profile = ReferenceProfile.build({"x": rng.normal(size=2000), "color": ["red", "blue"] * 1000})
    >>> monitor = DriftMonitor(profile, model="ranker", registry=CollectorRegistry(), window_size=500)
    >>> monitor.observe({"x": 0.3, "color": "red"})          # one request
    >>> monitor.observe_batch({"x": rng.normal(3, 1, 400), "color": ["red"] * 400})  # or a batch
    >>> report = monitor.evaluate()
    >>> report.features["x"].drifted, report.features["color"].method
    (True, 'jensenshannon')

``observe`` only validates each value, writes it into a fixed-size ring buffer (the window) and, every
``flush_every`` rows, counts the new rows into the reference bins (``aiwatch_feature_bin_total``, the fleet sketch).
Tests run in :meth:`DriftMonitor.evaluate`, on demand or every ``interval`` seconds on a background thread
(:meth:`start`). Nothing in ``observe`` raises into the caller: bad input is counted
(``aiwatch_feature_missing_total``, ``aiwatch_feature_invalid_total``) and aiwatch's own failures are counted in
``aiwatch_instrumentation_errors_total{component="drift"}``.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aiwatch.amounts import as_count, period, shown, warn_implausible
from aiwatch.amounts import timeout as seconds_to_wait
from aiwatch.cardinality import guard_for
from aiwatch.deferred import at_scrape
from aiwatch.drift.columns import columns_of, to_float, to_float_flagging
from aiwatch.drift.counting import INVALID, MISSING, count_bins
from aiwatch.drift.current import CurrentFeature, categorical_current_from_codes, numerical_current
from aiwatch.drift.evaluate import STATUS_OK, DriftReport, Options, compare_features, needs_bins, options_of
from aiwatch.drift.features import CategoricalFeature, NumericalFeature
from aiwatch.drift.profile import ReferenceProfile
from aiwatch.forksafe import at_fork_in_child, renew_at_fork
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.prefork import check_fork_hooks, uwsgi_master
from aiwatch.safety import errors_of, record_problem, warn_rate_limited
from aiwatch.utf8 import text_or_value

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_ABSENT = object()
MAX_UNKNOWN_FEATURES = 1000
"""Unknown feature names a monitor remembers (to count and report each once); see
:meth:`DriftMonitor._count_unknown`."""
MAX_UNKNOWN_NAME_CHARS = 200
"""An unknown feature name longer than this is cut to its first this many characters and ``...`` where the monitor
keeps it and in the label it is counted under (a client's key can be as long as its request)."""
MAX_WINDOW_BYTES = 2**30
"""The most memory a monitor's window may take (1 GiB): it holds ``8 + 8 x numerical + 4 x categorical features``
bytes per row, and each evaluation copies it. A monitor lives in the serving process beside its model, and its exact
tests sample 100 000 values anyway, so a larger window only spends memory; ``window_size`` past it is a ValueError
naming it and the largest this profile allows (one numerical feature: 67 million rows), instead of numpy's
ArrayMemoryError, or the OOM killer, at start-up."""
#: How the numerical window marks a value excluded for another reason than being missing (wrong-typed, or absent
#: from its row): a missing value is NaN there, so +inf (which a value never is: a non-finite value is missing) is
#: free. The categorical window marks them INVALID, and a missing value MISSING. The report tells them apart.
_NOT_A_VALUE = math.inf


#: A drift ``interval`` outside these bounds (a second, an hour) is warned of: below, the window is evaluated more
#: often than any scrape reads the gauges (``0.001``: a thousand evaluations a second); above, drift shows an hour
#: or more late (``5000`` meant as milliseconds).
SHORT_INTERVAL, LONG_INTERVAL = 1.0, 3600.0


def _interval(value: float) -> float:
    interval = period(value, "interval")
    if interval < SHORT_INTERVAL:
        warn_implausible(interval, "the drift monitor's interval", below=SHORT_INTERVAL,
                         effect="every statistic of the window is recomputed that often, for gauges no scrape reads "
                                "in between (the default is 60)")
    else:
        warn_implausible(interval, "the drift monitor's interval", above=LONG_INTERVAL,
                         effect="the window is evaluated that rarely, so drift shows up to that late (the default is "
                                "60)")
    return interval


class DriftMonitor:
    """Monitor one model's input features (and outputs) against a reference profile.

    Args:
        profile: a :class:`ReferenceProfile` or the path of a saved one.
        model: the ``model`` label of every exported metric.
        metrics / registry: where metrics go (default: the global registry).
        window_size: the window holds the latest ``window_size`` rows (count window): an integer >= 1, whose
            window takes at most :data:`MAX_WINDOW_BYTES` (1 GiB).
        window_seconds: if set, evaluation only uses rows observed in the last ``window_seconds`` (time window,
            within the count window).
        interval: seconds between background evaluations after :meth:`start`. It, ``window_seconds`` and
            ``flush_interval`` are numbers of seconds above 0 and at most 1e9 (kept as floats), ``flush_every`` an
            integer >= 1; anything else is a ValueError naming it.
        options: test selection and verdict (:class:`aiwatch.drift.evaluate.Options`); keyword arguments such as
            ``correction="bh"``, ``methods={"age": "psi"}``, ``min_samples=50`` build one (not both: a
            ``TypeError``). ``window_size`` below ``min_samples`` is a ValueError (such a window never tests).
        flush_every / flush_interval: single-row observations are counted into the Prometheus bin counters every
            ``flush_every`` rows, on :meth:`flush` and :meth:`evaluate`, and every ``flush_interval`` seconds
            after :meth:`start`.
        clock: time source for the time window, in seconds (tests pass a fake clock). The default,
            ``time.monotonic``, does not move when the wall clock is set: with ``time.time``, a step forward left
            the rows observed just before it out of the window, and a step back kept old rows in it as long.
    """

    def __init__(self, profile: ReferenceProfile | str | os.PathLike[str], *, model: str = "default",
                 metrics: Metrics | None = None, registry: CollectorRegistry | None = None,
                 window_size: int = 1000, window_seconds: float | None = None, interval: float = 60.0,
                 options: Options | None = None, flush_every: int = 256, flush_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, **option_kwargs: Any) -> None:
        if not isinstance(profile, ReferenceProfile):
            profile = ReferenceProfile.load(profile)
        size, every = as_count(window_size), as_count(flush_every)  # before numpy allocates the window
        if not size:
            raise ValueError(f"window_size must be an integer >= 1 (at most 2**53), got {shown(window_size)}")
        if not every:
            raise ValueError(f"flush_every must be an integer >= 1, got {shown(flush_every)}")
        n_num = sum(isinstance(f, NumericalFeature) for f in profile.features.values())
        row_bytes = 8 + 8 * n_num + 4 * (len(profile.features) - n_num)
        if size * row_bytes > MAX_WINDOW_BYTES:
            raise ValueError(f"window_size must be at most {MAX_WINDOW_BYTES // row_bytes} for this profile "
                             f"({row_bytes} bytes per row, at most {MAX_WINDOW_BYTES} bytes: MAX_WINDOW_BYTES), got "
                             f"{shown(window_size)}")
        window_size = size
        self.profile = profile
        self.model = model
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        self._error = errors_of("drift", f"of model {shown(model)}", self.metrics)
        self._guard = guard_for(self.metrics)
        self.window_size = window_size
        self.window_seconds = None if window_seconds is None else period(window_seconds, "window_seconds")
        self.interval = _interval(interval)
        self.flush_interval = period(flush_interval, "flush_interval")
        self.options = options_of(options, option_kwargs)
        self.options.validate(profile)
        if window_size < self.options.min_samples:
            raise ValueError(f"window_size ({window_size}) must be at least min_samples "
                             f"({self.options.min_samples}): a window of fewer rows never holds enough values to test "
                             "a feature")
        self.clock = clock
        self._flush_every = min(every, window_size)
        self._lock = threading.Lock()
        self._eval_lock = threading.Lock()
        self._export_lock = threading.Lock()  # an export, and the hand-over that ends the exports of a schedule
        self._num: list[NumericalFeature] = [f for f in profile.features.values() if isinstance(f, NumericalFeature)]
        self._cat: list[CategoricalFeature] = [
            f for f in profile.features.values() if isinstance(f, CategoricalFeature)]
        self._num_names = [f.name for f in self._num]
        self._cat_names = [f.name for f in self._cat]
        self._num_cuts = [np.asarray(f.cuts, dtype=np.float64) for f in self._num]
        self._cat_buckets = [f.buckets() for f in self._cat]
        self._cat_code = [b.code for b in self._cat_buckets]
        self._cat_table = [b.table for b in self._cat_buckets]
        self._cat_unseen = [b.unseen for b in self._cat_buckets]
        self._n_features = len(profile.features)
        self._ring_num = np.full((window_size, len(self._num)), np.nan)
        self._ring_cat = np.full((window_size, len(self._cat)), -1, dtype=np.int32)
        self._ring_ts = np.full(window_size, -np.inf)
        self._row_num: list[float] = [math.nan] * len(self._num)
        self._row_cat: list[int] = [-1] * len(self._cat)
        self._pos = 0
        self._filled = 0
        self._pending = 0
        self._unknown_seen: set[str] = set()
        self._unknown_lock = threading.Lock()
        self._last_method: dict[str, str] = {}
        self.last_report: DriftReport | None = None
        self._thread: threading.Thread | None = None
        self._busy_since: float | None = None  # monotonic start of the schedule's evaluation (or flush) in progress
        self._stop = _Schedule()
        self._start_lock = threading.RLock()  # start() under it, from _resume_in_child's hold of it too
        self._resume = False  # in a forked child of a started monitor, until its first row starts its thread
        self._handed_over = False  # started, with its schedule left to the children forked from now on
        self._closed = False
        renew_at_fork(self)
        _made.add(self)
        m = self.metrics
        self._bin_children: dict[str, list[Any]] = {}
        all_features: list[NumericalFeature | CategoricalFeature] = [*self._num, *self._cat]
        with _series_owners_lock:
            self._take_over_series(all_features)
            _series_owners[self._owner_key()] = self
        for feat in all_features:
            # Every bin's counter exists from the start (at 0) so that PromQL sees every bin.
            labels, ref = feat.bin_labels, feat.reference_id  # a category's cut to its hash: worked out once
            self._bin_children[feat.name] = [m.labels(m.feature_bin, (model, feat.name, b, ref)) for b in labels]
            for b, share in zip(labels, feat.reference_shares(), strict=True):
                m.labels(m.feature_reference_ratio, (model, feat.name, b, ref)).set(float(share))
            total = feat.count + feat.missing
            m.labels(m.feature_reference_missing_ratio, (model, feat.name)).set(
                feat.missing / total if total else math.nan)
            m.child(m.feature_missing, (model, feat.name))
            # at 0 too: the first rows without the key would be lost to increase(), which AiwatchFeatureMissing reads
            m.child(m.feature_invalid, (model, feat.name, "missing_feature"))

    def _renew_after_fork(self) -> None:
        # The child has no evaluation thread: the one that held these is the parent's. A monitor started in the
        # parent (gunicorn --preload: at import, in the master) starts its schedule again at the child's first row,
        # not here: a child that execs at once (subprocess with preexec_fn) or never observes needs no thread.
        self._lock = threading.Lock()
        self._eval_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._stop = _Schedule()
        self._start_lock = threading.RLock()  # start() under it, from _resume_in_child's hold of it too
        # a resume still pending (the parent had no row since its own fork) is a schedule too: a grandchild keeps it
        self._resume = self._resume or self._thread is not None or self._handed_over
        self._handed_over = False
        self._thread = None
        self._busy_since = None  # the parent's thread's
        # The rows observed in the parent and not yet counted into the bin counters are the parent's to count (at
        # its next flush, or at the hand-over): counted here too, every worker added its master's rows again.
        self._pending = 0
        # The window starts empty: the parent's rows (a master's warm-up traffic) are the parent's, and every worker
        # evaluated them again as its own. Only the count is reset: the rows past it are never read, and writing the
        # ring here would copy every page of it (up to MAX_WINDOW_BYTES) into each child at the fork.
        self._filled = 0
        # and the unknown features the parent reported are reported again: the child's log may be a stream of its own
        self._unknown_seen = set()
        self._unknown_lock = threading.Lock()

    def _resume_in_child(self) -> None:
        """Start the schedule a forked child took over, at its first row. A thread that cannot start (EAGAIN) is
        counted and tried again at the next row; the row itself is observed either way."""
        with self._start_lock:
            if self._resume:
                try:
                    self.start()
                except Exception as exc:
                    self._resume = True
                    self._error(exc)

    def _owner_key(self) -> tuple[int, str]:
        # the metric object, not the Metrics: in multiprocess mode every Metrics of a process holds the same ones. It
        # lives while its owner does (the owner holds it), so its id is not another's.
        return id(self.metrics.drift_detected), text_or_value(self.model)

    def _take_over_series(self, features: list[NumericalFeature | CategoricalFeature]) -> None:
        """Remove what an earlier monitor of this model on these metrics exported (a profile reloaded at runtime; or,
        with no ``features``, everything this one exported: :meth:`close`):
        its drift gauges (this monitor sets its own at its first evaluation), and the bins, reference ratios and
        reference missing ratios this profile does not have (a bin of another ``reference``: binned by other edges).
        Left there, a category or feature only the old profile had kept its reference ratio (the fleet PSI / JS
        counted it as a bin the live traffic left), and a test the new profile does not choose kept its last
        drift_detected."""
        m = self.metrics
        model = text_or_value(self.model)
        bins = {(text_or_value(f.name), text_or_value(b), f.reference_id) for f in features for b in f.bin_labels}
        names_kept = {(text_or_value(f.name),) for f in features}
        for metric, names in ((m.drift_score, ("feature", "test")), (m.drift_pvalue, ("feature", "test")),
                              (m.drift_detected, ("feature", "test")), (m.drift_window_samples, ("feature",)),
                              (m.feature_reference_missing_ratio, ("feature",)),
                              (m.feature_reference_ratio, ("feature", "bin", "reference")),
                              (m.feature_bin, ("feature", "bin", "reference"))):
            collect = getattr(metric, "collect", None)  # not on a metric the registry refused
            if collect is None:
                continue
            exported = {tuple(s.labels[n] for n in names) for family in collect() for s in family.samples
                        if s.labels.get("model") == model}
            keep = (bins if metric is m.feature_bin or metric is m.feature_reference_ratio
                    else names_kept if metric is m.feature_reference_missing_ratio else set())
            for labels in exported - keep:
                m.remove(metric, (model, *labels))

    # ------------------------------------------------------------------------------------------ request path
    def observe(self, row: Mapping[str, Any], outputs: Mapping[str, Any] | None = None) -> None:
        """Record one row (feature name -> value); ``outputs`` (the model's outputs) are monitored like inputs."""
        try:
            if not isinstance(row, Mapping):
                raise TypeError(f"observe() expects a mapping of feature -> value, got {type(row).__name__}")
            if outputs is not None:
                if not isinstance(outputs, Mapping):
                    raise TypeError("observe() outputs= must be a mapping of output name -> value (or None), got "
                                    f"{type(outputs).__name__}")
                row = {**row, **outputs}
            if self._resume:
                self._resume_in_child()
            if self._closed:
                return
            with self._lock:
                unknown = self._observe_row(row)
            if unknown:
                self._count_unknown(unknown)
        except Exception as exc:
            self._error(exc)

    def _observe_row(self, row: Mapping[str, Any]) -> list[str] | None:
        # A row is counted whole or not at all: every value is read first (a value's own __float__, __hash__ or
        # __str__ can raise), and only then is anything counted or written. Its unknown features are returned, for
        # the caller to count after the lock (_count_unknown).
        absent = 0
        excluded: list[tuple[str, str]] = []  # (feature, reason), "" for a missing value
        nums = self._row_num
        for i, name in enumerate(self._num_names):
            v = row.get(name, _ABSENT)
            t = type(v)
            if t is float or t is int:  # to_float's common case, inlined: this runs for every value of every row
                if v - v == 0:  # finite
                    nums[i] = v
                    continue
                excluded.append((name, ""))
            elif v is _ABSENT:
                absent += 1
                excluded.append((name, "missing_feature"))
                nums[i] = _NOT_A_VALUE
                continue
            else:
                f = to_float(v)
                if f is None:
                    excluded.append((name, "wrong_type"))
                    nums[i] = _NOT_A_VALUE
                    continue
                if math.isfinite(f):
                    nums[i] = f
                    continue
                excluded.append((name, ""))
            nums[i] = math.nan
        cats = self._row_cat
        for j, name in enumerate(self._cat_names):
            v = row.get(name, _ABSENT)
            if type(v) is str:  # CategoryBuckets.code's common case, inlined like to_float's above
                cats[j] = self._cat_table[j].get(v, self._cat_unseen[j])
                continue
            if v is _ABSENT:
                absent += 1
                excluded.append((name, "missing_feature"))
                code = INVALID
            else:
                code = self._cat_code[j](v)
                if code == MISSING:
                    excluded.append((name, ""))
                elif code == INVALID:
                    excluded.append((name, "wrong_type"))
            cats[j] = code
        unknown = self._unknown_names(row) if len(row) > self._n_features - absent else None
        now = self.clock()
        pos = self._pos
        try:
            self._ring_num[pos] = nums
        except OverflowError:  # an int past float64, kept as it is by the common case above
            self._ring_num[pos] = self._huge_ints_as_missing(nums, excluded)
        self._ring_cat[pos] = cats
        self._ring_ts[pos] = now
        self._pos = (pos + 1) % self.window_size
        self._filled = min(self._filled + 1, self.window_size)
        self._pending += 1
        for name, reason in excluded:
            if reason:
                self._count_invalid(name, reason)
            else:
                self._count_missing(name)
        if self._pending >= self._flush_every:
            self._flush_locked()
        return unknown

    def _huge_ints_as_missing(self, nums: list[float], excluded: list[tuple[str, str]]) -> list[float]:
        """``nums`` with each int too large for a float (infinite there, like any non-finite value: missing) made
        NaN, and noted in ``excluded`` as missing."""
        for i, v in enumerate(nums):
            if type(v) is int and not math.isfinite(to_float(v) or 0.0):
                nums[i] = math.nan
                excluded.append((self._num_names[i], ""))
        return nums

    def observe_batch(self, data: Any, outputs: Any = None) -> None:
        """Record many rows at once: a dict of columns (lists or numpy arrays), a pandas DataFrame or a list of row
        dicts; ``outputs`` (same row count) are monitored like inputs. Vectorised per column (a list of row dicts
        goes row by row, with the same per-row accounting as :meth:`observe`)."""
        try:
            if self._resume:
                self._resume_in_child()
            if self._closed:
                return
            if isinstance(data, list) and outputs is None:
                unknown: list[str] = []
                try:
                    with self._lock:
                        for row in data:
                            if not isinstance(row, Mapping):
                                raise TypeError(f"observe_batch rows must be mappings, got {type(row).__name__}")
                            unknown.extend(self._observe_row(row) or ())
                finally:
                    if unknown:  # of the rows observed, a row that is no mapping or failed notwithstanding
                        self._count_unknown(unknown)
                return
            columns = columns_of(data)
            if outputs is not None:
                columns.update(columns_of(outputs))
            # read without the lock: every observe() waits while it is held (a 200k-row batch's reading held it
            # 0.38 s); only the window's writes and the counting need it
            batch = self._read_columns(columns)
            if batch is not None:
                with self._lock:
                    self._write_columns(batch)
                if batch.unknown:
                    self._count_unknown(batch.unknown)
        except Exception as exc:
            self._error(exc)

    def _read_columns(self, columns: Mapping[str, Any]) -> _Batch | None:
        """A batch's rows for the window and its counts, read from ``columns`` (None for no rows); nothing is
        written or counted."""
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"observe_batch columns have different lengths: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if n == 0:
            return None
        keep = min(n, self.window_size)
        num_block = np.full((keep, len(self._num)), np.nan)
        cat_block = np.full((keep, len(self._cat)), -1, dtype=np.int32)
        # as a row, the batch is counted whole or not at all: every column is read before anything is counted
        missing: list[tuple[str, int]] = []
        invalid: list[tuple[str, str, int]] = []
        binned: list[tuple[str, npt.NDArray[np.int64]]] = []
        for i, feat in enumerate(self._num):
            col = columns.get(feat.name)
            if col is None:
                invalid.append((feat.name, "missing_feature", n))
                num_block[:, i] = _NOT_A_VALUE
                continue
            arr, wrong_typed = to_float_flagging(col)
            wrong = 0 if wrong_typed is None else int(np.count_nonzero(wrong_typed))
            finite_mask = np.isfinite(arr)
            finite = arr[finite_mask]
            invalid.append((feat.name, "wrong_type", wrong))
            missing.append((feat.name, n - wrong - finite.size))
            binned.append((feat.name, count_bins(self._num_cuts[i], finite)))
            kept = np.where(finite_mask, arr, np.nan)
            if wrong_typed is not None:
                kept[wrong_typed] = _NOT_A_VALUE
            num_block[:, i] = kept[n - keep:]
        for j, cfeat in enumerate(self._cat):
            col = columns.get(cfeat.name)
            if col is None:
                invalid.append((cfeat.name, "missing_feature", n))
                cat_block[:, j] = INVALID
                continue
            codes = self._cat_buckets[j].codes(col)
            counts, n_missing, n_invalid = self._cat_buckets[j].count_codes(codes)
            missing.append((cfeat.name, n_missing))
            invalid.append((cfeat.name, "wrong_type", n_invalid))
            binned.append((cfeat.name, counts))
            cat_block[:, j] = codes[n - keep:]
        return _Batch(num_block, cat_block, missing, invalid, binned, self._unknown_names(columns))

    def _write_columns(self, batch: _Batch) -> None:
        """Write a batch read by :meth:`_read_columns` into the window and count it (under the lock)."""
        self._flush_locked()
        num_block, cat_block, keep = batch.num_block, batch.cat_block, len(batch.num_block)
        missing, invalid, binned = batch.missing, batch.invalid, batch.binned
        now = self.clock()
        rows = (self._pos + np.arange(keep)) % self.window_size
        self._ring_num[rows] = num_block
        self._ring_cat[rows] = cat_block
        self._ring_ts[rows] = now
        self._pos = int((self._pos + keep) % self.window_size)
        self._filled = min(self._filled + keep, self.window_size)
        m = self.metrics
        for name, k in missing:
            if k:
                m.child(m.feature_missing, (self.model, name)).inc(k)
        for name, reason, k in invalid:
            if k:
                self._count_invalid(name, reason, k)
        for name, counts in binned:
            self._add_bins(name, counts)

    def _count_missing(self, name: str) -> None:
        m = self.metrics
        m.child(m.feature_missing, (self.model, name)).inc()

    def _count_invalid(self, name: str, reason: str, n: int = 1) -> None:
        m = self.metrics
        m.child(m.feature_invalid, (self.model, name, reason)).inc(n)

    def _unknown_names(self, row: Mapping[str, Any]) -> list[str]:
        """The names in ``row`` the profile does not have, each cut to :data:`MAX_UNKNOWN_NAME_CHARS` characters
        (reading a key's name can raise: nothing is counted yet)."""
        features, out = self.profile.features, []
        for raw in row:
            name = str(raw)
            if name in features:
                continue
            out.append(name[:MAX_UNKNOWN_NAME_CHARS] + "..." if len(name) > MAX_UNKNOWN_NAME_CHARS else name)
        return out

    def _count_unknown(self, names: list[str]) -> None:
        """Count each unknown feature once (not per row) and log it, rate-limited. The names come from traffic:
        they pass the registry's label guard (``feature``), and at most :data:`MAX_UNKNOWN_FEATURES` are
        remembered (a name beyond that is counted again each time it is seen, under its folded label). Called
        without the window's lock: a row of 50 000 unknown keys takes 0.14 s to count (and a log line), which
        every observe() waited out."""
        seen, new = self._unknown_seen, []
        with self._unknown_lock:
            for name in names:
                if name in seen:
                    continue
                if len(seen) < MAX_UNKNOWN_FEATURES:
                    seen.add(name)
                new.append(name)
        for name in new:
            self._count_invalid(self._guard.fold("feature", name), "unknown_feature")
            warn_rate_limited(f"drift_unknown_feature:{self.model}",
                              "aiwatch drift monitor %r: feature %r is not in the reference profile; ignored",
                              self.model, name)

    @property
    def unknown_features(self) -> list[str]:
        """Features seen in observed rows that the profile does not have (at most :data:`MAX_UNKNOWN_FEATURES`)."""
        with self._unknown_lock:
            return sorted(self._unknown_seen)

    def _add_bins(self, name: str, counts: npt.NDArray[np.int64]) -> None:
        children = self._bin_children[name]
        for b in np.flatnonzero(counts):
            children[b].inc(int(counts[b]))

    # ---------------------------------------------------------------------------------------------- flushing
    def flush(self) -> None:
        """Count the rows observed one at a time since the last flush into the Prometheus bin counters."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        pending = self._pending
        if not pending:
            return
        rows = (self._pos - pending + np.arange(pending)) % self.window_size
        block = self._ring_num[rows]
        for i, feat in enumerate(self._num):
            col = block[:, i]
            self._add_bins(feat.name, count_bins(self._num_cuts[i], col[np.isfinite(col)]))
        cblock = self._ring_cat[rows]
        for j, cfeat in enumerate(self._cat):
            self._add_bins(cfeat.name, self._cat_buckets[j].count_codes(cblock[:, j])[0])
        self._pending = 0

    # -------------------------------------------------------------------------------------------- evaluation
    def window(self) -> dict[str, Any]:
        """The current window's rows per feature (numerical: float arrays with NaN for excluded values;
        categorical: bucket indices with -1 for excluded values), oldest rows first."""
        num, cat = self._window_marked()
        num[num == _NOT_A_VALUE] = np.nan
        np.maximum(cat, MISSING, out=cat)
        return self._by_name(num, cat)

    def _window_marked(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]:
        """The current window's rows (copies), each excluded value marked with why (see :data:`_NOT_A_VALUE`)."""
        # Every observe() waits while this holds the lock (an asyncio app's event loop with it): the copies are made
        # into arrays allocated, and their pages touched, before it is taken, one or two contiguous slices each. A
        # copy by an index array into fresh pages held it about 20x as long (0.44 s for a 4M-row window of 8
        # features: every request of that time waited out each check).
        rings = (self._ring_num, self._ring_cat, self._ring_ts)
        expected = self._filled  # read without the lock: only a guess of the size (checked under it)
        copies = [np.ones((expected, *ring.shape[1:]), dtype=ring.dtype) for ring in rings]
        with self._lock:
            self._flush_locked()
            filled, size = self._filled, self.window_size
            if filled != expected:
                copies = [np.empty((filled, *ring.shape[1:]), dtype=ring.dtype) for ring in rings]
            start = (self._pos - filled) % size
            head = min(filled, size - start)  # the rows from start to the end of the ring, then from its beginning
            for ring, copy in zip(rings, copies, strict=True):
                copy[:head] = ring[start:start + head]
                copy[head:] = ring[:filled - head]
        num, cat, ts = copies
        if self.window_seconds is not None:
            recent = ts >= self.clock() - self.window_seconds
            num, cat = num[recent], cat[recent]
        return num, cat

    def _by_name(self, num: npt.NDArray[np.float64], cat: npt.NDArray[np.int32]) -> dict[str, Any]:
        out: dict[str, Any] = {name: num[:, i] for i, name in enumerate(self._num_names)}
        out.update({name: cat[:, j] for j, name in enumerate(self._cat_names)})
        return out

    def evaluate(self) -> DriftReport:
        """Run the drift tests on the current window, export the results, and return them. On the background
        thread of a schedule handed over (:func:`hand_over_schedules`), even while the tests ran, and once
        :meth:`close` d, the results are returned only: not exported, nor kept as :attr:`last_report`. Once a newer
        monitor of the model on the same metrics has taken its series over (a profile reloaded), they are kept as
        :attr:`last_report` and not exported."""
        with self._eval_lock:
            report = self._report()
            schedule: _Schedule | None = getattr(_running, "schedule", None)
            # checked under the lock the hand-over marks the schedule under: once it returns, no export starts
            with self._export_lock:
                if (schedule is None or not schedule.handed_over) and not self._closed:
                    # under the lock a newer monitor takes the series over under: an evaluation that was running
                    # when the profile was reloaded exported its tests' gauges after the new monitor had removed
                    # them, and neither monitor removed them again (a drift_detected 1 of a test the new profile does
                    # not run fired AiwatchLocalInputDrift for good)
                    with _series_owners_lock:
                        if _series_owners.get(self._owner_key()) is self:
                            self._export(report)
                    self.last_report = report
            return report

    def _report(self) -> DriftReport:
        columns = self._by_name(*self._window_marked())
        options = self.options
        rng = np.random.default_rng(options.seed)  # as compare() does, so both sample large windows alike
        current: dict[str, CurrentFeature] = {}
        for feat in self._num:
            column = columns[feat.name]
            cur = numerical_current(feat, column, options.sample_limit(), rng, needs_bins(feat, options))
            not_values = int(np.count_nonzero(column == _NOT_A_VALUE))  # counted as missing there: non-finite
            cur.missing -= not_values
            cur.invalid += not_values
            current[feat.name] = cur
        for cfeat in self._cat:
            current[cfeat.name] = categorical_current_from_codes(cfeat, columns[cfeat.name])
        report = compare_features(self.profile, current, options)
        report.unknown_features = self.unknown_features
        return report

    def _export(self, report: DriftReport) -> None:
        m, model = self.metrics, self.model
        for name, r in report.features.items():
            m.labels(m.drift_window_samples, (model, name)).set(r.current_count)
            previous = self._last_method.get(name)
            if previous is not None and previous != r.method:
                for gauge in (m.drift_score, m.drift_pvalue, m.drift_detected):
                    m.remove(gauge, (model, name, previous))
            self._last_method[name] = r.method
            m.labels(m.drift_detected, (model, name, r.method)).set(1 if r.drifted else 0)
            if r.status != STATUS_OK:
                m.remove(m.drift_score, (model, name, r.method))
                m.remove(m.drift_pvalue, (model, name, r.method))
                continue
            m.labels(m.drift_score, (model, name, r.method)).set(r.statistic)
            pvalue = r.adjusted_pvalue if r.adjusted_pvalue is not None else r.pvalue
            if pvalue is None:
                m.remove(m.drift_pvalue, (model, name, r.method))
            else:
                m.labels(m.drift_pvalue, (model, name, r.method)).set(pvalue)

    # ------------------------------------------------------------------------------------ background thread
    def start(self, interval: float | None = None) -> DriftMonitor:
        """Evaluate every ``interval`` seconds on a daemon thread (idempotent). ``interval`` is a number of seconds
        above 0 and at most 1e9, else a ValueError naming it. The thread does not keep the monitor alive: a monitor
        dropped without :meth:`stop` ends its thread (without the final flush :meth:`stop` does)."""
        if self._closed:
            raise RuntimeError(f"the drift monitor of model {self.model!r} is closed: make a new one to monitor it "
                               "again")
        if interval is not None:
            self.interval = _interval(interval)
        # under the lock: calls at once from several threads (an app that starts its monitor at its first requests)
        # each started a thread, and stop() stopped only the last one; the others evaluated for good
        with self._start_lock:
            self._resume = self._handed_over = False
            _started.add(self)
            if self._thread is not None and self._thread.is_alive():
                return self
            # Each thread gets its own stop signal (one still finishing an evaluation after stop()'s timeout still
            # stops) and holds the monitor weakly (a monitor dropped without stop() ends its thread, instead of
            # being kept alive by it, evaluating a window nothing adds to and exporting its stale scores for ever).
            self._stop = _Schedule()
            thread = threading.Thread(target=_run, args=(weakref.ref(self), self._stop),
                                      name=f"aiwatch-drift-{self.model}", daemon=True)
            thread.start()
            self._thread = thread  # only once started: a thread that could not start is no schedule
        check_fork_hooks(f"the drift monitor of model {self.model!r}", self.metrics)
        if uwsgi_master():  # serves no request: its window would get no rows (as aiwatch.gunicorn's pre_fork)
            self._hand_over()
            _hand_over_before_forks()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread (idempotent) after flushing the bin counters, waiting at most ``timeout``
        seconds for it (a ``timeout`` that is no number of seconds, such as NaN, is a ValueError naming it). The
        series stay exported, the last verdict with them, and :meth:`start` starts it again: a model unloaded for
        good is :meth:`close` d."""
        wait = seconds_to_wait(timeout, "timeout")
        with self._start_lock:
            self._resume = self._handed_over = False
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(wait)
        try:
            self.flush()
        except Exception as exc:
            self._error(exc)

    def _hand_over(self) -> None:
        # Not joined: a pre-fork hook must not wait out an evaluation in progress (the thread ends at its next wait,
        # and the evaluation is not exported). The lock waits out an export in progress only: a few gauge sets.
        # The latest schedule is marked even when stopped: an evaluation stop() did not wait out is not exported
        # after the hook either (stop() leaves this monitor stopped: nothing to resume in the children).
        # A resume still pending (a master that is itself a forked child: gunicorn --daemon) is a schedule too: it
        # is left to the children, and this process does not resume it at a row of its own.
        with self._start_lock, self._export_lock:
            self._stop.handed_over = True
            self._stop.set()
            if self._thread is not None or self._resume:
                self._thread = None
                self._resume = False
                self._handed_over = True
        self._flush_pending()

    def _flush_pending(self) -> None:
        """Count the rows not yet counted into the bin counters, unless an observation or a window's copy holds the
        lock (a pre-fork hook does not wait: those rows are then counted at this process's next flush, as at
        :meth:`stop`). The children do not count them (:meth:`_renew_after_fork`)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._flush_locked()
        except Exception as exc:
            self._error(exc)
        finally:
            self._lock.release()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the monitor (:meth:`stop`, ``timeout`` alike) and remove what it exports for its model: the drift
        gauges, the bin counters and the reference ratios. For a model unloaded: left there, its last
        ``drift_detected 1`` fired AiwatchLocalInputDrift for good. A newer monitor of the model on the same metrics
        (a profile reloaded) has taken the series over: they are its own, and stay. Idempotent; afterwards the
        monitor observes nothing, :meth:`evaluate` exports nothing and :meth:`start` is a RuntimeError. The counts
        of missing and rejected values (``aiwatch_feature_missing_total``, ``aiwatch_feature_invalid_total``) stay:
        no alert reads them without the reference's missing share, which goes. In prometheus_client's multiprocess
        mode a series cannot leave the sample files: the gauges read 0 or NaN there (see
        :meth:`aiwatch.metrics.Metrics.remove`), the bin counters keep their counts. A monitor dropped without
        ``close()`` keeps its series: removing them at garbage collection could take a newer monitor's."""
        self.stop(timeout)
        with self._export_lock:  # an evaluation exporting now finishes first; none exports after
            self._closed = True
        with _series_owners_lock:
            key = self._owner_key()
            if _series_owners.get(key) is not self:
                return
            del _series_owners[key]
            try:
                self._take_over_series([])
            except Exception as exc:
                self._error(exc)

    def __enter__(self) -> DriftMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Batch:
    """A batch of rows read for :meth:`DriftMonitor.observe_batch`: the window's last rows of it, and its counts."""

    num_block: npt.NDArray[np.float64]
    cat_block: npt.NDArray[np.int32]
    missing: list[tuple[str, int]]
    invalid: list[tuple[str, str, int]]
    binned: list[tuple[str, npt.NDArray[np.int64]]]
    unknown: list[str]


class _Schedule(threading.Event):
    """The stop signal of one background thread, and whether its process handed the schedule over to the children
    it forks (:func:`hand_over_schedules`): an evaluation of the thread that ends after that is not exported."""

    handed_over = False


#: ``schedule``: on a monitor's background thread, the :class:`_Schedule` it runs (what :meth:`DriftMonitor.evaluate`
#: checks before it exports).
_running = threading.local()

#: Per metric object and model, the monitor that exports the model's series on it: the latest made (see
#: :meth:`DriftMonitor.close`). Not holding it alive.
_series_owners: weakref.WeakValueDictionary[tuple[int, str], DriftMonitor] = weakref.WeakValueDictionary()
_series_owners_lock = threading.Lock()


def _renew_series_owners_lock() -> None:
    global _series_owners_lock
    _series_owners_lock = threading.Lock()


at_fork_in_child(_renew_series_owners_lock)

#: The monitors started in this process (not holding them alive), for :func:`hand_over_schedules`.
_started: weakref.WeakSet[DriftMonitor] = weakref.WeakSet()
#: Every monitor made in this process (not holding them alive), for :func:`flush_all`.
_made: weakref.WeakSet[DriftMonitor] = weakref.WeakSet()


HUNG_AFTER_MIN = 60.0
"""A scheduled evaluation (or flush) that has not returned after twice the monitor's ``interval``, and at least this
many seconds, is counted at each scrape (:func:`check_schedules`)."""


def check_schedules() -> None:
    """At each scrape: count (component ``drift``) every started monitor of this process whose schedule is stuck, in
    an evaluation or flush that has not returned for ``max(2 * interval, HUNG_AFTER_MIN)`` seconds, or ended (its
    thread gone while it is started). Its drift gauges kept the last evaluation's verdict meanwhile, ``drift_detected
    0`` looking healthy, and nothing counted it. Never raises."""
    now = time.monotonic()
    for monitor in list(_started):
        try:
            thread, began = monitor._thread, monitor._busy_since
            if thread is None:
                continue
            if not thread.is_alive():
                what = "its evaluation thread ended"
            elif began is not None and now - began >= max(2 * monitor.interval, HUNG_AFTER_MIN):
                what = (f"its scheduled evaluation has not returned for {now - began:.0f} s (interval "
                        f"{monitor.interval:g} s)")
            else:
                continue
            record_problem("drift", f"the drift monitor of model {monitor.model!r} is stuck: {what}; its drift "
                           "gauges are its last evaluation's", monitor.metrics)
        except Exception as exc:
            monitor._error(exc)


at_scrape(check_schedules)


def flush_all() -> None:
    """Count the rows every monitor of this process observed and has not counted yet into the bin counters (those
    an observation or a window's copy holds the lock of are left: nothing here waits). At interpreter exit: a
    gunicorn worker recycled by ``max_requests`` (or stopped) had its last ``flush_interval`` seconds (up to
    ``flush_every`` rows) left out of the fleet's bin counts, which in multiprocess mode outlive it; with
    ``--max-requests`` shorter than that, every row it observed. aiwatch's ASGI middleware calls it too when the
    server will kill the process without running ``atexit`` (uvicorn's SIGTERM). Never raises."""
    for monitor in list(_made):
        monitor._flush_pending()  # which counts its own failure


atexit.register(flush_all)


def hand_over_schedules() -> None:
    """Stop the scheduled evaluations of every monitor started in this process, leaving each schedule to the children
    forked from now on, which resume it at their first row. For a pre-fork server's master, which made the monitors
    at import (gunicorn ``--preload``) and serves no request: its evaluations of a window that gets no rows (0 rows,
    NaN scores) took turns with the workers' in the ``mostrecent`` drift gauges. ``aiwatch.gunicorn``'s
    ``pre_fork`` calls it. It does not wait for an evaluation in progress (only for an export of one already
    under way, a few gauge sets): an evaluation that ends after it is not exported, so nothing the master's threads
    evaluate reaches the drift gauges after it returns. A monitor stopped after it stays stopped in the children
    forked later; a monitor started again after it evaluates and exports again."""
    for monitor in list(_started):
        monitor._hand_over()


#: set once this process hands its monitors' schedules over before each fork (uWSGI's master)
_handing_over_at_forks: list[bool] = []


def _hand_over_before_forks() -> None:
    """In uWSGI's master, which hands a monitor's schedule over at its start: hand over again before each fork (a
    worker, or one respawned), which counts the rows the app observed in the master since into the bin counters
    (the workers leave them to it). uWSGI runs this hook with ``py-call-uwsgi-fork-hooks``."""
    if not _handing_over_at_forks and hasattr(os, "register_at_fork"):
        master = os.getpid()

        def before_fork() -> None:
            # the children inherit the hook: a worker that forks (a subprocess with preexec_fn, multiprocessing)
            # must keep its own schedule, which it is running
            if os.getpid() == master:
                hand_over_schedules()

        os.register_at_fork(before=before_fork)
        _handing_over_at_forks.append(True)


def _run(ref: weakref.ReferenceType[DriftMonitor], stop: _Schedule) -> None:
    """The background thread: evaluate every ``interval`` and flush every ``flush_interval`` seconds, until ``stop``
    or until the monitor is gone (it is only held between waits). A check that takes longer than ``interval`` is
    followed by a whole ``interval`` without one."""
    monitor = ref()
    if monitor is None:
        return
    _running.schedule = stop
    next_eval = time.monotonic() + monitor.interval
    while True:
        wait = max(0.0, min(monitor.flush_interval, next_eval - time.monotonic()))
        del monitor
        if stop.wait(wait):
            return
        monitor = ref()
        if monitor is None:
            return
        evaluating = time.monotonic() >= next_eval
        monitor._busy_since = time.monotonic()
        try:
            if evaluating:
                next_eval = time.monotonic() + monitor.interval
                monitor.evaluate()
            else:
                monitor.flush()
        except Exception as exc:
            monitor._error(exc)
        finally:
            monitor._busy_since = None
        # A check that overran its period waits a whole period from its end: planned from its start, the next one
        # was due at once, and a check slower than ``interval`` ran back to back, one core busy in the app for good.
        if evaluating and time.monotonic() >= next_eval:
            next_eval = time.monotonic() + monitor.interval
