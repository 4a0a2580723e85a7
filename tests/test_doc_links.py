"""Every relative link in the repository's Markdown leads somewhere: the file exists, and a ``#fragment`` names a
heading of it (GitHub's anchors). A runbook moved into the package kept a link to ``../diagnose.md`` that led
nowhere, in the repository, the wheel and the console alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted({*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("aiwatch/**/*.md"), *ROOT.glob("bench/*.md"),
                *ROOT.glob("examples/**/*.md"), *ROOT.glob("alerts/**/*.md"), *ROOT.glob("tests/**/*.md")})
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """``text`` without its code: a link in a code sample is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives ``page``'s headings: lower case, punctuation dropped, spaces as hyphens, ``-1``,
    ``-2``... after a repeated one."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):  # http:, https:, mailto:: not checked here
            continue
        path, _, fragment = target.partition("#")
        destination = (page.parent / path) if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_the_pages_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "CHANGELOG.md", "docs/grpc.md", "aiwatch/runbooks/AiwatchQueueBacklog.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    assert broken_links(page) == []


def test_a_broken_link_and_a_wrong_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A title: with `code` (and more)\n\n## Again\n\n## Again\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-title-with-code-and-more) [ok](other.md#again-1) [ok](#here)\n"
                    "[gone](missing.md) [wrong](other.md#nope) [web](https://example.com/x.md)\n"
                    "`[code](missing.md)`\n```\n[sample](missing.md)\n```\n# Here\n")
    assert broken_links(page) == ["missing.md: no such file", "other.md#nope: no heading with that anchor"]
