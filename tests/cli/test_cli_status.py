"""statestore status against the local broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import deliveries, status_json, view_status

from statestore import StateStore, load_config
from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import clean_env, run

pytestmark = pytest.mark.integration


def test_status_json_after_bootstrap_shows_no_lag_and_the_key_count(
    topics: Topics, tmp_path: Path
) -> None:
    """After bootstrap, status --json gives per partition position = end offset, lag 0, and the keys held."""
    topic = topics.create(3, [*deliveries(10), (0, "d-000", None)])
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    data = status_json(config, tmp_path)

    assert data["kafka"]["reachable"] is True
    view = view_status(data, "deliveries")
    assert view["topic"] == topic
    assert view["state"] == "ready"
    assert view["lag"] == 0
    assert view["keys"] == 9
    assert view["records_applied"] == 21
    ends = {p["partition"]: p["end_offset"] for p in view["partitions"]}
    assert ends == {0: 9, 1: 6, 2: 6}
    for p in view["partitions"]:
        assert p["position"] == p["end_offset"]
        assert p["lag"] == 0


def test_status_shows_lag_for_records_produced_since(topics: Topics, tmp_path: Path) -> None:
    """Records produced after bootstrap show as lag on their partition and the view is behind."""
    topic = topics.create(2, [(0, "a", {"v": 1}), (1, "b", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    topics.produce(topic, [(1, "b", {"v": 2}), (1, "c", {"v": 1}), (1, "b", {"v": 3})])

    view = view_status(status_json(config, tmp_path), "things")

    assert view["state"] == "behind"
    assert view["lag"] == 3
    assert {p["partition"]: p["lag"] for p in view["partitions"]} == {0: 0, 1: 3}


def test_status_of_a_view_never_bootstrapped_says_so(topics: Topics, tmp_path: Path) -> None:
    """A configured view with nothing applied is reported as empty with its whole topic as lag."""
    first = topics.create(1, [(0, "a", {"v": 1})])
    second = topics.create(1, [(0, "b", {"v": 1}), (0, "c", {"v": 1})])
    config = write_config(
        tmp_path, [{"name": "one", "topic": first}, {"name": "two", "topic": second}]
    )
    assert run(["-c", config, "bootstrap", "--view", "one"], tmp_path).returncode == 0

    view = view_status(status_json(config, tmp_path), "two")

    assert view["state"] == "empty"
    assert "statestore bootstrap" in view["reason"]
    assert view["lag"] == 2


def test_status_table_names_views_and_states(topics: Topics, tmp_path: Path) -> None:
    """Without --json, status prints a table with each view, its topic and its state."""
    topic = topics.create(2, deliveries(4, 2))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    result = run(["-c", config, "status"], tmp_path)

    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "deliveries" in line)
    assert topic in row
    assert "ready" in row


def test_status_without_kafka_shows_stored_positions(topics: Topics, tmp_path: Path) -> None:
    """When Kafka is unreachable, status still shows the stored positions and says end offsets are unknown."""
    topic = topics.create(2, deliveries(6, 2))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    # Nothing listens on port 1 of the loopback interface.
    env = clean_env(STATESTORE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")

    as_json = run(["-c", config, "status", "--json"], tmp_path, env=env)
    table = run(["-c", config, "status"], tmp_path, env=env)

    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["kafka"]["reachable"] is False
    view = view_status(data, "deliveries")
    assert view["state"] == "unknown"
    assert view["lag"] is None
    assert {p["partition"]: (p["position"], p["end_offset"]) for p in view["partitions"]} == {
        0: (6, None),
        1: (6, None),
    }
    assert table.returncode == 0, table.stderr
    assert "end offsets unknown" in table.stdout


def test_status_works_while_another_process_holds_the_store(topics: Topics, tmp_path: Path) -> None:
    """status opens the store read-only, so it answers beside a running server."""
    topic = topics.create(1, [(0, "a", {"v": 1}), (0, "b", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    with StateStore(load_config(config)):
        view = view_status(status_json(config, tmp_path), "things")
        got = run(["-c", config, "get", "things", "b"], tmp_path)

    assert view["keys"] == 2
    assert view["lag"] == 0
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["value"] == {"v": 1}
