"""Schema registry outages over an in-memory log: the batch is rewound and retried with backoff.

The view is a real Avro view (fastavro, the registry framing, the schema cache in
the store); only the registry client is replaced, by one that answers from a dict
and fails the way ``SchemaRegistryClient`` does: an HTTP error status
(``SchemaRegistryError``) or a refused connection (``httpx.ConnectError``).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_writer
from ingest_support import Harness, HarnessFactory, StopAfter, harness_fixture

from statestore.config import ViewConfig
from statestore.cursor import CursorSigner
from statestore.errors import KafkaError
from statestore.registry_codecs import registry_codecs
from statestore.schemas import Schemas
from statestore.storage import Storage
from statestore.view import View
from tests.support.schemas import field, record, with_field

harness = harness_fixture

V1 = record("Patient", [field("name", "string")])
V2 = with_field(V1, field("ward", "string", default="none"))
SCHEMAS = {1: V1, 2: V2}

OUTAGES: dict[str, Callable[[], Exception]] = {
    "connection refused": lambda: httpx.ConnectError("[Errno 111] Connection refused"),
    "http 503": lambda: SchemaRegistryError(503, 50301, "Service Unavailable"),
}


class Registry:
    """Answers schema ids from SCHEMAS; ``outage(n, error)`` fails the next *n* lookups."""

    def __init__(self) -> None:
        self.failing: list[Callable[[], Exception]] = []
        self.lookups = 0

    def outage(
        self, times: int, error: Callable[[], Exception] = OUTAGES["connection refused"]
    ) -> None:
        self.failing.extend([error] * times)

    def get_schema(self, schema_id: int) -> Schema:
        self.lookups += 1
        if self.failing:
            raise self.failing.pop(0)()
        if schema_id not in SCHEMAS:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found.")
        return Schema(json.dumps(SCHEMAS[schema_id]), "AVRO")

    def get_schema_versions(self, schema_id: int) -> list[Any]:
        return []


def framed(schema_id: int, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(SCHEMAS[schema_id]), record)
    return b"\x00" + struct.pack(">I", schema_id) + out.getvalue()


def avro_views(registry: Registry) -> Callable[[ViewConfig, Storage], View]:
    """Real Avro views whose schemas come from *registry*."""

    def avro_view(config: ViewConfig, storage: Storage) -> View:
        schemas = Schemas(storage, {"url": "http://127.0.0.1:9/apis/ccompat/v7"}, client=registry)
        keys, values, hook = registry_codecs(config, schemas)
        return View(
            config,
            storage,
            CursorSigner(b"s" * 32),
            keys=keys,
            values=values,
            header_hook=hook,
            schemas=schemas,
        )

    return avro_view


def avro_harness(harness: HarnessFactory, registry: Registry) -> Harness:
    return harness(1, value="avro", view_factory=avro_views(registry))


def produce(h: Harness, names: list[str], schema_id: int = 1) -> None:
    for name in names:
        h.topic.produce(f"p-{name}", framed(schema_id, {"name": name}), partition=0)


def caught_up(h: Harness) -> Callable[[], bool]:
    return lambda: h.positions() == h.ends()


def registry_reasons(h: Harness) -> list[str]:
    return [r or "" for s, r in h.states if s == "degraded"]


@pytest.mark.parametrize("outage", list(OUTAGES), ids=list(OUTAGES))
def test_an_outage_during_bootstrap_is_retried_with_backoff(
    harness: HarnessFactory, outage: str
) -> None:
    """Unseen schema ids with the registry away: the batch is read again after 0.5, 1, 2 s, then all is applied once."""
    registry = Registry()
    h = avro_harness(harness, registry)
    produce(h, ["ada", "bilal", "carmen"])
    registry.outage(3, OUTAGES[outage])
    stop = StopAfter()
    assert h.catch_up(stop)
    assert stop.waits == [0.5, 1.0, 2.0]
    reasons = registry_reasons(h)
    assert reasons and reasons[0].startswith("schema registry unavailable, retrying in 0.5s")
    assert h.view.state == "ready" and h.view.reason is None
    assert h.entities() == {f"p-{n}": {"name": n} for n in ["ada", "bilal", "carmen"]}
    status = h.view.status()
    assert status.records_applied == 3 and status.quarantined == 0


def test_an_outage_while_following_degrades_and_applies_each_record_once(
    harness: HarnessFactory,
) -> None:
    """A ready view meeting a new schema id while the registry is away is degraded, then ready with every record applied once."""
    registry = Registry()
    h = avro_harness(harness, registry)
    produce(h, ["ada", "bilal"])
    assert h.catch_up()
    produce(h, ["carmen"])  # a known id: applied in the same batch as the new one, not twice
    h.topic.produce("p-ada", framed(2, {"name": "ada", "ward": "B2"}), partition=0)
    registry.outage(2)
    stop = StopAfter(when=caught_up(h))
    h.ingestor.follow(stop)
    assert stop.waits == [0.5, 1.0]
    assert h.seen("degraded") and h.view.state == "ready" and h.view.reason is None
    assert h.entities() == {
        "p-ada": {"name": "ada", "ward": "B2"},
        "p-bilal": {"name": "bilal"},
        "p-carmen": {"name": "carmen"},
    }
    assert h.view.status().records_applied == 4


def test_the_backoff_doubles_to_thirty_seconds_and_starts_again_after_a_recovery(
    harness: HarnessFactory,
) -> None:
    """Each failed retry doubles the wait, from 0.5 s to at most 30 s; the next outage starts at 0.5 s again."""
    registry = Registry()
    h = avro_harness(harness, registry)
    produce(h, ["ada"])
    registry.outage(8)
    first = StopAfter()
    assert h.catch_up(first)
    assert first.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    produce(h, ["bilal"], schema_id=2)
    registry.outage(1)
    second = StopAfter(when=caught_up(h))
    h.ingestor.follow(second)
    assert second.waits == [0.5]
    assert h.view.state == "ready"


def test_an_unknown_schema_id_is_quarantined_not_retried(harness: HarnessFactory) -> None:
    """An id the registry answers 404 for is a bad record: quarantined at once, no backoff, the view ready."""
    registry = Registry()
    h = avro_harness(harness, registry)
    produce(h, ["ada"])
    h.topic.produce("p-x", b"\x00" + struct.pack(">I", 99) + b"\x02x", partition=0)
    stop = StopAfter()
    assert h.catch_up(stop)
    assert stop.waits == []
    assert not h.seen("degraded")
    assert h.view.status().quarantined == 1
    assert h.entities() == {"p-ada": {"name": "ada"}}


def test_kafka_recovering_does_not_end_a_registry_outage(harness: HarnessFactory) -> None:
    """While the registry is still away, records arriving again from Kafka leave the view degraded."""
    registry = Registry()
    h = avro_harness(harness, registry)
    produce(h, ["ada"])
    assert h.catch_up()
    h.kafka.fail("poll", KafkaError("broker down"))
    produce(h, ["bilal"], schema_id=2)
    registry.outage(3)
    stop = StopAfter(when=caught_up(h))
    h.ingestor.follow(stop)
    states = [s for s, _ in h.states]
    first = states.index("degraded")
    last_degraded = len(states) - 1 - states[::-1].index("degraded")
    assert "ready" not in states[first:last_degraded]
    assert registry_reasons(h)[-1].startswith("schema registry unavailable, retrying in 2.0s")
    assert h.view.state == "ready" and h.view.reason is None
    assert stop.waits == [0.0, 0.5, 1.0, 2.0]


def test_cached_schemas_need_no_registry_after_a_restart(harness: HarnessFactory) -> None:
    """Schemas fetched once are kept in the store: a restart with the registry away applies known ids."""
    registry = Registry()
    h = avro_harness(harness, registry)
    produce(h, ["ada"])
    assert h.catch_up()
    lookups = registry.lookups
    produce(h, ["bilal"])
    registry.outage(100)
    h2 = h.restart()
    stop = StopAfter()
    assert h2.catch_up(stop)
    assert stop.waits == []
    assert registry.lookups == lookups
    assert set(h2.entities()) == {"p-ada", "p-bilal"}
