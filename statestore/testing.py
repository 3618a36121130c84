"""An in-process topic log for tests: the ingest loop driven without a broker.

:class:`MemoryKafka` implements :class:`statestore.source.TopicClient` over
:class:`MemoryTopic` logs kept in memory. Give it to a store,
``StateStore(config, client=kafka)``, or to an ``Ingestor``; produce with
``kafka.topic(name).produce(key, value)`` and the views follow, in the same
process, at memory speed.

What a broker does that the ingest loop must cope with can be made to happen:

- offsets without a record below the high watermark: ``compact()`` (the cleaner
  keeping the newest record per key), ``marker()`` (a transaction marker, which a
  reader passes over as librdkafka does) and ``gap()`` (offsets a reader never
  hears of, such as aborted records at the end of a log);
- ``delete_records()`` (the log start moves), ``add_partitions()``, and
  ``MemoryKafka.delete_topic`` / ``create_topic`` (a topic recreated under its
  name gets a new id);
- ``MemoryKafka.fail(operation, error, times)``: the next calls of a request
  (``"partitions"``, ``"watermarks"``, ``"poll"``, ...) raise *error*, as the
  Kafka client raises :class:`~statestore.errors.KafkaError` when a broker is away.

A store over it runs no bulk load (``settings()`` is empty: no worker process can
reach the log); a view's first bootstrap is applied batch by batch.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import OffsetOutOfRangeError, TopicMissingError
from .records import HeaderHook, Record
from .source import RangeReader, Source, TopicClient

__all__ = ["LogRecord", "MemoryKafka", "MemoryMessage", "MemoryTopic", "Operation"]

Operation = Literal[
    "partitions",
    "watermarks",
    "end_offsets",
    "next_record_offset",
    "topic_id",
    "topic_config",
    "poll",
]
Headers = tuple[tuple[str, bytes], ...]
Data = bytes | str | None

# What a topic created without a config says of itself (Kafka's defaults, compacted).
DEFAULT_CONFIG = {"cleanup.policy": "compact", "delete.retention.ms": "86400000"}


def _bytes(x: Data) -> bytes | None:
    return x.encode() if isinstance(x, str) else x


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of a partition's log."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()


@dataclass(slots=True)
class _Log:
    """One partition: records by offset, the offsets a reader passes over, the watermarks."""

    offsets: list[int] = field(default_factory=list)
    records: dict[int, LogRecord] = field(default_factory=dict)
    markers: set[int] = field(default_factory=set)
    low: int = 0
    high: int = 0

    def first_at(self, offset: int) -> int | None:
        """Offset of the first record at or after *offset*; None when there is none."""
        i = bisect.bisect_left(self.offsets, offset)
        return self.offsets[i] if i < len(self.offsets) else None

    def keep(self, offsets: Iterable[int]) -> None:
        kept = set(offsets)
        self.offsets = [o for o in self.offsets if o in kept]
        self.records = {o: self.records[o] for o in self.offsets}


class MemoryTopic:
    """One topic's partitions; every change wakes the readers waiting for records."""

    def __init__(
        self, kafka: MemoryKafka, name: str, partitions: int, config: dict[str, str]
    ) -> None:
        self._kafka = kafka
        self.name = name
        # None: the "broker" gives no topic id (the identity check then has nothing to go on).
        self.id: str | None = uuid.uuid4().hex
        self.config = dict(config)
        self.logs = [_Log() for _ in range(partitions)]

    @property
    def partitions(self) -> int:
        return len(self.logs)

    def produce(
        self,
        key: Data,
        value: Data,
        *,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        timestamp: int | None = None,
    ) -> tuple[int, int]:
        """Append one record (a None value is a tombstone); its (partition, offset).

        Without *partition*, the key's CRC-32 picks one, so a key stays in its partition.
        """
        k = _bytes(key)
        if partition is None:
            partition = zlib.crc32(k or b"") % len(self.logs)
        ts = int(time.time() * 1000) if timestamp is None else timestamp
        with self._kafka.changed:
            log = self.logs[partition]
            offset = log.high
            log.offsets.append(offset)
            log.records[offset] = LogRecord(offset, k, _bytes(value), ts, tuple(headers))
            log.high += 1
            self._kafka.changed.notify_all()
        return partition, offset

    def produce_many(
        self, records: Iterable[tuple[Data, Data]], *, partition: int | None = None
    ) -> list[tuple[int, int]]:
        """Append (key, value) records in order; their (partition, offset)s."""
        return [self.produce(k, v, partition=partition) for k, v in records]

    def marker(self, partition: int = 0, count: int = 1) -> None:
        """Append *count* transaction markers: offsets a reader passes over when it reaches them."""
        with self._kafka.changed:
            log = self.logs[partition]
            log.markers.update(range(log.high, log.high + count))
            log.high += count
            self._kafka.changed.notify_all()

    def gap(self, partition: int = 0, count: int = 1) -> None:
        """Move the high watermark *count* offsets on with no record a reader ever sees there
        (aborted records, or a tail the cleaner emptied): only a probe tells them apart."""
        with self._kafka.changed:
            self.logs[partition].high += count
            self._kafka.changed.notify_all()

    def compact(self, partition: int | None = None, *, tombstones: bool = False) -> None:
        """Keep only the newest record of each key (and drop tombstones when *tombstones*),
        as the log cleaner does; the watermarks stay."""
        with self._kafka.changed:
            for p in range(len(self.logs)) if partition is None else [partition]:
                log = self.logs[p]
                newest: dict[bytes | None, int] = {}
                for offset in log.offsets:
                    newest[log.records[offset].key] = offset
                log.keep(
                    o for o in newest.values() if not (tombstones and log.records[o].value is None)
                )

    def delete_records(self, partition: int, before: int) -> None:
        """Move the log start to *before*: the records below it are gone."""
        with self._kafka.changed:
            log = self.logs[partition]
            log.low = max(log.low, min(before, log.high))
            log.keep(o for o in log.offsets if o >= log.low)

    def add_partitions(self, count: int = 1) -> None:
        with self._kafka.changed:
            self.logs.extend(_Log() for _ in range(count))
            self._kafka.changed.notify_all()

    def watermarks(self, partition: int) -> tuple[int, int]:
        log = self.logs[partition]
        return log.low, log.high

    def records(self, partition: int) -> list[LogRecord]:
        """The records of one partition now, in offset order."""
        log = self.logs[partition]
        return [log.records[o] for o in log.offsets]

    def latest(self) -> dict[bytes, bytes]:
        """The reduction of the log: the last value of each key, tombstones removing keys.

        A key written to several partitions takes its newest record by timestamp, ties
        going to the higher partition (the view's rule for keys that moved partitions).
        """
        newest: dict[bytes, tuple[int, int, bytes | None]] = {}
        for p in range(len(self.logs)):
            last: dict[bytes, LogRecord] = {r.key: r for r in self.records(p) if r.key is not None}
            for key, r in last.items():
                seen = newest.get(key)
                if seen is None or (r.timestamp, p) > seen[:2]:
                    newest[key] = (r.timestamp, p, r.value)
        return {k: v for k, (_, _, v) in newest.items() if v is not None}


