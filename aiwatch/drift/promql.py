"""PromQL for fleet-wide drift from the mergeable bin sketch (``aiwatch_feature_bin_total``).

Every replica counts live values into the reference profile's bins and exports the reference's share of each bin
(``aiwatch_feature_reference_ratio``). Counters merge by addition, so these expressions compute PSI and the
Jensen-Shannon distance over *all* replicas for any window. The alert rules' recording rules are rendered from
these functions, and a test runs them in a real Prometheus against the Python statistics on the same counts.
Selectors and metric names go through :mod:`aiwatch.promql`.

Every aggregation keeps the ``scope`` labels (default :data:`~aiwatch.promql.DEFAULT_AGGREGATION_LABELS`), so the
fleet of one cluster is never mixed with another's, and the ``reference`` label (:data:`FEATURE`), so the replicas of
one reference profile are never mixed with those of another (a rollout).

Zero shares follow Evidently's PSI convention: a share that is exactly 0 is replaced by :data:`PSI_EPSILON` for PSI;
the Jensen-Shannon distance needs no epsilon (``0 * ln 0`` is taken as 0, as scipy does).

    >>> print(fleet_psi_expr("1h"))  # doctest: +ELLIPSIS
    sum by (cluster, namespace, model, feature, reference) (...
"""

from __future__ import annotations

from collections.abc import Sequence

from aiwatch.promql import (
    DEFAULT_AGGREGATION_LABELS,
    Metric,
    alternatives,
    by,
    increase,
    matches,
    metric,
    ne,
    number,
    rate,
    scoped,
    series,
)

FEATURE_BINS = metric("aiwatch_feature_bin_total")
REFERENCE_RATIO = metric("aiwatch_feature_reference_ratio")
FEATURE_MISSING = metric("aiwatch_feature_missing_total")
FEATURE_INVALID = metric("aiwatch_feature_invalid_total")
REFERENCE_MISSING_RATIO = metric("aiwatch_feature_reference_missing_ratio")

PSI_EPSILON = 0.0001
"""Replaces a bin share of exactly 0 in PSI (Evidently's value), so an empty bin never makes PSI infinite."""

TINY = 1e-300
"""Keeps ``ln`` finite where a share is 0; the term it sits in is then multiplied by 0."""

FEATURE = ("model", "feature", "reference")
"""What every expression here keeps apart: ``reference`` (a hash of the feature's bin edges and shares, see
:attr:`aiwatch.drift.features.NumericalFeature.reference_id`) adds up only counts binned alike, against the same
shares. While a re-baselined profile rolls out, each (model, feature) has one PSI per reference, each from its own
replicas' traffic: mixed, the old profile's counts read against the new one's shares (the same 0.1 per quantile bin,
other edges) made a fleet PSI of 0.21 from traffic whose PSI against either replica's own profile was 0.002 or 0.89.
Series without the label (an aiwatch older than it) are one reference of their own."""

PSI_RECORD = "model_feature:aiwatch_feature_psi:{window}"
JS_RECORD = "model_feature:aiwatch_feature_js_distance:{window}"
FLEET_BINS_RECORD = "model_feature_bin:aiwatch_feature_bin:increase{window}"
"""Recorded :func:`live_bins_expr`, which the PSI and JS rules of the same group (evaluated after it, at the same
timestamp) read instead of the raw counters: the two expressions hold sixteen copies of it, and Prometheus scans
every replica's samples of the window once per copy (at 50 replicas x 20 features x 10 bins over 1h, 4.3 s of a
4.5 s group evaluation)."""
BIN_RATE_RECORD = "model_feature_bin:aiwatch_feature_bin:rate{window}"
"""Recorded :func:`live_bin_rate_expr`: the fleet's per-bin rate over a short window, every ``drift.interval``. The
windows longer than ``drift.raw_window_max`` are summed from it (:func:`summed_bins_expr`) instead of reading every
replica's samples of the window: at 500 replicas x 50 features x 10 bins scraped every 15 s, a 1d ``increase()``
reads 1.44 billion samples per evaluation, the sum 1440 per (feature, bin), 720,000 in all."""
MISSING_VALUES_RECORD = "model_feature:aiwatch_feature_missing_values:increase{window}"
"""Recorded missing count of :func:`live_missing_share_expr` (``AiwatchFeatureMissing`` reads it)."""
ALL_VALUES_RECORD = "model_feature:aiwatch_feature_values:increase{window}"
"""Recorded total count of :func:`live_missing_share_expr`, missing ones included."""
REFERENCE_MISSING_RECORD = "model_feature:aiwatch_feature_reference_missing_ratio:max"
"""Recorded :func:`reference_missing_share_expr`."""
REFERENCE_SHARE_RECORD = "model_feature_bin:aiwatch_feature_reference_ratio:max"
"""Recorded :func:`reference_share_expr`, read the same way (eight copies, one series per replica and bin each)."""


