"""Two models with a feature of the same name: the Drift view tells them apart wherever it names the feature."""

from __future__ import annotations

import json
import time

from aiwatch.console import ScrapeSource
from tests.console.conftest import run_view

URL = "http://127.0.0.1:9/metrics"


def drift_scores(ranker: float, fraud: float) -> str:
    lines = ["# TYPE aiwatch_drift_score gauge"]
    for model, score in (("ranker", ranker), ("fraud", fraud)):
        for test in ("psi", "ks"):
            lines.append(f'aiwatch_drift_score{{model="{model}",feature="age",test="{test}"}} {score}')
    return "\n".join(lines) + "\n"


def test_drift_over_time_draws_each_models_feature_of_the_same_name() -> None:
    """ranker's age drifted (PSI 2.1), fraud's did not (0.5): the chart drew one 'age, psi' line, whichever model's
    series came last, and the picker listed 'age' twice."""
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 3
    for i in range(3):
        src.record(URL, drift_scores(0.1 + i, 0.5), ts=t0 + i)
    at = run_view(src, "Drift")
    picker = at.multiselect(key="drift_over_time")
    assert sorted(picker.options) == ["age (model fraud)", "age (model ranker)"]
    chart = json.loads(at.get("vega_lite_chart")[-1].proto.spec)
    assert sorted(chart["encoding"]["color"]["scale"]["domain"]) == [
        "fraud, age, ks", "fraud, age, psi", "ranker, age, ks", "ranker, age, psi"]
