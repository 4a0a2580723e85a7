"""The modes of what ParquetSink makes: the rows hold the model's inputs, so files (journals and open files
included) are 0o640 and directories 0o750 by default, less the umask; ``file_mode`` and ``dir_mode`` change them.
Under the usual umask 022 they were 0o644 and 0o755 (the journal's 0o644 written into the code): every user of the
host read every logged input."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiwatch.feedback import ParquetSink
from tests.feedback.test_parquet_sink import row
from tests.feedback.test_parquet_sink_journal import killed_writer_with_journal_sizes


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes(root: Path) -> dict[str, int]:
    """The mode of every file and directory under ``root`` (and of ``root``), by its path from ``root``'s parent."""
    return {p.relative_to(root.parent).as_posix(): mode(p) for p in [root, *sorted(root.rglob("*"))]}


def test_files_and_directories_are_private_by_default_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    root = tmp_path / "logs" / "predictions"  # neither exists yet: both made by the sink
    sink = ParquetSink(root, fsync=False)
    sink.write([row(1)])
    while_open = modes(root)
    assert {name.rsplit(".", 1)[-1] for name in while_open} >= {"inprogress", "journal"}, while_open
    sink.close()
    after = modes(root)
    assert any(name.endswith(".parquet") for name in after), after
    for found in (while_open, after):
        for name, bits in found.items():
            assert bits == (0o750 if (root.parent / name).is_dir() else 0o640), (name, oct(bits))
    assert mode(tmp_path / "logs") == 0o750


def test_file_mode_and_dir_mode_are_taken_less_the_umask(tmp_path: Path, umask_022: None) -> None:
    shared = tmp_path / "shared"
    sink = ParquetSink(shared, fsync=False, file_mode=0o666, dir_mode=0o777)  # a shipper of another group
    sink.write([row(1)])
    sink.close()
    assert {oct(bits) for bits in modes(shared).values()} == {"0o644", "0o755"}
    os.umask(0o077)
    private = tmp_path / "private"
    sink = ParquetSink(private, fsync=False)
    sink.write([row(1)])
    sink.close()
    assert {oct(bits) for bits in modes(private).values()} == {"0o600", "0o700"}


def test_a_file_recovered_from_a_dead_writers_journal_has_the_file_mode(tmp_path: Path, umask_022: None) -> None:
    killed_writer_with_journal_sizes(tmp_path, 2)  # a subprocess: it inherits the umask
    sink = ParquetSink(tmp_path, fsync=False, file_mode=0o600)
    assert len(sink.recovered) == 1
    [recovered] = sink.recovered
    sink.close()
    assert oct(mode(recovered)) == "0o640"  # the dead writer's open file's (its default), kept by the rebuild


def test_the_directory_a_sink_is_given_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    tmp_path.chmod(0o755)
    sink = ParquetSink(tmp_path, fsync=False)
    sink.write([row(1)])
    sink.close()
    assert mode(tmp_path) == 0o755  # the operator's; what the sink makes under it is the sink's
    assert mode(tmp_path / "model=ranker") == 0o750


@pytest.mark.parametrize(("option", "value", "shown"), [
    ("file_mode", 0o200, "0o200"), ("file_mode", 0o1640, "0o1640"), ("file_mode", -1, "-0o1"),
    ("file_mode", "640", "'640'"), ("file_mode", True, "True"), ("dir_mode", 0o640, "0o640"),
])
def test_a_mode_the_sink_could_not_use_is_refused_by_name(tmp_path: Path, option: str, value: object,
                                                          shown: str) -> None:
    with pytest.raises(ValueError, match=rf"^{option} must be permission bits .* got {shown}$"):
        ParquetSink(tmp_path, **{option: value})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
