"""statestore rebuild and scripts/rebuild against the local broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import REPO, Topics, deliveries, run, status_json, view_status, write_config

from statestore import StateStore, load_config

pytestmark = pytest.mark.integration

REBUILD = REPO / "scripts" / "rebuild"


def test_rebuild_reads_the_topic_again_from_offset_0(topics: Topics, tmp_path: Path) -> None:
    """rebuild wipes the view and re-reads every record, ending with the same keys."""
    topic = topics.create(3, deliveries(10))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    before = view_status(status_json(config, tmp_path), "deliveries")

    again = run(["-c", config, "bootstrap"], tmp_path)
    rebuilt = run(["-c", config, "rebuild"], tmp_path)

    assert again.stdout.startswith("deliveries: 0 records, 10 keys")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("deliveries: 20 records, 10 keys")
    after = view_status(status_json(config, tmp_path), "deliveries")
    assert after["keys"] == 10
    assert after["records_applied"] == 20
    assert after["lag"] == 0
    assert after["generation"] == before["generation"] + 1
    got = run(["-c", config, "get", "deliveries", "d-007"], tmp_path)
    assert '"in_transit"' in got.stdout


def test_rebuild_of_one_view_leaves_the_others(topics: Topics, tmp_path: Path) -> None:
    """rebuild --view re-reads only that view."""
    first = topics.create(1, [(0, "a", {"v": 1})])
    second = topics.create(1, [(0, "b", {"v": 1})])
    config = write_config(
        tmp_path, [{"name": "one", "topic": first}, {"name": "two", "topic": second}]
    )
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    rebuilt = run(["-c", config, "rebuild", "--view", "two"], tmp_path)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert [line.split(":")[0] for line in rebuilt.stdout.splitlines()] == ["two"]
    data = status_json(config, tmp_path)
    assert view_status(data, "one")["generation"] == 0
    assert view_status(data, "two")["generation"] == 1


def test_rebuild_refuses_while_another_process_holds_the_store(
    topics: Topics, tmp_path: Path
) -> None:
    """rebuild exits 2 with a clear message, and no traceback, while a server holds the store."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])

    with StateStore(load_config(config)):
        result = run(["-c", config, "rebuild"], tmp_path)

    assert result.returncode == 2
    assert "is in use by a running server" in result.stderr
    assert "stop it" in result.stderr
    assert str(tmp_path / "store") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_scripts_rebuild_passes_config_through(topics: Topics, tmp_path: Path, where: str) -> None:
    """scripts/rebuild accepts -c FILE before or after --view and rebuilds that view from it."""
    topic = topics.create(2, deliveries(4, 2))
    config = write_config(
        tmp_path, [{"name": "deliveries", "topic": topic}, {"name": "other", "topic": topic}]
    )
    args = (
        ["-c", config, "--view", "deliveries"]
        if where == "before"
        else ["--view", "deliveries", "-c", config]
    )

    # Run from elsewhere so only -c can find the config.
    result = run(args, REPO / "scripts", exe=REBUILD)

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"deliveries: 8 records, 4 keys in .*\n", result.stdout)
