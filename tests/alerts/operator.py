"""The Prometheus scrape job prometheus-operator makes of a ServiceMonitor, for static targets standing in for a
Service's pods, so that a real Prometheus scrapes an instrumented app with the labels it would have on Kubernetes.

A port of the relabelling ``generateServiceMonitorConfig`` writes (prometheus-operator v0.93.0,
pkg/prometheus/promcfg.go): keep the targets of the Services the selector matches and of the endpoint's port, set
namespace / service / pod / container, job (the Service's name, or the value of its ``jobLabel`` label), endpoint,
then the endpoint's own ``relabelings``; ``honorLabels`` and ``metricRelabelings`` as given. Kubernetes service
discovery's ``__meta_kubernetes_*`` labels are set on each static target instead of discovered."""

from __future__ import annotations

import re
from typing import Any

#: prometheus-operator's RelabelConfig fields -> Prometheus' relabel_config keys
_RELABEL_KEYS = {"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label",
                 "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabel(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for config in configs:
        unknown = set(config) - set(_RELABEL_KEYS)
        assert not unknown, f"relabel fields this port does not know: {unknown}"
        step = {_RELABEL_KEYS[k]: v for k, v in config.items()}
        if "action" in step:
            step["action"] = step["action"].lower()
        out.append(step)
    return out


def scrape_job(monitor: dict[str, Any], service: dict[str, Any], deployment: dict[str, Any],
               pods: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The scrape job for ``monitor``'s one endpoint, scraping ``pods`` ({pod name: (namespace, host:port)}) as
    the endpoints of ``service`` (a Service manifest) whose pods ``deployment`` runs."""
    (endpoint,) = monitor["spec"]["endpoints"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    svc_labels = service["metadata"].get("labels", {})
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    containers = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
                  if any(p.get("name") == port["targetPort"] for p in c.get("ports", []))]
    assert len(containers) == 1, f"the Service's targetPort {port['targetPort']} names no one container port"
    relabel: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    relabel += [{"action": "keep", "regex": f"({value});true",
                 "source_labels": [f"__meta_kubernetes_service_label_{_sanitize(key)}",
                                   f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"]}
                for key, value in sorted(selector.items())]
    relabel += [{"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                 "regex": endpoint["port"]},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"}]
    if monitor["spec"].get("jobLabel"):
        relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{_sanitize(monitor['spec']['jobLabel'])}"],
                        "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    relabel.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    relabel += _relabel(endpoint.get("relabelings", []))
    meta = {f"__meta_kubernetes_service_label_{_sanitize(k)}": v for k, v in svc_labels.items()}
    meta |= {f"__meta_kubernetes_service_labelpresent_{_sanitize(k)}": "true" for k in svc_labels}
    meta |= {"__meta_kubernetes_service_name": service["metadata"]["name"],
             "__meta_kubernetes_endpoint_port_name": port["name"],
             "__meta_kubernetes_pod_container_name": containers[0]}
    job: dict[str, Any] = {
        "job_name": f"serviceMonitor/{monitor['metadata']['name']}/0",
        "honor_labels": endpoint.get("honorLabels", False),
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [address], "labels": meta | {"__meta_kubernetes_namespace": namespace,
                                                                    "__meta_kubernetes_pod_name": pod}}
                           for pod, (namespace, address) in pods.items()],
        "relabel_configs": relabel,
    }
    if endpoint.get("metricRelabelings"):
        job["metric_relabel_configs"] = _relabel(endpoint["metricRelabelings"])
    return job
