"""Smoke tests against the local schema registry (scripts/local-registry).

They drive the registry's Confluent-compatible API with confluent-kafka's own
SchemaRegistryClient and Avro serdes, the way statestore's producers and
consumers use it. They fail (never skip) when the registry is not running:
start it with `scripts/local-registry start`.

Subjects get a random suffix so the tests can share a registry with other
runs; schema ids are never assumed to start anywhere.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.support.registry import require_registry
from tests.support.schemas import field, record, with_field

pytestmark = pytest.mark.registry

REGISTRY_PORT = int(os.environ.get("REGISTRY_PORT", "8081"))
REGISTRY_URL = f"http://127.0.0.1:{REGISTRY_PORT}/apis/ccompat/v7"

PAYMENT_V1 = record(
    "Payment", [field("id", "string"), field("amount", "double")], namespace="dev.statestore.smoke"
)
PAYMENT_V2 = with_field(PAYMENT_V1, field("currency", "string", default="USD"))


# Subjects named <topic>-value, without first asking the registry for a topic association:
# Apicurio's ccompat API has no such endpoint (404, and now and then no answer at all).
TOPIC_SUBJECTS = {"subject.name.strategy": topic_subject_name_strategy}


def new_client() -> SchemaRegistryClient:
    """A client with an empty cache, so every lookup goes to the registry."""
    return SchemaRegistryClient({"url": REGISTRY_URL, "timeout": 10})


def unique_topic() -> str:
    return f"smoke-{uuid.uuid4().hex[:12]}"


def wire_header(message: bytes) -> tuple[int, int]:
    """Magic byte and schema id of a Confluent-framed message."""
    magic, schema_id = struct.unpack(">bI", message[:5])
    return magic, schema_id


def serialize(schema: dict[str, Any], topic: str, record: dict[str, Any]) -> bytes:
    """Serialize the way a producer does: auto-register the schema under <topic>-value."""
    serializer = AvroSerializer(new_client(), json.dumps(schema), conf=TOPIC_SUBJECTS)
    message = serializer(record, SerializationContext(topic, MessageField.VALUE))
    assert message is not None
    return message


def registered_schema(schema_id: int) -> dict[str, Any]:
    """The writer schema the registry holds under a wire-format id."""
    schema = new_client().get_schema(schema_id)
    assert schema.schema_type in (None, "AVRO")
    parsed: dict[str, Any] = json.loads(schema.schema_str)
    return parsed


def test_serializer_registers_schema_whose_wire_id_resolves() -> None:
    """The serializer auto-registers v1 under <topic>-value and the id in the 5-byte wire header resolves to that same schema."""
    require_registry(REGISTRY_URL)
    topic = unique_topic()
    subject = f"{topic}-value"
    record = {"id": "p-1", "amount": 12.5}

    message = serialize(PAYMENT_V1, topic, record)

    magic, schema_id = wire_header(message)
    assert magic == 0
    assert registered_schema(schema_id) == PAYMENT_V1
    latest = new_client().get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    deserializer = AvroDeserializer(new_client(), conf=TOPIC_SUBJECTS)
    assert deserializer(message, SerializationContext(topic, MessageField.VALUE)) == record


def test_v2_evolution_registers_new_id_and_both_ids_resolve() -> None:
    """A compatible v2 (new field with a default) registers as version 2 with a new id, and both wire ids resolve to their own writer schema."""
    require_registry(REGISTRY_URL)
    topic = unique_topic()
    subject = f"{topic}-value"
    ctx = SerializationContext(topic, MessageField.VALUE)

    message_v1 = serialize(PAYMENT_V1, topic, {"id": "p-1", "amount": 1.0})
    assert new_client().test_compatibility(subject, Schema(json.dumps(PAYMENT_V2), "AVRO"))
    message_v2 = serialize(PAYMENT_V2, topic, {"id": "p-2", "amount": 2.0, "currency": "EUR"})

    _, id_v1 = wire_header(message_v1)
    _, id_v2 = wire_header(message_v2)
    assert id_v1 != id_v2
    assert registered_schema(id_v1) == PAYMENT_V1
    assert registered_schema(id_v2) == PAYMENT_V2
    assert new_client().get_versions(subject) == [1, 2]

    reader_v2 = AvroDeserializer(new_client(), json.dumps(PAYMENT_V2), conf=TOPIC_SUBJECTS)
    assert reader_v2(message_v1, ctx) == {"id": "p-1", "amount": 1.0, "currency": "USD"}
    assert reader_v2(message_v2, ctx) == {"id": "p-2", "amount": 2.0, "currency": "EUR"}


def test_same_schema_under_two_subjects_shares_one_id() -> None:
    """Registering an identical schema under a second subject returns the id it already has, as Confluent's registry does."""
    require_registry(REGISTRY_URL)
    topic = unique_topic()
    client = new_client()
    schema = Schema(json.dumps(PAYMENT_V1), "AVRO")

    first = client.register_schema(f"{topic}-value", schema)
    second = new_client().register_schema(f"{topic}-copy-value", schema)

    assert first == second


def test_incompatible_change_is_rejected_by_default() -> None:
    """Without a subject-level setting, a backward-incompatible v2 is refused with HTTP 409 (default compatibility BACKWARD)."""
    require_registry(REGISTRY_URL)
    topic = unique_topic()
    subject = f"{topic}-value"
    serialize(PAYMENT_V1, topic, {"id": "p-1", "amount": 1.0})
    incompatible = copy.deepcopy(PAYMENT_V1)
    incompatible["fields"][1] = {"name": "amount", "type": "string"}

    assert new_client().get_compatibility() == "BACKWARD"
    with pytest.raises(SchemaRegistryError) as excinfo:
        new_client().register_schema(subject, Schema(json.dumps(incompatible), "AVRO"))

    assert excinfo.value.http_status_code == 409
    assert new_client().get_versions(subject) == [1]
