"""Run by tests/test_extras.py in a subprocess: does one thing a user of an extra does, then prints (as JSON) the
installed distributions that aiwatch's own code imported from while doing it (what a library imports for its own
purposes, pandas loading pyarrow when it is there, is that library's business).

    python -m tests.extras_probe SCENARIO WORKDIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any


class ImportsByAiwatch:
    """A meta-path finder that finds nothing and notes every module that aiwatch's code imports (an import
    statement in an ``aiwatch`` module, or ``importlib.import_module`` called from one)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back  # the import machinery's own frames (importlib._bootstrap, import_module)
        importer = frame.f_globals.get("__name__", "") if frame is not None else ""
        if importer.partition(".")[0] == "aiwatch" and name.partition(".")[0] != "aiwatch":
            self.names.add(name)
        return None


# Each scenario lets aiwatch import what it needs before the scenario itself imports any third-party module:
# a module already loaded is not imported again, so aiwatch's import of it would go unnoticed.


def core_middleware(work: Path) -> None:
    import asyncio

    import aiwatch
    from tests.api_only_probe import asgi_app, call_asgi, call_wsgi, wsgi_app

    assert asyncio.run(call_asgi(aiwatch.instrument(asgi_app, service="probe"), "/"))["status"] == 200
    assert call_wsgi(aiwatch.instrument(wsgi_app, service="probe"), "/")["status"] == 200


def rules_render(work: Path) -> None:
    from aiwatch.cli import main

    config = work / "rules.yaml"
    config.write_text("slo:\n  availability_objective: 0.995\n")
    rc = main(["rules", "render", "--config", str(config), "--out", str(work / "alerts")])
    assert rc == 0, rc


def data_profile_build(work: Path) -> None:
    from aiwatch.cli import main

    data = work / "train.csv"
    data.write_text("basket_value,country\n" + "".join(f"{i * 1.5},{'fr' if i % 3 else 'de'}\n" for i in range(200)))
    assert main(["profile", "build", str(data), "-o", str(work / "profile.json")]) == 0


def http_client(work: Path) -> None:
    import aiwatch.client

    instrument_httpx = aiwatch.client.instrument_httpx
    instrument_requests = aiwatch.client.instrument_requests
    import httpx
    import requests

    instrument_httpx(httpx.Client())
    instrument_requests(requests.Session())


SCENARIOS = {f.__name__: f for f in (core_middleware, rules_render, data_profile_build, http_client)}


def distributions_loaded(modules: set[str]) -> list[str]:
    """The installed distributions whose files the given modules were loaded from (a module that is in no
    distribution's RECORD, such as the standard library, this checkout or a namespace package, names none)."""
    import importlib.metadata as md

    by_top_level = md.packages_distributions()
    files: dict[str, set[str]] = {}  # distribution -> its files; read only for the candidates (RECORDs are big)
    names = set()
    for name in modules:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file:
            continue
        for dist in by_top_level.get(name.partition(".")[0], []):
            if dist not in files:
                found = md.distribution(dist)
                files[dist] = {os.path.normcase(os.path.abspath(str(found.locate_file(f)))) for f in found.files or ()}
            if os.path.normcase(os.path.abspath(file)) in files[dist]:
                names.add(dist)
    return sorted(names)


if __name__ == "__main__":
    import contextlib

    recorder = ImportsByAiwatch()
    sys.meta_path.insert(0, recorder)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the answer
        SCENARIOS[sys.argv[1]](Path(sys.argv[2]))
    sys.meta_path.remove(recorder)
    print(json.dumps(distributions_loaded(recorder.names)))