def _matchers(selector: str) -> str:
    """The matcher text inside a ``{...}`` selector (parsed, so validated, where it is used)."""
    selector = selector.strip()
    if not selector:
        return ""
    if not (selector.startswith("{") and selector.endswith("}")):
        raise ValueError(f"selector must look like '{{label=\"value\"}}', got {selector!r}")
    return selector[1:-1]


Scope = Sequence[str]


def live_bins_expr(window: str, selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """How many live values each bin counted over ``window``, summed over every replica (what
    :data:`FLEET_BINS_RECORD` records)."""
    return by("sum", scoped(scope, (*FEATURE, "bin")), increase(FEATURE_BINS, window, _matchers(selector)))


def live_bin_rate_expr(window: str, selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Live values per second each bin counted over ``window``, summed over every replica (what
    :data:`BIN_RATE_RECORD` records). ``rate()`` reads each replica's raw counter, so counter resets are handled
    where they happen, before the sum."""
    return by("sum", scoped(scope, (*FEATURE, "bin")), rate(FEATURE_BINS, window, _matchers(selector)))


def summed_bins_expr(rate_record: str, window: str, interval_seconds: float) -> str:
    """How many live values each bin counted over ``window``, from ``rate_record`` (:data:`BIN_RATE_RECORD`,
    recorded every ``interval_seconds``): each recorded rate times the interval, summed over the window. Each value
    counted falls in rate_window / interval of the overlapping rate windows, each weighing interval / rate_window,
    so it counts once when all of them are summed: one counted in the last rate_window, or in the rate_window
    before the window's start, counts in part (the window lags the raw one by half the rate window, its edges
    ramped). ``sum_over_time``, not ``avg_over_time`` times the window: a reference whose
    replicas counted over part of the window (a rollout) has the count of that part, not the part's rate spread over
    the whole window; a missed evaluation (a Prometheus restart) leaves out that interval's values, for every bin
    of the feature alike."""
    return f"sum_over_time({rate_record}[{window}]) * {number(interval_seconds)}"


def _share_of(live_bins: str, scope: Scope) -> str:
    return f"({live_bins} / ignoring (bin) group_left {by('sum', scoped(scope, FEATURE), live_bins)})"


def live_share_expr(window: str, selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Each bin's share of the live values counted over ``window``, summed over every replica."""
    return _share_of(live_bins_expr(window, selector, scope), scope)


def live_values_expr(window: str, selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """How many live values each (model, feature, reference) counted over ``window``, over every replica: what a
    fleet PSI was computed from (PSI of a few values is mostly sampling noise)."""
    return by("sum", scoped(scope, FEATURE), increase(FEATURE_BINS, window, _matchers(selector)))


def reference_share_expr(selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """The reference profile's share of each bin (the same on every replica of one ``reference``, so ``max`` picks
    it)."""
    return by("max", scoped(scope, (*FEATURE, "bin")), series(REFERENCE_RATIO, _matchers(selector)))


def _no_zero(expr: str) -> str:
    return f"({expr} + ({expr} == bool 0) * {PSI_EPSILON})"


def psi_of(live_bins: str, reference: str, scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """PSI per (model, feature, reference) of the per-bin fleet counts ``live_bins`` (:func:`live_bins_expr` or
    its record) against the per-bin reference shares ``reference`` (:func:`reference_share_expr` or its record)."""
    p = _no_zero(_share_of(live_bins, scope))
    q = _no_zero(reference)
    return by("sum", scoped(scope, FEATURE), f"({p} - {q}) * ln({p} / {q})")


def js_of(live_bins: str, reference: str, scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Jensen-Shannon distance per (model, feature, reference), from the same inputs as :func:`psi_of`."""
    p = _share_of(live_bins, scope)
    q = reference
    m = f"(({p} + {q}) / 2)"
    term_p = f"{p} * ln(clamp_min({p}, {TINY}) / clamp_min({m}, {TINY}))"
    term_q = f"{q} * ln(clamp_min({q}, {TINY}) / clamp_min({m}, {TINY}))"
    return f"sqrt(clamp_min({by('sum', scoped(scope, FEATURE), f'{term_p} + {term_q}')} / 2, 0))"


def fleet_psi_expr(window: str = "1h", selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Population Stability Index per (model, feature, reference) over ``window``: sum((p - q) * ln(p / q)).
    Self-contained: it reads the raw counters eight times (Prometheus evaluates every copy of a subexpression),
    which the recording rules avoid by recording :func:`live_bins_expr` first (:data:`FLEET_BINS_RECORD`)."""
    return psi_of(live_bins_expr(window, selector, scope), reference_share_expr(selector, scope), scope)


def fleet_js_expr(window: str = "1h", selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Jensen-Shannon distance (natural log, as ``scipy.spatial.distance.jensenshannon``) per (model, feature,
    reference)."""
    return js_of(live_bins_expr(window, selector, scope), reference_share_expr(selector, scope), scope)


def replica_references_expr(selector: str = "") -> str:
    """1 per replica (scrape target) and (model, feature), labelled with the ``reference`` the replica counts the
    feature against: the one of its reference ratios. A ratio removed at a reload (NaN in multiprocess mode) is
    left out, and so is one without ``reference`` on a replica that has one with it: an older aiwatch's, which a
    multiprocess directory keeps after its worker is gone (a gunicorn USR2 upgrade), else its missing counts were
    added to the old replicas' too."""
    ratio = series(REFERENCE_RATIO, _matchers(selector))
    labelled = series(REFERENCE_RATIO, _matchers(selector), ne("reference", ""))
    return f"(group without (bin) ({labelled} >= 0) or ignoring (reference) group without (bin) ({ratio} >= 0))"


REPLICA_JOIN = "* ignoring (reference) group_left ()"
"""Joins :func:`replica_references_expr` to a series per replica and (model, feature) without ``reference``."""


def _per_reference(aggregation: str, per_replica: str, selector: str, scope: Scope) -> str:
    """``per_replica`` (series without a ``reference`` label, one per replica and (model, feature)) aggregated per
    (model, feature, reference), each replica's series under its own reference: the missing counts and the reference
    missing share carry no ``reference`` of their own, and during a rollout summed over the fleet they mixed the
    replicas of two profiles (the old profile's 40% missing share read as the new one's, whose replicas missed 30%
    against 0%)."""
    joined = f"\n  {replica_references_expr(selector)}\n  {REPLICA_JOIN}\n  {per_replica}\n"
    return by(aggregation, scoped(scope, FEATURE), joined)


def feature_counts_expr(window: str, names: Sequence[Metric], selector: str = "",
                        scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Per (model, feature, reference), the increase over ``window`` of the series of ``names``, over the replicas
    of that reference, of ``aiwatch_feature_invalid_total`` the rows without the feature's key
    (``reason="missing_feature"``) only. One selector matching every name (``__name__=~``) sums the series that
    exist: a binary operator between them would drop a feature none of whose rows ever lacked its key (that series
    does not exist yet)."""
    names_re = alternatives(sorted(str(n) for n in names))
    live = increase("", window, matches("__name__", names_re), matches("reason", "|missing_feature"),
                    _matchers(selector))
    return _per_reference("sum", f"sum without (bin, reason, reference) ({live})", selector, scope)


def live_missing_share_expr(window: str, selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Each feature's share of missing live values over ``window``, per reference over its replicas: the missing
    ones (None, NaN, inf) and the rows without its key, of those and the values counted into its bins."""
    missing = feature_counts_expr(window, (FEATURE_MISSING, FEATURE_INVALID), selector, scope)
    total = feature_counts_expr(window, (FEATURE_BINS, FEATURE_MISSING, FEATURE_INVALID), selector, scope)
    return f"(\n  {missing}\n  /\n  {total}\n)"


def reference_missing_share_expr(selector: str = "", scope: Scope = DEFAULT_AGGREGATION_LABELS) -> str:
    """Each feature's share of missing values in each reference profile (the same on every replica of one
    reference)."""
    return _per_reference("max", series(REFERENCE_MISSING_RATIO, _matchers(selector)), selector, scope)
