"""The errors statestore raises; every one derives from :class:`StateStoreError`."""

from __future__ import annotations

from .position import format_position

__all__ = [
    "CodecError",
    "ConfigError",
    "CursorError",
    "InvalidKeyError",
    "InvalidRangeError",
    "KafkaError",
    "NotReadyError",
    "OffsetOutOfRangeError",
    "PositionTimeoutError",
    "RegistryUnavailableError",
    "SnapshotError",
    "SnapshotSourceError",
    "StateStoreError",
    "StorageError",
    "StoreLockedError",
    "TopicMissingError",
    "UnknownIndexError",
    "UnknownViewError",
    "ViewFailedError",
]


class StateStoreError(Exception):
    """Base class of every error statestore raises on purpose."""


class ConfigError(StateStoreError):
    """The configuration is invalid; the message names the file and the field."""


class CodecError(StateStoreError):
    """A key or value could not be encoded or decoded with the view's codec."""


class InvalidKeyError(CodecError):
    """A key given by a caller (URL, CLI, embedded call) is not valid for the view's key codec."""


class RegistryUnavailableError(StateStoreError):
    """The schema registry could not be reached; the records waiting on it are retried, not dropped."""


class StorageError(StateStoreError):
    """The RocksDB store could not be opened, read or written."""


class StoreLockedError(StorageError):
    """Another process (usually a running server) holds the store open for writing."""


class SnapshotError(StateStoreError):
    """A snapshot cannot be made, read or used: damaged, of another format, of another config."""


class SnapshotSourceError(SnapshotError):
    """The place snapshots live in (a directory, an S3 bucket) cannot be read or written."""


class KafkaError(StateStoreError):
    """The Kafka cluster could not be reached or refused a request."""


class TopicMissingError(KafkaError):
    """The view's topic does not exist on the cluster."""


class BulkWorkerError(StateStoreError):
    """A bulk-load worker process died or failed; the load resumes from what was ingested."""


class StaleViewError(KafkaError):
    """The stored view may have missed records or tombstones: it cannot be trusted.

    ``cause`` names the kind of event in a word (metrics label it with this):
    ``below_log_start``, ``past_end_offset``, ``topic_recreated``, ``away_too_long``.
    """

    cause = "stale"

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.cause = cause


class OffsetOutOfRangeError(KafkaError):
    """A stored position is no longer in the partition (retention or delete_records)."""

    cause = "below_log_start"

    def __init__(self, topic: str, partition: int, detail: str) -> None:
        self.topic = topic
        self.partition = partition
        super().__init__(f"{topic}[{partition}]: stored position is out of range ({detail})")


class UnknownViewError(StateStoreError, KeyError):
    """A view name that is not in the configuration."""

    def __init__(self, view: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.view = view
        hint = f"; configured views: {', '.join(known)}" if known else ""
        super().__init__(f"unknown view {view!r}{hint}")

    def __str__(self) -> str:
        # KeyError's __str__ quotes its argument; keep the message readable.
        return str(self.args[0])


class UnknownIndexError(StateStoreError, KeyError):
    """A field that the view does not index."""

    def __init__(self, view: str, field: str, known: tuple[str, ...] = ()) -> None:
        self.view = view
        self.field = field
        hint = f"; indexed fields: {', '.join(known)}" if known else "; the view has no indexes"
        super().__init__(f"view {view!r} has no index on {field!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


class NotReadyError(StateStoreError):
    """The view has not caught up with its topic yet."""


class ViewFailedError(StateStoreError):
    """The view stopped because of an error it cannot recover from by itself."""


class InvalidRangeError(StateStoreError, ValueError):
    """A key or index range that cannot be read: its start is after its end, or its bounds
    are of different types or not indexable values."""


class CursorError(StateStoreError, ValueError):
    """A paging cursor is malformed, tampered with, or belongs to another view."""


class PositionTimeoutError(StateStoreError, TimeoutError):
    """The view did not reach the requested position in time."""

    def __init__(self, view: str, wanted: dict[int, int], reached: dict[int, int]) -> None:
        self.view = view
        self.wanted = dict(wanted)
        self.reached = dict(reached)
        super().__init__(
            f"view {view!r} did not reach position {format_position(wanted)} in time; "
            f"it has applied {format_position(reached) or 'nothing'}"
        )
