"""A small real disk for the tests of what a full one does: a tmpfs mounted for the test, unmounted after."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``: ``256k``, ``1m``) mounted under ``tmp_path``: writes past it fail
    with ENOSPC, as on a full disk. The test is skipped where it cannot be mounted (not root, no tmpfs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    with _mounted(mountpoint, f"size={size}", "a tmpfs"):
        yield mountpoint


@contextmanager
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write to: a read-only tmpfs for root (whom permissions do not stop), else
    one with mode 0o555. Skipped where neither holds."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    with _mounted(directory, "ro,size=64k", "a read-only tmpfs"):
        yield directory


@contextmanager
def _mounted(mountpoint: Path, options: str, what: str) -> Iterator[None]:
    """A tmpfs mounted at ``mountpoint`` with ``options`` while the block runs; the test skipped where it cannot be."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount {what} here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)
