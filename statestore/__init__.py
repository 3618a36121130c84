"""statestore: compacted Kafka topics as a local, queryable RocksDB view."""

from __future__ import annotations

from ._version import __version__
from .aio import AsyncChanges, AsyncStateStore, AsyncViewReader
from .changes import Change, FellBehindError, Reset, Subscription
from .config import (
    ApiConfig,
    Config,
    SchemaRegistryConfig,
    StoreConfig,
    TokenConfig,
    ViewConfig,
    load_config,
)
from .errors import (
    CodecError,
    ConfigError,
    CursorError,
    InvalidKeyError,
    InvalidRangeError,
    KafkaError,
    NotReadyError,
    PositionTimeoutError,
    RegistryUnavailableError,
    SnapshotError,
    SnapshotSourceError,
    StateStoreError,
    StorageError,
    StoreLockedError,
    TopicMissingError,
    UnknownIndexError,
    UnknownViewError,
    ViewFailedError,
)
from .indexes import IndexValue, parse_index_value
from .ingest import Progress
from .offline import CopyProgress, read_progress
from .position import format_position, parse_position
from .reader import ViewReader
from .records import Entity
from .status import PartitionStatus, ViewEvent, ViewState, ViewStatus
from .store import StateStore
from .view import Page

__all__ = [
    "ApiConfig",
    "AsyncChanges",
    "AsyncStateStore",
    "AsyncViewReader",
    "Change",
    "CodecError",
    "Config",
    "ConfigError",
    "CopyProgress",
    "CursorError",
    "Entity",
    "FellBehindError",
    "IndexValue",
    "InvalidKeyError",
    "InvalidRangeError",
    "KafkaError",
    "NotReadyError",
    "Page",
    "PartitionStatus",
    "PositionTimeoutError",
    "Progress",
    "RegistryUnavailableError",
    "Reset",
    "SchemaRegistryConfig",
    "SnapshotError",
    "SnapshotSourceError",
    "StateStore",
    "StateStoreError",
    "StorageError",
    "StoreConfig",
    "StoreLockedError",
    "Subscription",
    "TokenConfig",
    "TopicMissingError",
    "UnknownIndexError",
    "UnknownViewError",
    "ViewConfig",
    "ViewEvent",
    "ViewFailedError",
    "ViewReader",
    "ViewState",
    "ViewStatus",
    "__version__",
    "format_position",
    "load_config",
    "parse_index_value",
    "parse_position",
    "read_progress",
]
