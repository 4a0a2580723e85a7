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
    """Flags given to an ``aiwatch <command> [<action>]`` in ``text``'s inline code that the command lacks."""
    commands = _subcommands(build_parser())
    wrong = []
    for span in INLINE.findall(text):
        command = re.match(r"aiwatch ([a-z]+)(?: ([a-z]+))?\b", span)
        if not command or command.group(1) not in commands:
            continue
        parser = commands[command.group(1)]
        actions = _subcommands(parser)
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
            " `aiwatch gpu --serve 9400 --port 1`\n")
    commands = block_commands(text)
    assert commands == ["aiwatch drift ref.json logs/ --since <window start> --rule any",
                        "aiwatch drift ref.json logs/ --rules any", "aiwatch diagnose --service gateway",
                        "aiwatch rules defaults > r.yml"]
    assert [parse_error(c) is None for c in commands] == [True, False, False, True]
    assert wrong_flags(text) == ["aiwatch rules render --outdir x/: --outdir",
                                 "aiwatch gpu --serve 9400 --port 1: --port"]
