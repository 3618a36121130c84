"""Helpers for the operations tests: timestamped records, metrics samples, stored state."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from statestore import StateStore, load_config
from statestore.metrics import StoreCollector

BOOTSTRAP = "127.0.0.1:9092"

# (key, value or None for a tombstone, partition, timestamp in ms or None for now)
Rec = tuple[str, Any, int, int | None]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def send(topic: str, records: Iterable[Rec]) -> list[tuple[int, int]]:
    """Produce *records* in order, with explicit partitions and timestamps; their (partition, offset)."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
    out: list[tuple[int, int]] = []

    def report(err: Any, msg: Any) -> None:
        assert err is None, f"delivery failed: {err}"
        out.append((msg.partition(), msg.offset()))

    for key, value, partition, ts in records:
        kwargs: dict[str, Any] = {"partition": partition, "on_delivery": report}
        if ts is not None:
            kwargs["timestamp"] = ts
        raw = None if value is None else orjson.dumps(value)
        producer.produce(topic, key=key.encode(), value=raw, **kwargs)
        # One at a time: the order of the log is the order given.
        assert producer.flush(30) == 0, "record not delivered"
    return out


def samples(store: StateStore) -> Samples:
    """The store's metrics as Prometheus would scrape them: ``{(name, labels): value}``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return parse(generate_latest(registry).decode())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def keys_of(store: StateStore, view: str) -> list[str]:
    return [e.key for e in store.view(view).iter_entities()]


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until *check()* is true; fail naming *what* when it never is."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


REPO = Path(__file__).resolve().parents[2]
STATESTORE = REPO / ".venv" / "bin" / "statestore"

# (partition, offset, key, value bytes or None)
LogRecord = tuple[int, int, str, bytes | None]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI run: none of the caller's STATESTORE_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(
    directory: Path,
    views: list[dict[str, Any]],
    *,
    kafka: dict[str, Any] | None = None,
    store: dict[str, Any] | None = None,
) -> Path:
    """A config file in *directory*: the local broker, a store beside it, [api] on a free port."""
    lines = ["[kafka]"]
    for k, v in {"bootstrap.servers": BOOTSTRAP, **(kafka or {})}.items():
        lines.append(f"{json.dumps(k)} = {json.dumps(v)}")
    lines += ["", "[store]", f"path = {json.dumps(str(directory / 'store'))}"]
    for k, v in (store or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines += ["", "[api]", f"port = {free_port()}", ""]
    for view in views:
        lines.append("[[views]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in view.items()]
        lines.append("")
    path = directory / "statestore.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def read_log(topic: str) -> list[LogRecord]:
    """Every record of every partition of *topic*, up to the end offsets of now."""
    consumer = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": "ops-read-log", "enable.auto.commit": False}
    )
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts
        }
        ends = {p: high for p, (_, high) in marks.items()}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[LogRecord] = []
        # From the log start offset: records deleted before it are not read.
        seen = {p: low for p, (low, _) in marks.items()}
        while any(seen[p] < ends[p] for p in parts):
            for msg in consumer.consume(1000, 1.0):
                assert msg.error() is None, msg.error()
                p, offset, key = msg.partition(), msg.offset(), msg.key()
                assert p is not None and offset is not None and key is not None
                if offset < ends[p]:
                    out.append((p, offset, key.decode(), msg.value()))
                seen[p] = max(seen[p], offset + 1)
        return out
    finally:
        consumer.close()


def reduce_log(log: list[LogRecord], positions: dict[int, int]) -> dict[str, bytes]:
    """The last value per key of the records below *positions* (tombstones delete)."""
    out: dict[str, bytes] = {}
    for p, offset, key, value in sorted(log):
        if offset >= positions.get(p, 0):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def stored(config: Path, view: str) -> tuple[dict[int, int], dict[str, bytes], int]:
    """The view's stored positions, entities (key -> value as JSON) and records applied."""
    with StateStore(load_config(config, environ={}), read_only=True) as store:
        status = store.view(view).status()
        positions = {p.partition: p.position for p in status.partitions}
        entities = {e.key: orjson.dumps(e.value) for e in store.view(view).iter_entities()}
        return positions, entities, status.records_applied


class Serve:
    """`statestore serve` on one config, started and stopped again and again."""

    def __init__(self, config: Path, port: int, cwd: Path, *options: str) -> None:
        self.config = config
        self.options = options
        self.url = f"http://127.0.0.1:{port}"
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = (self.cwd / f"serve-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(STATESTORE), *self.options, "-c", str(self.config), "serve"],
            cwd=self.cwd,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc

        def up() -> bool:
            assert proc.poll() is None, self.log()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(up, "statestore serve answering", 120.0)

    def log(self) -> str:
        return (self.cwd / f"serve-{self.runs}.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(60)
        self.proc = None

    def view(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/views/{name}", timeout=10).json()
        return data
