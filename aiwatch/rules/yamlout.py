"""A small, deterministic YAML writer for the rule files and the default config (no pyyaml needed to render).

It writes mappings (insertion order), lists, strings, numbers, booleans and ``None``. Strings that could be read back
as something else are double-quoted with JSON escapes (a subset of YAML's); multi-line strings become ``|-`` blocks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_ ./:()=+-]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def scalar(value: Any) -> str:
    """One scalar as YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        return format(value, ".12g") if value != int(value) or abs(value) >= 1e12 else f"{value:.1f}"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED and not text.endswith((" ", ":")) and ": " not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _block_safe(text: str) -> bool:
    """A multi-line string that a ``|-`` block keeps exactly (else it is written double-quoted)."""
    parts = text.split("\n")
    return (len(parts) > 1 and not text.endswith("\n") and not parts[0][:1].isspace()
            and all(p == p.rstrip() for p in parts) and "\r" not in text)


def dump(data: Any, comments: Mapping[str, str] | None = None) -> str:
    """``data`` as a YAML document; ``comments`` maps dotted key paths to a comment line written above the key."""
    lines: list[str] = []
    _emit(data, 0, lines, comments or {}, "")
    return "\n".join(lines) + "\n"


def _emit(data: Any, indent: int, lines: list[str], comments: Mapping[str, str], path: str) -> None:
    pad = " " * indent
    if isinstance(data, Mapping):
        for key, value in data.items():
            keypath = f"{path}.{key}" if path else str(key)
            if keypath in comments:
                lines.extend(f"{pad}# {line}".rstrip() for line in comments[keypath].splitlines())
            _emit_item(f"{pad}{scalar(key)}:", value, indent, lines, comments, keypath)
    elif isinstance(data, Sequence) and not isinstance(data, str):
        for value in data:
            _emit_item(f"{pad}-", value, indent, lines, comments, path, in_list=True)
    else:
        lines.append(pad + scalar(data))


def _emit_item(head: str, value: Any, indent: int, lines: list[str], comments: Mapping[str, str], path: str,
               in_list: bool = False) -> None:
    if isinstance(value, str) and _block_safe(value):
        lines.append(f"{head} |-")
        lines.extend((" " * (indent + 2) + line).rstrip() for line in value.split("\n"))
    elif isinstance(value, Mapping) and value:
        if in_list:
            # "- key: value" with the rest of the mapping aligned under the first key
            sub: list[str] = []
            _emit(value, indent + 2, sub, comments, path)
            first = sub[0][indent + 2:]
            lines.append(f"{head} {first}")
            lines.extend(sub[1:])
        else:
            lines.append(head)
            _emit(value, indent + 2, lines, comments, path)
    elif isinstance(value, Sequence) and not isinstance(value, str) and value:
        if all(not isinstance(v, (Mapping, Sequence)) or isinstance(v, str) for v in value):
            lines.append(f"{head} [{', '.join(scalar(v) for v in value)}]")
        else:
            lines.append(head)
            _emit(value, indent + 2, lines, comments, path)
    elif isinstance(value, Mapping):
        lines.append(f"{head} {{}}")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        lines.append(f"{head} []")
    else:
        lines.append(f"{head} {scalar(value)}")
