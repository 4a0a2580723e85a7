"""Profiles and drift on a real dask.distributed cluster (a LocalCluster of several workers, threads in this process)
equal the single-machine results on the same rows: counts, bins, categories and the bounded samples exactly (every
row's sample key comes from its position, so per-partition samples merge into the very same sample), means and
standard deviations to the last bits; the CLI's --dask gives the same report as without."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aiwatch.cli import main  # noqa: E402
from aiwatch.drift import on_dask  # noqa: E402
from aiwatch.drift.batch import compare_source, profile_source  # noqa: E402
from aiwatch.drift.datasets import parse_time  # noqa: E402
from aiwatch.drift.errors import ProfileError  # noqa: E402
from aiwatch.drift.evaluate import Options  # noqa: E402
from aiwatch.drift.on_dask import compare_dask, profile_dask, read_frame  # noqa: E402
from aiwatch.drift.profile import ReferenceProfile  # noqa: E402
from aiwatch.drift.sampling import keep_smallest, row_keys  # noqa: E402
from tests.drift.test_drift_datasets import (  # noqa: E402
    HOUR,
    NO_ROW_CASES,
    PANDAS_INDEX_CASES,
    PER_HOUR,
    SALE,
    T0,
    count_opens,
    log_rows,
    no_row_sources,
    pandas_index_sources,
    reference_x_c_z,
)

CHUNK = 3000
SAMPLE = 4000


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # ":0", a free port: with None the scheduler still serves HTTP on 8787, and warns when something else holds it
    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  protocol="tcp") as local, distributed.Client(local) as client:
        yield client


def write_parts(folder: Path, seed: int, shift: float = 0.0) -> Path:
    """Five files of uneven length (several row groups each): floats with NaN and inf, float32, text categories with
    None, a small-integer category."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(5):
        n = 5000 + 1700 * i
        x = rng.normal(shift, 1, n)
        x[rng.random(n) < 0.02] = np.nan
        x[:3] = [np.inf, -np.inf, np.nan]
        pq.write_table(pa.table({
            "x": x,
            "y": rng.exponential(1 + shift, n).astype("float32"),
            "city": pa.array(rng.choice(["paris", "lyon", "nice", None], n, p=[0.5, 0.3, 0.15, 0.05]).tolist()),
            "tier": rng.integers(0, 4 + int(shift > 0), n),
        }), folder / f"part-{i}.parquet", row_group_size=2500)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("drift-dask")
    return {"reference": write_parts(tmp / "reference", 1), "current": write_parts(tmp / "current", 2, 0.3),
            "tmp": tmp}


def features_apart(a: ReferenceProfile, b: ReferenceProfile) -> dict[str, dict[str, Any]]:
    """Every field of every feature that differs, means and standard deviations compared to 1e-12."""
    apart: dict[str, dict[str, Any]] = {}
    assert list(a.features) == list(b.features)
    for name in a.features:
        fa, fb = asdict(a.features[name]), asdict(b.features[name])
        for key in fa:
            if key in ("mean", "std"):
                same = fa[key] == pytest.approx(fb[key], rel=1e-12)
            elif key in ("sample", "sample_keys"):  # float64 arrays where built, lists where merged from parts
                same = np.array_equal(np.asarray(fa[key], dtype=float), np.asarray(fb[key], dtype=float))
            else:
                same = fa[key] == fb[key]
            if not same:
                apart.setdefault(name, {})[key] = (fa[key], fb[key])
    return apart


def test_a_profile_built_on_the_cluster_equals_the_single_machine_profile(cluster: Any,
                                                                          data: dict[str, Path]) -> None:
    local = profile_source(data["reference"], chunk_rows=CHUNK, sample_size=SAMPLE)
    frame = read_frame(data["reference"])
    assert frame.npartitions >= 5
    on_cluster = profile_dask(frame, chunk_rows=CHUNK, sample_size=SAMPLE)
    assert features_apart(local, on_cluster) == {}
    x = on_cluster.features["x"]
    assert x.kind == "numerical" and len(x.sample) == SAMPLE < x.count  # the sample and pass 2 were exercised
    assert on_cluster.features["tier"].kind == "categorical"
    assert on_cluster.features["city"].missing > 0


def test_drift_on_the_cluster_reports_what_the_single_machine_reports(cluster: Any, data: dict[str, Path]) -> None:
    profile = profile_source(data["reference"], chunk_rows=CHUNK, sample_size=SAMPLE)
    frame = read_frame(data["current"])
    for options in (Options(max_exact=2000), Options(exact=True), Options(method="wasserstein", max_exact=500)):
        local = compare_source(profile, data["current"], options, chunk_rows=CHUNK)
        assert compare_dask(profile, frame, options, chunk_rows=CHUNK).to_dict() == local.to_dict()
        assert local.drifted


