"""Helpers of the REST API tests: topics in their (key, value, partition) terms, a shared
store and its test data, an app served by uvicorn in a thread. The rest is in tests/support."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn

from statestore import ApiConfig, Config, StateStore, ViewConfig
from tests.support.config import store_config
from tests.support.kafka import BOOTSTRAP, Topics, produce

# (key, value, partition): value None is a tombstone; dict/list/int values are sent as JSON.
Rec = tuple[str | bytes | None, Any, int]


class Kafka:
    """Uniquely named compacted topics on the local broker, and producing to them in order."""

    def __init__(self, bootstrap: str = BOOTSTRAP) -> None:
        self.bootstrap = bootstrap
        self.topics = Topics(bootstrap, prefix="statestore-api-test")

    def topic(self, partitions: int = 1) -> str:
        return self.topics.create(partitions)

    def topics_for(self, **partitions: int) -> dict[str, str]:
        """A new topic per name, with the partitions given: ``topics_for(people=3, blobs=1)``."""
        return {name: self.topic(n) for name, n in partitions.items()}

    def produce(self, topic: str, records: Iterable[Rec]) -> list[tuple[int, int]]:
        """Produce *records* in order; return (partition, offset) of each."""
        return produce(topic, [(p, k, v) for k, v, p in records], bootstrap=self.bootstrap)

    def close(self) -> None:
        self.topics.close()


def make_config(path: Path, views: Iterable[ViewConfig], api: ApiConfig | None = None) -> Config:
    return store_config(path, views, api=api)


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
