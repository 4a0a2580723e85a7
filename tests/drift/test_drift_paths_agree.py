"""The streaming monitor and the batch CLI compute the same drift on the same data.

The reference profile is built by `aiwatch profile build` from a CSV file. The current data is written to a Parquet
file (exact float64) for `aiwatch drift --json`, which reads it in two chunks, and fed to a `DriftMonitor` on that
profile, row by row and as one batch. Every field of the report must be identical: test, statistic, p-value (raw
and adjusted), threshold, verdict, counts. The data has a continuous and a discrete numerical column, categorical
columns of strings, ints and yes/no, missing values everywhere, unseen categories and unseen numerical values.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.cli import main
from aiwatch.drift import DriftMonitor
from tests.servers import require_module

pd = require_module("pandas")
require_module("pyarrow")


def _with_missing(values: list[Any], rng: np.random.Generator, share: float = 0.05) -> list[Any]:
    return [None if rng.random() < share else v for v in values]


def reference(rows: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    return {
        "age": _with_missing(rng.normal(40, 10, rows).tolist(), rng),
        "rating": _with_missing([float(v) for v in rng.integers(1, 5, rows)], rng),  # few distinct: one bin each
        "plan": _with_missing(rng.choice(["free", "pro", "team"], rows, p=[0.6, 0.3, 0.1]).tolist(), rng),
        "n_items": [int(v) for v in rng.integers(0, 5, rows)],  # ints with <= 10 values: categorical
        "member": rng.choice(["yes", "no"], rows).tolist(),
    }


def current(rows: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    half = rows // 2
    # two new values, 5.0 only in the first half and 6.0 only in the second (the CLI reads each half as a chunk)
    rating = [*(rng.integers(1, 6, half)), *np.where(rng.integers(1, 6, rows - half) == 5, 6, 1)]
    return {
        "age": _with_missing(rng.normal(43, 11, rows).tolist(), rng),
        "rating": _with_missing([float(v) for v in rating], rng),
        "plan": _with_missing(rng.choice(["free", "pro", "team", "enterprise"], rows).tolist(), rng),  # unseen
        "n_items": _with_missing([int(v) for v in rng.integers(0, 7, rows)], rng),  # 5, 6 unseen; float in Parquet
        "member": rng.choice(["yes", "no"], rows, p=[0.4, 0.6]).tolist(),
    }


@pytest.fixture(scope="module", params=[600, 3000], ids=["small-reference", "large-reference"])
def files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Evidently's default tests differ below and above 1000 reference values: both regimes."""
    rng = np.random.default_rng(11)
    tmp = tmp_path_factory.mktemp("paths")
    pd.DataFrame(reference(request.param, rng)).to_csv(tmp / "ref.csv", index=False)
    cur = current(800, rng)
    pd.DataFrame(cur).to_parquet(tmp / "cur.parquet")
    assert main(["profile", "build", str(tmp / "ref.csv"), "-o", str(tmp / "profile.json")]) == 0
    return {"profile": tmp / "profile.json", "current": tmp / "cur.parquet", "rows": cur}


CASES: list[tuple[list[str], dict[str, Any]]] = [
    ([], {}),
    (["--method", "psi"], {"method": "psi"}),
    (["--method", "jensenshannon"], {"method": "jensenshannon"}),
    (["--method", "chisquare"], {"method": "chisquare"}),
    (["--method", "z"], {"method": "z"}),
    (["--method", "ks", "--correction", "bh"], {"method": "ks", "correction": "bh"}),
    (["--method", "wasserstein", "--method", "rating=psi", "--rule", "any"],
     {"method": "wasserstein", "methods": {"rating": "psi"}, "rule": "any"}),
    (["--correction", "bonferroni", "--threshold", "plan=0.2"], {"correction": "bonferroni",
                                                                 "thresholds": {"plan": 0.2}}),
]


def cli_report(files: dict[str, Any], args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    rows = len(files["rows"]["age"])
    code = main(["drift", str(files["profile"]), str(files["current"]), "--json", "--chunk-rows", str(rows // 2),
                 *args])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.mark.parametrize(("args", "options"), CASES, ids=[" ".join(a) or "defaults" for a, _ in CASES])
def test_monitor_and_cli_give_identical_reports(files: dict[str, Any], args: list[str], options: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    expected = cli_report(files, args, capsys)
    assert expected["tested_count"] == 5  # every feature had enough values: the comparison covers every test
    rows = files["rows"]
    n = len(rows["age"])
    by_row = DriftMonitor(files["profile"], registry=CollectorRegistry(), window_size=n, **options)
    for i in range(n):
        by_row.observe({name: column[i] for name, column in rows.items()})
    batched = DriftMonitor(files["profile"], registry=CollectorRegistry(), window_size=n, **options)
    batched.observe_batch(rows)
    assert by_row.evaluate().to_dict() == expected
    assert batched.evaluate().to_dict() == expected


def test_the_data_exercises_new_values_and_unseen_categories(files: dict[str, Any],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """What makes the comparison above meaningful: the test selection depends on values the reference never had."""
    report = cli_report(files, [], capsys)
    methods = {f["feature"]: f["method"] for f in report["features"]}
    small = methods["age"] == "ks"
    # rating: 4 reference values + 2 new ones, one per chunk (> 5 values: a value test); member is binary
    assert methods["rating"] == ("ks" if small else "wasserstein")
    assert methods["plan"] == ("chisquare" if small else "jensenshannon")
    assert methods["member"] == ("z" if small else "jensenshannon")
    missing = {f["feature"]: f["missing"] for f in report["features"]}
    assert all(missing[name] > 0 for name in ("age", "rating", "plan", "n_items"))


def test_numpy_scalars_are_numbers_on_every_path() -> None:
    """One coercion rule: numpy scalars in a list are numbers for the profile, observe, observe_batch and compare
    alike (they used to be numbers for observe only, and wrong-typed in a list)."""
    from aiwatch.drift import ReferenceProfile, compare

    values = [np.float32(v) for v in np.linspace(0, 1, 60)] + [np.int64(1)] * 20
    profile = ReferenceProfile.build({"x": values})
    assert profile.features["x"].count == 80 and profile.features["x"].missing == 0
    registry = CollectorRegistry()
    by_row = DriftMonitor(profile, model="row", registry=registry, window_size=80)
    for v in values:
        by_row.observe({"x": v})
    batched = DriftMonitor(profile, model="batch", registry=registry, window_size=80)
    batched.observe_batch({"x": values})
    reports = [by_row.evaluate(), batched.evaluate(), compare(profile, {"x": values})]
    assert [r.features["x"].current_count for r in reports] == [80, 80, 80]
    for model in ("row", "batch"):
        assert registry.get_sample_value("aiwatch_feature_invalid_total",
                                         {"model": model, "feature": "x", "reason": "wrong_type"}) is None
