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
    render.add_argument("--format", choices=("files", "prometheusrule"), default="files",
                        help="files: the two Prometheus rule files (default); prometheusrule: one "
                             "prometheus-operator PrometheusRule manifest holding their groups, "
                             "aiwatch.prometheusrule.yaml")
    render.add_argument("--name", help="with --format prometheusrule: the object's name (default aiwatch)")
    render.add_argument("--namespace", help="with --format prometheusrule: its namespace (default: none written, "
                                            "kubectl's or kustomize's)")
    render.add_argument("--label", action="append", metavar="KEY=VALUE",
                        help="with --format prometheusrule: a label of the object (repeatable), e.g. "
                             "release=kube-prometheus-stack: what your Prometheus resource's ruleSelector selects")
    render.set_defaults(handler=run_render)
    defaults = sub.add_parser("defaults", help="print the default config as commented YAML")
    defaults.set_defaults(handler=run_defaults)
    parser.set_defaults(handler=lambda args: usage_error(parser))


def run_render(args: argparse.Namespace) -> int:
    from aiwatch.rules import ConfigError, RulesConfig, load_config

    try:
        cfg = load_config(args.config) if args.config else RulesConfig()
        files = _manifest(cfg, args) if args.format == "prometheusrule" else _files(cfg, args)
    except (ConfigError, OSError, ImportError) as exc:
        print(f"aiwatch rules: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (out / name).is_file() or (out / name).read_text() != text]
        for name in stale:
            how = " --format prometheusrule (with its --name, --namespace, --label)" \
                if args.format == "prometheusrule" else ""
            print(f"{out / name} is out of date; run: aiwatch rules render{how} --out {out}", file=sys.stderr)
        return 1 if stale else 0
    for warning in cfg.unit_warnings:
        print(f"aiwatch rules: warning: {warning}", file=sys.stderr)
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


def _files(cfg: Any, args: argparse.Namespace) -> dict[str, str]:
    from aiwatch.rules import ConfigError, render

    given = [flag for flag, value in (("--name", args.name), ("--namespace", args.namespace),
                                      ("--label", args.label)) if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only with --format prometheusrule")
    return render(cfg)


def _manifest(cfg: Any, args: argparse.Namespace) -> dict[str, str]:
    from aiwatch.rules import ConfigError, render_prometheus_rule
    from aiwatch.rules.render import PROMETHEUS_RULE_NAME

    labels: dict[str, str] = {}
    for item in args.label or ():
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--label {item!r}: write KEY=VALUE, e.g. release=kube-prometheus-stack")
        if key in labels:
            raise ConfigError(f"--label {key!r} given twice")
        labels[key] = value
    return render_prometheus_rule(cfg, name=PROMETHEUS_RULE_NAME if args.name is None else args.name,
                                  namespace=args.namespace, labels=labels)


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
