"""statestore quarantine against the local broker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cli_support import status_json, view_status

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import run

pytestmark = pytest.mark.integration


def test_quarantine_lists_records_that_could_not_be_decoded(topics: Topics, tmp_path: Path) -> None:
    """Records with invalid JSON values are listed one JSON object a line, with their origin and reason."""
    topic = topics.create(
        1, [(0, "ok", {"v": 1}), (0, "bad1", b"{not json"), (0, "ok2", {"v": 2}), (0, "bad2", b"")]
    )
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    result = run(["-c", config, "quarantine", "things"], tmp_path)

    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(i["partition"], i["offset"]) for i in items] == [(0, 1), (0, 3)]
    assert base64.b64decode(items[0]["key"]) == b"bad1"
    assert base64.b64decode(items[0]["value"]) == b"{not json"
    assert "not valid JSON" in items[0]["reason"]
    assert view_status(status_json(config, tmp_path), "things")["quarantined"] == 2


def test_quarantine_pages_with_limit_and_cursor(topics: Topics, tmp_path: Path) -> None:
    """--limit cuts the list and prints the command for the next page on stderr."""
    topic = topics.create(1, [(0, f"bad{i}", b"<xml/>") for i in range(3)])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    first = run(["-c", config, "quarantine", "things", "--limit", "2"], tmp_path)
    cursor = first.stderr.strip().rsplit("--after ", 1)[1]
    second = run(
        ["-c", config, "quarantine", "things", "--limit", "2", "--after", cursor], tmp_path
    )
    forged = run(["-c", config, "quarantine", "things", "--after", "AAAA"], tmp_path)

    assert [json.loads(line)["offset"] for line in first.stdout.splitlines()] == [0, 1]
    assert [json.loads(line)["offset"] for line in second.stdout.splitlines()] == [2]
    assert second.stderr == ""
    assert forged.returncode == 2
    assert "Traceback" not in forged.stderr
