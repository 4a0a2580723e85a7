"""The runbook of every alert in aiwatch's rules: ``aiwatch/runbooks/<AlertName>.md``, shipped in the package.

These Markdown files are the one copy of the runbooks: the wheel carries them (package data), the console serves
them in its Runbooks view (``http://CONSOLE/?runbook=<AlertName>``), and a rules config can point each alert's
``runbook_url`` there (see docs/alerts.md).

    >>> "AiwatchQueueBacklog" in names()
    True
    >>> page("AiwatchQueueBacklog").splitlines()[0]
    '# AiwatchQueueBacklog'
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def names() -> list[str]:
    """Every alert with a runbook page, sorted."""
    return sorted(entry.name[:-3] for entry in resources.files(__name__).iterdir()
                  if entry.name.endswith(".md") and _NAME.match(entry.name[:-3]))


def page(alert: str) -> str:
    """The runbook of ``alert`` (Markdown). ``KeyError`` when there is none: ``alert`` is looked up, never used as
    a path, so any text (an alert label from Prometheus) is safe to pass."""
    if not _NAME.match(alert) or alert not in names():
        raise KeyError(alert)
    return resources.files(__name__).joinpath(f"{alert}.md").read_text(encoding="utf-8")
