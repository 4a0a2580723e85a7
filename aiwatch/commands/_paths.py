"""Argument types for the files a command writes, checked when the arguments are parsed: a path that cannot be
written otherwise fails only after the command's work (a demo's stages, a whole drift comparison), with the
operating system's bare message."""

from __future__ import annotations

import argparse
from pathlib import Path


def output_file(text: str) -> str:
    """``text``, when a file can be made there: not a directory, in a directory that exists."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: it is a directory")
    parent = path.parent
    if not parent.exists():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no directory {str(parent)!r}")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {str(parent)!r} is not a directory")
    return text
