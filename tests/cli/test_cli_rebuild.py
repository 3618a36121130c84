"""statestore rebuild and scripts/rebuild against the local broker."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from cli_support import assert_refused, deliveries, run_while_held, status_json, view_status

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import REPO, clean_env, run, start_server

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
    """rebuild exits 2 with a clear message, and no traceback, while a process that serves no API holds the store."""
    result = run_while_held(topics, tmp_path, "rebuild")

    assert_refused(result, "is in use by a running server")
    assert "does not answer at http://127.0.0.1:" in result.stderr
    assert "stop it" in result.stderr
    assert str(tmp_path / "store") in result.stderr


def test_rebuild_beside_a_running_server_has_the_server_rebuild_and_swap(
    topics: Topics, tmp_path: Path
) -> None:
    """With a server holding the store, rebuild has the server rebuild and swap the view, then prints the summary."""
    topic = topics.create(3, deliveries(10))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    server = start_server(config, tmp_path)
    try:
        before = httpx.get(f"{server.url}/views/deliveries", timeout=10).json()
        result = run(["-c", config, "rebuild", "--view", "deliveries"], tmp_path)
        after = httpx.get(f"{server.url}/views/deliveries", timeout=10).json()
        entity = httpx.get(f"{server.url}/views/deliveries/entities/d-007", timeout=10).json()
    finally:
        server.stop()

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deliveries: 20 records, 10 keys in ")
    assert "rebuild.on_server url=http://127.0.0.1:" in result.stderr
    assert after["generation"] == before["generation"] + 1
    assert (after["state"], after["rebuilds"], after["keys"]) == ("ready", 1, 10)
    assert entity["value"]["status"] == "in_transit"


def test_rebuild_through_a_server_with_tokens_uses_statestore_token(
    topics: Topics, tmp_path: Path
) -> None:
    """Against a server with tokens, rebuild exits 2 naming STATESTORE_TOKEN without a fitting token, and rebuilds with one."""
    first = topics.create(1, [(0, "a", {"v": 1})])
    second = topics.create(1, [(0, "b", {"v": 1})])
    config = write_config(
        tmp_path,
        [{"name": "one", "topic": first}, {"name": "two", "topic": second}],
        tokens=[{"env": "TEST_OPS_TOKEN", "views": ["one"], "name": "ops", "admin": True}],
    )
    server = start_server(config, tmp_path, env=clean_env(TEST_OPS_TOKEN="s3cret"))
    try:
        without = run(["-c", config, "rebuild", "--view", "one"], tmp_path)
        wrong = run(
            ["-c", config, "rebuild", "--view", "one"],
            tmp_path,
            env=clean_env(STATESTORE_TOKEN="not-it"),
        )
        other_view = run(
            ["-c", config, "rebuild", "--view", "two"],
            tmp_path,
            env=clean_env(STATESTORE_TOKEN="s3cret"),
        )
        fitting = run(
            ["-c", config, "rebuild", "--view", "one"],
            tmp_path,
            env=clean_env(STATESTORE_TOKEN="s3cret"),
        )
    finally:
        server.stop()

    assert without.returncode == 2
    assert "export STATESTORE_TOKEN" in without.stderr
    assert wrong.returncode == 2
    assert "not valid" in wrong.stderr
    assert other_view.returncode == 2
    assert "not allowed to read view 'two'" in other_view.stderr
    assert fitting.returncode == 0, fitting.stderr
    assert fitting.stdout.startswith("one: 1 records, 1 keys")
    for result in (without, wrong, other_view, fitting):
        assert "s3cret" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_scripts_rebuild_passes_config_through(topics: Topics, tmp_path: Path, where: str) -> None:
    """scripts/rebuild accepts -c FILE before or after --view and rebuilds that view from it."""
    topic = topics.create(2, deliveries(4, 2))
    config = write_config(
        tmp_path, [{"name": "deliveries", "topic": topic}, {"name": "other", "topic": topic}]
    )
    args: list[str | Path] = (
        ["-c", config, "--view", "deliveries"]
        if where == "before"
        else ["--view", "deliveries", "-c", config]
    )

    # Run from elsewhere so only -c can find the config.
    result = run(args, REPO / "scripts", exe=REBUILD)

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"deliveries: 8 records, 4 keys in .*\n", result.stdout)
