"""Subcommands of the ``aiwatch`` CLI: each module defines ``register(subparsers)``, which adds its parser and
sets ``handler`` (a function of the parsed arguments returning the exit code). Modules here import optional
dependencies only inside their handlers, so ``aiwatch --help`` works on a core install."""
