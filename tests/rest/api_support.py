"""Helpers for the REST API tests: compacted topics on the real local broker, test data."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import uvicorn
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from statestore import ApiConfig, Config, StateStore, StoreConfig, ViewConfig

BOOTSTRAP = os.environ.get("STATESTORE_TEST_BOOTSTRAP", "127.0.0.1:9092")

# (key, value, partition): value None is a tombstone; dict/list/int values are sent as JSON.
Rec = tuple[str | bytes | None, Any, int]


def _encode(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value)


class Kafka:
    """Creates uniquely named compacted topics and produces records to them."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.created: list[str] = []

    def topic(self, partitions: int = 1) -> str:
        name = f"statestore-api-test-{uuid.uuid4().hex}"
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config={"cleanup.policy": "compact"},
        )
        self.admin.create_topics([topic])[name].result(30)
        self.created.append(name)
        return name

    def produce(self, topic: str, records: Iterable[Rec]) -> list[tuple[int, int]]:
        """Produce *records* in order; return (partition, offset) of each."""
        results: list[tuple[int, int] | None] = []
        errors: list[str] = []

        def on_delivery(index: int) -> Any:
            def report(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    results[index] = (msg.partition(), msg.offset())

            return report

        for key, value, partition in records:
            results.append(None)
            raw_key = key.encode("utf-8") if isinstance(key, str) else key
            self.producer.produce(
                topic,
                key=raw_key,
                value=_encode(value),
                partition=partition,
                on_delivery=on_delivery(len(results) - 1),
            )
        left = self.producer.flush(30)
        if errors or left:
            raise AssertionError(f"produce to {topic} failed: {errors or f'{left} undelivered'}")
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self.created:
            for future in self.admin.delete_topics(self.created).values():
                with contextlib.suppress(KafkaException):
                    future.result(30)


def make_config(path: Path, views: Iterable[ViewConfig], api: ApiConfig | None = None) -> Config:
    return Config(
        kafka={"bootstrap.servers": BOOTSTRAP},
        store=StoreConfig(path=path),
        api=api or ApiConfig(),
        views=tuple(views),
    )


def ready_store(config: Config) -> StateStore:
    """A store caught up with its topics and following them."""
    store = StateStore(config)
    store.bootstrap()
    store.start()
    return store


ODD_KEYS = (
    "with space",
    "a/b",
    "/leading/and/trailing/",
    "a//b",
    "a%2Fb",
    "100%",
    "%25",
    "what?",
    "q?x=1&y=2",
    "#fragment",
    "plus+sign",
    "emoji 🎉 key",
    "ключ",
    "tab\there",
    "k" * 300,
    "..",
    ".",
    "a/../b",
)

STATUSES = ("new", "in_transit", "delivered")


def person(i: int) -> dict[str, Any]:
    return {
        "name": f"person {i}",
        "status": STATUSES[i % 3],
        "age": 20 + i % 5,
        "vip": i % 2 == 0,
        "address": {"city": "Oslo" if i < 10 else "Bergen"},
    }


@dataclass
class World:
    """One store over several views, bootstrapped and following, shared by most tests."""

    config: Config
    store: StateStore
    kafka: Kafka
    topics: dict[str, str]
    people: dict[str, dict[str, Any]] = field(default_factory=dict)


def key_path(key: str) -> str:
    """Percent-encode *key* as one path segment (dots too, so `.`/`..` are not resolved)."""
    return quote(key, safe="").replace(".", "%2E")


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it has started (an event, not a flag to poll)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.up.set()


@contextlib.contextmanager
def serve_app(app: Any, *, sndbuf: int | None = None) -> Iterator[str]:
    """Run *app* under uvicorn on an ephemeral loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sndbuf is not None:
        # Accepted connections inherit it: a client that stops reading blocks the server soon.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if not server.up.wait(30) or not server.started:
        pytest.fail("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
