"""Helpers for the command-line tests: throwaway topics, config files, CLI runs."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

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


def write_config(
    directory: Path, views: Sequence[dict[str, Any]], *, servers: str = BOOTSTRAP
) -> Path:
    """A config file in *directory* with its store beside it."""
    lines = [
        "[kafka]",
        f'"bootstrap.servers" = "{servers}"',
        "",
        "[store]",
        f"path = {json.dumps(str(directory / 'store'))}",
        "",
    ]
    for view in views:
        lines.append("[[views]]")
        for k, v in view.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    path = directory / "statestore.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


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
