"""docs/alerts.yml: valid rules over metrics the server exports, with the agreed thresholds."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from ops_support import REPO, parse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from statestore import PartitionStatus, ViewStatus
from statestore.metrics import STATES, metrics_for

ALERTS = REPO / "docs" / "alerts.yml"
DURATION = re.compile(r"^[0-9]+[smhd]$")


class _Fixed(Collector):
    def collect(self) -> Any:
        status = ViewStatus(
            name="v",
            topic="t",
            state="ready",
            reason=None,
            keys=1,
            records_applied=1,
            bytes_applied=1,
            quarantined=0,
            lag=0,
            partitions=(PartitionStatus(0, 1, 1, 0),),
            bootstrap_seconds=1.0,
            bootstrap_records=1,
            last_applied_at_ms=1,
        )
        return metrics_for([status], now_ms=2)


def _exported() -> set[str]:
    """Every sample name GET /metrics can carry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return {name for name, _ in parse(generate_latest(registry).decode())}


def _rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    by_name = {rule["alert"]: rule for rule in rules}
    assert len(by_name) == len(rules), "alert names are unique"
    return by_name


def test_every_rule_names_exported_metrics_and_says_what_to_do() -> None:
    """Each rule's expression uses only metrics the collector exports, and has a severity, summary and description."""
    exported = _exported()
    rules = _rules()

    assert rules
    for name, rule in rules.items():
        metrics = set(re.findall(r"\bstatestore_[a-z_]+", rule["expr"]))
        assert metrics, name
        assert metrics <= exported, (name, metrics - exported)
        for states in re.findall(r'state=~?"([^"]+)"', rule["expr"]):
            assert set(states.split("|")) <= set(STATES), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" not in rule or DURATION.match(rule["for"]), name


@pytest.mark.parametrize(
    ("alert", "expr", "hold", "severity"),
    [
        ("StatestoreLagHigh", "statestore_view_lag > 10000", "5m", "warning"),
        ("StatestoreLagCritical", "statestore_view_lag > 100000", "5m", "critical"),
        ("StatestoreLagGrowing", "deriv(statestore_view_lag[10m]) * 60 > 1000", "10m", "critical"),
    ],
)
def test_lag_rules_have_the_agreed_thresholds(
    alert: str, expr: str, hold: str, severity: str
) -> None:
    """Lag over 10,000 for 5 min warns, over 100,000 for 5 min is critical, growing over 1,000/min sustained is critical."""
    rule = _rules()[alert]

    assert rule["expr"] == expr
    assert rule["for"] == hold
    assert rule["labels"]["severity"] == severity
