"""Helpers of the console's browser tests: Chromium, and `statestore serve` as they run it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import REPO, Server, clean_env, start_server

CHROMIUM = Path("/usr/bin/chromium")
# Chromium as the tests run it: headless, and nothing that reaches beyond this machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "var" / "test-artifacts" / "console"
# How long the browser waits for the page to show a state (ms).
DEADLINE_MS = 30_000


@contextlib.contextmanager
def serve(
    config: Path, cwd: Path, *, token: str | None = None, ready: bool = True
) -> Iterator[Server]:
    """`statestore serve` on *config*, ready (every view caught up) before it is yielded,
    or only answering (``/healthz``) when *ready* is false; stopped afterwards."""
    server = start_server(
        config,
        cwd,
        env=clean_env(**({"CONSOLE_TOKEN": token} if token is not None else {})),
        path="/readyz" if ready else "/healthz",
        headers={"Authorization": f"Bearer {token}"} if token else None,
    )
    try:
        yield server
    finally:
        server.close()
