"""Helpers for the Avro view tests: schemas, serializers against the real registry, stores."""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer

from statestore import Config, SchemaRegistryConfig, StoreConfig, ViewConfig

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
REGISTRY_URL = os.environ.get("STATESTORE_TEST_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7")

PATIENT_V1: dict[str, Any] = json.loads((SCHEMAS / "patient.v1.avsc").read_text())
PATIENT_V2: dict[str, Any] = json.loads((SCHEMAS / "patient.avsc").read_text())
# v3: adds an optional field (compatible with v2 readers, which ignore it).
PATIENT_V3: dict[str, Any] = copy.deepcopy(PATIENT_V2)
PATIENT_V3["fields"].append({"name": "attending", "type": ["null", "string"], "default": None})


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


def without(schema: dict[str, Any], field: str) -> dict[str, Any]:
    """*schema* with *field* removed."""
    out = copy.deepcopy(schema)
    out["fields"] = [f for f in out["fields"] if f["name"] != field]
    return out


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


def store_config(path: Path, bootstrap: str, url: str, *views: ViewConfig) -> Config:
    return Config(
        kafka={"bootstrap.servers": bootstrap},
        schema_registry=SchemaRegistryConfig(url=url, timeout_s=5.0),
        store=StoreConfig(path=path),
        views=views,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *predicate* until true; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
