"""``opentelemetry-instrument`` in an environment without the libraries some of aiwatch's instrumentors are for
(no Flask, Django, Starlette or grpcio: the core with the ``otel`` extra, as ``scripts/test-lowest.sh`` installs it)
skips those instrumentors without a word, as it skips its own. opentelemetry-instrumentation before 0.54b0 logged a
traceback for each (0.49b0-0.53b0: "Importing of aiwatch_flask failed") or a "DependencyConflict" error (0.53b1),
at every start of every instrumented process."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import REPO

#: the libraries made missing here (where this environment has them) and aiwatch's instrumentors for them
MISSING = ("flask", "django", "starlette", "grpc")


def test_opentelemetry_instrument_skips_aiwatchs_instrumentors_for_missing_libraries_quietly(tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in MISSING:  # importing one raises what importing a library that is not installed raises
        message = f"No module named {name!r}"
        (shims / f"{name}.py").write_text(f"raise ModuleNotFoundError({message!r}, name={name!r})\n")
    theirs = sorted({ep.name for ep in md.entry_points(group="opentelemetry_instrumentor")
                     if not ep.name.startswith("aiwatch_")})  # OpenTelemetry's own: not aiwatch's to keep quiet
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shims), str(REPO)]), "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(theirs)}
    done = subprocess.run([str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, "-c",
                           "import aiwatch; print('served', aiwatch.__version__)"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("served ")
    assert done.stderr == "", done.stderr
