"""Prometheus recording and alerting rules for aiwatch's metrics, rendered from a typed config.

    >>> from aiwatch.rules import RulesConfig, render
    >>> cfg = RulesConfig()
    >>> cfg.slo.availability_objective = 0.995
    >>> text = render(cfg)["aiwatch-alerts.rules.yml"]
    >>> "AiwatchAvailabilityBudgetBurnFast" in text
    True

The command line does the same: ``aiwatch rules render --config aiwatch-rules.yml --out alerts/``. See docs/alerts.md.
"""

from __future__ import annotations

from aiwatch.rules.config import (
    RUNBOOK_URL_PLACEHOLDER,
    SLO,
    BurnAlert,
    BurnWindow,
    ConfigError,
    RulesConfig,
    Selectors,
    config_from_dict,
    config_to_dict,
    load_config,
)
from aiwatch.rules.render import (
    ALERTING_FILE,
    PROMETHEUS_RULE_FILE,
    RECORDING_FILE,
    Alert,
    alerts,
    prometheus_rule,
    render,
    render_prometheus_rule,
    runbook_url,
)

__all__ = [
    "ALERTING_FILE",
    "PROMETHEUS_RULE_FILE",
    "RECORDING_FILE",
    "RUNBOOK_URL_PLACEHOLDER",
    "SLO",
    "Alert",
    "BurnAlert",
    "BurnWindow",
    "ConfigError",
    "RulesConfig",
    "Selectors",
    "alerts",
    "config_from_dict",
    "config_to_dict",
    "default_config_yaml",
    "load_config",
    "prometheus_rule",
    "render",
    "render_prometheus_rule",
    "runbook_url",
]


def default_config_yaml() -> str:
    """The default config as commented YAML (what ``aiwatch rules defaults`` prints)."""
    from aiwatch.rules.config import config_comments
    from aiwatch.rules.yamlout import dump

    head = "# aiwatch rules config: every key is optional; missing keys keep these defaults. See docs/alerts.md.\n"
    return head + dump(config_to_dict(RulesConfig()), config_comments())
