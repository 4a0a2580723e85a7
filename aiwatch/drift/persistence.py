"""The reference profile's JSON format, both ways: the one place that writes a profile and the one that reads it.

``{"format": "aiwatch.reference_profile", "version": 1, "n_bins", "top_k", "sample_size", "skipped",
"features": {name: {"kind": "numerical" | "categorical", ...}}}``; the value samples are base64 little-endian
float64 (exact, about half the size of decimal JSON numbers). Reading checks the text's size, item count and nesting
depth before parsing it (:class:`~aiwatch.drift.validation.ProfileLimits`), then the header (a newer version is
named as such), then decodes every field with its type checked and checks every feature
(:func:`~aiwatch.drift.validation.check_feature`); every problem raises :class:`~aiwatch.drift.errors.ProfileError`
naming the source, the feature and the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiwatch.drift.errors import ProfileError
from aiwatch.drift.features import (
    DEFAULT_BINS,
    MAX_OTHER_NAMES,
    CategoricalFeature,
    Feature,
    Floats,
    NumericalFeature,
)
from aiwatch.drift.validation import DEFAULT_LIMITS, MAX_COUNT, ProfileLimits, check_feature

FORMAT = "aiwatch.reference_profile"
VERSION = 1


@dataclass
class StoredProfile:
    """What a profile file holds."""

    features: dict[str, Feature]
    n_bins: int = DEFAULT_BINS
    top_k: int = 0
    sample_size: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- writing


def profile_to_dict(profile: StoredProfile) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "n_bins": profile.n_bins, "top_k": profile.top_k,
            "sample_size": profile.sample_size, "skipped": profile.skipped,
            "features": {name: feature_to_dict(f) for name, f in profile.features.items()}}


def profile_to_json(profile: StoredProfile) -> str:
    return json.dumps(profile_to_dict(profile), separators=(",", ":"), allow_nan=False)


def feature_to_dict(f: Feature) -> dict[str, Any]:
    if isinstance(f, NumericalFeature):
        return {"kind": f.kind, "cuts": f.cuts, "bin_counts": f.bin_counts, "count": f.count,
                "missing": f.missing, "invalid": f.invalid, "mean": _json_float(f.mean), "std": _json_float(f.std),
                "min": _json_float(f.min), "max": _json_float(f.max), "distinct": f.distinct,
                "sample": encode_floats(f.sample), "sample_keys": encode_floats(f.sample_keys)}
    return {"kind": f.kind, "categories": f.categories, "counts": f.counts, "other_count": f.other_count,
            "count": f.count, "missing": f.missing, "other_names": f.other_names, "exact": f.exact}


def encode_floats(values: Floats) -> str:
    """Floats as base64 of little-endian float64."""
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------------------------------------------- reading

# A string, or an unterminated one to the end of the text (then the JSON is invalid and refused by the parser): the
# match never fails once started, so a text of many quotes and backslashes with no closing quote costs one pass, not
# one scan to the end per quote (a 32 kB file of them took 2 s to refuse, a 1 MB one about half an hour).
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def read_profile(path: str | os.PathLike[str], limits: ProfileLimits = DEFAULT_LIMITS) -> StoredProfile:
    """A saved profile; a missing, corrupt, oversized or version-mismatched file raises :class:`ProfileError`."""
    source = f"profile {os.fspath(path)!r}"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise ProfileError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if len(raw) > limits.max_bytes:
        raise ProfileError(f"{source} is larger than {limits.max_bytes} bytes (ProfileLimits.max_bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{source} is not UTF-8 text (corrupt profile?)") from exc
    return profile_from_json(text, source, limits)


def profile_from_json(text: str, source: str = "profile", limits: ProfileLimits = DEFAULT_LIMITS) -> StoredProfile:
    """Parse and check a profile's JSON text: its size, item count and nesting depth are checked before parsing."""
    if len(text) > limits.max_bytes:
        raise ProfileError(f"{source} is larger than {limits.max_bytes} characters (ProfileLimits.max_bytes)")
    items = text.count(",") + text.count("[") + text.count("{")
    if items > limits.max_items:
        raise ProfileError(f"{source} holds more than {limits.max_items} JSON values (ProfileLimits.max_items)")
    too_deep = _deeper_than(text, limits.max_depth)
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        too_deep = True
    except ValueError as exc:  # JSONDecodeError, NaN / Infinity, an integer of more than 4300 digits
        raise ProfileError(f"{source} is not valid JSON (corrupt profile?): {exc}") from None
    if too_deep:
        raise ProfileError(f"{source} is nested deeper than {limits.max_depth} levels (ProfileLimits.max_depth)")
    return profile_from_dict(data, source, limits)


