"""Compare current data with a reference profile: one test per feature, then a dataset verdict.

Used by all three paths: the streaming monitor (its window), the batch CLI (chunked files) and direct calls::

    >>> import numpy as np
    >>> from aiwatch.drift.profile import ReferenceProfile
    >>> rng = np.random.default_rng(0)
    >>> profile = ReferenceProfile.build({"x": rng.normal(size=5000)})
    >>> report = compare(profile, {"x": rng.normal(1.0, 1.0, size=2000)})
    >>> report.features["x"].method, report.features["x"].drifted, report.drifted
    ('wasserstein', True, True)
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import numpy.typing as npt

from aiwatch.drift import stattests
from aiwatch.drift.columns import SortBuffer, columns_of
from aiwatch.drift.current import DEFAULT_MAX_EXACT, CurrentFeature, categorical_current, numerical_current
from aiwatch.drift.features import CategoricalFeature, Feature, Floats, NumericalFeature
from aiwatch.drift.profile import ReferenceProfile

__all__ = [
    "DEFAULT_MAX_EXACT",
    "DEFAULT_MIN_SAMPLES",
    "STATUS_INSUFFICIENT",
    "STATUS_NO_REFERENCE",
    "STATUS_OK",
    "VALUE_TESTS",
    "CurrentFeature",
    "DriftReport",
    "FeatureDrift",
    "Options",
    "categorical_current",
    "compare",
    "compare_features",
    "needs_bins",
    "numerical_current",
    "run_test",
    "select_method",
    "sorted_sample",
    "summarise",
]

DEFAULT_MIN_SAMPLES = 30
VALUE_TESTS = stattests.VALUE_TESTS
STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient_data"
STATUS_NO_REFERENCE = "no_reference"


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    method: str
    status: str
    statistic: float = math.nan
    pvalue: float | None = None
    #: The p-value after the multiple-testing correction (None without one or for distance tests).
    adjusted_pvalue: float | None = None
    threshold: float = math.nan
    drifted: bool = False
    current_count: int = 0
    reference_count: int = 0
    #: Current values left out as missing (None, NaN, ±inf).
    missing: int = 0
    #: Current values left out for another reason: of the wrong type (text in a numerical feature), or, in a
    #: :class:`~aiwatch.drift.monitor.DriftMonitor`'s window, absent from their row.
    invalid: int = 0
    #: Reference values left out because they are not numbers (text in a numerical column): the profile's
    #: ``invalid`` count, apart from its missing values.
    reference_invalid: int = 0

    @property
    def score(self) -> float:
        """Evidently's drift score: the p-value for hypothesis tests, the statistic for distances."""
        return self.pvalue if self.pvalue is not None else self.statistic

    def to_dict(self) -> dict[str, Any]:
        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else x

        return {"feature": self.feature, "kind": self.kind, "method": self.method, "status": self.status,
                "statistic": num(self.statistic), "pvalue": num(self.pvalue),
                "adjusted_pvalue": num(self.adjusted_pvalue), "threshold": num(self.threshold),
                "drifted": self.drifted, "current_count": self.current_count,
                "reference_count": self.reference_count, "missing": self.missing,
                "invalid": self.invalid, "reference_invalid": self.reference_invalid}


@dataclass
class DriftReport:
    features: dict[str, FeatureDrift]
    drifted: bool
    drifted_count: int
    tested_count: int
    drift_share: float
    rule: str
    correction: str | None
    missing_features: list[str] = field(default_factory=list)
    unknown_features: list[str] = field(default_factory=list)
    min_samples: int = DEFAULT_MIN_SAMPLES
    #: Why no current row was read, where the reader knows it (a time window that selected none): then the
    #: reason :meth:`why_nothing_tested` gives, before any guess from the features.
    no_rows: str | None = None
    #: How a prediction log's rows were thinned to an equal-chance sample of the traffic (``column``,
    #: ``min_rate``, ``rows`` read, ``kept``, ``not_rates``: rows whose rate was no chance, counted as 1; see
    #: :mod:`~aiwatch.drift.reweight`); None when nothing was thinned (no ``sample_rate`` column, one rate for
    #: every row, or ``Options.reweight`` off).
    sample_rate_thinning: dict[str, Any] | None = None

    @property
    def share_drifted(self) -> float:
        return self.drifted_count / self.tested_count if self.tested_count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "drifted_count": self.drifted_count, "tested_count": self.tested_count,
                "share_drifted": self.share_drifted, "drift_share": self.drift_share, "rule": self.rule,
                "correction": self.correction, "missing_features": self.missing_features,
                "unknown_features": self.unknown_features, "nothing_tested": self.why_nothing_tested(),
                "sample_rate_thinning": self.sample_rate_thinning,
                "features": [f.to_dict() for f in self.features.values()]}

    def why_nothing_tested(self) -> str | None:
        """None when at least one feature was tested; otherwise what kept every feature from a test (then the
        report is no evidence either way: ``aiwatch drift`` exits 2, not 0)."""
        if self.tested_count:
            return None
        if self.no_rows:
            return self.no_rows
        if not self.features and not self.missing_features:
            return "the reference profile has no features"
        if not self.features:
            found = f" (its columns: {_names(self.unknown_features)})" if self.unknown_features else ""
            return f"the current data has none of the reference's features {_names(self.missing_features)}{found}"
        if all(f.current_count == 0 for f in self.features.values()):
            return "the current data has no values for the reference's features (no rows, or every value missing)"
        if all(f.status == STATUS_NO_REFERENCE for f in self.features.values()):
            return "the reference has no values for the features the current data has"
        # names quoted as the other reasons quote them: a CSV header may name a column with a newline or a comma
        counts = _listed([f"{f.feature!r}: {f.current_count}" for f in self.features.values()])
        return f"no feature has enough current values to test (at least {self.min_samples}; found {counts})"


