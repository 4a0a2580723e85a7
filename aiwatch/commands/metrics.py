"""``aiwatch metrics``: print the metric contract (a table, JSON, or the Markdown of docs/metrics.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

DOC_PATH = "docs/metrics.md"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("metrics", help="print every metric aiwatch exports (the metric contract)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--markdown", action="store_true",
                     help=f"print the Markdown reference page ({DOC_PATH} is this output)")
    parser.set_defaults(handler=run)


def _number(value: float) -> str:
    return f"{value:g}"


def markdown() -> str:
    """The metric reference page, generated from :data:`aiwatch.metrics.CONTRACT` (docs/metrics.md)."""
    from aiwatch.metrics import CONTRACT, EXEMPLAR_HISTOGRAMS

    lines = [
        "# Metrics",
        "",
        "Every metric aiwatch exports. This page is generated from the contract in `aiwatch/metrics.py`; do not edit",
        "it by hand. After changing the contract, regenerate it (a test fails while they disagree):",
        "",
        "```bash",
        f"python -m aiwatch metrics --markdown > {DOC_PATH}",
        "```",
        "",
        "Counters are exposed with the `_total` suffix; histograms as `_bucket`, `_sum` and `_count`. As",
        "prometheus_client does by default, each counter and histogram series also has a `_created` series (when",
        "it was created): one more series per label set, which `PROMETHEUS_DISABLE_CREATED_SERIES=True` in the",
        "app's environment drops (prometheus_client's variable, read at import). Label values",
        "that come from traffic (`route`, `model`, `peer`, ...) pass a cardinality guard: beyond",
        "`AIWATCH_MAX_LABEL_VALUES` (default 100) distinct values per label, new ones fold into `__overflow__`.",
        "",
        "| metric | type | unit | labels | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in CONTRACT:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        meaning = spec.help.replace("|", "\\|")
        if spec.collector:
            meaning += " *(collected at scrape time)*"
        lines.append(f"| `{spec.name}` | {spec.kind} | {spec.unit or '-'} | {labels} | {meaning} |")
    buckets: dict[tuple[float, ...], list[str]] = {}
    for spec in CONTRACT:
        if spec.kind == "histogram" and spec.buckets:
            buckets.setdefault(spec.buckets, []).append(spec.name)
    lines += ["", "## Histogram buckets", ""]
    for bounds, names in buckets.items():
        lines.append(f"- {', '.join(f'`{n}`' for n in names)}: {', '.join(_number(b) for b in bounds)}")
    lines += ["", "## Exemplars", "",
              "When the app traces (a sampled OpenTelemetry span: [http.md](http.md#tracing)), each bucket of",
              ", ".join(f"`{n}`" for n in EXEMPLAR_HISTOGRAMS) + " keeps, as exemplar,",
              "the trace id of the latest request observed in it: label `trace_id`, 32 lowercase hex digits (the W3C",
              "id Grafana, Tempo and Jaeger read; 40 characters, under OpenMetrics' 128). An outgoing call's",
              "(the client histograms) is the trace of its CLIENT span (aiwatch's or OpenTelemetry's), else of the",
              "span current when it was made. An unsampled request or call leaves",
              "the exemplar as it was: no trace of it was kept.",
              "They are in OpenMetrics exposition only (Prometheus asks for it; its",
              "`--enable-feature=exemplar-storage` keeps them), and prometheus_client's multiprocess mode keeps none.",
              "Grafana: [console.md](console.md#grafana)."]
    gauges = [s for s in CONTRACT if s.kind == "gauge" and not s.collector]
    lines += ["", "## Gauges in multi-process mode", "",
              "With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn with several workers), each gauge is merged across",
              "worker processes as follows:", ""]
    lines += [f"- `{s.name}`: {s.multiprocess_mode}" for s in gauges]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from aiwatch.metrics import CONTRACT

    if args.markdown:
        print(markdown(), end="")
        return 0
    if args.json:
        print(json.dumps([{"name": s.name, "type": s.kind, "labels": list(s.labels), "unit": s.unit,
                           "help": s.help} for s in CONTRACT], indent=2))
        return 0
    for spec in CONTRACT:
        print(f"{spec.name:<48} {spec.kind:<10} {','.join(spec.labels)}")
    return 0
