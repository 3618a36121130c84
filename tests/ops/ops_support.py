"""Helpers of the operations tests alone: timestamped records, stored state, a server
started again and again. Topics, configs, processes, metrics samples and waits are in
tests/support."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson

from statestore import StateStore
from tests.support.kafka import produce
from tests.support.processes import Server

# (key, value or None for a tombstone, partition, timestamp in ms or None for now)
Rec = tuple[str, Any, int, int | None]


def send(topic: str, records: Iterable[Rec]) -> list[tuple[int, int]]:
    """Produce *records* in order, with explicit partitions and timestamps, every value as
    JSON; their (partition, offset)."""
    return produce(
        topic,
        [
            (p, key, None if value is None else orjson.dumps(value), ts)
            for key, value, p, ts in records
        ],
    )


def keys_of(store: StateStore, view: str) -> list[str]:
    return [e.key for e in store.view(view).iter_entities()]


class Serve:
    """`statestore serve` on one config, started and stopped again and again; each run
    logs to its own file in *cwd*."""

    def __init__(self, config: Path, port: int, cwd: Path, *options: str) -> None:
        self.config = config
        self.port = port
        self.options = options
        self.url = f"http://127.0.0.1:{port}"
        self.cwd = cwd
        self.server: Server | None = None
        self.runs = 0

    def start(self) -> None:
        """Start a run and wait until it answers /healthz."""
        self.runs += 1
        log = self.cwd / f"serve-{self.runs}.log"
        self.server = Server(self.config, self.port, self.cwd, log, options=self.options)
        self.server.wait_ready(120, path="/healthz")

    def log(self) -> str:
        """What the latest run wrote."""
        assert self.server is not None
        return self.server.output()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.server is not None and self.server.alive()
        self.server.close(sig)

    def view(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/views/{name}", timeout=10).json()
        return data
