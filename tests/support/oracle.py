"""The oracle: a topic read with a plain consumer (no statestore code) and reduced to the
view it must give — the last value per key in log order, a tombstone removing the key.
Every test that checks a view's contents compares it with this."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from .kafka import BOOTSTRAP


@dataclass(frozen=True, slots=True)
class LogRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_log(topic: str, bootstrap: str = BOOTSTRAP, timeout: float = 180.0) -> list[LogRecord]:
    """Every record of *topic* from the log start up to the high watermarks of now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"statestore-oracle-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        }
    )
    try:
        parts = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in parts
        }
        highs = {p: high for p, (_, high) in marks.items()}
        # From the log start offset: records deleted before it are not read.
        wanted = {p for p, (low, high) in marks.items() if high > low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(wanted)])
        out: list[LogRecord] = []
        deadline = time.monotonic() + timeout
        while wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} did not reach {highs} in {timeout}s")
            for m in consumer.consume(10_000, 0.5):
                if m.error() is not None:
                    raise AssertionError(f"oracle consumer error on {topic}: {m.error()}")
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None
                if o < highs[p]:
                    out.append(LogRecord(p, o, m.key(), m.value()))
                if o + 1 >= highs[p]:
                    wanted.discard(p)
        return out
    finally:
        consumer.close()


def reduce_log(
    records: Iterable[LogRecord],
    is_good: Callable[[LogRecord], bool] = lambda r: True,
    *,
    below: dict[int, int] | None = None,
) -> dict[bytes, LogRecord]:
    """The last good record per key in log order (a tombstone removes the key); only the
    records below *below* (partition -> position; a partition not named: none) when given."""
    out: dict[bytes, LogRecord] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is None or not is_good(r):
            continue
        if below is not None and r.offset >= below.get(r.partition, 0):
            continue
        if r.value is None:
            out.pop(r.key, None)
        else:
            out[r.key] = r
    return out


def latest(records: Iterable[LogRecord], below: dict[int, int] | None = None) -> dict[str, bytes]:
    """:func:`reduce_log` as text keys and raw values: ``{key: value}``."""
    return {
        k.decode(): r.value
        for k, r in reduce_log(records, below=below).items()
        if r.value is not None
    }
