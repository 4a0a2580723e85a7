"""The reference profile's JSON format, both ways: the one place that writes a profile and the one that reads it.

``{"format": "aiwatch.reference_profile", "version": 1, "n_bins", "top_k", "sample_size", "skipped",
"features": {name: {"kind": "numerical" | "categorical", ...}}}``; the value samples are base64 little-endian
float64 (exact, about half the size of decimal JSON numbers). Reading checks the header, decodes every feature and
then checks each one (:func:`check_numerical`, :func:`check_categorical`); every problem raises
:class:`~aiwatch.drift.errors.ProfileError` naming the source and the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiwatch.drift.errors import ProfileError
from aiwatch.drift.features import DEFAULT_BINS, CategoricalFeature, Feature, NumericalFeature

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
                "missing": f.missing, "mean": _json_float(f.mean), "std": _json_float(f.std),
                "min": _json_float(f.min), "max": _json_float(f.max), "distinct": f.distinct,
                "sample": encode_floats(f.sample), "sample_keys": encode_floats(f.sample_keys)}
    return {"kind": f.kind, "categories": f.categories, "counts": f.counts, "other_count": f.other_count,
            "count": f.count, "missing": f.missing, "other_names": f.other_names, "exact": f.exact}


def encode_floats(values: list[float]) -> str:
    """Floats as base64 of little-endian float64."""
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------------------------------------------- reading


def read_profile(path: str | os.PathLike[str]) -> StoredProfile:
    """A saved profile; a missing, corrupt or version-mismatched file raises :class:`ProfileError`."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ProfileError(f"cannot read profile {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile {os.fspath(path)!r} is not text (corrupt profile?)") from exc
    return profile_from_json(text, f"profile {os.fspath(path)!r}")


def profile_from_json(text: str, source: str = "profile") -> StoredProfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{source} is not valid JSON (corrupt profile?): {exc}") from exc
    return profile_from_dict(data, source)


def profile_from_dict(data: Any, source: str = "profile") -> StoredProfile:
    """Decode and check a profile's JSON object; ``source`` names it in error messages."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProfileError(f"{source} is not an aiwatch reference profile (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if version != VERSION:
        raise ProfileError(f"{source} has profile version {version!r}; this aiwatch reads version {VERSION} "
                           "(rebuild it with `aiwatch profile build`)")
    features: dict[str, Feature] = {}
    name = ""
    try:
        for name, f in data["features"].items():
            features[name] = feature_from_dict(name, f, source)
        return StoredProfile(features, n_bins=int(data.get("n_bins", DEFAULT_BINS)), top_k=int(data.get("top_k", 0)),
                             sample_size=int(data.get("sample_size", 0)), skipped=dict(data.get("skipped") or {}))
    except ProfileError:
        raise
    except KeyError as exc:
        where = f" in feature {name!r}" if name else ""
        raise ProfileError(f"{source} is corrupt: missing field {exc!s}{where}") from exc
    except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
        where = f" in feature {name!r}" if name else ""
        raise ProfileError(f"{source} is corrupt: bad value{where}: {exc!s}") from exc


def feature_from_dict(name: str, f: Mapping[str, Any], source: str) -> Feature:
    """One decoded and checked feature (KeyError / TypeError / ValueError for a missing or malformed field)."""
    if f["kind"] == "numerical":
        num = NumericalFeature(
            name, [float(c) for c in f["cuts"]], [int(c) for c in f["bin_counts"]], int(f["count"]),
            int(f.get("missing", 0)), _float(f.get("mean")), _float(f.get("std")), _float(f.get("min")),
            _float(f.get("max")), None if f.get("distinct") is None else [float(v) for v in f["distinct"]],
            decode_floats(f.get("sample", [])), decode_floats(f.get("sample_keys", [])))
        check_numerical(num, source)
        return num
    if f["kind"] == "categorical":
        cat = CategoricalFeature(
            name, [str(c) for c in f["categories"]], [int(c) for c in f["counts"]], int(f.get("other_count", 0)),
            int(f["count"]), int(f.get("missing", 0)), [str(c) for c in f.get("other_names", [])],
            bool(f.get("exact", True)))
        check_categorical(cat, source)
        return cat
    raise ProfileError(f"{source}: feature {name!r} has unknown kind {f['kind']!r}")


def check_numerical(f: NumericalFeature, source: str) -> None:
    """Raise :class:`ProfileError` when a loaded numerical feature is inconsistent."""
    if len(f.bin_counts) != len(f.cuts) + 1:
        raise ProfileError(f"{source}: feature {f.name!r} has {len(f.cuts)} cuts but {len(f.bin_counts)} bin counts "
                           "(expected cuts + 1)")


def check_categorical(f: CategoricalFeature, source: str) -> None:
    """Raise :class:`ProfileError` when a loaded categorical feature is inconsistent."""
    if len(f.categories) != len(f.counts):
        raise ProfileError(f"{source}: feature {f.name!r} has {len(f.categories)} categories but {len(f.counts)} "
                           "counts")


def decode_floats(data: Any) -> list[float]:
    """The inverse of :func:`encode_floats` (a plain JSON list of numbers is read too)."""
    if isinstance(data, str):
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        if len(raw) % 8:
            raise ValueError("sample: base64 data is not a whole number of float64 values")
        return [float(v) for v in np.frombuffer(raw, dtype="<f8")]
    return [float(v) for v in data]


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)
