"""``aiwatch rules``: render the Prometheus recording and alerting rules, or print the default config."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Any

from aiwatch.commands import usage_error


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("rules", help="render Prometheus alerting/recording rules from a config")
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION")
    render = sub.add_parser("render", help="write the rule files for a config (defaults when --config is omitted)")
    render.add_argument("--config", help="rules config, YAML or JSON (see `aiwatch rules defaults`)")
    render.add_argument("--out", default="alerts", help="directory to write the rule files into (default: alerts)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the files in --out differ from what would be written")
    render.set_defaults(handler=run_render)
    defaults = sub.add_parser("defaults", help="print the default config as commented YAML")
    defaults.set_defaults(handler=run_defaults)
    parser.set_defaults(handler=lambda args: usage_error(parser))


def run_render(args: argparse.Namespace) -> int:
    from aiwatch.rules import ConfigError, RulesConfig, load_config, render

    try:
        cfg = load_config(args.config) if args.config else RulesConfig()
        files = render(cfg)
    except (ConfigError, OSError, ImportError) as exc:
        print(f"aiwatch rules: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (out / name).is_file() or (out / name).read_text() != text]
        for name in stale:
            print(f"{out / name} is out of date; run: aiwatch rules render --out {out}", file=sys.stderr)
        return 1 if stale else 0
    if cfg.runbook_url_is_placeholder:
        print("aiwatch rules: warning: runbook_url is still the placeholder "
              f"{cfg.runbook_url!r}, so every alert's runbook link leads nowhere. Set runbook_url in the config to "
              "where your runbooks live: your wiki, your repository, or the aiwatch console "
              "(http://HOST:8501/?runbook={alert}). See docs/alerts.md.", file=sys.stderr)
    try:
        _write(out, files)
    except OSError as exc:  # --out is a file, or under one; a rule file's name is taken by a directory
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out) else ""
        print(f"aiwatch rules: cannot write the rule files into {str(out)!r}: {exc.strerror or exc}{where}",
              file=sys.stderr)
        return 2
    return 0


def _write(out: Path, files: dict[str, str]) -> None:
    if out.exists() and not out.is_dir():  # mkdir would say only "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
        print(out / name)


def run_defaults(args: argparse.Namespace) -> int:
    from aiwatch.rules import default_config_yaml

    try:
        sys.stdout.write(default_config_yaml())
    except ImportError as exc:
        print(f"aiwatch rules: {exc}", file=sys.stderr)
        return 2
    return 0
