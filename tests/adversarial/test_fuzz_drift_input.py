"""Fuzzing `aiwatch drift` and `aiwatch profile build` with CSV and Parquet input: any file gives exit 0 or 1 (it was
tested) or exit 2 with one line on stderr naming the problem, never a traceback and never the catch-all "unexpected"
error (which would mean some exception reached the command line untyped)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from aiwatch.cli import main
from aiwatch.drift import ReferenceProfile
from tests.servers import require_module

pd = require_module("pandas")
pa = require_module("pyarrow")
pq = require_module("pyarrow.parquet")

RNG = np.random.default_rng(11)
PROFILE = ReferenceProfile.build({"age": RNG.normal(40, 10, 500), "plan": RNG.choice(["free", "pro"], 500),
                                  "clicks": RNG.integers(0, 50, 500).astype(float)}, sample_size=200)
UNEXPECTED = "(unexpected: please report it)"

cells = st.one_of(st.sampled_from(["", "1", "2.5", "-0", "nan", "NaN", "inf", "-inf", "1e400", "1e-400", "free",
                                   "pro", "TRUE", "null", "None", '"', '""', "a,b", "\n", "\t", "\ufeff", "0x10",
                                   "9" * 400]),
                  st.floats().map(repr), st.integers().map(str), st.text(max_size=8))
names = st.sampled_from(["age", "plan", "clicks", "other", "", "age", "Unnamed: 0", "\ufeffage"]) | st.text(max_size=5)
csv_tables = st.builds(
    lambda header, rows, sep: sep.join(header) + "\n" + "\n".join(sep.join(r) for r in rows) + "\n",
    st.lists(names, min_size=1, max_size=4), st.lists(st.lists(cells, max_size=5), max_size=40),
    st.sampled_from([",", ";", "\t"]))
csv_bytes = st.one_of(csv_tables.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200),
                      st.sampled_from([b"", b"age\n", b"age,plan\n", b'age\n"unterminated\n', b"\x00\x01\x02",
                                       b"age,plan\n1,free,extra,extra\n2\n", "age\n\u00e9\n".encode("latin-1")]))

arrow_types = st.sampled_from([pa.float64(), pa.int64(), pa.string(), pa.bool_(), pa.float32(), pa.int8(),
                               pa.timestamp("ms"), pa.binary(), pa.list_(pa.int64()), pa.null(),
                               pa.dictionary(pa.int32(), pa.string()), pa.decimal128(10, 2),
                               pa.struct([("a", pa.int64())])])


@st.composite
def parquet_tables(draw: st.DrawFn) -> Any:
    n = draw(st.integers(0, 60))
    columns = {}
    for name in draw(st.lists(names, min_size=1, max_size=4, unique=True)):
        kind = draw(arrow_types)
        if pa.types.is_floating(kind):
            values = draw(st.lists(st.floats(width=32 if kind == pa.float32() else 64) | st.none(), min_size=n,
                                   max_size=n))
        elif pa.types.is_integer(kind):
            bits = kind.bit_width - 1
            values = draw(st.lists(st.integers(-(2**bits), 2**bits - 1) | st.none(), min_size=n, max_size=n))
        elif kind == pa.bool_():
            values = draw(st.lists(st.booleans() | st.none(), min_size=n, max_size=n))
        elif pa.types.is_string(kind) or pa.types.is_dictionary(kind):
            values = draw(st.lists(st.sampled_from(["free", "pro", ""]) | st.text(max_size=4) | st.none(),
                                   min_size=n, max_size=n))
            if pa.types.is_dictionary(kind):
                columns[name] = pa.array(values, pa.string()).dictionary_encode()
                continue
        else:
            columns[name] = pa.nulls(n, kind)
            continue
        columns[name] = pa.array(values, kind)
    return pa.table(columns)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def check(code: int, out: str, err: str, json_out: bool = False) -> None:
    assert UNEXPECTED not in err, err
    assert "Traceback" not in err + out
    if code == 2:
        assert err.count("\n") == 1 and err.startswith(("aiwatch drift: error: ", "aiwatch profile build: error: "))
        event("exit 2")
    else:
        assert code in (0, 1), (code, err)
        event(f"exit {code}")
        if json_out:
            report = json.loads(out)
            assert report["tested_count"] > 0 and all(
                f["statistic"] is None or math.isfinite(f["statistic"]) for f in report["features"])


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-drift") / "profile.json"
    PROFILE.save(path)
    return path


SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=csv_bytes, json_out=st.booleans())
@example(data=b'\n"\n"\n1\n', json_out=False)  # a column named by a newline: the error stays one line
def test_any_csv_is_tested_or_exits_2_with_a_message(profile_path: Path, data: bytes, json_out: bool,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "current.csv"
        current.write_bytes(data)
        argv = ["drift", str(profile_path), str(current), *(["--json"] if json_out else [])]
        check(*run(argv, capsys), json_out=json_out)
        # the same file as the reference data: profiled on the fly, or refused
        check(*run(["drift", str(current), str(current)], capsys))
        check(*run(["profile", "build", str(current), "-o", str(Path(tmp) / "p.json")], capsys))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(table=parquet_tables())
def test_any_parquet_is_tested_or_exits_2_with_a_message(profile_path: Path, table: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "current.parquet"
        pq.write_table(table, current)
        check(*run(["drift", str(profile_path), str(current), "--json"], capsys), json_out=True)
        check(*run(["drift", str(current), str(current)], capsys))
