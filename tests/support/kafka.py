"""The local Kafka broker: its address, the check that it answers, throwaway topics, producing.

Every suite reaches the broker through here, so ``STATESTORE_TEST_BOOTSTRAP`` moves all of
them at once. Topics are compacted unless told otherwise and uniquely named, so runs can
share the broker; :class:`Topics` deletes what it created.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

BOOTSTRAP = os.environ.get("STATESTORE_TEST_BOOTSTRAP", "127.0.0.1:9092")

# (partition, key, value): see :func:`encode` for how a value (and a key) is sent; a None
# value is a tombstone.
Record = tuple[int, str | bytes | None, Any]
# A record with its timestamp (ms since the epoch; None: the producer's clock).
TimedRecord = tuple[int, str | bytes | None, Any, int | None]


def require_broker(bootstrap: str = BOOTSTRAP, how: str = "run `make services`") -> AdminClient:
    """An admin client of the broker at *bootstrap*; fails the test (never skips) when no
    broker answers there."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.list_topics(timeout=15)
    except KafkaException as exc:
        pytest.fail(f"no Kafka broker answers at {bootstrap} ({exc}); {how}")
    return admin


def encode(value: Any) -> bytes | None:
    """A record value as sent: bytes and None as they are, text as UTF-8, the rest as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


class Topics:
    """Creates uniquely named topics (compacted by default) on one broker, produces to them,
    and deletes them again with :meth:`close`."""

    def __init__(self, bootstrap: str = BOOTSTRAP, *, prefix: str = "test") -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.created: list[str] = []

    def create(
        self,
        partitions: int = 3,
        records: Sequence[Record] = (),
        *,
        prefix: str | None = None,
        **config: str,
    ) -> str:
        """A new topic named ``<prefix>-<random>``, holding *records* (config keys may use
        ``_`` for ``.``: ``cleanup_policy="delete"``)."""
        name = self.name(prefix)
        self.create_named(name, partitions, **config)
        if records:
            produce(name, records, bootstrap=self.bootstrap)
        return name

    def name(self, prefix: str | None = None) -> str:
        """A unique topic name, not created (for a topic a test makes later)."""
        return f"{prefix or self.prefix}-{uuid.uuid4().hex[:12]}"

    def create_named(self, name: str, partitions: int = 3, **config: str) -> None:
        conf = {"cleanup.policy": "compact"}
        conf.update({k.replace("_", "."): v for k, v in config.items()})
        # A broker started moments ago may not take CreateTopics at once (its controller
        # is still settling): ask again rather than fail the test on set-up.
        for attempt in range(4):
            future = self.admin.create_topics([NewTopic(name, partitions, 1, config=conf)])[name]
            try:
                future.result(30)
                break
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    break
                if attempt == 3:
                    raise
            except TimeoutError:
                if attempt == 3:
                    raise
        self.created.append(name)

    def produce(self, topic: str, records: Sequence[Record]) -> list[tuple[int, int]]:
        return produce(topic, records, bootstrap=self.bootstrap)

    def delete(self, names: Iterable[str]) -> None:
        """Delete *names* (gone already is fine)."""
        names = list(names)
        if not names:
            return
        with contextlib.suppress(KafkaException):
            for future in self.admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    future.result(30)

    def close(self) -> None:
        """Delete every topic this object created."""
        self.delete(self.created)
        self.created.clear()


def produce(
    topic: str, records: Iterable[Record | TimedRecord], *, bootstrap: str = BOOTSTRAP
) -> list[tuple[int, int]]:
    """Produce *records* one at a time, so the log holds them in the order given; their
    (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    out: list[tuple[int, int]] = []

    def report(err: Any, msg: Any) -> None:
        assert err is None, f"delivery to {topic} failed: {err}"
        out.append((msg.partition(), msg.offset()))

    for record in records:
        partition, key, value = record[:3]
        kwargs: dict[str, Any] = {"partition": partition, "on_delivery": report}
        if len(record) == 4 and record[3] is not None:
            kwargs["timestamp"] = record[3]
        producer.produce(topic, key=encode(key), value=encode(value), **kwargs)
        assert producer.flush(30) == 0, f"a record to {topic} was not delivered"
    return out


def fast_producer(bootstrap: str = BOOTSTRAP, **conf: Any) -> Producer:
    """A producer tuned for throughput: batches of up to 10k records, lz4, 50 ms linger."""
    base: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 50,
        "compression.type": "lz4",
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "enable.idempotence": True,
        # Connection failures while a broker is stopped on purpose are expected; delivery
        # errors still reach the callbacks.
        "log_level": 2,
    }
    base.update(conf)
    return Producer(base)


def produce_all(
    producer: Producer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    on_delivery: Callable[[Any, Any], None] | None = None,
    timeout: float = 120,
) -> int:
    """Produce (key, value) *records* in bulk and wait for all of them; fails on any delivery
    error. *on_delivery* sees each delivered record."""
    errors: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        elif on_delivery is not None:
            on_delivery(err, msg)

    n = 0
    for key, value in records:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
    left = producer.flush(timeout)
    if errors or left:
        raise AssertionError(f"produce to {topic} failed: {errors[:3] or f'{left} undelivered'}")
    return n


def high_watermarks(topic: str, bootstrap: str = BOOTSTRAP) -> dict[int, int]:
    """partition -> the offset the next record of *topic* will get."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "statestore-test-marks"})
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in sorted(md.partitions)
        }
    finally:
        consumer.close()
