"""The ``aiwatch`` command lines of the documentation are ones the real parser takes: each one in a code block parses
as written (its ``<placeholders>`` filled in), and each flag given to an ``aiwatch`` command in the prose is an
option of that command. A flag renamed in the code, or a page that gives one the command never had, is what an
operator pastes at 3 am and gets a usage error for. (The runbooks' flags have their own test, with the flags given
alone on a page: tests/alerts/test_runbook_queries.py.)"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from aiwatch.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted({ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("aiwatch/runbooks/*.md"),
                *ROOT.glob("examples/**/*.md")})
FENCE = re.compile(r"^( *)```[a-z]*\n(.*?)^\1```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
COMMAND = re.compile(r"^(?:\$ )?(aiwatch [a-z]+\b.*)$")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    return dict(action.choices) if action else {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def block_commands(text: str) -> list[str]:
    """The ``aiwatch ...`` lines of ``text``'s code blocks, continuation lines joined, trailing comments cut."""
    found = []
    for block in FENCE.finditer(text):
        for line in re.sub(r"\\\n\s*", " ", block.group(2)).splitlines():
            command = COMMAND.match(line.strip())
            if command:
                found.append(" ".join(re.sub(r"\s+#.*$", "", command.group(1)).split()))
    return found


def parse_error(command: str) -> str | None:
    """What the real parser says of ``command``, or None when it takes it."""
    lexer = shlex.shlex(re.sub(r"<[^<>]+>", "X", command), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    args = []
    for token in list(lexer)[1:]:
        if token in {">", ">>", "|", "&&", "||", ";", "&"}:  # the shell's: a redirect, a pipe, the next command
            break
        args.append(token)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def wrong_flags(text: str) -> list[str]:
    """Flags given to an ``aiwatch <command> [<action>]`` in ``text``'s inline code that the command lacks, and
    commands and actions that do not exist."""
    commands = _subcommands(build_parser())
    wrong = []
    for span in INLINE.findall(text):
        command = re.match(r"aiwatch ([a-z]+)(?: ([a-z]+))?\b", span)
        if not command:
            continue
        if command.group(1) not in commands:
            wrong.append(f"{span}: no command {command.group(1)}")
            continue
        parser = commands[command.group(1)]
        actions = _subcommands(parser)
        if actions and command.group(2) and command.group(2) not in actions:
            wrong.append(f"{span}: no action {command.group(2)}")
            continue
        if command.group(2) in actions:
            parser = actions[command.group(2)]
        allowed = _options(parser)
        wrong += [f"{span}: {flag}" for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span) if flag not in allowed]
    return wrong


def test_the_pages_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/drift.md", "aiwatch/runbooks/AiwatchQueueBacklog.md",
            "examples/kubernetes/README.md"} <= names
    assert sum(len(block_commands(page.read_text(encoding="utf-8"))) for page in PAGES) > 40


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_aiwatch_command_in_a_code_block_parses(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert [f"{c}: {e}" for c in block_commands(text) if (e := parse_error(c))] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_flag_given_to_an_aiwatch_command_in_the_text_is_its_option(page: Path) -> None:
    assert wrong_flags(page.read_text(encoding="utf-8")) == []


def test_a_wrong_command_line_and_a_wrong_flag_are_found() -> None:
    text = ("```bash\naiwatch drift ref.json logs/ --since <window start> \\\n    --rule any   # a gate\n"
            "aiwatch drift ref.json logs/ --rules any\naiwatch diagnose --service gateway\n"
            "aiwatch rules defaults > r.yml\n```\n"
            "`aiwatch rules render --config c.yml --out x/` `aiwatch rules render --outdir x/` `aiwatch quality --json`"
            " `aiwatch gpu --serve 9400 --port 1` `aiwatch rules lint x.yml` `aiwatch drfit a b`\n")
    commands = block_commands(text)
    assert commands == ["aiwatch drift ref.json logs/ --since <window start> --rule any",
                        "aiwatch drift ref.json logs/ --rules any", "aiwatch diagnose --service gateway",
                        "aiwatch rules defaults > r.yml"]
    assert [parse_error(c) is None for c in commands] == [True, False, False, True]
    assert wrong_flags(text) == ["aiwatch rules render --outdir x/: --outdir",
                                 "aiwatch gpu --serve 9400 --port 1: --port",
                                 "aiwatch rules lint x.yml: no action lint", "aiwatch drfit a b: no command drfit"]


def known_names() -> set[str]:
    """Every name a page may give a series: the metric contract's families with their exposition suffixes, the
    metric part of every recording rule the repository renders, and the names the autoscaling examples serve
    (``name: as:``); plus the package's entry points (``aiwatch_flask``...), which share the prefix."""
    from aiwatch.metrics import CONTRACT

    names = set()
    for spec in CONTRACT:
        suffixes = {"histogram": ("_bucket", "_sum", "_count", "_created"), "counter": ("_total", "_created")}
        names |= {spec.name, *(spec.name + s for s in suffixes.get(spec.kind, ()))}
    for rules in [*ROOT.glob("alerts/*.yml"), *ROOT.glob("examples/**/*.yaml")]:
        text = rules.read_text(encoding="utf-8")
        names |= {record.split(":")[1] + ":" + record.split(":", 2)[2] if record.count(":") >= 2 else record
                  for record in re.findall(r"record: *([\w:]+)", text)}
        names |= set(re.findall(r"\bas: *(aiwatch_\w+)", text))
    names |= set(re.findall(r"^(aiwatch_\w+) = ", (ROOT / "pyproject.toml").read_text(), re.M))
    return names


def unknown_metric_names(text: str, known: set[str]) -> list[str]:
    """Full ``aiwatch_...`` names in ``text`` (not a prefix such as ``aiwatch_gpu_*``, not a file name such as
    ``aiwatch_quality.prom``) that no metric, recording rule or entry point has."""
    names = set()
    for found in re.finditer(r"\baiwatch_[a-z0-9_]*(?::[a-z0-9_]+)?", text):
        name, after = found.group(), text[found.end():found.end() + 1]
        if not name.endswith("_") and after not in ("*", ".", "<", ":") and not re.match(r"[A-Za-z]", after):
            names.add(name)
    return sorted(names - known)


NAME_PAGES = sorted({*PAGES, *ROOT.glob("examples/**/*.yaml"), *ROOT.glob("examples/**/*.py"),
                     *ROOT.glob("dashboards/*.json")})


@pytest.mark.parametrize("page", NAME_PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_metric_name_a_page_gives_exists(page: Path) -> None:
    assert unknown_metric_names(page.read_text(encoding="utf-8"), known_names()) == []


def test_a_metric_name_that_does_not_exist_is_found() -> None:
    text = ("`aiwatch_request_duration_seconds_bucket`, `service:aiwatch_request_slow:ratio_rate5m`, `aiwatch_gpu_*`,"
            " `aiwatch_slow_`, aiwatch_quality.prom, `model_feature:aiwatch_feature_psi:<W>`, `aiwatch_flask`;"
            " `aiwatch_request_seconds_count`, `service:aiwatch_request_slow:ratio_rate7m`")
    assert unknown_metric_names(text, known_names()) == ["aiwatch_request_seconds_count",
                                                         "aiwatch_request_slow:ratio_rate7m"]


def test_every_argument_of_every_command_says_what_it_is_in_its_help() -> None:
    """``aiwatch quality --help`` listed ``--kind {classifier,regressor}`` with no word: neither which metrics each
    computes nor that classifier is the default; ``--id-column`` and ``--outcome-column`` did not say theirs."""
    silent = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                silent.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "aiwatch")
    assert silent == []
