"""The ``aiwatch`` command line. Each subcommand lives in its own module under :mod:`aiwatch.commands`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from aiwatch._version import __version__
from aiwatch.commands import usage_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiwatch",
        description="Observability and drift monitoring for AI inference APIs.",
    )
    parser.add_argument("--version", action="version", version=f"aiwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import aiwatch.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"aiwatch.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        return usage_error(parser)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`aiwatch metrics --markdown | head`): nothing more to say to it, and no traceback
        # of it either; stdout goes to /dev/null so that the interpreter's own flush at exit does not fail again
        with contextlib.suppress(OSError, ValueError):  # a stdout with no descriptor (main() called in-process)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command a SIGPIPE ended


if __name__ == "__main__":
    sys.exit(main())
