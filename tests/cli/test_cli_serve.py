"""statestore serve: bind checks, serving the views, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cli_support import assert_refused, run_while_held

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import (
    finish,
    free_port,
    reap,
    run,
    spawn,
    start_server,
    wait_for_200,
)

pytestmark = pytest.mark.integration


@contextmanager
def _serving(config: Path, cwd: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`statestore serve --port PORT` on a free port (not the config's port), its output
    piped, once ready: (the process, its URL). Killed on the way out when still running."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn(["-c", config, "serve", "--port", port], cwd)
    try:
        wait_for_200(f"{url}/readyz", proc, timeout=90)
        yield proc, url
    finally:
        reap(proc)


def test_serve_refuses_a_public_bind_without_tokens(tmp_path: Path) -> None:
    """serve on a non-loopback address without tokens exits 2 before binding, with the reason."""
    config = write_config(tmp_path, [{"name": "things", "topic": "test.cli.unused"}])

    result = run(["-c", config, "serve", "--host", "0.0.0.0"], tmp_path)

    assert_refused(result, "refusing to serve on 0.0.0.0 without tokens")


def test_serve_refuses_while_another_process_holds_the_store(
    topics: Topics, tmp_path: Path
) -> None:
    """serve exits 2 with a clear message when the store is already open elsewhere."""
    result = run_while_held(topics, tmp_path, "serve", "--port", str(free_port()))

    assert_refused(result, "is in use by another process")


def test_a_locked_store_names_the_running_servers_own_address(
    topics: Topics, tmp_path: Path
) -> None:
    """Beside a server started with --port (not the config's port), a command that needs
    the store names the address the server really answers at, and its pid."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    with _serving(config, tmp_path) as (proc, url):
        result = run(["-c", config, "bootstrap"], tmp_path)
        finish(proc, signal.SIGTERM)

    assert result.returncode == 2
    assert f"in use by a running server at {url} (pid {proc.pid})" in result.stderr
    assert not (tmp_path / "store" / "SERVER").exists()


def test_serve_answers_and_stops_cleanly_on_sigterm(topics: Topics, tmp_path: Path) -> None:
    """serve bootstraps and serves entities; SIGTERM shuts it down gracefully and releases the store."""
    topic = topics.create(2, [(0, "a", {"v": 1}), (1, "b", {"v": 2}), (0, "a", {"v": 3})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    with _serving(config, tmp_path) as (proc, url):
        entity = httpx.get(f"{url}/views/things/entities/a", timeout=10).json()
        stderr = finish(proc, signal.SIGTERM)

    assert entity["value"] == {"v": 3}
    # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM so a supervisor
    # sees how the process ended.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert "Traceback" not in stderr
    # The lifespan closed the store: a writer can open it again.
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0


def _exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send *data* on a new connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_request_heads_are_bounded_in_size_and_time(topics: Topics, tmp_path: Path) -> None:
    """Before any token is checked: a head larger than [api] max_header_kb is answered 431
    and the connection closed; a head left unfinished is answered 408 and closed after
    [api] header_timeout_s; an ordinary request on the same server is served."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(
        tmp_path,
        [{"name": "things", "topic": topic}],
        api={"max_header_kb": 8, "header_timeout_s": 1},
    )
    server = start_server(config, tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        big = _exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"x" * 20_000 + b"\r\n\r\n",
        )
        slow = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        fine = httpx.get(f"{server.url}/healthz", timeout=10)
    finally:
        server.stop()

    assert big.startswith(b"HTTP/1.1 431 ")
    assert slow.startswith(b"HTTP/1.1 408 ")
    assert fine.status_code == 200
