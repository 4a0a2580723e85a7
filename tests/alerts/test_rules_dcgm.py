"""The rules with ``gpu.source: dcgm`` (examples/dcgm/aiwatch-rules.yaml): rendered, checked and unit-tested by
promtool on series shaped as dcgm-exporter exports them (tests/alerts/promtool_dcgm/), reading no aiwatch_gpu_*
series, and every other rule unchanged."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from aiwatch.gpuseries import DCGM_METRICS, SM_ACTIVE
from aiwatch.rules import ALERTING_FILE, RECORDING_FILE, ConfigError, config_from_dict, load_config, render
from tests.alerts.test_rules import PROMETHEUS_BUILTINS, promql_metric_names, rule_groups
from tests.servers import REPO, require_binary, require_module

yaml = require_module("yaml")

CONFIG = REPO / "examples" / "dcgm" / "aiwatch-rules.yaml"
PROMTOOL_TEST = Path(__file__).parent / "promtool_dcgm" / "dcgm_test.yml"
GPU_GROUP = "aiwatch-gpu.alerts"


def rendered(tmp_path: Path, config: dict[str, object] | None = None) -> Path:
    cfg = load_config(CONFIG) if config is None else config_from_dict(config)
    for name, text in render(cfg).items():
        (tmp_path / name).write_text(text)
    return tmp_path


def exprs(files: dict[str, str], gpu_only: bool = False) -> list[str]:
    out = []
    for text in files.values():
        for group in rule_groups(text):
            for rule in group["rules"]:
                if not gpu_only or group["name"] == GPU_GROUP or "gpu" in rule.get("record", ""):
                    out.append(rule["expr"])
    return out


def test_dcgm_rules_read_dcgm_exporter_and_nothing_of_aiwatchs_collector() -> None:
    files = render(load_config(CONFIG))
    used = {name for expr in exprs(files, gpu_only=True) for name in promql_metric_names(expr)}
    assert {n for n in used if n.startswith("DCGM_")} == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED",
                                                          "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_XID_ERRORS"}
    assert not {n for n in used if n.startswith("aiwatch_gpu")}
    assert used <= DCGM_METRICS | PROMETHEUS_BUILTINS | {n for n in used if ":" in n}
    # everything else renders exactly as with aiwatch's collector
    default = render()
    for name in (RECORDING_FILE, ALERTING_FILE):
        ours = [r for g in rule_groups(files[name]) if g["name"] != GPU_GROUP for r in g["rules"]
                if "gpu" not in r.get("record", "")]
        theirs = [r for g in rule_groups(default[name]) if g["name"] != GPU_GROUP for r in g["rules"]
                  if "gpu" not in r.get("record", "")]
        assert ours == theirs


@pytest.mark.slow
def test_promtool_checks_and_unit_tests_the_dcgm_rules(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    out = rendered(tmp_path)
    check = subprocess.run([promtool, "check", "rules", str(out / RECORDING_FILE), str(out / ALERTING_FILE)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.copy(PROMTOOL_TEST, out)
    proc = subprocess.run([promtool, "test", "rules", str(out / PROMTOOL_TEST.name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_sm_active_is_read_as_the_ratio_it_is(tmp_path: Path) -> None:
    """DCGM_FI_PROF_SM_ACTIVE is already 0-1: not divided by 100 as the percent of DCGM_FI_DEV_GPU_UTIL is."""
    promtool = require_binary("promtool")
    out = rendered(tmp_path, {"gpu": {"source": "dcgm", "dcgm_utilization": SM_ACTIVE}})
    labels = 'gpu="0", UUID="GPU-1", modelName="L4", Hostname="n1", instance="n1:9400", job="dcgm"'
    record = "instance_gpu:aiwatch_gpu_utilization_ratio:avg5m"
    expected = {"eval_time": "6m", "expr": record, "exp_samples": [{"labels": f"{record}{{{labels}}}", "value": 0.5}]}
    test = {"rule_files": [RECORDING_FILE], "evaluation_interval": "1m",
            "tests": [{"interval": "1m",
                       "input_series": [{"series": f"{SM_ACTIVE}{{{labels}}}", "values": "0.5x10"},
                                        {"series": f'DCGM_FI_DEV_GPU_UTIL{{{labels}}}', "values": "99x10"}],
                       "promql_expr_test": [expected]}]}
    (out / "sm_test.yml").write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(out / "sm_test.yml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("data", "message"), [
    ({"gpu": {"source": "nvml"}}, "gpu.source: must be one of ['aiwatch', 'dcgm'], got 'nvml'"),
    ({"gpu": {"dcgm_utilization": "DCGM_FI_DEV_FB_USED"}}, "gpu.dcgm_utilization: must be one of"),
    ({"gpu": {"workload_labels": ["container", "container"]}}, "gpu.workload_labels: at most 10 distinct"),
    ({"gpu": {"replica_label": "not a label"}}, "gpu.replica_label: 'not a label' is not a label name"),
    ({"aggregation_labels": ["cluster", "__name__"]}, "aggregation_labels: '__name__' is not a label name"),
    ({"aggregation_labels": ["le"]}, "aggregation_labels: 'le' is not a label name"),
])
def test_bad_gpu_and_aggregation_settings_name_their_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


@pytest.mark.slow
def test_the_gpu_runbook_names_the_service_of_a_saturated_dcgm_gpu(tmp_path: Path) -> None:
    """AiwatchGpuSaturated's page names the service to diagnose: its query joined aiwatch's series with the alert's
    ``instance`` through ``aiwatch_gpu_utilization_ratio``, which with ``gpu.source: dcgm`` neither exists nor is
    the pod's instance (the alert's is dcgm-exporter's), so it answered nothing. Its dcgm query, filled with the
    alert's labels in the dcgm scenario, names the service of the pod using the GPU, and only it."""
    from tests.alerts.test_rules import RUNBOOKS
    from tests.alerts.test_runbook_queries import PLACEHOLDER, probe, runbook_queries

    promtool = require_binary("promtool")
    out = rendered(tmp_path)
    doc = yaml.safe_load(PROMTOOL_TEST.read_text())
    group, case = next((g, c) for g in doc["tests"] for c in g.get("alert_rule_test", [])
                       if c["alertname"] == "AiwatchGpuSaturated" and c["exp_alerts"])
    labels = case["exp_alerts"][0]["exp_labels"]
    page = RUNBOOKS / "AiwatchGpuSaturated.md"
    (query,) = [q for q in runbook_queries(page, "dcgm") if q.startswith("group by (service)")]
    (before,) = [q for q in runbook_queries(page, "aiwatch") if q.startswith("group by (service)")]
    fill = lambda q: PLACEHOLDER.sub(lambda m: str(labels[m.group(1)]), q)  # noqa: E731
    steps = "0+10x40"
    group = {"interval": group["interval"], "input_series": [*group["input_series"], *(
        {"series": f'aiwatch_request_duration_seconds_count{{service="{service}", namespace="{ns}", pod="{pod}", '
                   f'instance="{ip}:8000", job="aiwatch", status="200"}}', "values": steps}
        for service, ns, pod, ip in (("recommender", "shop", labels["pod"], "10.1.0.5"),
                                     ("recommender", "shop", "recommender-7c9d-b", "10.1.0.6"),
                                     ("ranker", "shop", "ranker-1", "10.1.0.7"),
                                     ("recommender", "staging", labels["pod"], "10.1.0.8")))]}
    group["promql_expr_test"] = [
        {"expr": fill(query), "eval_time": case["eval_time"],
         "exp_samples": [{"labels": '{service="recommender"}', "value": 1}]},
        # the aiwatch-source query, the page's only one before: nothing
        {"expr": probe(fill(before), 0), "eval_time": case["eval_time"], "exp_samples": [{"labels": "{}", "value": 1}]},
    ]
    test = {"rule_files": doc["rule_files"], "evaluation_interval": doc["evaluation_interval"],
            "group_eval_order": doc["group_eval_order"], "tests": [group]}
    (out / "runbook_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(out / "runbook_test.yml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: what each dcgm query of the GPU pages answers in its alert's firing case of the dcgm scenarios, filled with the
#: alert's labels (AiwatchGpuSaturated's is test_the_gpu_runbook_names_the_service_of_a_saturated_dcgm_gpu's)
DCGM_ANSWERS: dict[tuple[str, str], list[dict[str, object]]] = {
    # 10.0.3.8's two GPUs, gone since 10m
    ("AiwatchGpuMetricsAbsent", "group by (instance, gpu, UUID, Hostname)"): [
        {"labels": f'{{instance="10.0.3.8:9400", gpu="{gpu}", UUID="{uuid}", Hostname="gpu-node-2"}}', "value": 1}
        for gpu, uuid in (("0", "GPU-77aa"), ("1", "GPU-77ab"))],
    # GPU 0's XID 79; GPU 1 never had one
    ("AiwatchGpuXidErrors", "DCGM_FI_DEV_XID_ERRORS{"): [
        {"labels": 'DCGM_FI_DEV_XID_ERRORS{gpu="0", UUID="GPU-5f1c", modelName="NVIDIA H100 80GB HBM3", '
                   'Hostname="gpu-node-1", instance="10.0.3.7:9400", job="dcgm-exporter"}', "value": 79}],
    ("AiwatchGpuXidErrors", "changes("): [
        {"labels": f'{{gpu="{gpu}", UUID="{uuid}", modelName="NVIDIA H100 80GB HBM3", Hostname="gpu-node-1", '
                   f'instance="10.0.3.7:9400", job="dcgm-exporter"}}', "value": n}
        for gpu, uuid, n in (("0", "GPU-5f1c", 1), ("1", "GPU-8a02", 0))],
}


@pytest.mark.slow
def test_the_dcgm_queries_of_the_gpu_runbooks_answer_with_the_gpus_of_their_alert(tmp_path: Path) -> None:
    """Each query a GPU page gives for ``gpu.source: dcgm`` answers, in its alert's dcgm firing scenario and filled
    with the alert's labels, with the GPUs the alert is about; they were only parsed, and the metrics-absent page's
    ``count by (instance) (DCGM_FI_DEV_GPU_UTIL)`` counted the GPUs of every exporter but the one that fired (it
    exports none: that is the alert)."""
    from tests.alerts.test_rules import RUNBOOKS
    from tests.alerts.test_runbook_queries import PLACEHOLDER, runbook_queries

    promtool = require_binary("promtool")
    out = rendered(tmp_path)
    doc = yaml.safe_load(PROMTOOL_TEST.read_text())
    groups = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for query in runbook_queries(page, "dcgm"):
            if page.stem == "AiwatchGpuSaturated":
                continue
            (key,) = [k for k in DCGM_ANSWERS if k[0] == page.stem and query.startswith(k[1])]
            group, case = next((g, c) for g in doc["tests"] for c in g.get("alert_rule_test", [])
                               if c["alertname"] == page.stem and c["exp_alerts"])
            labels = case["exp_alerts"][0]["exp_labels"]
            groups.append({"interval": group["interval"], "input_series": group["input_series"],
                           "promql_expr_test": [{
                               "expr": PLACEHOLDER.sub(lambda m, labels=labels: str(labels[m.group(1)]), query),
                               "eval_time": case["eval_time"], "exp_samples": DCGM_ANSWERS[key]}]})
    assert len(groups) == len(DCGM_ANSWERS)
    test = {"rule_files": doc["rule_files"], "evaluation_interval": doc["evaluation_interval"],
            "group_eval_order": doc["group_eval_order"], "tests": groups}
    (out / "dcgm_runbook_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(out / "dcgm_runbook_test.yml")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
