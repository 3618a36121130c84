"""Helpers for the console's browser tests: a `statestore serve` process, topics, Chromium."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.cli.cli_support import BOOTSTRAP, REPO, STATESTORE, api_port, clean_env
from tests.ops.ops_support import eventually

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

# (partition, key, value): str/bytes values are sent as they are, others as JSON, None deletes.
Record = tuple[int, str, Any]


@dataclass
class Topics:
    """Compacted topics with unique names on the local broker, deleted afterwards."""

    admin: AdminClient
    created: list[str] = field(default_factory=list)

    @staticmethod
    def name() -> str:
        return f"test.console.{uuid.uuid4().hex[:12]}"

    def create(self, partitions: int = 3, name: str | None = None) -> str:
        name = name or self.name()
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config={"cleanup.policy": "compact"},
        )
        self.admin.create_topics([topic])[name].result(timeout=30)
        self.created.append(name)
        return name

    def delete(self) -> None:
        if self.created:
            for future in self.admin.delete_topics(self.created, operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=30)


def produce(topic: str, records: Sequence[Record]) -> list[tuple[int, int]]:
    """Produce *records* in order; their (partition, offset)."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
    out: list[tuple[int, int]] = []

    def report(err: Any, msg: Any) -> None:
        assert err is None, f"delivery failed: {err}"
        out.append((msg.partition(), msg.offset()))

    for partition, key, value in records:
        if value is None or isinstance(value, bytes):
            raw = value
        elif isinstance(value, str):
            raw = value.encode()
        else:
            raw = json.dumps(value).encode()
        producer.produce(
            topic, key=key.encode(), value=raw, partition=partition, on_delivery=report
        )
        assert producer.flush(30) == 0, "record not delivered"
    return out


@dataclass
class Served:
    """A running `statestore serve`, its base URL and the file its log goes to."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def serve(
    config: Path, cwd: Path, *, token: str | None = None, ready: bool = True
) -> Iterator[Served]:
    """`statestore serve` on *config*, ready (every view caught up) before it is yielded,
    or only answering (``/healthz``) when *ready* is false.

    The log goes to a file: a busy server would fill a pipe nobody reads.
    """
    env = clean_env(**({"CONSOLE_TOKEN": token} if token is not None else {}))
    log = cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(STATESTORE), "-c", str(config), "serve"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, f"http://127.0.0.1:{api_port(config)}", log)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    probe = f"{served.url}/readyz" if ready else f"{served.url}/healthz"

    def answers() -> bool:
        assert proc.poll() is None, f"serve exited early:\n{served.log_text()}"
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(probe, headers=headers, timeout=2).status_code == 200
        return False

    try:
        eventually(answers, f"{probe} answers 200", timeout=120.0)
        yield served
    finally:
        served.stop()
