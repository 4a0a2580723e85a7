"""Drift detection: reference profiles, exact statistical tests, a streaming monitor and fleet-wide PromQL.

Three paths share one :class:`ReferenceProfile`: the :class:`DriftMonitor` (local, exact tests on a window),
the fleet sketch in Prometheus (:mod:`aiwatch.drift.promql`) and the batch CLI (:mod:`aiwatch.drift.batch`).
Importing this package does not import scipy; running a test does.

The modules depend on each other in one direction, each on the ones above it::

    errors, columns, files       raw columns: typing, coercion, missing / wrong-typed values; CSV / Parquet chunks
    counting                     one feature's values counted: numerical bins, categorical buckets, new values
    features                     the feature model (NumericalFeature, CategoricalFeature)
    sampling                     bounded uniform samples of values
    validation                   what a valid feature is; ProfileLimits (the bounds on a profile's size)
    builder, merge, persistence  building features from columns, merging them, the JSON format
    profile                      ReferenceProfile: build, load, save, merge
    promql, stattests            the fleet PSI / JS PromQL; the statistical tests, each a function over arrays
    current                      one feature's current data summarised for a test (window, column or file)
    evaluate                     one test per feature, then the dataset verdict (Options, DriftReport, compare)
    monitor, batch, report       front ends: the streaming DriftMonitor, files, Evidently's HTML report
    on_dask                      the batch front end on a Dask cluster (partitions summarised there, merged here)
"""

from aiwatch.drift.evaluate import compare
from aiwatch.drift.monitor import DriftMonitor
from aiwatch.drift.profile import ProfileError, ReferenceProfile
from aiwatch.drift.validation import ProfileLimits

__all__ = ["DriftMonitor", "ProfileError", "ProfileLimits", "ReferenceProfile", "compare"]