class MemoryKafka(TopicClient):
    """A TopicClient over in-memory topics, with injectable request failures."""

    def __init__(self) -> None:
        self.topics: dict[str, MemoryTopic] = {}
        # Taken by every change and read; readers wait on it for new records.
        self.changed = threading.Condition(threading.RLock())
        self._faults: dict[str, list[tuple[Exception, int]]] = {}
        # Requests made, by operation (how often the loop asked, e.g. for hole probes).
        self.calls: dict[str, int] = {}

    # -- the cluster, as a test changes it ---------------------------------------------

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None
    ) -> MemoryTopic:
        with self.changed:
            topic = MemoryTopic(self, name, partitions, config or DEFAULT_CONFIG)
            self.topics[name] = topic
            self.changed.notify_all()
            return topic

    def delete_topic(self, name: str) -> None:
        with self.changed:
            del self.topics[name]
            self.changed.notify_all()

    def topic(self, name: str) -> MemoryTopic:
        """The topic *name*; TopicMissingError when there is none."""
        topic = self.topics.get(name)
        if topic is None:
            raise TopicMissingError(f"topic {name!r} does not exist (in memory)")
        return topic

    def fail(self, operation: Operation, error: Exception, times: int = 1) -> None:
        """Make the next *times* calls of *operation* raise *error* (after those queued)."""
        with self.changed:
            self._faults.setdefault(operation, []).append((error, times))

    def _request(self, operation: Operation) -> None:
        with self.changed:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            queued = self._faults.get(operation)
            if not queued:
                return
            error, times = queued[0]
            if times <= 1:
                queued.pop(0)
            else:
                queued[0] = (error, times - 1)
        raise error

    # -- TopicClient ---------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {}

    def partitions(self, topic: str, timeout: float | None = None) -> list[int]:
        self._request("partitions")
        with self.changed:
            return list(range(self.topic(topic).partitions))

    def watermarks(
        self, topic: str, partition: int, timeout: float | None = None
    ) -> tuple[int, int]:
        self._request("watermarks")
        with self.changed:
            return self.topic(topic).watermarks(partition)

    def end_offsets(self, topic: str, timeout: float | None = None) -> dict[int, int]:
        self._request("end_offsets")
        with self.changed:
            return {p: log.high for p, log in enumerate(self.topic(topic).logs)}

    def next_record_offset(
        self, topic: str, partition: int, start: int, timeout: float = 3.0
    ) -> int | None:
        self._request("next_record_offset")
        with self.changed:
            return self.topic(topic).logs[partition].first_at(start)

    def topic_id(self, topic: str) -> str | None:
        try:
            self._request("topic_id")
        except Exception:
            return None  # as the Kafka client: best effort, unknown now
        with self.changed:
            known = self.topics.get(topic)
            return known.id if known is not None else None

    def topic_config(self, topic: str) -> dict[str, str]:
        self._request("topic_config")
        with self.changed:
            return dict(self.topic(topic).config)

    def source(self, name: str, topic: str, header_hook: HeaderHook | None = None) -> MemorySource:
        return MemorySource(self, topic, header_hook)

    def range_reader(self, name: str, topic: str) -> MemoryRangeReader:
        return MemoryRangeReader(self, topic)

    def close(self) -> None:
        return None

    # -- reading -------------------------------------------------------------------------

    def _log(self, topic: str, partition: int) -> _Log:
        found = self.topics.get(topic)
        if found is None or partition >= len(found.logs):
            raise TopicMissingError(f"topic {topic!r} disappeared (in memory)")
        return found.logs[partition]

    def _read(
        self, topic: str, positions: dict[int, int], order: list[int], max_records: int
    ) -> list[tuple[int, LogRecord]]:
        """Records from *positions* (moved on past what is read and the markers reached)."""
        out: list[tuple[int, LogRecord]] = []
        for p in order:
            log = self._log(topic, p)
            pos = positions[p]
            if pos < log.low or pos > log.high:
                raise OffsetOutOfRangeError(
                    topic, p, f"offset {pos} is outside [{log.low}, {log.high}] (in memory)"
                )
            while len(out) < max_records:
                while pos in log.markers:
                    pos += 1
                offset = log.first_at(pos)
                if offset is None or offset >= log.high:
                    break
                out.append((p, log.records[offset]))
                pos = offset + 1
            while pos in log.markers:
                pos += 1
            positions[p] = pos
        return out