def _deeper_than(text: str, depth: int) -> bool:
    """Whether the JSON ``text`` nests containers deeper than ``depth`` (or its brackets do not balance): strings
    are dropped, then the innermost pairs of brackets are removed ``depth`` times."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    for _ in range(depth):
        if not brackets:
            return False
        brackets = _INNERMOST.sub("", brackets)
    return bool(brackets)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number aiwatch accepts in a profile")


def profile_from_dict(data: Any, source: str = "profile", limits: ProfileLimits = DEFAULT_LIMITS) -> StoredProfile:
    """Decode and check a profile's JSON object; ``source`` names it in error messages. Every field is type-checked
    and every feature checked (:func:`~aiwatch.drift.validation.check_feature`); anything wrong raises
    :class:`ProfileError`."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProfileError(f"{source} is not an aiwatch reference profile (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProfileError(f"{source} has no valid version field (got {version!r})")
    if version > VERSION:
        raise ProfileError(f"{source} was written by a newer aiwatch (profile version {version}); this aiwatch reads "
                           f"version {VERSION}: upgrade aiwatch, or rebuild the profile with this one")
    if version != VERSION:
        raise ProfileError(f"{source} has profile version {version!r}; this aiwatch reads version {VERSION} "
                           "(rebuild it with `aiwatch profile build`)")
    try:
        raw_features = _field(data, "features", dict)
        if len(raw_features) > limits.max_features:
            raise ProfileError(f"{len(raw_features)} features, more than the limit ({limits.max_features})")
        n_bins = _int(data.get("n_bins", DEFAULT_BINS), "n_bins", limits.max_bins)
        top_k = _int(data.get("top_k", 0), "top_k", limits.max_categories)
        sample_size = _int(data.get("sample_size", 0), "sample_size", limits.max_sample)
        skipped = data.get("skipped") or {}
        if not isinstance(skipped, dict) or not all(isinstance(v, str) for v in skipped.values()):
            raise ProfileError("skipped must map column names to kinds")
        features = {name: feature_from_dict(name, f, limits) for name, f in raw_features.items()}
    except ProfileError as exc:
        raise ProfileError(f"{source}: {exc}") from None
    return StoredProfile(features, n_bins=n_bins, top_k=top_k, sample_size=sample_size, skipped=dict(skipped))


def feature_from_dict(name: str, f: Any, limits: ProfileLimits = DEFAULT_LIMITS) -> Feature:
    """One decoded and checked feature; :class:`ProfileError` names the feature and the field that is wrong."""
    where = f"feature {name!r}"
    if not isinstance(f, dict):
        raise ProfileError(f"{where} is not a JSON object")
    try:
        _sizes(f, limits)
        kind = f.get("kind")
        if kind == "numerical":
            distinct = f.get("distinct")
            feature: Feature = NumericalFeature(
                name, _floats(_field(f, "cuts", list), "cuts"), _ints(_field(f, "bin_counts", list), "bin_counts"),
                _int(_field(f, "count"), "count"), _int(f.get("missing", 0), "missing"),
                _stat(f.get("mean"), "mean"), _stat(f.get("std"), "std"), _stat(f.get("min"), "min"),
                _stat(f.get("max"), "max"), None if distinct is None else _floats(distinct, "distinct"),
                decode_floats(f.get("sample", []), limits.max_sample),
                decode_floats(f.get("sample_keys", []), limits.max_sample),
                invalid=_int(f.get("invalid", 0), "invalid"))
        elif kind == "categorical":
            exact = f.get("exact", True)
            if not isinstance(exact, bool):
                raise ProfileError("exact must be true or false")
            feature = CategoricalFeature(
                name, _strings(_field(f, "categories", list), "categories"),
                _ints(_field(f, "counts", list), "counts"), _int(f.get("other_count", 0), "other_count"),
                _int(_field(f, "count"), "count"), _int(f.get("missing", 0), "missing"),
                _strings(f.get("other_names", []), "other_names"), exact)
        else:
            raise ProfileError(f"unknown kind {kind!r} (numerical or categorical)")
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    check_feature(feature, limits)
    return feature


def _sizes(f: dict[str, Any], limits: ProfileLimits) -> None:
    """Refuse oversized arrays before decoding them (a 1e6-bin profile must cost nothing to refuse)."""
    for key, limit, name in (("cuts", limits.max_bins - 1, "max_bins"), ("bin_counts", limits.max_bins, "max_bins"),
                             ("categories", limits.max_categories, "max_categories"),
                             ("counts", limits.max_categories, "max_categories"),
                             ("other_names", MAX_OTHER_NAMES, "MAX_OTHER_NAMES")):
        value = f.get(key)
        if isinstance(value, list) and len(value) > limit:
            raise ProfileError(f"{key} holds {len(value)} entries, more than the limit ({limit}, {name})")


def decode_floats(data: Any, limit: int = DEFAULT_LIMITS.max_sample) -> list[float]:
    """The inverse of :func:`encode_floats` (a plain JSON list of numbers is read too); at most ``limit`` values."""
    if isinstance(data, str):
        if len(data) > (limit * 8 + 2) // 3 * 4:
            raise ProfileError(f"sample holds more than {limit} values (ProfileLimits.max_sample)")
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise ProfileError(f"sample is not base64: {exc}") from None
        if len(raw) % 8:
            raise ProfileError("sample: base64 data is not a whole number of float64 values")
        return np.frombuffer(raw, dtype="<f8").astype(np.float64).tolist()  # type: ignore[no-any-return]
    if isinstance(data, list) and len(data) > limit:
        raise ProfileError(f"sample holds more than {limit} values (ProfileLimits.max_sample)")
    return _floats(data, "sample")


def _field(obj: dict[str, Any], key: str, kind: type | None = None) -> Any:
    if key not in obj:
        raise ProfileError(f"missing field {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise ProfileError(f"{key} must be a JSON {'array' if kind is list else 'object'}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{what} must be a number, got {value!r:.40}")
    try:
        return float(value)
    except OverflowError:
        raise ProfileError(f"{what} is out of range") from None


def _floats(values: Any, what: str) -> list[float]:
    if not isinstance(values, list):
        raise ProfileError(f"{what} must be a JSON array of numbers")
    return [_number(v, f"{what}[{i}]") for i, v in enumerate(values)]


def _int(value: Any, what: str, maximum: int = MAX_COUNT) -> int:
    number = _number(value, what)
    if not math.isfinite(number) or number != int(number) or not 0 <= number <= maximum:
        raise ProfileError(f"{what} must be a whole number between 0 and {maximum}, got {value!r:.40}")
    return int(value)


def _ints(values: list[Any], what: str) -> list[int]:
    return [_int(v, f"{what}[{i}]") for i, v in enumerate(values)]


def _strings(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ProfileError(f"{what} must be a JSON array of strings")
    return list(values)


def _stat(x: Any, what: str) -> float:
    return math.nan if x is None else _number(x, what)
