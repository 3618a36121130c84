"""JSON Schema views against the real broker and registry: the view equals confluent-kafka's own
decoding of the topic; references, evolution, validation and bad records."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from avro_support import PATIENT_V1, Avro, patient
from confluent_kafka.schema_registry import Schema, SchemaReference
from formats_support import Kit, frame, json_decoder, latest_by_key, schema_id

pytestmark = [pytest.mark.integration, pytest.mark.registry]

DELIVERY_V1: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Delivery",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["created", "in_transit", "delivered"]},
        "attempts": {"type": "integer", "minimum": 0},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["id", "status"],
}
# v2 adds an optional field and drops `attempts`.
DELIVERY_V2: dict[str, Any] = copy.deepcopy(DELIVERY_V1)
DELIVERY_V2["properties"]["courier"] = {"type": "string"}
del DELIVERY_V2["properties"]["attempts"]


def _delivery(i: int, status: str = "created", **extra: Any) -> dict[str, Any]:
    return {"id": f"d-{i}", "status": status, "address": {"city": f"city-{i % 4}"}, **extra}


def test_json_schema_view_equals_confluent_decoding_across_versions(
    kit: Kit,
    bootstrap_servers: str,
    registry_url: str,
) -> None:
    """Values of two writer versions, updated and deleted across partitions, are served as
    written -- exactly what confluent-kafka's deserializer reads -- and indexed."""
    topic = kit.topic(partitions=2)
    kit.json_schema.client.set_compatibility(f"{topic}-value", "NONE")
    records: list[tuple[str, bytes | None]] = []
    for i in range(30):
        records.append(
            (f"d-{i}", kit.json_schema.value(topic, DELIVERY_V1, _delivery(i, attempts=1)))
        )
    for i in range(0, 30, 4):
        datum = _delivery(i, "in_transit", courier="c-7")
        records.append((f"d-{i}", kit.json_schema.value(topic, DELIVERY_V2, datum)))
    records += [("d-1", None)]
    kit.produce(topic, records)

    store = kit.open_store(
        {"name": "d", "topic": topic, "value": "json_schema", "indexes": ["status", "address.city"]}
    )
    status = store.bootstrap()["d"]

    expected = latest_by_key(bootstrap_servers, topic, json_decoder(registry_url))
    assert (status.state, status.keys, status.quarantined) == ("ready", len(expected), 0)
    served = {e.key: e.value for e in store.scan("d", limit=1000).items}
    assert served == expected
    assert served["d-4"] == _delivery(4, "in_transit", courier="c-7")
    assert served["d-5"] == _delivery(5, attempts=1)
    moving = {e.key for e in store.by("d", "status", "in_transit").items}
    assert moving == {k for k, v in expected.items() if v["status"] == "in_transit"}
    assert len({s["id"] for s in store.schemas("d")}) == 2


def test_json_schema_references_resolve_through_the_registry(
    kit: Kit,
) -> None:
    """A writer schema whose $ref names another registered schema validates against it."""
    topic = kit.topic(partitions=1)
    client = kit.json_schema.client
    address = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    client.register_schema(f"{topic}-address", Schema(_dumps(address), "JSON"))
    version = client.get_latest_version(f"{topic}-address").version
    outer = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "address": {"$ref": "address.json"}},
    }
    sid = client.register_schema(
        f"{topic}-value",
        Schema(
            _dumps(outer), "JSON", [SchemaReference("address.json", f"{topic}-address", version)]
        ),
    )
    kit.produce(
        topic,
        [
            ("ok", frame(sid, _dumps({"id": "ok", "address": {"city": "Leeds"}}).encode())),
            ("bad", frame(sid, _dumps({"id": "bad", "address": {"town": "Leeds"}}).encode())),
        ],
    )
    store = kit.open_store({"name": "d", "topic": topic, "value": "json_schema"})
    status = store.bootstrap()["d"]

    assert (status.keys, status.quarantined) == (1, 1)
    items, _ = store.view("d").quarantine(limit=10)
    assert '"city" is a required property (at /address)' in items[0]["reason"]


def test_bad_json_schema_records_are_quarantined_and_validation_can_be_off(
    kit: Kit,
    avro: Avro,
) -> None:
    """A value not valid for its writer schema, a body that is not JSON, an Avro schema id,
    an unknown id and a bare body are quarantined with their reasons, the entity keeping its
    last good value; with ``validate = false`` only the schema check is skipped."""
    topic = kit.topic(partitions=1)
    good = kit.json_schema.value(topic, DELIVERY_V1, _delivery(1))
    sid = schema_id(good)
    avro_id = schema_id(avro.value(f"{topic}-avro", PATIENT_V1, patient("Ada")))
    bad = {
        "invalid": frame(sid, _dumps({"id": "x", "status": "lost"}).encode()),
        "not-json": frame(sid, b'{"id": "x", '),
        "avro-id": frame(avro_id, good[5:]),
        "unknown-id": frame(2_000_000_002, good[5:]),
        "bare": good[5:],
    }
    kit.produce(topic, [(k, good) for k in bad] + list(bad.items()))

    store = kit.open_store({"name": "d", "topic": topic, "value": "json_schema"})
    status = store.bootstrap()["d"]

    assert (status.keys, status.quarantined) == (len(bad), len(bad))
    for k in bad:
        entity = store.get("d", k)
        assert entity is not None and entity.value == _delivery(1), k
    items, _ = store.view("d").quarantine(limit=100)
    reasons = {base64.b64decode(i["key"]).decode(): i["reason"] for i in items}
    expected = {
        "invalid": f'value does not match its writer schema id {sid}: "lost" is not one of',
        "not-json": "value is not valid JSON",
        "avro-id": f"writer schema id {avro_id} is an Avro schema; a JSON Schema view needs JSON schemas",
        "unknown-id": "schema id 2000000002 is not known to the schema registry",
        "bare": "wrong magic byte 0x7b",
    }
    assert set(reasons) == set(expected)
    for k, reason in expected.items():
        assert reason in reasons[k], (k, reasons[k])

    lax = kit.open_store(
        {"name": "d", "topic": topic, "value": "json_schema", "validate": False}, store="lax"
    )
    status = lax.bootstrap()["d"]
    assert status.quarantined == len(bad) - 1
    invalid = lax.get("d", "invalid")
    assert invalid is not None and invalid.value == {"id": "x", "status": "lost"}


def _dumps(value: Any) -> str:
    return json.dumps(value)


def test_json_schema_keys_are_canonical_json(
    kit: Kit,
) -> None:
    """Keys framed with a JSON schema are stored as canonical JSON and addressed by it;
    object-key order and null fields do not make two entities."""
    topic = kit.topic(partitions=1)
    key_schema = {"type": "object", "properties": {"id": {"type": "string"}, "region": {}}}
    k = kit.json_schema.client.register_schema(f"{topic}-key", Schema(_dumps(key_schema), "JSON"))
    kit.produce(
        topic,
        [
            (
                frame(k, b'{"region": 2, "id": "d-1"}'),
                kit.json_schema.value(topic, DELIVERY_V1, _delivery(1)),
            ),
            (
                frame(k, b'{"id": "d-1", "region": 2, "note": null}'),
                kit.json_schema.value(topic, DELIVERY_V1, _delivery(1, "delivered")),
            ),
        ],
    )
    store = kit.open_store(
        {"name": "d", "topic": topic, "key": "json_schema", "value": "json_schema"}
    )
    assert store.bootstrap()["d"].keys == 1
    got = store.get("d", '{"id":"d-1","region":2}')
    assert got is not None and got.key == '{"id":"d-1","region":2}'
    assert got.value["status"] == "delivered"
