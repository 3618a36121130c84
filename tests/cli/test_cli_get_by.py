"""statestore get-by: entities by an indexed field, read like the REST route reads the value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import run

pytestmark = pytest.mark.integration


def _indexed(topics: Topics, tmp_path: Path) -> Path:
    records = [
        (
            i % 2,
            f"d-{i:02d}",
            {"status": "in_transit" if i % 3 else "created", "n": i, "vip": i == 4},
        )
        for i in range(12)
    ]
    records.append((0, "s-7", {"status": "created", "n": "7", "vip": False}))
    topic = topics.create(2, records)
    config = write_config(
        tmp_path, [{"name": "deliveries", "topic": topic, "indexes": ["status", "n", "vip"]}]
    )
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    return config


def test_get_by_prints_matching_entities_as_json_lines(topics: Topics, tmp_path: Path) -> None:
    """get-by prints one JSON entity a line, in key order, for every entity whose field matches."""
    config = _indexed(topics, tmp_path)

    result = run(["-c", config, "get-by", "deliveries", "status", "created"], tmp_path)

    assert result.returncode == 0, result.stderr
    entities = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["key"] for e in entities] == ["d-00", "d-03", "d-06", "d-09", "s-7"]
    assert all(e["value"]["status"] == "created" for e in entities)


def test_get_by_reads_numbers_booleans_and_quoted_strings(topics: Topics, tmp_path: Path) -> None:
    """7 matches the number 7, "7" (quoted) the string "7", true the boolean."""
    config = _indexed(topics, tmp_path)

    number = run(["-c", config, "get-by", "deliveries", "n", "7"], tmp_path)
    text = run(["-c", config, "get-by", "deliveries", "n", '"7"'], tmp_path)
    boolean = run(["-c", config, "get-by", "deliveries", "vip", "true"], tmp_path)

    assert [json.loads(line)["key"] for line in number.stdout.splitlines()] == ["d-07"]
    assert [json.loads(line)["key"] for line in text.stdout.splitlines()] == ["s-7"]
    assert [json.loads(line)["key"] for line in boolean.stdout.splitlines()] == ["d-04"]


def test_get_by_limit_pages_with_a_cursor(topics: Topics, tmp_path: Path) -> None:
    """--limit caps the output and names the command for the next page, which --after continues."""
    config = _indexed(topics, tmp_path)

    first = run(
        ["-c", config, "get-by", "deliveries", "status", "in_transit", "--limit", "5"], tmp_path
    )
    cursor = first.stderr.split("--after ", 1)[1].strip()
    rest = run(
        ["-c", config, "get-by", "deliveries", "status", "in_transit", "--after", cursor], tmp_path
    )

    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 5
    keys = [json.loads(line)["key"] for line in (first.stdout + rest.stdout).splitlines()]
    assert keys == ["d-01", "d-02", "d-04", "d-05", "d-07", "d-08", "d-10", "d-11"]
    assert "more:" not in rest.stderr


def test_get_by_without_a_match_exits_1(topics: Topics, tmp_path: Path) -> None:
    """No entity with the value: nothing on stdout, a message and exit 1."""
    config = _indexed(topics, tmp_path)

    result = run(["-c", config, "get-by", "deliveries", "status", "lost"], tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "has no entity whose status is lost" in result.stderr


def test_get_by_on_a_field_without_index_exits_2(topics: Topics, tmp_path: Path) -> None:
    """A field the view does not index is a usage error (exit 2) naming the indexed fields."""
    config = _indexed(topics, tmp_path)

    result = run(["-c", config, "get-by", "deliveries", "colour", "red"], tmp_path)

    assert result.returncode == 2
    assert "no index on 'colour'" in result.stderr
    assert "status, n, vip" in result.stderr
    assert "Traceback" not in result.stderr
