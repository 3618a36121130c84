"""Fixtures for the REST API tests: real compacted topics on the local broker.

The broker is required: when it cannot be reached the tests fail (start it with
``scripts/local-kafka start``), they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import (
    ODD_KEYS,
    Kafka,
    Rec,
    World,
    make_config,
    person,
    ready_store,
)
from fastapi.testclient import TestClient

from statestore import ViewConfig
from statestore.api import create_app


@pytest.fixture(scope="session")
def kafka(bootstrap_servers: str) -> Iterator[Kafka]:
    """Topics on the local broker for the whole session; fails (never skips) when the broker
    is not reachable."""
    client = Kafka(bootstrap_servers)
    yield client
    client.close()


@pytest.fixture(scope="session")
def world(kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Views people (JSON, indexed, 3 partitions), blobs (bytes), odd (odd keys), live (for waits)."""
    topics = kafka.topics_for(people=3, blobs=1, odd=1, live=1)
    people = {f"p-{i:03d}": person(i) for i in range(60)}
    records: list[Rec] = [(k, v, i % 3) for i, (k, v) in enumerate(people.items())]
    people["q-string42"] = {"status": "42", "age": 42, "vip": False}
    records += [
        ("q-string42", people["q-string42"], 0),
        ("gone", {"status": "new"}, 1),
        ("gone", None, 1),
        ("bad-json", b"{not json", 2),
    ]
    kafka.produce(topics["people"], records)
    kafka.produce(
        topics["blobs"],
        [("bin", b"\x00\x01\xfe\xffhello", 0), ("empty", b"", 0), ("nothing", None, 0)],
    )
    kafka.produce(topics["odd"], [(k, {"key": k}, 0) for k in ODD_KEYS])
    kafka.produce(topics["live"], [("seed", {"n": 0}, 0)])
    config = make_config(
        tmp_path_factory.mktemp("world") / "store",
        [
            ViewConfig(
                name="people",
                topic=topics["people"],
                indexes=("status", "age", "vip", "address.city"),
            ),
            ViewConfig(name="blobs", topic=topics["blobs"], value="bytes"),
            ViewConfig(name="odd", topic=topics["odd"]),
            ViewConfig(name="live", topic=topics["live"]),
        ],
    )
    store = ready_store(config)
    try:
        yield World(config, store, kafka, topics, people)
    finally:
        store.close()


@pytest.fixture(scope="session")
def client(world: World) -> Iterator[TestClient]:
    """A client of an app over the shared, ready store (no tokens)."""
    with TestClient(
        create_app(world.config, store=world.store), base_url="http://localhost"
    ) as test_client:
        yield test_client
