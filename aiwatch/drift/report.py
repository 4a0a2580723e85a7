"""Evidently DataDriftPreset HTML reports (needs ``pip install "aiwatch[evidently]"``)."""

from __future__ import annotations

import os
from typing import Any

from aiwatch._optional import require


def evidently_html(reference: Any, current: Any, path: str | os.PathLike[str],
                   columns: list[str] | None = None) -> None:
    """Write Evidently's DataDriftPreset report for two pandas DataFrames (or dicts of columns) to ``path``.

    Evidently needs the reference *data* (not a profile) and holds both frames in memory."""
    evidently = require("evidently", "evidently")
    presets = require("evidently.presets", "evidently")
    pd = require("pandas", "evidently")
    ref = reference if isinstance(reference, pd.DataFrame) else pd.DataFrame(reference)
    cur = current if isinstance(current, pd.DataFrame) else pd.DataFrame(current)
    if columns is not None:
        ref, cur = ref[columns], cur[columns]
    snapshot = evidently.Report([presets.DataDriftPreset()]).run(cur, ref)
    snapshot.save_html(os.fspath(path))
