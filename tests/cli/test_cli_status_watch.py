"""statestore status --watch: refreshed figures until interrupted, which exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import deliveries

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import finish, reap, run, spawn

pytestmark = pytest.mark.integration


def _watch(config: Path, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return spawn(["-c", config, "status", "--watch", "--interval", "0.2", *extra], cwd)


def _lines(proc: subprocess.Popen[str], n: int) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if len(lines) == n:
            break
    return lines


def _lines_until(
    proc: subprocess.Popen[str], done: Callable[[str], bool], most: int = 300
) -> list[str]:
    """Lines until one passes *done*; fails after *most* lines (a refresh each 0.2 s: 60 s)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if done(line):
            return lines
        if len(lines) >= most:
            break
    pytest.fail(f"no such line in {len(lines)} lines; the last: {lines[-1:]}")


def test_watch_prints_a_line_per_view_each_refresh_and_ctrl_c_exits_0(
    topics: Topics, tmp_path: Path
) -> None:
    """Not on a terminal, --watch prints a timestamped line per view each refresh; SIGINT ends it with 0."""
    topic = topics.create(2, deliveries(6, 2))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    proc = _watch(config, tmp_path)
    try:
        lines = _lines(proc, 3)
        stderr = finish(proc, signal.SIGINT)
    finally:
        reap(proc)

    assert proc.returncode == 0, stderr
    assert len(lines) == 3
    for line in lines:
        assert " view=deliveries state=ready lag=0 keys=6 records=12 quarantined=0" in line
        assert line[:4].isdigit() and "T" in line.split()[0]
    assert "Traceback" not in stderr


def test_watch_json_prints_a_report_per_line_and_sigterm_exits_0(
    topics: Topics, tmp_path: Path
) -> None:
    """--watch --json prints one JSON report a line, as status --json has it; SIGTERM ends it with 0."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    once = json.loads(run(["-c", config, "status", "--json"], tmp_path).stdout)

    proc = _watch(config, tmp_path, "--json")
    try:
        first = _lines(proc, 1)
        topics.produce(topic, [(0, "b", {"v": 1})])
        # The refreshes go on; one of them sees the record produced meanwhile.
        later = _lines_until(proc, lambda line: json.loads(line)["views"][0]["lag"] == 1)
        stderr = finish(proc, signal.SIGTERM)
    finally:
        reap(proc)

    assert proc.returncode == 0, stderr
    reports = [json.loads(line) for line in first + later]
    assert all("time" in r for r in reports)
    assert reports[0]["views"] == once["views"]
    # Each refresh asks Kafka again: the record produced meanwhile shows as lag.
    assert reports[-1]["views"][0]["lag"] == 1
    assert all(r["views"][0]["lag"] in (0, 1) for r in reports)
    assert reports[-1]["views"][0]["state"] == "behind"
