"""docs/alerts.yml: valid rules over metrics the server exports, with the agreed thresholds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from statestore import PartitionStatus, ViewState, ViewStatus
from statestore.metrics import StoreFacts, metrics_for, snapshot_metrics
from statestore.snapshot import SnapshotStatus
from statestore.status import ViewEvent
from tests.support.metrics import parse
from tests.support.processes import REPO

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
            last_stale=ViewEvent(1, "away_too_long", "away"),
            last_rebuild=ViewEvent(1, "away_too_long", "stale: away"),
        )
        yield from metrics_for([status], StoreFacts(starts=3, started_at=1.0), now_ms=2)
        yield from snapshot_metrics(
            SnapshotStatus(every_s=3600.0, last_at=1.0, last_seconds=1.0, last_size=1, taken=1)
        )


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
        assert metrics or rule["expr"].startswith("up{"), name
        assert metrics <= exported, (name, metrics - exported)
        assert 'job="statestore"' in rule["expr"], name
        for states in re.findall(r'state=~?"([^"]+)"', rule["expr"]):
            assert set(states.split("|")) <= set(get_args(ViewState)), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" not in rule or DURATION.match(rule["for"]), name


@pytest.mark.parametrize(
    ("alert", "expr", "hold", "severity"),
    [
        ("StatestoreLagHigh", 'statestore_view_lag{job="statestore"} > 10000', "5m", "warning"),
        (
            "StatestoreLagCritical",
            'statestore_view_lag{job="statestore"} > 100000',
            "5m",
            "critical",
        ),
        (
            "StatestoreLagGrowing",
            'deriv(statestore_view_lag{job="statestore"}[10m]) * 60 > 1000',
            "10m",
            "critical",
        ),
    ],
)
def test_lag_rules_have_the_agreed_thresholds(
    alert: str, expr: str, hold: str, severity: str
) -> None:
    """Lag over 10,000 for 5 min warns, over 100,000 for 5 min is critical, growing over 1,000/min sustained is critical."""
    rule = _rules()[alert]

    assert rule["expr"] == expr or rule["expr"].startswith(expr + " and on (job, instance, ")
    assert rule["for"] == hold
    assert rule["labels"]["severity"] == severity


A = 'job="statestore", instance="a:8000"'
LABELS = {"job": "statestore", "instance": "a:8000"}


def _fires(name: str, summary: str, **labels: str) -> dict[str, Any]:
    """An expected alert: the rule's own labels and description, *summary* as rendered."""
    rule = _rules()[name]
    return {
        "exp_labels": {**rule["labels"], **LABELS, **labels},
        "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]},
    }


def _snapshot_tests() -> list[dict[str, Any]]:
    """Snapshots every minute: none since the start, one then none, one every minute."""
    interval = {"series": f"statestore_snapshot_interval_seconds{{{A}}}", "values": "60x30"}
    started = {"series": f"statestore_start_time_seconds{{{A}}}", "values": "0x30"}
    missing = _fires(
        "StatestoreSnapshotMissing",
        "statestore server a:8000 has written no snapshot in two snapshot intervals",
    )

    def case(series: list[dict[str, str]], quiet: str, fires: str | None) -> dict[str, Any]:
        checks = [{"eval_time": quiet, "alertname": "StatestoreSnapshotMissing", "exp_alerts": []}]
        if fires is not None:
            checks.append(
                {
                    "eval_time": fires,
                    "alertname": "StatestoreSnapshotMissing",
                    "exp_alerts": [missing],
                }
            )
        return {"interval": "1m", "input_series": series, "alert_rule_test": checks}

    last = f"statestore_snapshot_last_success_timestamp_seconds{{{A}}}"
    return [
        # none written: due from 2 minutes after the start, firing 5 minutes later
        case([interval, started], "7m", "9m"),
        # one at 1 minute, then none: due from 3 minutes, firing 5 minutes later
        case([interval, started, {"series": last, "values": "60x30"}], "8m", "10m"),
        # one every minute: never
        case([interval, started, {"series": last, "values": "60+60x30"}], "25m", None),
    ]


