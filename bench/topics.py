"""Bench topics: created once with known contents and reused while their counts still match.

A topic of N records holds N // 5 keys written 5 times each (round after round, so a
key's versions are spread over the log); in the last round every 50th key gets a
tombstone instead of a value. JSON values are ~200 bytes; the Avro topic holds the
same entities written with confluent-kafka's AvroSerializer against the local registry;
the Protobuf topic holds Shipment messages of the same keys (bench/shipments.py).
Topics are compacted but keep everything in one (active) segment, which the log
cleaner never touches, so the record count stays exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from . import shipments
from .common import BOOTSTRAP, REGISTRY, log

PARTITIONS = 12
UPDATES_PER_KEY = 5
TOMBSTONE_EVERY = 50
STATUSES = ("created", "picked_up", "in_transit", "out_for_delivery", "delivered")

# The value schema of the Avro topic (a file, as Avro projects keep their schemas).
AVRO_SCHEMA = (Path(__file__).parent / "delivery.avsc").read_text(encoding="utf-8")

_NOTE = "x" * 64


@dataclass(frozen=True)
class Topic:
    name: str
    records: int
    value: str  # "json" | "avro" | "protobuf"

    @property
    def keys(self) -> int:
        return self.records // UPDATES_PER_KEY

    @property
    def live_keys(self) -> int:
        """Keys present once the topic is applied (the tombstoned ones are gone)."""
        return self.keys - len(range(0, self.keys, TOMBSTONE_EVERY))


def key_of(i: int) -> bytes:
    return b"key-%08d" % i


def entity(i: int, seq: int, ts: int) -> dict[str, Any]:
    return {
        "id": f"key-{i:08d}",
        "seq": seq,
        "status": STATUSES[(i + seq) % len(STATUSES)],
        "ts": ts,
        "carrier": f"carrier-{i % 37:02d}",
        "city": f"city-{i % 997:03d}",
        "weight_g": 100 + (i * 7919 + seq) % 30000,
        "note": _NOTE,
    }


def label(records: int) -> str:
    if records % 1_000_000 == 0:
        return f"{records // 1_000_000}m"
    return f"{records // 1000}k"


def topic(records: int, value: str = "json") -> Topic:
    return Topic(f"bench.{value}.{label(records)}", records, value)


def _admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": BOOTSTRAP})


def count(name: str) -> int | None:
    """Records in *name* (sum of high minus low watermarks); None when it does not exist."""
    md = _admin().list_topics(timeout=10)
    tmd = md.topics.get(name)
    if tmd is None or tmd.error is not None:
        return None
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "statestore.bench.probe"})
    try:
        total = 0
        for p in tmd.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            total += high - low
        if len(tmd.partitions) != PARTITIONS:
            return -1
        return total
    finally:
        consumer.close()


def recreate(name: str, partitions: int = PARTITIONS, **extra: str) -> None:
    admin = _admin()
    if name in admin.list_topics(timeout=10).topics:
        admin.delete_topics([name])[name].result(timeout=30)
        for _ in range(100):
            if name not in admin.list_topics(timeout=10).topics:
                break
            time.sleep(0.2)
    conf = {
        "cleanup.policy": "compact",
        "segment.bytes": str(1024**3),
        "min.cleanable.dirty.ratio": "0.99",
    }
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    for attempt in range(50):
        try:
            admin.create_topics([NewTopic(name, partitions, 1, config=conf)])[name].result(
                timeout=30
            )
            return
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.2)


def producer(**extra: Any) -> Producer:
    conf = {
        "bootstrap.servers": BOOTSTRAP,
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "acks": 1,
        "enable.idempotence": False,
    }
    conf.update(extra)
    return Producer(conf)


def _avro_serializer() -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroSerializer

    client = SchemaRegistryClient({"url": REGISTRY, "timeout": 10})
    # <topic>-value without a topic-association lookup (Apicurio lacks that endpoint)
    return AvroSerializer(
        client, AVRO_SCHEMA, conf={"subject.name.strategy": topic_subject_name_strategy}
    )


def values(t: Topic) -> Callable[[int, int, int], bytes]:
    """The value of key *i* in round *seq* at *ts* (epoch ms), in *t*'s format; a registry
    format registers its schema under the topic's ``<topic>-value`` subject."""
    if t.value == "json":
        return lambda i, seq, ts: orjson.dumps(entity(i, seq, ts))
    if t.value == "protobuf":
        return shipments.Encoder(t.name)
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = _avro_serializer()
    ctx = SerializationContext(t.name, MessageField.VALUE)
    return lambda i, seq, ts: bytes(serialize(entity(i, seq, ts), ctx))


