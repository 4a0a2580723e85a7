"""Subcommands of the ``aiwatch`` CLI: each module defines ``register(subparsers)``, which adds its parser and
sets ``handler`` (a function of the parsed arguments returning the exit code). Modules here import optional
dependencies only inside their handlers, so ``aiwatch --help`` works on a core install."""

from __future__ import annotations

import argparse
import sys


def usage_error(parser: argparse.ArgumentParser) -> int:
    """A command given without its action (``aiwatch rules``), or ``aiwatch`` without a command: a usage error, as
    argparse reports its own, with the help (which lists the choices) on stderr and exit status 2."""
    parser.print_help(sys.stderr)
    return 2