@dataclass
class Options:
    """How features are tested and how the dataset verdict is reached.

    ``methods`` / ``thresholds`` override Evidently's defaults per feature (``{"age": "psi"}``, ``{"age": 0.2}``);
    ``method`` / ``threshold`` override them for every feature (a global ``ks`` or ``wasserstein`` applies to
    numerical features only; categorical ones keep their default). ``correction`` (``"bh"`` Benjamini-Hochberg or
    ``"bonferroni"``) adjusts the p-values of hypothesis tests before each feature's decision. The dataset drifts
    when the share of drifted features is at least ``drift_share`` (``rule="share"``, Evidently's rule, default 0.5)
    or when any feature drifts (``rule="any"``, the usual pairing with a correction). Features with fewer than
    ``min_samples`` current values are "insufficient_data": never drifted, and not counted in the share. KS and
    Wasserstein use at most ``max_exact`` current values per feature (a stratified sample of more, see
    :mod:`aiwatch.drift.current`); ``exact=True`` uses every value (slower and, for files, memory that grows with
    the data). ``reweight``: current data with a ``sample_rate`` column (a prediction log, which keeps some
    requests more often than others) is thinned to an equal-chance sample of the requests served before it is
    counted (:mod:`aiwatch.drift.reweight`; files, datasets and Dask frames, not :func:`compare`'s in-memory data);
    ``False`` counts every row.
    """

    methods: Mapping[str, str] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    method: str | None = None
    threshold: float | None = None
    correction: str | None = None
    drift_share: float = 0.5
    rule: str = "share"
    min_samples: int = DEFAULT_MIN_SAMPLES
    max_exact: int = DEFAULT_MAX_EXACT
    exact: bool = False
    seed: int = 0
    reweight: bool = True

    def sample_limit(self) -> int | None:
        """The current values kept per feature for KS / Wasserstein: ``max_exact``, or ``None`` (all) when exact."""
        return None if self.exact else self.max_exact

    def validate(self, profile: ReferenceProfile) -> None:
        for name in (*self.methods, *self.thresholds):
            if name not in profile.features:
                raise ValueError(f"override for unknown feature {name!r}; profile features: {list(profile.features)}")
        for name, m in [*self.methods.items(), *([("*", self.method)] if self.method else [])]:
            stattests.method(m)
            feat = profile.features.get(name)
            if m in VALUE_TESTS and isinstance(feat, CategoricalFeature):
                raise ValueError(f"test {m!r} needs numerical values; feature {name!r} is categorical")
        if self.correction not in (None, *stattests.CORRECTIONS):
            raise ValueError(f"correction must be one of {list(stattests.CORRECTIONS)} or None, "
                             f"got {self.correction!r}")
        if self.rule not in ("share", "any"):
            raise ValueError(f"rule must be 'share' or 'any', got {self.rule!r}")
        self.check_numbers()

    def check_numbers(self) -> None:
        """``ValueError`` for a numeric option out of range: NaN, infinite, negative or not a whole number."""
        if not isinstance(self.exact, bool):
            raise ValueError(f"exact must be True or False, got {self.exact!r}")
        if not isinstance(self.reweight, bool):
            raise ValueError(f"reweight must be True or False, got {self.reweight!r}")
        if not _real(self.drift_share) or not 0 < self.drift_share <= 1:
            raise ValueError(f"drift_share must be a number in (0, 1], got {self.drift_share!r}")
        for name in ("min_samples", "max_exact"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        given: dict[str, float] = {f"thresholds[{k!r}]": v for k, v in self.thresholds.items()}
        if self.threshold is not None:
            given["threshold"] = self.threshold
        for name, value in given.items():
            if not _real(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def options_of(options: Options | None, kwargs: Mapping[str, Any]) -> Options:
    """``options``, or :class:`Options` made of ``kwargs``; both given is a ``TypeError`` naming the keywords (they
    were dropped: ``options=Options(), correction="bh"`` tested without a correction)."""
    if options is None:
        return Options(**kwargs)
    if kwargs:
        raise TypeError(f"give the options either as options= or as keywords, not both: {', '.join(kwargs)} would be "
                        "ignored (set them on the Options)")
    return options


def _real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _names(names: list[str]) -> str:
    return _listed([repr(n) for n in names])


def _listed(items: list[str]) -> str:
    """The first 20 of ``items``, and how many more."""
    return ", ".join(items[:20]) + (f" and {len(items) - 20} more" if len(items) > 20 else "")


def select_method(feat: Feature, current: CurrentFeature, options: Options) -> str:
    chosen = options.methods.get(feat.name) or options.method
    if chosen and not (chosen in VALUE_TESTS and isinstance(feat, CategoricalFeature)):
        return chosen
    if isinstance(feat, NumericalFeature):
        n_values = len(feat.distinct) + current.new_distinct if feat.distinct is not None else DISCRETE_MANY
    else:
        n_values = len(feat.categories) + len(feat.other_names) + (1 if current.new_distinct else 0)
    return stattests.default_method(feat.kind, feat.count, n_values)


DISCRETE_MANY = 1 << 30


def run_test(feat: Feature, current: CurrentFeature, name: str, threshold: float | None,
             scratch: stattests.Scratch | None = None) -> stattests.TestResult:
    """One feature's test. ``scratch``: work arrays reused between features, for a Wasserstein distance of
    unsorted current values (the exact mode's, or a sample of them), which then are not sorted."""
    if name in VALUE_TESTS:
        assert isinstance(feat, NumericalFeature) and current.values is not None
        sample = sorted_sample(feat)
        if name == "ks":
            return stattests.ks(sample, current.values, threshold)
        return stattests.wasserstein(sample, current.values, threshold, reference_std=feat.std,
                                     reference_sorted=True, current_sorted=current.values_sorted,
                                     scratch=scratch)
    ref_counts = np.asarray(feat.bin_counts if isinstance(feat, NumericalFeature) else feat.bucket_counts())
    return stattests.COUNT_TESTS[name](ref_counts, current.bin_counts, threshold)


#: id(feature) -> (its sample, the sample sorted). An entry leaves with its feature: one kept until the table was
#: full held the sample of every profile a process had loaded alive (a monitor whose profile is reloaded every minute,
#: 10 features of 20 000 values read from JSON: +8 MiB a reload, 1 GiB after two hours, 3.4 GiB before the table of
#: 4096 features was cleared).
_sorted_cache: dict[int, tuple[Floats, npt.NDArray[np.float64]]] = {}
_MAX_SORTED = 4096


def sorted_sample(feat: NumericalFeature) -> npt.NDArray[np.float64]:
    """The reference sample, sorted once per feature object (and kept while the feature lives)."""
    key = id(feat)
    cached = _sorted_cache.get(key)
    if cached is None or cached[0] is not feat.sample:
        cached = (feat.sample, np.sort(np.asarray(feat.sample, dtype=np.float64)))
        if key not in _sorted_cache:
            if len(_sorted_cache) >= _MAX_SORTED:  # more live features than that: sorted again as needed
                return cached[1]
            # the feature's death takes its entry out, before its id can be reused
            weakref.finalize(feat, _sorted_cache.pop, key, None).atexit = False
        _sorted_cache[key] = cached
    return cached[1]


def compare_features(profile: ReferenceProfile, current: Mapping[str, CurrentFeature],
                     options: Options | None = None) -> DriftReport:
    """Test every profiled feature present in ``current`` and reach the dataset verdict."""
    options = options or Options()
    options.validate(profile)
    # a Wasserstein distance of unsorted current values works by cells, not by sorting them: the exact mode's
    # millions, and the default's sample of up to max_exact (2.9x faster at 1M rows and 5x at 100k than sorting the
    # sample, bench/RESULTS.md "Stop 45"; the same distance to the last bits)
    scratch = current.scratch if isinstance(current, _SortedOneByOne) else stattests.Scratch()
    results: dict[str, FeatureDrift] = {}
    for name, feat in profile.features.items():
        cur = current.get(name)
        if cur is None:
            continue
        m = select_method(feat, cur, options)
        threshold = options.thresholds.get(name, options.threshold)
        result = FeatureDrift(name, feat.kind, m, STATUS_OK, current_count=cur.count, reference_count=feat.count,
                              missing=cur.missing, invalid=cur.invalid,
                              reference_invalid=feat.invalid if isinstance(feat, NumericalFeature) else 0)
        results[name] = result
        if feat.count == 0:
            result.status = STATUS_NO_REFERENCE
            continue
        if cur.count < options.min_samples:
            result.status = STATUS_INSUFFICIENT
            continue
        t = run_test(feat, cur, m, threshold, scratch)
        result.statistic, result.pvalue, result.threshold, result.drifted = t.statistic, t.pvalue, t.threshold, \
            t.drifted
    if options.correction:
        tested = [r for r in results.values() if r.status == STATUS_OK and r.pvalue is not None]
        adjusted = stattests.CORRECTIONS[options.correction]([r.pvalue for r in tested if r.pvalue is not None])
        for r, adj in zip(tested, adjusted, strict=True):
            r.adjusted_pvalue = adj
            r.drifted = stattests.method(r.method).drifted(r.statistic, adj, r.threshold)
    tested_count = sum(1 for r in results.values() if r.status == STATUS_OK)
    drifted_count = sum(1 for r in results.values() if r.drifted)
    if options.rule == "any":
        drifted = drifted_count > 0
    else:
        drifted = tested_count > 0 and drifted_count / tested_count >= options.drift_share
    return DriftReport(results, drifted, drifted_count, tested_count, options.drift_share, options.rule,
                       options.correction, missing_features=[n for n in profile.features if n not in current],
                       min_samples=options.min_samples)


# ----------------------------------------------------------------------------------------- from raw columns


def needs_bins(feat: Feature, options: Options) -> bool:
    """Whether the test chosen for ``feat`` works on bin counts (so the counts must be computed)."""
    if not isinstance(feat, NumericalFeature) or feat.distinct is not None:
        return True
    chosen = options.methods.get(feat.name) or options.method
    return chosen is not None and chosen not in VALUE_TESTS


def summarise(profile: ReferenceProfile, data: Any, options: Options | None = None) -> dict[str, CurrentFeature]:
    options = options or Options()
    rng = np.random.default_rng(options.seed)
    columns = columns_of(data)
    out: dict[str, CurrentFeature] = {}
    for name, feat in profile.features.items():
        if name not in columns:
            continue
        if isinstance(feat, NumericalFeature):
            out[name] = numerical_current(feat, columns[name], options.sample_limit(), rng,
                                          needs_bins(feat, options))
        else:
            out[name] = categorical_current(feat, columns[name])
    return out


class _SortedOneByOne(Mapping[str, CurrentFeature]):
    """:func:`summarise` in the exact mode, one feature at a time as :func:`compare_features` asks for it. A
    numerical column whose test needs bin counts is sorted into the same buffer (a new 8 MB array per 1M-value
    column cost more in page faults than its sort, and all of them were held at once); one whose test reads raw
    values only (KS, Wasserstein) keeps its finite values unsorted, and a Wasserstein distance works on them in
    :attr:`scratch`'s reused arrays (:func:`~aiwatch.drift.stattests.wasserstein_distance_to_sorted`), without
    sorting them. A feature's values are only valid until the next feature is asked for; the previous one's are
    then dropped, so that a late read fails instead of reading another column."""

    def __init__(self, profile: ReferenceProfile, columns: Mapping[str, Any], options: Options) -> None:
        self._profile, self._columns, self._options = profile, columns, options
        self._names = [name for name in profile.features if name in columns]
        self._buffer = SortBuffer()
        self.scratch = stattests.Scratch()
        self._last: CurrentFeature | None = None

    def __getitem__(self, name: str) -> CurrentFeature:
        if name not in self._columns or name not in self._profile.features:
            raise KeyError(name)
        if self._last is not None:
            self._last.values = None
        feat = self._profile.features[name]
        if isinstance(feat, NumericalFeature):
            bins = needs_bins(feat, self._options)
            self._last = numerical_current(feat, self._columns[name], None, bins=bins, buffer=self._buffer,
                                           sort=bins)
            return self._last
        return categorical_current(feat, self._columns[name])

    def __contains__(self, name: object) -> bool:  # without summarising the feature
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def compare(profile: ReferenceProfile, data: Any, options: Options | None = None, **kwargs: Any) -> DriftReport:
    """Drift of ``data`` (dict of columns, list of row dicts, DataFrame, 2-D array) against ``profile``.

    Keyword arguments are :class:`Options` fields (``correction="bh"``, ``methods={"age": "psi"}``...)."""
    options = options_of(options, kwargs)
    options.validate(profile)
    columns = columns_of(data)
    current = _SortedOneByOne(profile, columns, options) if options.exact else summarise(profile, columns, options)
    report = compare_features(profile, current, options)
    report.unknown_features = sorted(set(columns) - set(profile.features))
    return report