def fill(t: Topic) -> None:
    """(Re)create *t* and produce its records."""
    recreate(t.name)
    p = producer()
    value_of = values(t)
    keys = t.keys
    started = time.monotonic()
    produce = p.produce
    poll = p.poll
    ts = int(time.time() * 1000)
    sent = 0
    for seq in range(UPDATES_PER_KEY):
        last = seq == UPDATES_PER_KEY - 1
        for i in range(keys):
            value = None if last and i % TOMBSTONE_EVERY == 0 else value_of(i, seq, ts + sent)
            while True:
                try:
                    produce(t.name, value, key_of(i))
                    break
                except BufferError:
                    poll(0.05)
            sent += 1
            if sent % 10000 == 0:
                poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} records of {t.name} were not delivered")
    log(f"produced {sent:,} records into {t.name} in {time.monotonic() - started:.1f}s")


def _schema_known(t: Topic) -> bool:
    """Whether the writer schema of *t*'s first record is the benchmark's schema in the
    registry (which forgets its schemas when it restarts, and then gives their ids to
    whatever is registered first: the topic must then be filled again)."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "statestore.bench.schema"})
    try:
        c.assign([TopicPartition(t.name, 0, 0)])
        msg = c.consume(1, 10.0)
    finally:
        c.close()
    value = msg[0].value() if msg and msg[0].error() is None else None
    if not value:
        return False
    schema_id = int.from_bytes(value[1:5], "big")
    if t.value == "protobuf":
        # magic byte 0, the id, message indexes [0] (Shipment, the file's only message)
        return value[:1] == b"\x00" and value[5:6] == b"\x00" and shipments.registered(schema_id)
    return _avro_registered(schema_id)


def _avro_registered(schema_id: int) -> bool:
    """Whether the registry holds the benchmark's Avro schema under *schema_id*."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{REGISTRY}/schemas/ids/{schema_id}", timeout=10) as r:
            registered = json.loads(json.loads(r.read())["schema"])
    except (urllib.error.URLError, ValueError, KeyError):
        return False
    ours = json.loads(AVRO_SCHEMA)
    fields = (
        [f.get("name") for f in registered.get("fields", [])]
        if isinstance(registered, dict)
        else []
    )
    return registered.get("name") == ours["name"] and fields == [f["name"] for f in ours["fields"]]


def ensure(t: Topic) -> bool:
    """Make sure *t* holds exactly its records; True when it had to be (re)filled."""
    have = count(t.name)
    if have == t.records and (t.value == "json" or _schema_known(t)):
        log(f"reusing {t.name} ({have:,} records)")
        return False
    log(f"filling {t.name} (found {have if have is not None else 'no topic'})")
    fill(t)
    have = count(t.name)
    if have != t.records:
        raise RuntimeError(f"{t.name} holds {have} records after filling, want {t.records}")
    return True


def sizes(t: Topic) -> dict[str, Any]:
    """Average value size of *t*, from a sample (bytes)."""
    value_of = values(t)
    sample = [len(value_of(i, 1, 1_732_000_000_000)) for i in range(0, 5000, 7)]
    return {"value_bytes_avg": round(sum(sample) / len(sample), 1)}