class MemorySource(Source):
    """A Source over a MemoryKafka topic: what a consumer with assigned partitions sees."""

    def __init__(self, kafka: MemoryKafka, topic: str, header_hook: HeaderHook | None) -> None:
        self.topic = topic
        self.assigned: set[int] = set()
        self._kafka = kafka
        self._hook = header_hook
        self._positions: dict[int, int] = {}
        self._high: dict[int, int] = {}
        self._turn = itertools.count()
        self.closed = False

    def _start(self, partition: int, offset: int) -> int:
        return offset if offset > 0 else self._kafka._log(self.topic, partition).low

    def assign(self, positions: dict[int, int]) -> None:
        with self._kafka.changed:
            for p, o in sorted(positions.items()):
                if p not in self.assigned:
                    self._positions[p] = self._start(p, o)
                    self.assigned.add(p)

    def seek(self, partition: int, offset: int) -> None:
        with self._kafka.changed:
            self._positions[partition] = self._start(partition, offset)

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        self._kafka._request("poll")
        deadline = time.monotonic() + timeout
        with self._kafka.changed:
            while True:
                parts = sorted(self.assigned)
                if parts:
                    # Each poll starts at another partition, as fetches interleave.
                    turn = next(self._turn) % len(parts)
                    parts = parts[turn:] + parts[:turn]
                read = self._kafka._read(self.topic, self._positions, parts, max_records)
                for p in self.assigned:
                    self._high[p] = self._kafka._log(self.topic, p).high
                left = deadline - time.monotonic()
                if read or left <= 0:
                    break
                self._kafka.changed.wait(left)
        hook = self._hook
        out: list[Record] = []
        for p, r in read:
            key, value = r.key, r.value
            if hook is not None and r.headers:
                key, value = hook(list(r.headers), key, value)
            out.append((p, r.offset, r.timestamp, key, value))
        return out

    def positions(self) -> dict[int, int]:
        with self._kafka.changed:
            return {p: self._positions[p] for p in self.assigned}

    def cached_high(self) -> dict[int, int]:
        with self._kafka.changed:
            return dict(self._high)

    def close(self) -> None:
        self.closed = True


