"""The matrix as the Markdown table that docs/diagnose.md and bench/RESULTS.md publish."""

from __future__ import annotations

from collections.abc import Mapping

from aiwatch.demo import alerting
from aiwatch.demo.matrix.cells import MatrixResult
from aiwatch.demo.names import Names

#: In the compact table, the label that tells apart the alerts of one name (``NonModelLatencyHigh(queue)``).
_DISTINGUISH = {"AiwatchNonModelLatencyHigh": "phase", "AiwatchLatencyBudgetBurnFast": "service",
                "AiwatchLatencyBudgetBurnSlow": "service", "AiwatchLocalInputDrift": "feature",
                "AiwatchFleetInputDrift": "feature", "AiwatchFeatureMissing": "feature"}


def compact(labels: Mapping[str, str]) -> str:
    """An alert in a few characters: its name without ``Aiwatch``, and the label telling it from its namesakes."""
    name = labels.get("alertname", "?")
    key = _DISTINGUISH.get(name)
    short = name.removeprefix("Aiwatch")
    return f"{short}({labels[key]})" if key and labels.get(key) else short


def format_table(result: MatrixResult, brief: bool = False) -> str:
    """The matrix as a Markdown table, then AC@1 and the false-attribution rate. ``brief``: alerts named by
    :func:`compact`, as the docs publish it."""
    lines = ["| scenario | severity | expected cause | diagnose: top cause | added | share | alerts fired "
             "(fault stage) | missing | wrong | |",
             "|---|---:|---|---|---:|---:|---|---|---|---|"]
    for c in result.cells:
        d = c.diagnosis
        top = d.moved[0] if d is not None and d.moved else None
        severity = f"+{c.severity_ms:g} ms" if c.scenario.uses_severity else "-"
        show = compact if brief else alerting.describe
        alerts = ", ".join(sorted({show(_strip(a, c.names)) for a in c.fired})) or "none"
        lines.append(
            f"| {c.scenario.name} | {severity} | {_short(c.expected_cause, c.names)} | "
            f"{_short(c.cause, c.names)} | {f'{top.delta_seconds * 1000:+.1f} ms' if top else '-'} | "
            f"{f'{top.share:.0%}' if top else '-'} | {alerts} | "
            f"{', '.join(str(m) for m in c.missing_alerts()) or '-'} | "
            f"{', '.join(sorted({show(a) for a in c.wrong_alerts()})) or '-'} | "
            f"{'ok' if c.passed else 'FAIL'} |")
    lines.append("")
    lines.append(f"AC@1 = {result.ac_at_1:.0%} ({sum(c.attributed for c in result.cells)}/{len(result.cells)} cells "
                 f"rank the injected cause first); false-attribution rate = {result.false_attribution_rate:.0%}; "
                 f"{sum(c.passed for c in result.cells)}/{len(result.cells)} cells pass every check "
                 f"({result.seconds:.0f} s in all)")
    if result.cpu_seconds:
        lines.append("CPU seconds of the matrix: " + ", ".join(f"{k} {v:g}" for k, v in result.cpu_seconds.items()))
    if result.others_cores:
        lines.append("cores kept busy by other work on the machine, and CPU pressure: " + ", ".join(
            f"{k} {v:.2f}" for k, v in result.others_cores.items()))
    return "\n".join(lines)


def _short(text: str, names: Names) -> str:
    """A cause or alert text with the cell's name prefixes taken off (``net50-gateway`` -> ``gateway``)."""
    for full, plain in ((names.gateway, Names().gateway), (names.inference, Names().inference),
                        (names.model, Names().model), (names.cache, Names().cache)):
        text = text.replace(full, plain)
    return text


def _strip(labels: Mapping[str, str], names: Names) -> dict[str, str]:
    return {k: _short(v, names) for k, v in labels.items()}
