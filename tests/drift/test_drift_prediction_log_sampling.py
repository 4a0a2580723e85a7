"""Drift over a prediction log that keeps requests with different chances (5 % of them, every slow one): the rows
are thinned by their ``sample_rate`` to an equal-chance sample of the requests served (aiwatch.drift.reweight),
on every path (a file, a CSV, a dataset, chunk sizes, the exact mode), and ``--no-reweight`` turns it off."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.cli import main
from aiwatch.drift.batch import compare_file, compare_source
from aiwatch.drift.datasets import open_dataset
from aiwatch.drift.evaluate import Options
from aiwatch.drift.profile import ReferenceProfile
from aiwatch.drift.reweight import Thinning, effective_rates, thinning, thinning_of
from aiwatch.drift.sampling import row_keys
from aiwatch.feedback import sampling

REQUESTS = 40_000
T0 = 1_790_000_000.0


def traffic(rng: np.random.Generator, n: int) -> tuple[Any, Any, Any]:
    """A chat API's requests: 10 % slow, and the slow ones have long prompts and are mostly the pro tier."""
    slow = rng.random(n) < 0.10
    tokens = np.where(slow, rng.normal(600, 100, n), rng.normal(200, 50, n))
    tier = np.where(slow, rng.choice(["free", "pro"], n, p=[0.2, 0.8]),
                    rng.choice(["free", "pro"], n, p=[0.7, 0.3]))
    return slow, tokens, tier


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reference profile of the traffic served, and a prediction log of the same traffic (nothing moved)
    written through PredictionLog and ParquetSink with 5 % kept, and every request slower than 0.5 s."""
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("log-sampling")
    _, tokens, tier = traffic(rng, REQUESTS)
    pq.write_table(pa.table({"prompt_tokens": tokens, "tier": tier}), tmp / "served.parquet")
    assert main(["profile", "build", str(tmp / "served.parquet"), "-o", str(tmp / "ref.json")]) == 0
    slow, tokens, tier = traffic(rng, REQUESTS)
    state = sampling._draws.getstate()
    sampling._draws.seed(7)  # which requests the log keeps: the same rows every run
    try:
        log = aiwatch.PredictionLog(aiwatch.ParquetSink(tmp / "log", max_rows=1000), sample_rate=0.05,
                                    slow_seconds=0.5, slow_rate=1.0, registry=CollectorRegistry())
        for i, (s, t, c) in enumerate(zip(slow, tokens, tier, strict=True)):
            log.log("chat", {"prompt_tokens": float(t), "tier": str(c)}, {"answer": 1.0},
                    latency=1.0 if s else 0.1, timestamp=T0 + i * 0.05)
        log.close()
    finally:
        sampling._draws.setstate(state)
    return {"ref": tmp / "ref.json", "log": tmp / "log", "tmp": tmp}


def drift_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["drift", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {f["feature"]: f["current_count"] for f in report["features"]}


def test_a_log_that_keeps_every_slow_request_does_not_read_as_drift(served: dict[str, Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rows = open_dataset(served["log"]).to_table(columns=["sample_rate"])["sample_rate"].to_numpy()
    slow_share = float(np.mean(rows == 1.0))
    assert 0.6 < slow_share < 0.75  # 10 % of the traffic, about 69 % of the rows
    code, report = drift_json(capsys, str(served["ref"]), str(served["log"]))
    # before: every row one vote, the slow requests' long prompts read as drift (wasserstein 1.79, JS 0.21, exit 1)
    assert code == 0, report
    assert not any(f["drifted"] for f in report["features"])
    thinned = report["sample_rate_thinning"]
    assert thinned["rows"] == rows.size and thinned["min_rate"] == 0.05 and thinned["not_rates"] == 0
    assert counts(report) == {"prompt_tokens": thinned["kept"], "tier": thinned["kept"]}
    # every base-rate row is kept, each slow one with chance 0.05: about 1800 + 4000 * 0.05
    assert thinned["kept"] - int(np.sum(rows == 0.05)) == pytest.approx(200, abs=60)
    assert main(["drift", str(served["ref"]), str(served["log"])]) == 0
    out = capsys.readouterr().out
    assert f"compared {thinned['kept']} of {rows.size} rows, each kept with chance 0.05 / its sample_rate" in out


def test_no_reweight_compares_every_row(served: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = drift_json(capsys, str(served["ref"]), str(served["log"]), "--no-reweight")
    rows = open_dataset(served["log"]).count_rows()
    assert code == 1 and report["sample_rate_thinning"] is None
    assert counts(report) == {"prompt_tokens": rows, "tier": rows}
    profile = ReferenceProfile.load(served["ref"])
    off = compare_source(profile, served["log"], Options(reweight=False))
    assert off.to_dict() == report | {"unknown_features": off.unknown_features}
    with pytest.raises(ValueError, match="reweight must be True or False, got 'no'"):
        compare_source(profile, served["log"], Options(reweight="no"))  # type: ignore[arg-type]


def test_every_path_keeps_the_same_rows(served: dict[str, Path]) -> None:
    """A row's fate depends on its position only: one Parquet file, a CSV of it, the dataset read in chunks of any
    size, and the exact mode compare the same rows (same counts, same bins, same statistics)."""
    profile = ReferenceProfile.load(served["ref"])
    table = open_dataset(served["log"]).to_table(columns=["prompt_tokens", "tier", "sample_rate"])
    whole, csv = served["tmp"] / "whole.parquet", served["tmp"] / "whole.csv"
    pq.write_table(table, whole)
    pacsv.write_csv(table, csv)
    options = Options(max_exact=500)
    reports = [compare_source(profile, served["log"], options, chunk_rows=n).to_dict() for n in (7, 1000, 100_000)]
    reports += [compare_file(profile, p, options, chunk_rows=333).to_dict() for p in (whole, csv)]
    for report in reports[1:]:
        assert report["features"] == reports[0]["features"]
        assert report["sample_rate_thinning"] == reports[0]["sample_rate_thinning"]
    exact = compare_source(profile, served["log"], Options(exact=True), chunk_rows=999)
    assert {n: f.current_count for n, f in exact.features.items()} == counts(reports[0])


def test_a_log_of_one_rate_gives_todays_report_unchanged(served: dict[str, Path]) -> None:
    profile = ReferenceProfile.load(served["ref"])
    table = open_dataset(served["log"]).to_table(columns=["prompt_tokens", "tier"])
    plain, constant = served["tmp"] / "plain.parquet", served["tmp"] / "constant.parquet"
    pq.write_table(table, plain)
    pq.write_table(table.append_column("sample_rate", pa.array(np.full(table.num_rows, 0.05))), constant)
    for options in (Options(), Options(max_exact=300), Options(exact=True)):
        today = compare_file(profile, plain, options, chunk_rows=500).to_dict()
        with_rate = compare_file(profile, constant, options, chunk_rows=500).to_dict()
        off = compare_file(profile, constant, Options(**{**vars(options), "reweight": False}), chunk_rows=500)
        assert with_rate["sample_rate_thinning"] is None
        today["unknown_features"] = with_rate["unknown_features"]  # sample_rate itself, unknown to the profile
        assert with_rate == today == off.to_dict()


def test_each_row_is_kept_with_chance_min_rate_over_its_rate() -> None:
    """200 000 rows at each rate: the kept share of each is min_rate / rate. The keys are a function of the seed and
    the row number, so with this seed the counts are fixed; the tolerance is 6 standard deviations, which a correct
    thinning misses with chance 2e-9 per rate (a wrong one, e.g. the rate itself, misses it by far)."""
    n = 200_000
    rates = np.repeat([0.05, 0.1, 0.25, 0.5, 1.0], n)
    thin = thinning_of([rates[::-1]], seed=12345)
    assert thin is not None and thin.min_rate == 0.05
    kept = thin.keep(rates, start=0)
    for rate in (0.05, 0.1, 0.25, 0.5, 1.0):
        p = 0.05 / rate
        got = int(kept[rates == rate].sum())
        assert abs(got - n * p) <= 6 * math.sqrt(n * p * (1 - p)), (rate, got, n * p)
    assert thin.rows == rates.size and thin.kept == int(kept.sum())
    # the thinning is independent of the KS sample's keys (those of rows kept at rate 1 are not the small ones)
    sample_keys = row_keys(12345, 0, rates.size)
    for rate in (0.1, 1.0):
        chosen = sample_keys[kept & (rates == rate)]
        assert abs(float(chosen.mean()) - 0.5) <= 6 * math.sqrt(1 / 12 / chosen.size)


def test_a_sample_rate_that_is_no_chance_counts_as_one() -> None:
    values = np.array([np.nan, 0.0, -0.5, 2.0, np.inf, -np.inf, 0.2, 1.0], dtype=float)
    rates, bad = effective_rates(values)
    assert rates.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 1.0] and bad == 6
    objects = np.array([None, "0.5", "fast", True, 0.4], dtype=object)
    rates, bad = effective_rates(objects)
    assert rates.tolist() == [1.0, 1.0, 1.0, 1.0, 0.4] and bad == 4
    assert thinning_of([np.array([0.0, -1.0, np.nan])], seed=0) is None  # all count as 1: nothing to thin
    assert thinning((0.3, 0.3), seed=0) is None and thinning(None, seed=0) is None


@pytest.mark.parametrize("column", [
    pa.array([None, float("nan"), 0.0, -1.0, 3.0] * 400 + [0.1] * 2000, pa.float64()),
    pa.array(["x", None, "0.5", "1", "fast"] * 400 + [None] * 2000, pa.string()),
    pa.array([0, -3, 2, 5, 0] * 400 + [1] * 2000, pa.int64()),
], ids=["hostile-floats", "text", "ints"])
def test_a_log_with_hostile_sample_rates_is_compared(tmp_path: Path, column: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 4000)
    pq.write_table(pa.table({"x": rng.normal(0, 1, 4000)}), tmp_path / "ref.parquet")
    pq.write_table(pa.table({"x": x, "sample_rate": column}), tmp_path / "cur.parquet")
    code, report = drift_json(capsys, str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"))
    assert code == 0
    thinned = report["sample_rate_thinning"]
    if pa.types.is_floating(column.type):
        # 2000 rows counted as rate 1 (null, NaN, 0, -1, 3), kept with chance 0.1; the 2000 at 0.1 all kept
        assert thinned["min_rate"] == 0.1 and thinned["not_rates"] == 2000 and thinned["rows"] == 4000
        assert thinned["kept"] - 2000 == pytest.approx(200, abs=60)
        assert counts(report) == {"x": thinned["kept"]}
    else:  # text, or whole numbers, none a chance below 1: every row counts once, as before
        assert thinned is None and counts(report) == {"x": 4000}


def test_a_partial_thinning_counts_and_merges() -> None:
    whole = Thinning(0.1, seed=99)
    rates = np.tile([0.1, 1.0, 0.5], 1000)
    expected = whole.keep(rates, 0)
    a, b = whole.fresh(), whole.fresh()
    assert (np.concatenate([a.keep(rates[:1234], 0), b.keep(rates[1234:], 1234)]) == expected).all()
    a.add_counts(b.counts())
    assert a.counts() == whole.counts()


def test_a_reference_built_from_a_log_is_the_traffic_served(served: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """profile build on the log thins it as drift does: the profile is the traffic's (the served requests do not
    drift against it), so a reference built from last month's log and this hour's log compare like with like."""
    out = served["tmp"] / "from-log.json"
    assert main(["profile", "build", str(served["log"]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = open_dataset(served["log"]).count_rows()
    profile = ReferenceProfile.load(out)
    kept = profile.features["prompt_tokens"].count
    assert f"prediction log sampling: profiled {kept} of {rows} rows" in printed
    assert kept < rows / 2 and profile.features["tier"].count == kept
    # before: the log's rows as they are (69 % slow) made the reference, and the traffic served drifted from it
    code, report = drift_json(capsys, str(out), str(served["tmp"] / "served.parquet"))
    assert code == 0 and not any(f["drifted"] for f in report["features"])
    # a reference from the log's first half, the second half as current: no drift either way of reading both
    until = "2026-09-21T14:30:00Z"  # T0 + 1000 s: half of the 2000 s the log spans
    half = served["tmp"] / "half.json"
    for extra in ([], ["--no-reweight"]):
        assert main(["profile", "build", str(served["log"]), "--until", until, "-o", str(half), *extra]) == 0
        capsys.readouterr()
        code, report = drift_json(capsys, str(half), str(served["log"]), "--since", until, *extra)
        assert code == 0 and (report["sample_rate_thinning"] is None) == bool(extra)
    assert main(["profile", "build", str(served["log"]), "-o", str(out), "--no-reweight"]) == 0
    assert "prediction log sampling" not in capsys.readouterr().out
    assert ReferenceProfile.load(out).features["prompt_tokens"].count == rows


def test_the_report_shows_the_rows_compared(served: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--report hands Evidently the rows the comparison read: a log's thinned rows (every row with --no-reweight),
    so the HTML does not show the slow requests' distribution next to a verdict on the traffic's."""
    import aiwatch.drift.report

    seen: list[tuple[Any, Any]] = []
    monkeypatch.setattr(aiwatch.drift.report, "evidently_html",
                        lambda reference, current, *args, **kwargs: seen.append((reference, current)))
    reference = str(served["tmp"] / "served.parquet")
    for extra in ([], ["--no-reweight"]):
        report = served["tmp"] / "r.html"
        code, result = drift_json(capsys, reference, str(served["log"]), "--report", str(report), *extra)
        ref, cur = seen[-1]
        assert code == (1 if extra else 0)
        assert len(ref) == REQUESTS and len(cur) == result["features"][0]["current_count"]
        # the traffic's mean prompt is 0.9 * 200 + 0.1 * 600 = 240; the log's rows as they are, about 476
        mean = float(np.mean(cur["prompt_tokens"]))
        assert (mean > 400) if extra else (220 < mean < 260), mean
    assert len(seen) == 2 and len(seen[0][1]) < len(seen[1][1])
