"""What the write side needs from a topic: the client, a follower's reader, a bulk reader.

Typing only: :mod:`statestore.kafka` implements these protocols over the Kafka
client, :mod:`statestore.testing` over an in-process log. The ingest loop
depends on them and never on either implementation, so it can be driven
without a broker.

Offsets follow Kafka's meaning throughout: a *position* is the next offset to
read, a *high watermark* (end offset) is one past the last offset written, and
offsets below it may hold no record (compaction, aborted transactions,
transaction markers).
"""

from __future__ import annotations

from typing import Any, Protocol

from .records import HeaderHook, Record

__all__ = ["RangeReader", "Source", "TopicClient"]


class Source(Protocol):
    """One reader of one topic from explicitly assigned positions (no group, no commits)."""

    topic: str
    assigned: set[int]

    def assign(self, positions: dict[int, int]) -> None:
        """Add partitions at the given next offsets (``0`` reads from the log start);
        partitions already assigned are left as they are."""

    def seek(self, partition: int, offset: int) -> None:
        """Read *partition* from *offset* next (``0``: the log start)."""

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to *max_records* records in log order per partition, waiting at most *timeout*
        for the first; raise OffsetOutOfRangeError or TopicMissingError on those errors."""

    def positions(self) -> dict[int, int]:
        """Next offset to read per assigned partition, past any offsets without a record
        the reader has already passed over."""

    def cached_high(self) -> dict[int, int]:
        """High watermarks as last seen while reading (no request is sent)."""

    def close(self) -> None:
        """Release the reader; safe to call twice."""


class RangeReader(Protocol):
    """One reader of offset ranges of partitions, for a bulk load.

    ``poll`` returns message objects (``partition()``, ``offset()``, ``key()``,
    ``value()``, ``headers()``, ``timestamp()``, ``error()``); ``eof[p]`` is the end
    offset reported when partition *p*'s end was reached, which proves that no
    record is left below it.
    """

    topic: str
    eof: dict[int, int]

    def assign(self, partition: int, offset: int) -> None:
        """Start reading *partition* at *offset* (``0``: the log start)."""

    def seek(self, partition: int, offset: int) -> None:
        """Read *partition* from *offset* next."""

    def unassign(self, partition: int) -> None:
        """Stop reading *partition*."""

    def poll(self, max_records: int, timeout: float) -> list[Any]:
        """Up to *max_records* messages with a key/value (never an error or end event)."""

    def close(self) -> None:
        """Release the reader; safe to call twice."""


class TopicClient(Protocol):
    """Cluster-level requests, and the readers, of whatever holds the topics."""

    def settings(self) -> dict[str, Any]:
        """The Kafka client properties a bulk load's worker processes connect with (secrets
        included: never log). Empty for a client no other process can reach (an
        in-process log): the ingest loop then runs no bulk load and applies a first
        bootstrap batch by batch."""

    def partitions(self, topic: str, timeout: float | None = None) -> list[int]:
        """Partition ids of *topic*, sorted; raise TopicMissingError when it does not exist."""

    def watermarks(
        self, topic: str, partition: int, timeout: float | None = None
    ) -> tuple[int, int]:
        """(log start offset, high watermark) of one partition; KafkaError when it cannot tell."""

    def end_offsets(self, topic: str, timeout: float | None = None) -> dict[int, int]:
        """High watermark of every partition of *topic*."""

    def next_record_offset(
        self, topic: str, partition: int, start: int, timeout: float = 3.0
    ) -> int | None:
        """Offset of the first record at or after *start*; None only when the end of the
        partition proves there is none (KafkaError when it cannot tell)."""

    def topic_id(self, topic: str) -> str | None:
        """The topic's id (new when the topic is deleted and created again); None when
        unknown now."""

    def topic_config(self, topic: str) -> dict[str, str]:
        """The topic's effective configuration (cleanup.policy, delete.retention.ms, ...)."""

    def source(self, name: str, topic: str, header_hook: HeaderHook | None = None) -> Source:
        """A new reader of *topic* named *name*, folding header framing in with *header_hook*."""

    def range_reader(self, name: str, topic: str) -> RangeReader:
        """A new bulk reader of *topic* named *name*."""

    def close(self) -> None:
        """Release the client's connections; safe to call twice."""
