"""Reference profiles: inputs, type inference, persistence, merging, chunked files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aiwatch.drift.batch import profile_file
from aiwatch.drift.profile import (
    OTHER,
    UNSEEN,
    VERSION,
    CategoricalFeature,
    NumericalFeature,
    ProfileError,
    ReferenceProfile,
    infer_kind,
)
from tests.servers import require_module

RNG = np.random.default_rng(7)


def _num(p: ReferenceProfile, name: str) -> NumericalFeature:
    f = p.features[name]
    assert isinstance(f, NumericalFeature)
    return f


def _cat(p: ReferenceProfile, name: str) -> CategoricalFeature:
    f = p.features[name]
    assert isinstance(f, CategoricalFeature)
    return f


def test_numerical_bins_are_reference_quantiles_with_exact_stats() -> None:
    x = RNG.normal(5, 2, 10_000)
    f = _num(ReferenceProfile.build({"x": x}, n_bins=10), "x")
    assert f.cuts == pytest.approx(list(np.quantile(x, np.linspace(0, 1, 11)[1:-1])))
    assert sum(f.bin_counts) == 10_000 and all(990 <= c <= 1010 for c in f.bin_counts)
    assert (f.count, f.mean, f.std, f.min, f.max) == pytest.approx((10_000, x.mean(), x.std(), x.min(), x.max()))
    assert len(f.sample) == 10_000  # below the default sample size: the whole reference


def test_bins_configurable_and_sample_bounded() -> None:
    f = _num(ReferenceProfile.build({"x": RNG.normal(size=50_000)}, n_bins=4, sample_size=1000), "x")
    assert len(f.bin_counts) == 4 and len(f.sample) == 1000


def test_categorical_top_k_and_other() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5
    f = _cat(ReferenceProfile.build({"c": values}, top_k=2), "c")
    assert (f.categories, f.counts, f.other_count, f.count) == (["a", "b"], [50, 30], 20, 100)
    assert f.bin_labels == ["a", "b", OTHER, UNSEEN]
    assert f.reference_shares() == pytest.approx([0.5, 0.3, 0.2, 0.0])


def test_all_in_memory_inputs_give_the_same_profile() -> None:
    x = RNG.normal(size=200)
    c = list(RNG.choice(["u", "v", "w"], 200))
    columns = {"x": x, "c": c}
    rows = [{"x": float(a), "c": b} for a, b in zip(x, c, strict=True)]
    pd = require_module("pandas")
    profiles = [ReferenceProfile.build(data) for data in (columns, rows, pd.DataFrame(columns))]
    for p in profiles[1:]:
        assert p.to_dict() == profiles[0].to_dict()
    arr = ReferenceProfile.build(np.column_stack([x, x * 2]))
    assert list(arr.features) == ["0", "1"] and arr.features["1"].kind == "numerical"


def test_type_inference_matches_evidently() -> None:
    pd = require_module("pandas")
    from evidently.core.datasets import infer_column_type

    frame = pd.DataFrame({
        "float": RNG.normal(size=100), "int_few": RNG.integers(0, 5, 100), "int_many": RNG.integers(0, 1000, 100),
        "str_few": RNG.choice(["a", "b"], 100), "str_many": [f"t{i}" for i in range(100)],
        "bool": RNG.integers(0, 2, 100).astype(bool), "float_nan": [1.5, None] * 50,
    })
    for name in frame.columns:
        ours = infer_kind(frame[name].to_numpy())
        theirs = infer_column_type(frame[name]).name.lower()
        assert ours == theirs, name


def test_kind_override_and_skipped_text_columns() -> None:
    data = {"zip": [10001, 10002, 10003, 94105] * 50 + list(range(20)), "note": [f"free text {i}" for i in range(220)]}
    p = ReferenceProfile.build(data)
    assert p.features["zip"].kind == "numerical" and p.skipped == {"note": "text"}
    p2 = ReferenceProfile.build(data, kinds={"zip": "categorical", "note": "categorical"})
    assert p2.features["zip"].kind == "categorical" and "10001" in _cat(p2, "zip").categories
    with pytest.raises(ProfileError, match="kind of 'zip' must be"):
        ReferenceProfile.build(data, kinds={"zip": "ordinal"})


def test_a_forced_kind_that_fits_no_value_is_refused_by_name(tmp_path: Path) -> None:
    # kinds={"note": "numerical"} on text gave a numerical feature of count 0 (every value counted as missing)
    data = {"x": [0.5, 1.5, 2.5] * 4, "note": ["red", "green", "blue"] * 4, "t": np.arange(12).astype("M8[s]")}
    message = r"column 'note' cannot be numerical: none of its values is a number \(they are text: 'red', 'green'"
    with pytest.raises(ProfileError, match=message):
        ReferenceProfile.build(data, kinds={"note": "numerical"})
    with pytest.raises(ProfileError, match="column 't' cannot be numerical: none of its values is a number "
                                           r"\(they are datetime: "):
        ReferenceProfile.build(data, kinds={"t": "numerical"})
    with pytest.raises(ProfileError, match=r"column 'l' cannot be categorical: none of its values is a category "
                                           r"\(they are list: \[1\], \[2\]\)"):
        ReferenceProfile.build({"l": [[1], [2]]}, kinds={"l": "categorical"})
    pd = require_module("pandas")
    pd.DataFrame({k: v for k, v in data.items() if k != "t"}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ProfileError, match=message):
        profile_file(tmp_path / "d.csv", chunk_rows=5, kinds={"note": "numerical"})
    # a column with no value at all, or numbers among text, still takes the kind it is given
    p = ReferenceProfile.build({"x": [None, None], "y": ["1", 2.5]}, kinds={"x": "numerical", "y": "numerical"})
    assert _num(p, "x").count == 0 and _num(p, "y").count == 1


def test_text_in_a_column_given_the_kind_numerical_is_counted_apart_from_missing(tmp_path: Path) -> None:
    # the text values were counted as missing, with no count of their own: a half-text column looked like one with
    # missing values
    y: list[object] = [1.0, "unknown", None, 2.0, "x", 3.0, math.nan, "-", 4.0, 5.0] * 3
    p = ReferenceProfile.build({"y": y}, kinds={"y": "numerical"})
    assert (_num(p, "y").count, _num(p, "y").missing, _num(p, "y").invalid) == (15, 6, 9)
    pd = require_module("pandas")
    pd.DataFrame({"y": y}).to_csv(tmp_path / "d.csv", index=False)
    for chunk_rows in (4, 100):
        f = _num(profile_file(tmp_path / "d.csv", chunk_rows=chunk_rows, kinds={"y": "numerical"}), "y")
        assert (f.count, f.missing, f.invalid) == (15, 6, 9)
    # kept through a save and a merge; a profile written without the count (before it existed) still loads
    p.save(tmp_path / "p.json")
    assert _num(ReferenceProfile.load(tmp_path / "p.json"), "y").invalid == 9
    assert _num(p.merge(p), "y").invalid == 18
    old = p.to_dict()
    del old["features"]["y"]["invalid"]
    assert (_num(ReferenceProfile.from_dict(old), "y").missing, _num(ReferenceProfile.from_dict(old), "y").invalid) \
        == (6, 0)


def test_a_kind_for_a_column_the_data_lacks_is_refused_by_name(tmp_path: Path) -> None:
    # kinds={"ZIP": ...} (a typo) was ignored: the profile was built with the column's inferred kind
    data = {"zip": [10001, 10002] * 10, "x": np.linspace(0, 1, 20)}
    message = r"a kind is given for 'ZIP', but the data has no column 'ZIP' \(its columns: zip, x\)"
    with pytest.raises(ProfileError, match=message):
        ReferenceProfile.build(data, kinds={"zip": "categorical", "ZIP": "numerical"})
    pd = require_module("pandas")
    pd.DataFrame(data).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ProfileError, match=message):
        profile_file(tmp_path / "d.csv", chunk_rows=7, kinds={"ZIP": "numerical"})


@pytest.mark.parametrize(("edges", "message"), [
    ({"X": [0.5]}, r"edges are given for 'X', but the data has no column 'X' \(its columns: zip, x, t\)"),
    ({"zip": [10001.5]}, r"edges are given for 'zip', which is categorical: bin edges are for numerical columns"),
    ({"t": [0.5]}, r"edges are given for 't', which is text"),
])
def test_edges_for_a_column_that_is_not_a_numerical_one_of_the_data_are_refused(edges: dict[str, list[float]],
                                                                                  message: str) -> None:
    # edges={"X": ...} (a typo) or edges for a categorical column were ignored: the column got its quantile edges
    data = {"zip": [10001, 10002] * 10, "x": np.linspace(0, 1, 20), "t": [f"note {i}" for i in range(20)]}
    with pytest.raises(ProfileError, match=message):
        ReferenceProfile.build(data, kinds={"zip": "categorical"}, edges=edges)


def test_missing_values_are_counted_not_profiled() -> None:
    p = ReferenceProfile.build({"x": [1.0, math.nan, math.inf, None, 2.0, 3.0] * 10, "c": ["a", None, "b"] * 20})
    assert (_num(p, "x").count, _num(p, "x").missing) == (30, 30)
    assert (_cat(p, "c").count, _cat(p, "c").missing) == (40, 20)


def test_constant_reference_column_has_below_value_above_bins() -> None:
    f = _num(ReferenceProfile.build({"x": [3.0] * 100}), "x")
    assert list(f.bin_index(np.array([2.0, 3.0, 4.0]))) == [0, 1, 2]
    assert f.bin_counts == [0, 100, 0] and f.std == 0


def test_save_load_roundtrip(tmp_path: Path) -> None:
    p = ReferenceProfile.build({"x": RNG.normal(size=300), "c": ["a", "b", "c"] * 100})
    path = tmp_path / "profile.json"
    p.save(path)
    assert ReferenceProfile.load(path).to_dict() == p.to_dict()
    assert json.loads(path.read_text())["version"] == VERSION


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('{"hello": 1}', "not an aiwatch reference profile"),
    ('{"format": "aiwatch.reference_profile", "version": 99, "features": {}}', "profile version 99"),
    ('{"format": "aiwatch.reference_profile", "version": 1, "features": {"x": {"kind": "numerical"}}}',
     "feature 'x': missing field 'cuts'"),
    ('{"format": "aiwatch.reference_profile", "version": 1, "features": {"x": {"kind": "numerical", "cuts": [],'
     ' "bin_counts": [1], "count": 1, "sample": "not base64!"}}}', "feature 'x': sample is not base64"),
    ('{"format": "aiwatch.reference_profile", "version": 1}', "missing field 'features'"),
    ('{"format": "aiwatch.reference_profile", "version": 1, "features": {"x": {"kind": "numerical", "cuts": [1],'
     ' "bin_counts": [1], "count": 1}}}', "has 1 cuts but 1 bin counts"),
    ('{"format": "aiwatch.reference_profile", "version": 1, "features": {"x": {"kind": "weird"}}}',
     "unknown kind 'weird'"),
])
def test_bad_profile_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message) as info:
        ReferenceProfile.load(path)
    assert "bad.json" in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"cannot read profile .*nope\.json"):
        ReferenceProfile.load(tmp_path / "nope.json")


def test_merge_of_parts_equals_profile_of_whole() -> None:
    x = RNG.gamma(2.0, 3.0, 6000)
    c = list(RNG.choice(["a", "b", "c", "d"], 6000))
    whole = ReferenceProfile.build({"x": x, "c": c}, sample_size=100_000)
    first = ReferenceProfile.build({"x": x[:2500], "c": c[:2500]}, edges={"x": _num(whole, "x").cuts},
                                   sample_size=100_000)
    second = ReferenceProfile.build({"x": x[2500:], "c": c[2500:]}, edges_from=first, sample_size=100_000, seed=1)
    merged = first.merge(second)
    a, b = _num(merged, "x"), _num(whole, "x")
    assert a.bin_counts == b.bin_counts and a.count == b.count
    assert (a.mean, a.std, a.min, a.max) == pytest.approx((b.mean, b.std, b.min, b.max), rel=1e-12)
    assert sorted(a.sample) == sorted(b.sample)  # both samples hold every value here
    assert _cat(merged, "c").counts == _cat(whole, "c").counts and _cat(merged, "c").exact


def test_in_memory_data_is_typed_on_its_first_rows_as_a_file_is(tmp_path: Path) -> None:
    # a file's kinds come from its first KIND_ROWS rows, in-memory data's came from all its rows: ints 0..9 for
    # 100 000 rows, then 40 more distinct ones, were categorical from a file but numerical from a DataFrame
    from aiwatch.drift.builder import KIND_ROWS

    pd = require_module("pandas")
    rng = np.random.default_rng(3)
    n = KIND_ROWS + 50_000
    tier = np.concatenate([rng.integers(0, 10, KIND_ROWS), rng.integers(10, 50, n - KIND_ROWS)])
    frame = pd.DataFrame({"tier": tier, "x": rng.normal(size=n)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    from_file = {name: f.kind for name, f in profile_file(tmp_path / "d.csv").features.items()}
    assert from_file == {"tier": "categorical", "x": "numerical"}
    for data in (frame, {"tier": tier.tolist(), "x": frame["x"].to_numpy()}):
        profile = ReferenceProfile.build(data)
        assert {name: f.kind for name, f in profile.features.items()} == from_file
        assert _cat(profile, "tier").count == n  # every row is still profiled


def test_merge_refuses_different_edges() -> None:
    a = ReferenceProfile.build({"x": RNG.normal(size=500)})
    b = ReferenceProfile.build({"x": RNG.normal(size=500)})
    with pytest.raises(ProfileError, match="different bin edges; build the second part with edges_from"):
        a.merge(b)


def test_merge_categorical_beyond_top_k_is_flagged_inexact() -> None:
    a = ReferenceProfile.build({"c": ["a"] * 5 + ["b"] * 3 + ["z"]}, top_k=2)
    b = ReferenceProfile.build({"c": ["z"] * 5 + ["a"] * 3 + ["b"]}, top_k=2)
    merged = _cat(a.merge(b), "c")
    assert merged.count == 18 and not merged.exact


def test_csv_and_parquet_chunked_equal_in_memory(tmp_path: Path) -> None:
    pd = require_module("pandas")
    frame = pd.DataFrame({"x": RNG.normal(size=3000), "n": RNG.integers(0, 3, 3000), "c": RNG.choice(["a", "b"], 3000)})
    frame.to_csv(tmp_path / "ref.csv", index=False)
    frame.to_parquet(tmp_path / "ref.parquet")
    memory = ReferenceProfile.build(frame)
    for name in ("ref.csv", "ref.parquet"):
        chunked = profile_file(tmp_path / name, chunk_rows=700)
        assert _num(chunked, "x").bin_counts == _num(memory, "x").bin_counts
        assert _num(chunked, "x").mean == pytest.approx(_num(memory, "x").mean, rel=1e-12)
        assert _cat(chunked, "n").counts == _cat(memory, "n").counts
        assert _cat(chunked, "c").counts == _cat(memory, "c").counts


def test_big_file_takes_a_second_pass_for_exact_bins(tmp_path: Path) -> None:
    pd = require_module("pandas")
    x = RNG.normal(size=5000)
    pd.DataFrame({"x": x}).to_csv(tmp_path / "big.csv", index=False)
    f = _num(profile_file(tmp_path / "big.csv", chunk_rows=1000, sample_size=800), "x")
    assert len(f.sample) == 800 and sum(f.bin_counts) == 5000
    assert f.bin_counts == list(np.bincount(np.searchsorted(f.cuts, x, side="left"), minlength=len(f.cuts) + 1))


def test_unreadable_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        profile_file(tmp_path / "none.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(ProfileError, match=r"expected a \.csv, \.txt or \.tsv file \(uncompressed text\) or a "
                       r"\.parquet or \.pq file"):
        profile_file(tmp_path / "data.xlsx")
    with pytest.raises(ProfileError, match="rows must be dicts"):
        ReferenceProfile.build([1, 2, 3])
    with pytest.raises(ProfileError, match="no numerical or categorical column"):
        ReferenceProfile.build({"t": [f"text {i}" for i in range(10)]})


def test_chunked_file_comparison_equals_in_memory(tmp_path: Path) -> None:
    pd = require_module("pandas")
    from aiwatch.drift.batch import compare_file
    from aiwatch.drift.evaluate import Options, compare

    profile = ReferenceProfile.build({"x": RNG.normal(size=2000), "c": RNG.choice(["a", "b", "c"], 2000)})
    current = pd.DataFrame({"x": RNG.normal(0.2, 1, 1500), "c": RNG.choice(["a", "b", "d"], 1500)})
    current.to_csv(tmp_path / "cur.csv", index=False)
    options = Options(methods={"x": "psi", "c": "chisquare"})
    chunked = compare_file(profile, tmp_path / "cur.csv", options, chunk_rows=400)
    memory = compare(profile, current, options)
    for name in ("x", "c"):
        assert chunked.features[name].statistic == pytest.approx(memory.features[name].statistic, rel=1e-12)
        assert chunked.features[name].current_count == 1500


def test_import_aiwatch_imports_neither_scipy_nor_pandas() -> None:
    import subprocess
    import sys

    from tests.servers import python_env

    code = ("import sys, aiwatch; assert aiwatch.ReferenceProfile and aiwatch.DriftMonitor; "
            "print(sorted(m for m in ('scipy', 'pandas', 'evidently') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=python_env(), check=True)
    assert out.stdout.strip() == "[]"


def test_a_built_sample_is_an_array_and_equals_the_loaded_list() -> None:
    built = ReferenceProfile.build({"x": np.random.default_rng(4).normal(size=5000)}, sample_size=300)
    loaded = ReferenceProfile.from_json(built.to_json())
    b, lo = built.features["x"], loaded.features["x"]
    assert isinstance(b, NumericalFeature) and isinstance(lo, NumericalFeature)
    assert isinstance(b.sample, np.ndarray) and b.sample.dtype == np.float64 and isinstance(lo.sample, list)
    assert b == lo and lo == b
    changed = NumericalFeature(**{**vars(lo), "sample": [*lo.sample[:-1], lo.sample[-1] + 1.0]})
    assert b != changed
    assert b != NumericalFeature(**{**vars(lo), "count": lo.count + 1})
