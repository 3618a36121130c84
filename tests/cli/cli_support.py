"""Helpers for the command-line tests: throwaway topics, config files, CLI runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from statestore import load_config

BOOTSTRAP = "127.0.0.1:9092"
REPO = Path(__file__).resolve().parents[2]
STATESTORE = REPO / ".venv" / "bin" / "statestore"

# (partition, key, value): a dict value is sent as JSON, bytes as they are, None as a tombstone.
Record = tuple[int, str, dict[str, Any] | bytes | None]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI run: none of the caller's STATESTORE_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")}
    env.update(extra)
    return env


def run(
    args: Sequence[str | Path],
    cwd: Path,
    *,
    exe: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the statestore console script (or *exe*) and capture its output."""
    return subprocess.run(
        [str(exe or STATESTORE), *map(str, args)],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Topics:
    """Creates compacted topics with unique names, produces to them, deletes them afterwards."""

    admin: AdminClient
    created: list[str] = field(default_factory=list)

    def create(self, partitions: int = 3, records: Sequence[Record] = ()) -> str:
        name = f"test.cli.{uuid.uuid4().hex[:12]}"
        self.create_named(name, partitions)
        self.produce(name, records)
        return name

    def create_named(self, name: str, partitions: int) -> None:
        futures = self.admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=1,
                    config={"cleanup.policy": "compact"},
                )
            ]
        )
        futures[name].result(timeout=30)
        self.created.append(name)

    def produce(self, topic: str, records: Sequence[Record]) -> None:
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
        for partition, key, value in records:
            raw = json.dumps(value).encode() if isinstance(value, dict) else value
            producer.produce(topic, key=key.encode(), value=raw, partition=partition)
        assert producer.flush(30) == 0, "records were not delivered"

    def delete(self, names: Sequence[str]) -> None:
        if names:
            for future in self.admin.delete_topics(list(names), operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    future.result(timeout=30)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(
    directory: Path,
    views: Sequence[dict[str, Any]],
    *,
    servers: str = BOOTSTRAP,
    api: dict[str, Any] | None = None,
    tokens: Sequence[dict[str, Any]] = (),
) -> Path:
    """A config file in *directory* with its store beside it; [api] on a free port by default."""
    lines = [
        "[kafka]",
        f'"bootstrap.servers" = "{servers}"',
        "",
        "[store]",
        f"path = {json.dumps(str(directory / 'store'))}",
        "",
        "[api]",
    ]
    # Never the default port: a server another test (or person) runs there would answer.
    for k, v in {"port": free_port(), **(api or {})}.items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines.append("")
    for token in tokens:
        lines.append("[[api.tokens]]")
        for k, v in token.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    for view in views:
        lines.append("[[views]]")
        for k, v in view.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    path = directory / "statestore.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def api_port(config: Path) -> int:
    """The [api] port written into *config*."""
    port: int = load_config(config, environ={}).api.port
    return port


def start_server(config: Path, cwd: Path, *, env: dict[str, str] | None = None) -> Server:
    """`statestore serve` on the config's [api] port, ready (every view caught up)."""
    port = api_port(config)
    proc = subprocess.Popen(
        [str(STATESTORE), "-c", str(config), "serve"],
        cwd=cwd,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(proc, f"http://127.0.0.1:{port}")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class Server:
    """A running `statestore serve` and its base URL."""

    proc: subprocess.Popen[str]
    url: str

    def wait_ready(self, headers: dict[str, str] | None = None) -> None:
        """Poll /readyz until it answers 200 (the server is then caught up)."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2, headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve did not become ready")

    def stop(self) -> str:
        """SIGTERM, wait for the exit; return what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        return stderr or ""


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