def test_parquet_partitions_start_where_their_footers_say_and_run_independently(data: dict[str, Path]) -> None:
    """Dask knows a Parquet frame's row counts from the footers: each partition's offset is a number, and no
    partition waits for those before it to be read (which made a worker hold several partitions at once)."""
    frame = read_frame(data["reference"]).optimize()
    lengths = on_dask._known_lengths(frame, frame.npartitions)
    assert lengths is not None and lengths == frame.map_partitions(len).compute().tolist()
    unknown = read_frame(data["reference"]).map_partitions(lambda part: part[part["x"] > 0]).optimize()
    assert on_dask._known_lengths(unknown, unknown.npartitions) is None


def test_frames_of_unknown_or_wrong_lengths_give_the_single_machine_report(cluster: Any, data: dict[str, Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without row counts from metadata (a frame made by map_partitions), and when the metadata's counts are wrong
    (one row moved between two partitions), the offsets come from the partitions' real lengths: same report."""
    profile = profile_source(data["reference"], chunk_rows=CHUNK, sample_size=SAMPLE)
    options = Options(max_exact=2000)
    local = compare_source(profile, data["current"], options, chunk_rows=CHUNK).to_dict()
    same_rows = read_frame(data["current"]).map_partitions(lambda part: part)
    assert compare_dask(profile, same_rows, options, chunk_rows=CHUNK).to_dict() == local
    known = on_dask._known_lengths

    def one_row_moved(frame: Any, partitions: int) -> list[int] | None:
        lengths = known(frame, partitions)
        assert lengths is not None and len(lengths) >= 2
        return [lengths[0] + 1, lengths[1] - 1, *lengths[2:]]

    monkeypatch.setattr(on_dask, "_known_lengths", one_row_moved)
    assert compare_dask(profile, read_frame(data["current"]), options, chunk_rows=CHUNK).to_dict() == local
    assert profile_dask(read_frame(data["reference"]), chunk_rows=CHUNK, sample_size=SAMPLE).features.keys() == \
        profile.features.keys()


def test_per_partition_samples_merge_into_the_whole_datas_sample() -> None:
    values = np.random.default_rng(3).normal(size=10_000)
    keys = row_keys(7, 0, values.size)
    whole = keep_smallest(values, keys, 300)[0]
    cuts = [0, 1234, 1235, 6000, 10_000]
    parts = [keep_smallest(values[a:b], row_keys(7, a, b - a), 300) for a, b in itertools.pairwise(cuts)]
    merged = keep_smallest(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), 300)[0]
    assert sorted(merged.tolist()) == sorted(whole.tolist())


def write_log(folder: Path) -> Path:
    from aiwatch.feedback import ParquetSink

    rng = np.random.default_rng(16)
    sink = ParquetSink(folder, max_rows=700)
    for hour in range(3):
        sink.write(log_rows(rng, T0 + hour * HOUR, PER_HOUR, sale=hour == 2))
    sink.close()
    return folder


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_the_cli_with_dask_gives_the_report_it_gives_without(cluster: Any, data: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(data["tmp"] / "log")
    address = cluster.scheduler.address
    profiles = {}
    for how, extra in (("local", []), ("dask", ["--dask", address])):
        profiles[how] = data["tmp"] / f"profile-{how}.json"
        assert main(["profile", "build", str(log), "--until", SALE, "--sample-size", "1000", "--chunk-rows", "800",
                     "-o", str(profiles[how]), *extra]) == 0
    assert features_apart(ReferenceProfile.load(profiles["local"]), ReferenceProfile.load(profiles["dask"])) == {}
    capsys.readouterr()
    for window in (["--since", SALE], ["--until", SALE]):
        args = ["drift", str(profiles["local"]), str(log), *window, "--chunk-rows", "800"]
        local, on_cluster = cli_json(capsys, *args), cli_json(capsys, *args, "--dask", address)
        assert on_cluster == local
    assert local[0] == 0 and cli_json(capsys, *args[:3], "--since", SALE)[0] == 1  # the sale hour drifts
    args = ["drift", str(data["reference"]), str(data["current"]), "--chunk-rows", str(CHUNK)]
    assert cli_json(capsys, *args, "--dask", address) == cli_json(capsys, *args)


def test_each_local_dataset_is_opened_once_per_command(cluster: Any, data: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # opening a dataset reads every file's footer; drift --dask opened the current data three times (its column
    # names, the columns read as text, its partition keys), and a profile build twice
    log = write_log(tmp_path / "log")
    address = cluster.scheduler.address
    opened = count_opens(monkeypatch)
    assert main(["profile", "build", str(log), "--until", SALE, "-o", str(tmp_path / "p.json"), "--dask", address]) == 0
    assert opened == [str(log)]
    opened.clear()
    capsys.readouterr()
    code, report = cli_json(capsys, "drift", str(tmp_path / "p.json"), str(log), "--since", SALE, "--dask", address)
    assert code == 1 and report["unknown_features"] == [] and opened == [str(log)]
    opened.clear()
    assert cli_json(capsys, "drift", str(data["reference"]), str(data["current"]), "--dask", address)[0] == 1
    assert sorted(opened) == sorted([str(data["reference"]), str(data["current"])])


def test_an_unreachable_scheduler_is_one_error_line(data: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["profile", "build", str(data["reference"]), "-o", str(data["tmp"] / "never.json"),
                 "--dask", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("aiwatch profile build: error: --dask tcp://127.0.0.1:9: no Dask scheduler "
                                        "answered within 5 s") and "Traceback" not in err


@pytest.mark.parametrize("command", ["drift", "profile build"])
def test_an_unreachable_scheduler_is_named_after_a_short_connect_timeout(
        data: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str) -> None:
    # nothing listens on port 9: --dask waited Dask's own connect timeout (30 s) and printed Dask's message, which
    # named neither the option nor the wait; the wait is now --dask-timeout (default 5 s), and the line names both
    args = [str(data["reference"]), str(data["current"])] if command == "drift" else \
        [str(data["reference"]), "-o", str(data["tmp"] / "never.json")]
    code = main([*command.split(), *args, "--dask", "127.0.0.1:9", "--dask-timeout", "0.5"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.splitlines() == [
        f"aiwatch {command}: error: --dask 127.0.0.1:9: no Dask scheduler answered within 0.5 s (Timed out trying "
        "to connect to tcp://127.0.0.1:9 after 0.5 s)"]
    assert not (data["tmp"] / "never.json").exists()
    assert on_dask.DEFAULT_CONNECT_TIMEOUT == 5


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "abc", ""])
def test_a_dask_timeout_that_is_no_wait_is_refused_by_name(
        data: dict[str, Path], capsys: pytest.CaptureFixture[str], timeout: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["drift", str(data["reference"]), str(data["current"]), "--dask", "127.0.0.1:9",
              "--dask-timeout", timeout])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"argument --dask-timeout: must be a number of seconds > 0, got {timeout!r}" in err, err


def test_a_csv_field_that_does_not_fit_dasks_typing_gives_the_single_machine_result(
        cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    # Dask types a CSV's columns from its first 256 kB: "unknown" after them failed the whole job ("Mismatched
    # dtypes"); it is now read again as text, each field typed as read_chunks types it on one machine
    import pandas as pd

    rng = np.random.default_rng(31)
    n = 60_000
    age: list[object] = list(np.round(rng.normal(40, 10, n), 3))
    rooms: list[object] = list(rng.integers(1, 6, n))
    age[50_000], rooms[55_000] = "unknown", "-"
    pd.DataFrame({"age": age, "rooms": rooms, "plan": rng.choice(["free", "pro"], n)}).to_csv(
        tmp_path / "dirty.csv", index=False)
    assert (tmp_path / "dirty.csv").stat().st_size > 2 * 256_000
    address = cluster.scheduler.address
    for how, extra in (("local", []), ("dask", ["--dask", address])):
        assert main(["profile", "build", str(tmp_path / "dirty.csv"), "-o", str(tmp_path / f"{how}.json"),
                     "--chunk-rows", "20000", *extra]) == 0
    local, on_cluster = (ReferenceProfile.load(tmp_path / f"{how}.json") for how in ("local", "dask"))
    assert features_apart(local, on_cluster) == {}
    assert {name: (f.kind, f.count) for name, f in on_cluster.features.items()} == {
        "age": ("numerical", n - 1), "rooms": ("categorical", n), "plan": ("categorical", n)}
    # Dask's text columns: object on pandas 2, str on pandas 3
    assert any(f"a later field does not fit (age: {text}, typed float64; rooms: {text}, typed int64)" in caplog.text
               for text in ("object", "str"))
    capsys.readouterr()
    args = ["drift", str(tmp_path / "local.json"), str(tmp_path / "dirty.csv"), "--chunk-rows", "20000"]
    assert cli_json(capsys, *args, "--dask", address) == cli_json(capsys, *args)
    # a clean CSV keeps Dask's own typed read
    caplog.clear()
    pd.DataFrame({"age": rng.normal(40, 10, 1000)}).to_csv(tmp_path / "clean.csv", index=False)
    assert main(["profile", "build", str(tmp_path / "clean.csv"), "-o", str(tmp_path / "clean.json"),
                 "--dask", address]) == 0
    assert "does not fit" not in caplog.text


@pytest.mark.parametrize("text_at", [0, 301])
def test_log_files_that_disagree_on_a_columns_type_give_the_single_machine_profile(cluster: Any, tmp_path: Path,
                                                                                   text_at: int) -> None:
    # one "unknown" made a batch of the log's age column text: Dask took the first file's type and failed on that
    # value (text_at=301), or read every number as text when that file came first (text_at=0)
    from aiwatch.feedback import ParquetSink

    rng = np.random.default_rng(43)
    rows = [{"request_id": f"r{i}", "timestamp": 1_790_000_000.0 + i, "model": "m", "age": float(v),
             "plan": str(rng.choice(["free", "pro"]))} for i, v in enumerate(rng.normal(40, 10, 600))]
    rows[text_at]["age"] = "unknown"
    sink = ParquetSink(tmp_path / "log")
    for start in range(0, 600, 100):
        sink.write(rows[start:start + 100])
    sink.close()
    address = cluster.scheduler.address
    for how, extra in (("local", []), ("dask", ["--dask", address])):
        assert main(["profile", "build", str(tmp_path / "log"), "-o", str(tmp_path / f"{how}.json"), *extra]) == 0
    local, on_cluster = (ReferenceProfile.load(tmp_path / f"{how}.json") for how in ("local", "dask"))
    assert features_apart(local, on_cluster) == {}
    assert (on_cluster.features["age"].kind, on_cluster.features["age"].count) == ("numerical", 599)


def test_column_kinds_on_the_cluster_do_not_depend_on_chunk_rows_or_partitions(cluster: Any, tmp_path: Path) -> None:
    # the kinds were decided on the first chunk_rows rows of the first partition: with 3 rows, three repeated
    # categories were text (left out) and 30 distinct ints categories, unlike the same rows profiled whole
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(10):
        pq.write_table(pa.table({"n": np.arange(3 * i, 3 * i + 3), "c": ["red", "green", "blue"]}),
                       folder / f"part-{i}.parquet")
    whole = ReferenceProfile.build({"n": np.arange(30), "c": ["red", "green", "blue"] * 10})
    frame = read_frame(folder)
    assert frame.npartitions == 10
    for chunk_rows in (1, 3, 100_000):
        on_cluster = profile_dask(frame, chunk_rows=chunk_rows)
        assert {n: f.kind for n, f in on_cluster.features.items()} == {"n": "numerical", "c": "categorical"}
        assert features_apart(profile_source(folder, chunk_rows=chunk_rows), on_cluster) == {}
        assert on_cluster.features["c"].counts == whole.features["c"].counts  # type: ignore[attr-defined]
    with pytest.raises(ProfileError, match=r"a kind is given for 'N', but the data has no column 'N' \(its columns: n"):
        profile_dask(frame, kinds={"N": "numerical"})  # a typo was ignored


def test_a_partition_with_no_number_in_a_numerical_column_is_profiled(cluster: Any) -> None:
    # the kinds decided on the first rows are not checked again per partition: the last one holds only text
    import dask
    import dask.dataframe as dd
    import pandas as pd

    frame = pd.DataFrame({"v": pd.Series([0.5 + i for i in range(10)] + ["unknown"] * 5, dtype=object)})
    whole = ReferenceProfile.build(frame)
    with dask.config.set({"dataframe.convert-string": False}):  # numbers and text in one column, as pandas has it
        on_cluster = profile_dask(dd.from_pandas(frame, npartitions=3, sort=False))
    assert set(features_apart(whole, on_cluster).get("v", {})) <= {"sample", "sample_keys"}  # in memory: rng keys
    assert (on_cluster.features["v"].kind, on_cluster.features["v"].count) == ("numerical", 10)


@pytest.mark.parametrize("in_every_file", [False, True])
def test_a_partition_key_that_is_a_column_of_the_files_is_refused_by_name_on_dask(
        cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], in_every_file: bool) -> None:
    """``region=`` directories, a ``region`` column in some files (or every file): one machine reads it (the file's
    column, else the directory's value); --dask failed with a raw KeyError "['region'] not in index" (profile build:
    "unexpected: please report it"), or, the column in every file under region=/day=1/, with Dask's "An error
    occurred while calling the read_parquet method registered to the pandas backend." and no cause (its cause: "No
    partition-columns should be written in the file unless they are ALL written in the file"). Now an error naming
    the key and saying to read without --dask."""
    b = {"x": [3.0] * 40, **({"region": ["eu"] * 40} if in_every_file else {})}
    for relative, columns in (("region=eu/a.parquet", {"x": [1.0] * 40, "region": ["us"] * 40}),
                              ("region=eu/b.parquet", b),
                              ("region=asia/c.parquet", {"x": [4.0] * 40, "region": ["us"] * 40})):
        path = tmp_path / "A" / (relative.replace("/", "/day=1/") if in_every_file else relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
    reference = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"x": [1.0] * 40 + [3.0] * 40 + [4.0] * 40, "region": ["us"] * 80 + ["eu"] * 40}),
                   reference)
    address = cluster.scheduler.address
    assert main(["drift", str(reference), str(tmp_path / "A"), "--json"]) == 0
    assert main(["profile", "build", str(tmp_path / "A"), "-o", str(tmp_path / "p.json")]) == 0
    capsys.readouterr()
    for args in (["drift", str(reference), str(tmp_path / "A"), "--json"],
                 ["profile", "build", str(tmp_path / "A"), "-o", str(tmp_path / "p-dask.json")]):
        assert main([*args, "--dask", address]) == 2
        error = capsys.readouterr().err
        assert "'region' is both a key= directory and a column of the files" in error and "without --dask" in error
    assert not (tmp_path / "p-dask.json").exists()


def test_dasks_wrapper_of_a_readers_error_gives_way_to_the_cause() -> None:
    """Dask raises "An error occurred while calling the read_parquet method registered to the pandas backend."
    from the reader's error; only that first line was kept, saying nothing of what went wrong."""
    try:
        try:
            raise ValueError("Unable to merge: Field region has incompatible types")
        except ValueError as exc:
            raise ValueError("An error occurred while calling the read_parquet method registered to the pandas "
                             "backend.\nOriginal Message: Unable to merge") from exc
    except ValueError as wrapped:
        error = on_dask._cannot_read("logs", wrapped)
    assert str(error) == "cannot read 'logs' with Dask: Unable to merge: Field region has incompatible types"


@pytest.mark.parametrize("window", [["--since", "2300-01-01"], ["--until", "2000-01-01T00:00Z"],
                                    ["--since", "2026-01-01T00:00:00.000001Z", "--until", "2026-01-02"]])
def test_a_window_that_selects_no_row_says_so_on_both_paths(cluster: Any, tmp_path: Path, window: list[str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # it said "the current data has none of the reference's features" (one machine) or "no values for" them (Dask)
    rng = np.random.default_rng(5)
    pq.write_table(pa.table({"x": rng.normal(size=300)}), tmp_path / "ref.parquet")
    # 2026-01-01T00:00Z less 5 s, itself, one day and 25 hours later: the third window ends where a row starts
    times = pa.array([(1767225600 + i) * 10**9 for i in (-5, 0, 86400, 90000)], pa.timestamp("ns", tz="UTC"))
    pq.write_table(pa.table({"when": times, "x": rng.normal(size=4)}), tmp_path / "cur.parquet")
    args = ["drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), *window, "--time-column", "when"]
    capsys.readouterr()
    for extra in ([], ["--dask", cluster.scheduler.address]):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert "the time window selected no row: no 'when' of the current data is " in err, err
        assert "none of the reference's features" not in err and "no values for" not in err
        for bound in window[1::2]:
            assert parse_time(bound).isoformat() in err


@pytest.mark.parametrize("as_dataset", [False, True], ids=["file", "dataset"])
def test_parquet_of_no_rows_says_so_on_both_paths(cluster: Any, tmp_path: Path, as_dataset: bool,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # a 0-row Parquet file has the columns: it said "the current data has none of the reference's features 'x'"
    pq.write_table(pa.table({"x": np.random.default_rng(6).normal(size=300)}), tmp_path / "ref.parquet")
    (tmp_path / "cur").mkdir()
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), tmp_path / "cur" / "part-0.parquet")
    current = tmp_path / "cur" if as_dataset else tmp_path / "cur" / "part-0.parquet"
    capsys.readouterr()
    for extra in ([], ["--dask", cluster.scheduler.address]):
        assert main(["drift", str(tmp_path / "ref.parquet"), str(current), *extra]) == 2
        assert capsys.readouterr().err == "aiwatch drift: error: nothing was tested: the current data has no rows\n"


@pytest.mark.parametrize("case", ["window", "no rows"])
def test_no_row_read_is_not_reported_as_missing_features(cluster: Any, tmp_path: Path, case: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # stdout said `"missing_features": ["x"]` / "x missing from the current data" while stderr said no row was read
    pq.write_table(pa.table({"x": np.random.default_rng(7).normal(size=300)}), tmp_path / "ref.parquet")
    times = pa.array([1767225600 * 10**9], pa.timestamp("ns", tz="UTC"))
    rows = {"when": times, "x": pa.array([0.5])} if case == "window" else {"x": pa.array([], pa.float64())}
    pq.write_table(pa.table(rows), tmp_path / "cur.parquet")
    window = ["--since", "2030-01-01", "--time-column", "when"] if case == "window" else []
    reason = ("the time window selected no row: no 'when' of the current data is at or after "
              "2030-01-01T00:00:00+00:00 (--since/--until)" if case == "window" else "the current data has no rows")
    args = ["drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), *window]
    capsys.readouterr()
    for extra in ([], ["--dask", cluster.scheduler.address]):
        assert main([*args, "--json", *extra]) == 2
        out, err = capsys.readouterr()
        assert err == f"aiwatch drift: error: nothing was tested: {reason}\n"
        report = json.loads(out)
        assert (report["missing_features"], report["nothing_tested"]) == ([], reason)
        # the feature the data has is listed, untested (it was in neither list)
        assert [(f["feature"], f["status"], f["current_count"]) for f in report["features"]] == \
            [("x", "insufficient_data", 0)]
        assert main([*args, *extra]) == 2
        out = capsys.readouterr().out
        assert "missing from the current data" not in out and f"no row compared: {reason}\n" in out, out


def test_a_csv_of_a_header_only_says_no_rows_on_both_paths(cluster: Any, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # one machine said "no values for the reference's features (no rows, or every value missing)", Dask "no rows"
    pq.write_table(pa.table({"x": np.random.default_rng(9).normal(size=300)}), tmp_path / "ref.parquet")
    (tmp_path / "cur.csv").write_text("x\n")
    capsys.readouterr()
    for extra in ([], ["--dask", cluster.scheduler.address]):
        assert main(["drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.csv"), *extra]) == 2
        assert capsys.readouterr().err == "aiwatch drift: error: nothing was tested: the current data has no rows\n"


@pytest.mark.parametrize("case", NO_ROW_CASES)
def test_with_no_row_read_both_paths_list_the_features_present_alike(cluster: Any, tmp_path: Path, case: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # --dask listed no feature where the data has x and c but no row reaches them (one machine listed them for a
    # CSV of a header only, as insufficient_data with 0 values, and none for the others)
    reference = reference_x_c_z(tmp_path)
    current, extra = no_row_sources(tmp_path)[case]
    args = ["drift", str(reference), str(current), *extra]
    capsys.readouterr()
    local, on_cluster = cli_json(capsys, *args), cli_json(capsys, *args, "--dask", cluster.scheduler.address)
    assert on_cluster == local
    code, report = local
    assert code == 2 and [(f["feature"], f["status"], f["current_count"]) for f in report["features"]] == \
        [("x", "insufficient_data", 0), ("c", "insufficient_data", 0)]
    assert (report["missing_features"], report["unknown_features"]) == (["z"], ["y"])


@pytest.mark.parametrize("rows", [0, 200], ids=["header only", "with rows"])
def test_a_tab_separated_file_is_read_alike_on_both_paths(cluster: Any, tmp_path: Path, rows: int,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # --dask read a .tsv file with commas as the separator: its one column "x\tc" was no feature of the reference
    # ("none of the reference's features"), while one machine reads it tab-separated, as the CSV of a header only
    # next to it; the profile built from one on the cluster failed alike ("no numerical or categorical column")
    rng = np.random.default_rng(12)
    reference = reference_x_c_z(tmp_path)
    x, c = rng.normal(0.5, 1.0, rows), rng.choice(["a", "b"], rows)
    (tmp_path / "cur.tsv").write_text("x\tc\n" + "".join(f"{float(a)!r}\t{b}\n" for a, b in zip(x, c, strict=True)))
    (tmp_path / "cur.csv").write_text("x,c\n" + "".join(f"{float(a)!r},{b}\n" for a, b in zip(x, c, strict=True)))
    capsys.readouterr()
    address = cluster.scheduler.address
    as_csv = cli_json(capsys, "drift", str(reference), str(tmp_path / "cur.csv"))
    for extra in ([], ["--dask", address]):
        assert cli_json(capsys, "drift", str(reference), str(tmp_path / "cur.tsv"), *extra) == as_csv
    assert [(f["feature"], f["current_count"]) for f in as_csv[1]["features"]] == [("x", rows), ("c", rows)]
    if rows:  # the profile of a .tsv reference, on the cluster as on one machine
        for extra in ([], ["--dask", address]):
            out = tmp_path / f"p{len(extra)}.json"
            assert main(["profile", "build", str(tmp_path / "cur.tsv"), "-o", str(out), *extra]) == 0
        assert sorted(ReferenceProfile.load(tmp_path / "p0.json").features) == \
            sorted(ReferenceProfile.load(tmp_path / "p2.json").features) == ["c", "x"]


@pytest.mark.parametrize("case", PANDAS_INDEX_CASES)
def test_pandas_stored_index_is_read_alike_on_both_paths(cluster: Any, tmp_path: Path, case: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # Dask's read_parquet makes pandas' stored index (__index_level_0__, or the index's name) the frame's index;
    # one machine read it as a column: unknown_features differed, and a profile built from such data had one more
    # feature on one machine (which drifted: later rows have a later index)
    source = pandas_index_sources(tmp_path)[case]
    reference = reference_x_c_z(tmp_path)
    address = cluster.scheduler.address
    capsys.readouterr()
    local = cli_json(capsys, "drift", str(reference), str(source))
    assert cli_json(capsys, "drift", str(reference), str(source), "--dask", address) == local
    assert local[1]["unknown_features"] == []
    if "empty" not in case:  # a profile built from it (of a dataset, --dask names its columns from the footers)
        for extra in ([], ["--dask", address]):
            out = tmp_path / f"p{len(extra)}.json"
            assert main(["profile", "build", str(source), "-o", str(out), *extra]) == 0
            assert sorted(ReferenceProfile.load(out).features) == ["c", "x"]
        capsys.readouterr()
        code, report = cli_json(capsys, "drift", str(source), str(source), "--rule", "any")
        assert cli_json(capsys, "drift", str(source), str(source), "--rule", "any", "--dask", address) == \
            (code, report)
        assert code == 0 and [f["feature"] for f in report["features"]] == ["x", "c"]


@pytest.mark.parametrize("source", ["parquet", "pandas"])
def test_compare_dask_on_no_rows_gives_compare_sources_report(cluster: Any, tmp_path: Path, source: str) -> None:
    # the library call on a frame of no rows never set no_rows: its reason said "no values for the reference's
    # features" where compare_source (and the CLI with --dask, which sets it afterwards) say "no rows"
    import dask.dataframe as dd
    import pandas as pd

    rng = np.random.default_rng(14)
    profile = ReferenceProfile.build({"x": rng.normal(size=300), "c": rng.choice(["a", "b"], 300),
                                      "z": rng.normal(size=300)})
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "c": pa.array([], pa.string()),
                             "y": pa.array([], pa.int64())}), path)
    frame = read_frame(path) if source == "parquet" else \
        dd.from_pandas(pd.DataFrame({"x": np.empty(0), "c": np.empty(0, dtype=object), "y": np.empty(0, np.int64)}),
                       npartitions=1)
    local, on_cluster = compare_source(profile, path), compare_dask(profile, frame)
    assert on_cluster.why_nothing_tested() == local.why_nothing_tested() == "the current data has no rows"
    assert asdict(on_cluster) == asdict(local)


@pytest.mark.parametrize("name", ["cur.csv.gz", "cur.tsv.gz", "cur", "cur.xlsx"])
def test_a_file_one_machine_refuses_is_refused_alike_on_dask(cluster: Any, tmp_path: Path, name: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # read_frame sent any file that is not Parquet to Dask's CSV reader: a .csv.gz or a file without a suffix was
    # read (and a .tsv.gz with commas: one column), where one machine refuses every suffix but .csv/.txt/.tsv/.parquet
    import pandas as pd

    rng = np.random.default_rng(15)
    reference = reference_x_c_z(tmp_path)
    path = tmp_path / name
    pd.DataFrame({"x": rng.normal(size=50), "c": rng.choice(["a", "b"], 50)}).to_csv(
        path, index=False, sep="\t" if ".tsv" in name else ",", compression="gzip" if name.endswith(".gz") else None)
    message = f"cannot read {str(path)!r}: expected a .csv, .txt or .tsv file (uncompressed text) or a .parquet or " \
        ".pq file"
    with pytest.raises(ProfileError) as refused:
        read_frame(path)
    assert str(refused.value) == message
    capsys.readouterr()
    for extra in ([], ["--dask", cluster.scheduler.address]):
        assert main(["drift", str(reference), str(path), *extra]) == 2
        assert capsys.readouterr().err == f"aiwatch drift: error: {message}\n"
        assert main(["drift", str(path), str(reference), *extra]) == 2
        assert capsys.readouterr().err == f"aiwatch drift: error: {message}\n"
        assert main(["profile", "build", str(path), "-o", str(tmp_path / "p.json"), *extra]) == 2
        assert message in capsys.readouterr().err


def test_a_compressed_csv_url_is_still_dasks_to_read(tmp_path: Path) -> None:
    # refusing every suffix but .csv/.txt/.tsv/.parquet/.pq (as one machine does for a local file) refused a URL too:
    # a file:// or s3:// .csv.gz, which Dask's reader reads (compression="infer") and --dask used to
    import pandas as pd

    rng = np.random.default_rng(29)
    path = tmp_path / "cur.csv.gz"
    frame = pd.DataFrame({"x": rng.normal(size=50), "c": rng.choice(["a", "b"], 50)})
    frame.to_csv(path, index=False, compression="gzip")
    with pytest.warns(UserWarning, match="gzip"):  # Dask reads a gzip file as one partition, and says so
        read = read_frame(path.as_uri()).compute()
    expected = pd.read_csv(path)  # the same text parsed by pandas
    assert read.x.tolist() == expected.x.tolist() and read.c.tolist() == frame.c.tolist()


def test_a_log_thinned_by_its_sample_rate_on_the_cluster_keeps_the_rows_kept_without(
        cluster: Any, data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A prediction log whose rows were kept with different chances (sample_rate 0.2, or 1 for the big baskets)
    is thinned to an equal-chance sample on the cluster exactly as on one machine: the same rows, so the same
    report (the thinning's counts included), with a time window, in the exact mode, and with --no-reweight; and
    so is a profile built from it (both passes: the sample is smaller than the rows)."""
    from aiwatch.feedback import ParquetSink

    rng = np.random.default_rng(5)
    sink = ParquetSink(tmp_path / "log", max_rows=700)
    for hour in range(3):
        rows = log_rows(rng, T0 + hour * HOUR, PER_HOUR, sale=hour == 2)
        for row in rows:
            row["sample_rate"] = 1.0 if float(row["basket_value"]) > 60 else 0.2  # type: ignore[arg-type]
        sink.write(rows)
    sink.close()
    reference = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"basket_value": rng.normal(50, 10, 3000)}), reference)
    address = cluster.scheduler.address
    for extra in ([], ["--since", SALE], ["--exact"], ["--no-reweight"]):
        args = ["drift", str(reference), str(tmp_path / "log"), "--chunk-rows", "500", *extra]
        local = cli_json(capsys, *args)
        assert cli_json(capsys, *args, "--dask", address) == local
        thinned = local[1]["sample_rate_thinning"]
        if extra == ["--no-reweight"]:
            assert thinned is None
        else:
            assert thinned["min_rate"] == 0.2 and thinned["kept"] < thinned["rows"]
            assert local[1]["features"][0]["current_count"] == thinned["kept"]
    for extra in ([], ["--until", SALE], ["--no-reweight"]):
        built = {}
        for how, dask_args in (("local", []), ("dask", ["--dask", address])):
            built[how] = tmp_path / f"{how}.json"
            assert main(["profile", "build", str(tmp_path / "log"), "-o", str(built[how]), "--sample-size", "300",
                         "--chunk-rows", "400", *extra, *dask_args]) == 0
        said = capsys.readouterr().out.count("prediction log sampling: profiled")
        assert said == (0 if extra == ["--no-reweight"] else 2)
        local, on_cluster = (ReferenceProfile.load(built[how]) for how in ("local", "dask"))
        assert features_apart(local, on_cluster) == {}
        assert list(local.features) == ["basket_value", "country", "user_segment", "output.score"]
        count = local.features["basket_value"].count
        everything = (2 if extra == ["--until", SALE] else 3) * PER_HOUR
        assert 300 < count < everything if extra != ["--no-reweight"] else count == everything


def test_a_log_of_small_files_is_profiled_on_the_cluster(cluster: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Dask fuses a log's small Parquet files into fewer partitions than the frame says it has: the column kinds,
    read from the first rows, asked head() for 4 partitions of 3 and the build failed ("only 3 partitions, head
    received 4", exit 2). The first rows now come from the partitions the summaries read."""
    log = write_log(tmp_path / "log")
    frame = read_frame(log, columns=["basket_value", "country"])
    assert frame.optimize().npartitions < frame.npartitions or frame.npartitions > 1
    assert len(on_dask._first_rows(frame, 2000)) == 2000
    assert len(on_dask._first_rows(frame, 10**6)) == 3 * PER_HOUR
    built = {}
    for how, extra in (("local", []), ("dask", ["--dask", cluster.scheduler.address])):
        built[how] = tmp_path / f"{how}.json"
        assert main(["profile", "build", str(log), "-o", str(built[how]), "--sample-size", "500", *extra]) == 0
    assert features_apart(*(ReferenceProfile.load(built[how]) for how in ("local", "dask"))) == {}
