"""Helpers for the Protobuf and JSON Schema view tests: message classes compiled with protoc,
confluent-kafka's own serializers against the real registry, and its own deserializers as
the independent decoding a view is compared with."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avro_support import Avro
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pool, json_format, message_factory

from statestore.protobuf import compile_proto


@dataclass(frozen=True)
class Kit:
    """What a registry-format test works with: a directory, topics, a producer, stores,
    and confluent-kafka's serializers (Protobuf, JSON Schema, Avro) against the shared registry."""

    tmp: Path
    topic: Callable[..., str]
    produce: Callable[..., object]
    open_store: Callable[..., Any]
    protobuf: Protobuf
    json_schema: JsonSchema
    avro: Avro


SERDE_CONF: dict[str, Any] = {
    "subject.name.strategy": topic_subject_name_strategy,
}


def compile_messages(files: dict[str, str]) -> dict[str, Any]:
    """Message classes (by full name) of the .proto *files* (name -> text), compiled by
    protoc as the library compiles a registry's schemas, into a pool of their own, so
    versions of one message can live side by side."""
    compiled = compile_proto(files, list(files), "the test's .proto files")
    pool = descriptor_pool.DescriptorPool()
    classes: dict[str, Any] = {}
    for fdp in compiled:  # protoc lists imports before the files that import them
        pool.Add(fdp)
    for fdp in compiled:
        todo = [(f"{fdp.package}.{m.name}" if fdp.package else m.name, m) for m in fdp.message_type]
        while todo:
            full, m = todo.pop()
            classes[full] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
            todo.extend((f"{full}.{n.name}", n) for n in m.nested_type)
    return classes


class Protobuf:
    """confluent-kafka's ProtobufSerializer, auto-registering under ``<topic>-value``."""

    def __init__(self, url: str) -> None:
        self.client = SchemaRegistryClient({"url": url, "timeout": 30})
        self._serializers: dict[Any, ProtobufSerializer] = {}

    def value(self, topic: str, msg: Any, field: str = MessageField.VALUE) -> bytes:
        cls = type(msg)
        ser = self._serializers.get(cls)
        if ser is None:
            ser = ProtobufSerializer(
                cls, self.client, {**SERDE_CONF, "use.deprecated.format": False}
            )
            self._serializers[cls] = ser
        out = ser(msg, SerializationContext(topic, field))
        assert out is not None
        return bytes(out)

    def key(self, topic: str, msg: Any) -> bytes:
        return self.value(topic, msg, MessageField.KEY)


class JsonSchema:
    """confluent-kafka's JSONSerializer (validating), auto-registering under ``<topic>-value``."""

    def __init__(self, url: str) -> None:
        self.client = SchemaRegistryClient({"url": url, "timeout": 30})

    def value(self, topic: str, schema: dict[str, Any], datum: Any) -> bytes:
        ser = JSONSerializer(json.dumps(schema), self.client, conf=SERDE_CONF)
        out = ser(datum, SerializationContext(topic, MessageField.VALUE))
        assert out is not None
        return bytes(out)


def schema_id(framed: bytes) -> int:
    magic, sid = struct.unpack(">bI", framed[:5])
    assert magic == 0
    return int(sid)


def frame(sid: int, rest: bytes) -> bytes:
    return struct.pack(">bI", 0, sid) + rest


def latest_by_key(bootstrap: str, topic: str, decode: Any) -> dict[str, Any]:
    """Every record of *topic* decoded by *decode(value, topic)*, the last per key (tombstones
    drop the key): what a view of the topic must hold."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "statestore-tests-independent",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    consumer.subscribe([topic])
    left = set(meta.partitions)
    out: dict[str, Any] = {}
    idle = 0
    try:
        while left:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                assert idle < 60, "the topic did not reach its end within a minute"
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    left.discard(msg.partition())
                    continue
                raise AssertionError(str(msg.error()))
            key = msg.key().decode()
            if msg.value() is None:
                out.pop(key, None)
            else:
                out[key] = decode(msg.value(), topic)
    finally:
        consumer.close()
    return out


def protobuf_decoder(cls: Any) -> Any:
    """Decode framed values as confluent-kafka does with the message class *cls* (frame and
    message indexes read by its deserializer), rendered in the proto3 JSON mapping.

    No registry client: confluent-kafka asks the registry for writer schemas in the
    ``serialized`` format, which Apicurio's Confluent API cannot give for descriptors
    registered in base64 (HTTP 500).
    """
    des = ProtobufDeserializer(cls, {"use.deprecated.format": False}, None)

    def decode(value: bytes, topic: str) -> Any:
        msg = des(value, SerializationContext(topic, MessageField.VALUE))
        return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)

    return decode


def json_decoder(url: str) -> Any:
    """Decode framed JSON Schema values as confluent-kafka does (validating them)."""
    client = SchemaRegistryClient({"url": url, "timeout": 30})
    des = JSONDeserializer(None, schema_registry_client=client)

    def decode(value: bytes, topic: str) -> Any:
        return des(value, SerializationContext(topic, MessageField.VALUE))

    return decode