class MemoryMessage:
    """A record as the Kafka client's message object shows it (what a bulk load reads)."""

    __slots__ = ("_p", "_r")

    def __init__(self, partition: int, record: LogRecord) -> None:
        self._p = partition
        self._r = record

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._r.offset

    def key(self) -> bytes | None:
        return self._r.key

    def value(self) -> bytes | None:
        return self._r.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return list(self._r.headers) or None

    def timestamp(self) -> tuple[int, int]:
        return 1, self._r.timestamp  # 1: the producer's create time

    def error(self) -> None:
        return None


class MemoryRangeReader(RangeReader):
    """A RangeReader over a MemoryKafka topic; ``eof[p]`` is set when *p*'s end is reached."""

    def __init__(self, kafka: MemoryKafka, topic: str) -> None:
        self.topic = topic
        self.eof: dict[int, int] = {}
        self._kafka = kafka
        self._positions: dict[int, int] = {}
        self.closed = False

    def assign(self, partition: int, offset: int) -> None:
        self.seek(partition, offset)

    def seek(self, partition: int, offset: int) -> None:
        with self._kafka.changed:
            self.eof.pop(partition, None)
            low = self._kafka._log(self.topic, partition).low
            self._positions[partition] = offset if offset > 0 else low

    def unassign(self, partition: int) -> None:
        with self._kafka.changed:
            self._positions.pop(partition, None)

    def poll(self, max_records: int, timeout: float) -> list[Any]:
        with self._kafka.changed:
            parts = sorted(self._positions)
            read = self._kafka._read(self.topic, self._positions, parts, max_records)
            for p in parts:
                high = self._kafka._log(self.topic, p).high
                if self._positions[p] >= high and p not in self.eof:
                    self.eof[p] = high
        return [MemoryMessage(p, r) for p, r in read]

    def close(self) -> None:
        self.closed = True
