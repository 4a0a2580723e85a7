"""A real Prometheus serving history written beforehand: ``promtool tsdb create-blocks-from openmetrics`` turns an
OpenMetrics text with timestamps into TSDB blocks, and Prometheus starts on that data directory. Queries at a
known time then answer from known data, deterministically (no scrape timing)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.servers import Process, Prometheus, free_port, http_get, require_binary, running


@contextmanager
def backfilled_prometheus(openmetrics: str | Path | Sequence[str], extra_args: tuple[str, ...] = (),
                          ready: Callable[[str], bool] | None = None, scheme: str = "http",
                          extra_config: str = "") -> Iterator[Prometheus]:
    """Start Prometheus on blocks made from ``openmetrics`` (the text, a file holding it, or several texts whose
    blocks may overlap; no scrape targets); yields it once it is ready (``ready(url)`` true; default: ``/-/ready``
    answers 200; ``scheme`` https when ``extra_args`` give it a web config with TLS; ``extra_config``: more of its
    configuration file)."""
    promtool, binary = require_binary("promtool"), require_binary("prometheus")
    with tempfile.TemporaryDirectory(prefix="aiwatch-backfill-") as tmp:
        tmpdir = Path(tmp)
        data = tmpdir / "data"
        if isinstance(openmetrics, Path):
            sources = [openmetrics]
        else:
            sources = []
            for i, text in enumerate([openmetrics] if isinstance(openmetrics, str) else openmetrics):
                sources.append(tmpdir / f"history-{i}.om")
                sources[-1].write_text(text)
        for source in sources:
            made = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
                                  capture_output=True, text=True)
            if made.returncode != 0:
                raise AssertionError(f"promtool could not backfill:\n{made.stdout}\n{made.stderr}")
        config = tmpdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n" + extra_config)
        port = free_port()
        proc = Process([binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
                        *extra_args], tmpdir / "prometheus.log")
        url = f"{scheme}://127.0.0.1:{port}"
        is_ready = ready or (lambda u: http_get(f"{u}/-/ready")[0] == 200)
        with running(proc, lambda: is_ready(url), 60, "Prometheus"):
            yield Prometheus(url, config, proc)
