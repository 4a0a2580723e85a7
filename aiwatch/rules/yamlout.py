"""YAML in and out for the rules, through PyYAML (the ``rules`` extra).

Writing: block mappings in insertion order, sequences indented under their key, multi-line strings (the PromQL) as
``|`` blocks when YAML can keep them exactly (else PyYAML quotes and escapes them), no line folding. Every string
is PyYAML's to quote, so a label value or a regex with a quote, a NEL or a U+2028 reads back unchanged, and so does
one that YAML 1.2 reads as a number (``1e5``: quoted).
Reading: ``safe_load`` with YAML 1.2's numbers, so ``1e-07`` is a number (YAML 1.1, PyYAML's default, reads it as
a string). Both import PyYAML when called, so that ``import aiwatch.rules`` does not need it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from aiwatch._optional import require

#: YAML 1.2 core schema floats that YAML 1.1 does not resolve as numbers (an exponent without a dot: ``1e-07``).
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OTHER_BREAKS = re.compile("[\x85\u2028\u2029]")


class YAMLError(ValueError):
    """The text is not YAML that :func:`load` reads; the message is PyYAML's."""


def _yaml() -> Any:
    return require("yaml", "rules")


def with_yaml12_floats(cls: Any) -> Any:
    """``cls`` (a PyYAML loader or dumper class of its own) resolving YAML 1.2's floats as numbers: a loader reads
    ``1e-07`` as a number, a dumper quotes the string ``"1e-07"``."""
    cls.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    return cls


@cache
def _loader() -> Any:
    yaml = _yaml()

    class Loader(yaml.SafeLoader):  # type: ignore[misc, name-defined]
        pass

    return with_yaml12_floats(Loader)


@cache
def _dumper() -> Any:
    yaml = _yaml()

    class Dumper(yaml.SafeDumper):  # type: ignore[misc, name-defined]
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
            return super().increase_indent(flow, False)  # "- item" indented under its key

    def text(dumper: Any, data: str) -> Any:
        # NEL, U+2028 and U+2029 are line breaks to YAML: PyYAML writes them raw in a block or a single-quoted string,
        # where a reader folds them into "\n" or " "; in a double-quoted string it escapes them (\N, \L, \P)
        if _OTHER_BREAKS.search(data):
            style: str | None = '"'
        else:
            style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    # a string that load() reads as a YAML 1.2 number ("1e5") is quoted, as PyYAML quotes one that looks like a 1.1 one
    return with_yaml12_floats(Dumper)


def load(text: str) -> Any:
    """One YAML document, safely (no Python tags), with YAML 1.2 numbers; :class:`YAMLError` when it is not."""
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader subclass: no Python tags
    except yaml.YAMLError as exc:
        raise YAMLError(_one_line(exc)) from None


def _one_line(exc: Any) -> str:
    """PyYAML's message on one line: it spans several, quoting the line with a caret under the place."""
    yaml = _yaml()
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        text = f"{exc.problem}{_at(exc.problem_mark)}"
        if exc.context:  # first, as PyYAML puts it: "while parsing ...: expected ..."
            same = exc.context_mark is None or (exc.problem_mark is not None and (
                exc.context_mark.line, exc.context_mark.column) == (exc.problem_mark.line, exc.problem_mark.column))
            text = f"{exc.context}{'' if same else _at(exc.context_mark)}: {text}"
        return text
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{str(exc).splitlines()[0]} at position {exc.position}"
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def dump(data: Any, comments: Mapping[str, str] | None = None) -> str:
    """``data`` as a YAML document; ``comments`` maps dotted key paths to a comment written above the key (the
    mappings on a commented path must have identifier keys)."""
    if not comments:
        return _dump(data)
    lines: list[str] = []
    _commented(data, "", 0, comments, lines)
    return "\n".join(lines) + "\n"


def _dump(data: Any) -> str:
    text: str = _yaml().dump(data, Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=math.inf,
                             default_flow_style=False)
    return text


def _commented(data: Mapping[str, Any], path: str, indent: int, comments: Mapping[str, str],
               lines: list[str]) -> None:
    pad = " " * indent
    for key, value in data.items():
        keypath = f"{path}.{key}" if path else str(key)
        if keypath in comments:
            lines.extend(f"{pad}# {line}".rstrip() for line in comments[keypath].splitlines())
        if isinstance(value, Mapping) and value and _KEY.fullmatch(str(key)):
            lines.append(f"{pad}{key}:")
            _commented(value, keypath, indent + 2, comments, lines)
        else:
            lines.extend(pad + line for line in _dump({key: value}).splitlines())
