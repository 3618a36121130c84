"""Helpers for the Avro view tests: schemas, serializers against the real registry, stores."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer

# The patient schemas are shared by every suite; the Avro tests import them from here too.
from tests.support.schemas import PATIENT_V1 as PATIENT_V1
from tests.support.schemas import PATIENT_V2 as PATIENT_V2
from tests.support.schemas import PATIENT_V3 as PATIENT_V3
from tests.support.schemas import SCHEMAS as SCHEMAS
from tests.support.schemas import without as without


def patient(name: str, status: str = "admitted", **extra: Any) -> dict[str, Any]:
    """A patient datum for PATIENT_V1 (pass ward=... for v2, attending=... for v3)."""
    return {
        "name": name,
        "admitted_at": "2025-03-01T07:00:00Z",
        "status": status,
        "allergies": [],
        "updated_at": "2025-03-02T09:00:00Z",
        **extra,
    }


def write_schema(path: Path, schema: dict[str, Any]) -> Path:
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


class Avro:
    """Serialises with confluent-kafka's AvroSerializer, auto-registering in the registry."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = SchemaRegistryClient({"url": url, "timeout": 30})

    def serializer(self, schema: dict[str, Any]) -> AvroSerializer:
        # <topic>-value without a topic-association lookup: Apicurio's ccompat API has no
        # such endpoint (404, and now and then no answer at all).
        return AvroSerializer(
            self.client,
            json.dumps(schema),
            conf={"subject.name.strategy": topic_subject_name_strategy},
        )

    def value(self, topic: str, schema: dict[str, Any], datum: Any) -> bytes:
        """The framed value (magic byte 0 + schema id + body) a producer would send."""
        out = self.serializer(schema)(datum, SerializationContext(topic, MessageField.VALUE))
        assert out is not None
        return bytes(out)

    def key(self, topic: str, schema: dict[str, Any], datum: Any) -> bytes:
        out = self.serializer(schema)(datum, SerializationContext(topic, MessageField.KEY))
        assert out is not None
        return bytes(out)

    def schema_id(self, framed: bytes) -> int:
        magic, schema_id = struct.unpack(">bI", framed[:5])
        assert magic == 0
        return int(schema_id)


def body(schema: dict[str, Any], datum: Any) -> bytes:
    """The bare Avro binary of *datum* (no framing)."""
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), datum)
    return buf.getvalue()


def frame(schema_id: int, payload: bytes) -> bytes:
    """Magic byte 0 + the 4-byte schema id + *payload*."""
    return struct.pack(">bI", 0, schema_id) + payload