def _unit_tests() -> dict[str, Any]:
    """promtool unit tests of the rules as shipped: synthetic series, evaluated each minute."""
    lag = f'statestore_view_lag{{{A}, view="v", topic="t"}}'
    return {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            *_snapshot_tests(),
            {  # growing lag fires after 10 minutes; once the series are stale it is gone
                "interval": "1m",
                "input_series": [{"series": lag, "values": "0+2000x14 stale"}],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "StatestoreLagGrowing", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "StatestoreLagGrowing",
                        "exp_alerts": [
                            _fires(
                                "StatestoreLagGrowing",
                                "statestore view v on a:8000 falls behind t by 2000 records a minute",
                                view="v",
                                topic="t",
                            )
                        ],
                    },
                    {"eval_time": "16m", "alertname": "StatestoreLagGrowing", "exp_alerts": []},
                ],
            },
            {  # lag, and the last apply 5 minutes ago and more: fires a minute later
                "interval": "1m",
                "input_series": [
                    {"series": lag, "values": "50x20"},
                    {
                        "series": f'statestore_last_apply_timestamp_seconds{{{A}, view="v"}}',
                        "values": "0x20",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "StatestoreViewStuckBehind", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "StatestoreViewStuckBehind",
                        "exp_alerts": [
                            _fires(
                                "StatestoreViewStuckBehind",
                                "statestore view v on a:8000 has lag but applied nothing for "
                                "more than 5 minutes",
                                view="v",
                                topic="t",
                            )
                        ],
                    },
                ],
            },
            {  # bootstrapping for 15 minutes
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'statestore_view_state{{{A}, view="v", state="bootstrapping"}}',
                        "values": "1x20",
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "14m", "alertname": "StatestoreViewNotServing", "exp_alerts": []},
                    {
                        "eval_time": "16m",
                        "alertname": "StatestoreViewNotServing",
                        "exp_alerts": [
                            _fires(
                                "StatestoreViewNotServing",
                                "statestore view v on a:8000 has been bootstrapping for 15 minutes",
                                view="v",
                                state="bootstrapping",
                            )
                        ],
                    },
                ],
            },
            {  # a staleness event at 60 s: an alert for an hour, then none
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'statestore_last_stale_timestamp_seconds{{{A}, view="v", '
                        'cause="away_too_long"}',
                        "values": "60x70",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "31m",
                        "alertname": "StatestoreViewStale",
                        "exp_alerts": [
                            _fires(
                                "StatestoreViewStale",
                                "statestore view v on a:8000 was found stale 30m 0s ago "
                                "(away_too_long)",
                                view="v",
                                cause="away_too_long",
                            )
                        ],
                    },
                    {"eval_time": "62m", "alertname": "StatestoreViewStale", "exp_alerts": []},
                ],
            },
            {  # a view reported for 10 minutes, then not, by a server that still answers
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'statestore_view_state{{{A}, view="v", state="ready"}}',
                        "values": "1x10",
                    },
                    {
                        "series": f'statestore_view_state{{{A}, view="w", state="ready"}}',
                        "values": "1x40",
                    },
                    {"series": f"up{{{A}}}", "values": "1x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "12m", "alertname": "StatestoreViewGone", "exp_alerts": []},
                    {
                        "eval_time": "22m",
                        "alertname": "StatestoreViewGone",
                        "exp_alerts": [
                            _fires(
                                "StatestoreViewGone",
                                "statestore server a:8000 no longer reports view v",
                                view="v",
                            )
                        ],
                    },
                    {"eval_time": "32m", "alertname": "StatestoreViewGone", "exp_alerts": []},
                ],
            },
            {  # four starts in four minutes; 15 minutes later, quiet again
                "interval": "1m",
                "input_series": [
                    {"series": f"statestore_starts_total{{{A}}}", "values": "1 2 3 4 5x30"}
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "StatestoreRestarting", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "StatestoreRestarting", "exp_alerts": []},
                ],
            },
            {  # one quarantined record: the alert holds 15 minutes after the window passes it
                "interval": "15s",
                "input_series": [
                    {
                        "series": f'statestore_quarantined_total{{{A}, view="v"}}',
                        "values": "0x20 1x200",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "4m",
                        "alertname": "StatestoreRecordsQuarantined",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "StatestoreRecordsQuarantined",
                        "exp_alerts": [
                            _fires(
                                "StatestoreRecordsQuarantined",
                                "statestore view v on a:8000 quarantined 1 records",
                                view="v",
                            )
                        ],
                    },
                    {
                        "eval_time": "30m",
                        "alertname": "StatestoreRecordsQuarantined",
                        "exp_alerts": [],
                    },
                ],
            },
        ],
    }


def test_promtool_accepts_the_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    """`promtool check rules` accepts docs/alerts.yml as shipped, and `promtool test rules` proves each rule's timing on synthetic series (the windows too long for the live test included)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/install-tools"
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump(_unit_tests()), encoding="utf-8")
    run = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
