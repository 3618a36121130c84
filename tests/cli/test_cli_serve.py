"""statestore serve: bind checks, serving the views, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cli_support import STATESTORE, Topics, clean_env, run, start_server, write_config

from statestore import StateStore, load_config

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(config: Path, cwd: Path, port: int) -> subprocess.Popen[str]:
    """`statestore serve --port PORT` (not the config's port), its output piped."""
    return subprocess.Popen(
        [str(STATESTORE), "-c", str(config), "serve", "--port", str(port)],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], url: str) -> None:
    """Poll /readyz until it answers 200 (the server is then caught up)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail("serve did not become ready")


def test_serve_refuses_a_public_bind_without_tokens(tmp_path: Path) -> None:
    """serve on a non-loopback address without tokens exits 2 before binding, with the reason."""
    config = write_config(tmp_path, [{"name": "things", "topic": "test.cli.unused"}])

    result = run(["-c", config, "serve", "--host", "0.0.0.0"], tmp_path)

    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_while_another_process_holds_the_store(
    topics: Topics, tmp_path: Path
) -> None:
    """serve exits 2 with a clear message when the store is already open elsewhere."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])

    with StateStore(load_config(config)):
        result = run(["-c", config, "serve", "--port", str(free_port())], tmp_path)

    assert result.returncode == 2
    assert "is in use by another process" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_locked_store_names_the_running_servers_own_address(
    topics: Topics, tmp_path: Path
) -> None:
    """Beside a server started with --port (not the config's port), a command that needs
    the store names the address the server really answers at, and its pid."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(config, tmp_path, port)
    try:
        wait_ready(proc, url)
        result = run(["-c", config, "bootstrap"], tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)

    assert result.returncode == 2
    assert f"in use by a running server at {url} (pid {proc.pid})" in result.stderr
    assert not (tmp_path / "store" / "SERVER").exists()


def test_serve_answers_and_stops_cleanly_on_sigterm(topics: Topics, tmp_path: Path) -> None:
    """serve bootstraps and serves entities; SIGTERM shuts it down gracefully and releases the store."""
    topic = topics.create(2, [(0, "a", {"v": 1}), (1, "b", {"v": 2}), (0, "a", {"v": 3})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(config, tmp_path, port)
    try:
        wait_ready(proc, url)
        entity = httpx.get(f"{url}/views/things/entities/a", timeout=10).json()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

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
