"""statestore: compacted Kafka topics as a local, queryable RocksDB view."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
from .indexes import parse_index_value
from .ingest import Progress
from .position import format_position, parse_position
from .records import Entity
from .status import PartitionStatus, ViewEvent, ViewState, ViewStatus
from .store import StateStore
from .view import Page

try:
    __version__ = version("statestore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ApiConfig",
    "Change",
    "CodecError",
    "Config",
    "ConfigError",
    "CursorError",
    "Entity",
    "FellBehindError",
    "InvalidKeyError",
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
    "ViewState",
    "ViewStatus",
    "__version__",
    "format_position",
    "load_config",
    "parse_index_value",
    "parse_position",
]
