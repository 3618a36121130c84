"""Helpers of the command-line tests alone: test data, `statestore status` output, and a
command run while another process holds the store. Topics, configs and CLI runs are in
tests/support."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from statestore import StateStore, load_config
from tests.support.config import write_config
from tests.support.kafka import Record, Topics
from tests.support.processes import run


def status_json(config: Path, cwd: Path) -> dict[str, Any]:
    result = run(["-c", config, "status", "--json"], cwd)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def view_status(data: dict[str, Any], name: str) -> dict[str, Any]:
    view: dict[str, Any] = next(v for v in data["views"] if v["name"] == name)
    return view


def deliveries(n: int = 10, partitions: int = 3) -> list[Record]:
    """*n* keys, each created then updated to in_transit; key i on partition i % partitions."""
    records: list[Record] = []
    for i in range(n):
        records.append((i % partitions, f"d-{i:03d}", {"status": "created", "n": i}))
    for i in range(n):
        records.append((i % partitions, f"d-{i:03d}", {"status": "in_transit", "n": i}))
    return records


def run_while_held(topics: Topics, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`statestore *args*` over a one-view store under *cwd* that this process holds open
    (as a process that serves no API would)."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(cwd, [{"name": "things", "topic": topic}])
    with StateStore(load_config(config)):
        return run(["-c", config, *args], cwd)


def assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    """The command exited 2 before doing anything, with *reason* on stderr and no traceback."""
    assert result.returncode == 2
    assert reason in result.stderr
    assert "Traceback" not in result.stderr
