"""statestore bootstrap and get against the local broker."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from pathlib import Path

import pytest
from cli_support import deliveries

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import STATESTORE, clean_env, run, spawn

pytestmark = pytest.mark.integration


def test_bootstrap_then_get_prints_the_latest_value(topics: Topics, tmp_path: Path) -> None:
    """After bootstrap, get prints the key's last value with its partition and offset as JSON."""
    topic = topics.create(3, deliveries(10))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])

    boot = run(["-c", config, "bootstrap"], tmp_path)
    assert boot.returncode == 0, boot.stderr

    got = run(["-c", config, "get", "deliveries", "d-004"], tmp_path)
    assert got.returncode == 0, got.stderr
    entity = json.loads(got.stdout)
    assert entity["key"] == "d-004"
    assert entity["value"] == {"status": "in_transit", "n": 4}
    assert entity["partition"] == 1
    assert entity["offset"] == 4  # partition 1: keys 1, 4, 7 created at 0-2, updated at 3-5
    assert isinstance(entity["timestamp"], int)


def test_get_of_an_absent_or_deleted_key_exits_1(topics: Topics, tmp_path: Path) -> None:
    """get exits 1 with a message on stderr for a key never written and for a tombstoned one."""
    topic = topics.create(1, [(0, "a", {"v": 1}), (0, "gone", {"v": 2}), (0, "gone", None)])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0

    for key in ("never", "gone"):
        got = run(["-c", config, "get", "things", key], tmp_path)
        assert got.returncode == 1
        assert got.stdout == ""
        assert f"no entity with key {key!r}" in got.stderr
        assert "Traceback" not in got.stderr


def test_bootstrap_prints_a_summary_per_view(topics: Topics, tmp_path: Path) -> None:
    """bootstrap ends with one line per view giving records read and keys held."""
    first = topics.create(3, deliveries(10))
    second = topics.create(1, [(0, "k1", {"x": 1}), (0, "k2", {"x": 2}), (0, "k1", None)])
    config = write_config(
        tmp_path, [{"name": "one", "topic": first}, {"name": "two", "topic": second}]
    )

    boot = run(["-c", config, "bootstrap"], tmp_path)

    assert boot.returncode == 0, boot.stderr
    assert re.search(
        r"^one: 20 records, 10 keys in [\d.]+ s \([\d,]+ records/s\)$", boot.stdout, re.M
    )
    assert re.search(r"^two: 3 records, 1 keys in ", boot.stdout, re.M)


def test_bootstrap_only_the_views_named(topics: Topics, tmp_path: Path) -> None:
    """bootstrap --view reads only that view; the other stays empty."""
    first = topics.create(1, [(0, "a", {"v": 1})])
    second = topics.create(1, [(0, "b", {"v": 2})])
    config = write_config(
        tmp_path, [{"name": "one", "topic": first}, {"name": "two", "topic": second}]
    )

    boot = run(["-c", config, "bootstrap", "--view", "two"], tmp_path)

    assert boot.returncode == 0, boot.stderr
    assert boot.stdout.startswith("two: 1 records")
    assert "one:" not in boot.stdout
    assert run(["-c", config, "get", "one", "a"], tmp_path).returncode == 1
    assert run(["-c", config, "get", "two", "b"], tmp_path).returncode == 0


def test_bootstrap_logs_plain_progress_lines_when_not_a_tty(topics: Topics, tmp_path: Path) -> None:
    """With stderr not a terminal, progress comes as plain log lines, without terminal escapes."""
    topic = topics.create(3, deliveries(50))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])

    boot = run(["-c", config, "bootstrap"], tmp_path)

    assert boot.returncode == 0, boot.stderr
    assert re.search(
        r"INFO statestore\.cli bootstrap\.progress view=deliveries records=\d+ remaining=\d+",
        boot.stderr,
    )
    assert "\x1b[" not in boot.stderr + boot.stdout


def test_bootstrap_shows_live_progress_on_a_terminal(topics: Topics, tmp_path: Path) -> None:
    """With stderr a terminal, bootstrap draws a progress display instead of log lines."""
    topic = topics.create(3, deliveries(50))
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(STATESTORE), "-c", str(config), "bootstrap"],
        cwd=tmp_path,
        env=clean_env(TERM="xterm-256color", COLUMNS="120"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    screen = b"".join(chunks).decode(errors="replace")

    assert stdout.startswith("deliveries: 100 records, 50 keys")
    assert "deliveries" in screen and "records" in screen and "ETA" in screen
    assert "bootstrap.progress" not in screen


def test_bootstrap_of_a_missing_topic_exits_1_naming_the_view(
    topics: Topics, tmp_path: Path
) -> None:
    """A view whose topic does not exist fails bootstrap with exit 1 and a message naming it."""
    present = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(
        tmp_path,
        [{"name": "fine", "topic": present}, {"name": "orphan", "topic": "test.cli.no-such-topic"}],
    )

    boot = run(["-c", config, "bootstrap"], tmp_path)

    assert boot.returncode == 1
    assert "view 'orphan' failed" in boot.stderr
    assert "test.cli.no-such-topic" in boot.stderr
    assert "does not exist" in boot.stderr
    assert boot.stdout.startswith("fine: 1 records")
    assert "Traceback" not in boot.stderr


def test_unknown_view_exits_2_listing_the_views(topics: Topics, tmp_path: Path) -> None:
    """Naming a view that is not configured exits 2 with the configured views listed."""
    topic = topics.create(1)
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])

    for args in (["bootstrap", "--view", "nope"], ["get", "nope", "k"], ["quarantine", "nope"]):
        result = run(["-c", config, *args], tmp_path)
        assert result.returncode == 2, args
        assert "unknown view 'nope'; configured views: deliveries" in result.stderr
        assert "Traceback" not in result.stderr


def test_sigterm_stops_bootstrap_with_a_message(tmp_path: Path) -> None:
    """SIGTERM during bootstrap stops it like Ctrl-C: exit 130 and a one-line message, no traceback."""
    config = write_config(
        tmp_path,
        [{"name": "waiting", "topic": "test.cli.not-yet-created", "missing_topic": "wait"}],
    )
    proc = spawn(["-c", config, "bootstrap"], tmp_path)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # bootstrap is under way once the view says so
            seen.append(line)
            if "view=waiting state=bootstrapping" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert code == 130, "".join(seen) + rest
    assert "error: interrupted" in rest
    assert "Traceback" not in rest
