"""One truth: statestore status --json, GET /views/{view} and /metrics report the same figures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from ops_support import send

from statestore import StateStore, load_config
from statestore.api import create_app
from tests.support.config import write_config
from tests.support.metrics import parse
from tests.support.processes import run
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


def reports(
    client: TestClient, view: str, config_path: Path, cwd: Path
) -> tuple[dict[str, Any], dict[Any, float], dict[str, Any]]:
    """What GET /views/{view}, /metrics and `statestore status --json` say of *view* now."""
    route = client.get(f"/views/{view}").json()
    metrics = parse(client.get("/metrics").text)
    cli = run(["-c", config_path, "status", "--json"], cwd)
    assert cli.returncode == 0, cli.stderr
    status = next(v for v in json.loads(cli.stdout)["views"] if v["name"] == view)
    return route, metrics, status


def test_status_json_the_view_route_and_metrics_agree_for_a_quiet_view(
    topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """Per partition position, end offset and lag, and keys, records, bytes and quarantined are equal in all three."""
    topic = topic_factory(3)
    send(topic, [(f"k{i}", {"i": i}, i % 3, None) for i in range(30)])
    send(topic, [("k1", None, 1, None), ("k4", {"i": 40}, 1, None)])
    config_path = write_config(tmp_path, [{"name": "v", "topic": topic}])
    config = load_config(config_path, environ={})
    with StateStore(config) as store:
        bad = Producer({"bootstrap.servers": "127.0.0.1:9092"})
        bad.produce(topic, key=b"bad", value=b"{not json", partition=2)
        assert bad.flush(30) == 0
        store.start()
        eventually(lambda: store.ready() and store.view("v").lag() == 0, "caught up")
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            route, metrics, status = reports(client, "v", config_path, tmp_path)

    assert (route["keys"], route["quarantined"], route["records_applied"]) == (29, 1, 33)
    view = (("view", "v"),)
    for name, metric in (
        ("keys", "statestore_keys"),
        ("records_applied", "statestore_records_applied_total"),
        ("bytes_applied", "statestore_bytes_applied_total"),
        ("quarantined", "statestore_quarantined_total"),
    ):
        assert status[name] == route[name] == metrics[(metric, view)], name
    assert (
        status["lag"] == route["lag"] == metrics[("statestore_view_lag", (("topic", topic), *view))]
    )
    assert status["generation"] == route["generation"]
    assert status["last_applied_at_ms"] == route["last_applied_at_ms"]
    assert len(status["partitions"]) == len(route["partitions"]) == 3
    for ours, theirs in zip(status["partitions"], route["partitions"], strict=True):
        labels = (("partition", str(theirs["partition"])), ("topic", topic), *view)
        assert ours["partition"] == theirs["partition"]
        assert (
            ours["position"] == theirs["position"] == metrics[("statestore_applied_offset", labels)]
        )
        assert (
            ours["end_offset"] == theirs["end_offset"] == metrics[("statestore_end_offset", labels)]
        )
        assert ours["lag"] == theirs["lag"] == metrics[("statestore_consumer_lag", labels)] == 0
    assert status["state"] == route["state"] == "ready"
    assert metrics[("statestore_view_state", (("state", "ready"), *view))] == 1


def test_a_failed_view_reports_the_same_growing_lag_in_status_json_the_view_route_and_metrics(
    topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """A view stopped at a bad record (on_error = fail) still reports its lag, polled from the broker, and it grows with the topic: status --json, GET /views/{view} and /metrics agree at every step."""
    topic = topic_factory(2)
    bad = Producer({"bootstrap.servers": "127.0.0.1:9092"})
    bad.produce(topic, key=b"bad", value=b"{not json", partition=0)
    assert bad.flush(30) == 0
    config_path = write_config(
        tmp_path,
        [{"name": "f", "topic": topic, "on_error": "fail"}],
        store_options={"lag_refresh_s": 0.2},
    )
    config = load_config(config_path, environ={})
    with StateStore(config) as store:
        store.start()
        eventually(lambda: store.view("f").state == "failed", "the view failed")
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            produced = 1
            for more in (0, 400, 900):
                send(topic, [(f"k{i}", {"i": i}, i % 2, None) for i in range(more)])
                produced += more
                eventually(
                    lambda n=produced: client.get("/views/f").json()["lag"] == n,
                    f"lag {produced} polled",
                )
                route, metrics, status = reports(client, "f", config_path, tmp_path)
                labels = (("topic", topic), ("view", "f"))
                assert route["state"] == "failed"
                assert status["lag"] == route["lag"] == metrics[("statestore_view_lag", labels)]
                assert route["lag"] == produced
                for ours, theirs in zip(status["partitions"], route["partitions"], strict=True):
                    part = (("partition", str(theirs["partition"])), *labels)
                    assert (
                        ours["end_offset"]
                        == theirs["end_offset"]
                        == metrics[("statestore_end_offset", part)]
                    )
                    assert (
                        ours["lag"] == theirs["lag"] == metrics[("statestore_consumer_lag", part)]
                    )
