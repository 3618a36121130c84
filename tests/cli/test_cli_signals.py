"""Signals: the first SIGTERM/SIGINT stops cleanly, a second one exits at once."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest

from statestore.cli._signals import SecondSignalExits
from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import api_port, reap, spawn


def test_first_signal_stops_cleanly_and_the_second_exits_at_once() -> None:
    """The handler runs the clean stop on the first signal and exits with 128 + signal on the next."""
    stops: list[int] = []
    exits: list[int] = []
    handler = SecondSignalExits(stops.append, exit_now=lambda sig: exits.append(128 + sig))

    handler(signal.SIGTERM)
    handler(signal.SIGTERM)

    assert stops == [signal.SIGTERM]
    assert exits == [143]


@pytest.mark.integration
def test_second_sigterm_ends_a_serve_stuck_in_its_graceful_stop(
    topics: Topics, tmp_path: Path
) -> None:
    """serve waits for a request in flight after SIGTERM; a second SIGTERM exits at once with 143."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(
        tmp_path, [{"name": "things", "topic": topic}], api={"max_wait_ms": 600_000}
    )
    url = f"http://127.0.0.1:{api_port(config)}"
    proc = spawn(["-c", config, "serve"], tmp_path)
    assert proc.stderr is not None
    seen: list[str] = []

    def until(needle: str) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if needle in line:
                return
        raise AssertionError(f"serve ended before {needle!r}:\n" + "".join(seen))

    try:
        until("Application startup complete")
        until("view=things state=ready")
        # A request that waits for an offset that never comes: in flight until the end.
        hanging = socket.create_connection(("127.0.0.1", api_port(config)))
        hanging.sendall(
            b"GET /views/things/entities/a?min_position=0:1000000&wait_ms=600000 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n\r\n"
        )
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        until("Waiting for connections to close")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
        hanging.close()
    finally:
        reap(proc)

    assert code == 143, "".join(seen) + rest
    assert "SIGTERM again: exiting at once" in rest
