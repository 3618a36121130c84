"""The stored form of an entity and of the metadata keys.

An entity is stored as a fixed header (partition, offset, timestamp, schema id)
followed by the raw value bytes from Kafka: ingest copies bytes, reads decode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Entity", "StoredRecord", "decode_record", "encode_record"]

_VERSION = 1
_HEADER = struct.Struct(">Biqqi")
HEADER_SIZE = _HEADER.size
# (kind, partition, offset, timestamp, schema id) of a stored or staged record.
unpack_header = _HEADER.unpack_from
_PARTITION = struct.Struct(">i")
_U64 = struct.Struct(">q")
NO_SCHEMA = -1


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An entity as stored: where it came from and its raw value bytes."""

    partition: int
    offset: int
    timestamp: int
    schema_id: int | None
    raw: bytes


class Entity(NamedTuple):
    """An entity as served: its key, decoded value and the record it came from.

    A named tuple: reads build one per entity, at a third of a frozen dataclass's cost.
    """

    key: str
    value: Any
    partition: int
    offset: int
    timestamp: int | None
    schema_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
        }


def encode_record(partition: int, offset: int, timestamp: int, schema_id: int, raw: bytes) -> bytes:
    return _HEADER.pack(_VERSION, partition, offset, timestamp, schema_id) + raw


def decode_record(data: bytes) -> StoredRecord:
    _, partition, offset, timestamp, schema_id = _HEADER.unpack_from(data)
    return StoredRecord(
        partition,
        offset,
        timestamp,
        None if schema_id == NO_SCHEMA else schema_id,
        data[HEADER_SIZE:],
    )


def record_origin(data: bytes) -> tuple[int, int]:
    """(partition, timestamp) of a stored record, without copying its value."""
    _, partition, _, timestamp, _ = _HEADER.unpack_from(data)
    return partition, timestamp


# -- metadata keys ----------------------------------------------------------------------


def pack_int(value: int) -> bytes:
    return _U64.pack(value)


def unpack_int(data: bytes) -> int:
    return int(_U64.unpack(data)[0])


def position_prefix(slot: str) -> bytes:
    return f"pos/{slot}/".encode()


def position_key(slot: str, partition: int) -> bytes:
    return position_prefix(slot) + _PARTITION.pack(partition)


def partition_of_position_key(key: bytes) -> int:
    return int(_PARTITION.unpack(key[-4:])[0])


def counter_key(slot: str, name: str) -> bytes:
    return f"n/{slot}/{name}".encode()


def slot_meta_prefix(slot: str) -> list[bytes]:
    """Every metadata prefix that belongs to one slot (to delete them with it)."""
    return [f"{kind}/{slot}/".encode() for kind in ("pos", "n", "t", "fp")]


def generation_key(view: str) -> bytes:
    return f"gen/{view}".encode()


def fingerprint_key(slot: str) -> bytes:
    return f"fp/{slot}/".encode()


def applied_at_key(slot: str) -> bytes:
    return f"t/{slot}/applied_at".encode()


def schema_count_prefix(slot: str) -> bytes:
    return f"n/{slot}/schema/".encode()


def schema_count_key(slot: str, schema_id: int) -> bytes:
    return schema_count_prefix(slot) + _PARTITION.pack(schema_id)


def synced_at_key(slot: str) -> bytes:
    return f"t/{slot}/synced_at".encode()


def index_done_key(slot: str, field: str) -> bytes:
    return f"t/{slot}/index/{field}".encode()


def caught_up_key(slot: str) -> bytes:
    return f"t/{slot}/caught_up_at".encode()


def bulk_key(slot: str) -> bytes:
    """Set while the slot is loaded in bulk (its first bootstrap), until the final merge."""
    return f"t/{slot}/bulk".encode()


# -- the staging family of a bulk load ---------------------------------------------------
#
# A first bootstrap writes each record blindly under (key, partition) instead of reading
# the stored record of its key first; the merge at the end keeps one record per key. The
# staging key escapes NUL in the stored key (NUL -> NUL 0xFF) and ends with NUL NUL and
# the partition, so every entry of one key sorts next to the others, before any longer
# key that starts with it, and the key is recovered from all but the last 6 bytes.

_STAGE_TAIL = 6
TOMBSTONE_KIND = 0


def stage_suffix(partition: int) -> bytes:
    return b"\x00\x00" + _PARTITION.pack(partition)


def stage_key(stored_key: bytes, suffix: bytes) -> bytes:
    """The staging key of *stored_key* in the partition whose ``stage_suffix`` is *suffix*."""
    if b"\x00" in stored_key:
        stored_key = stored_key.replace(b"\x00", b"\x00\xff")
    return stored_key + suffix


def staged_key(key: bytes) -> bytes:
    """The stored key of a staging key."""
    body = key[:-_STAGE_TAIL]
    return body.replace(b"\x00\xff", b"\x00") if b"\x00" in body else body


def quarantine_key(partition: int, offset: int) -> bytes:
    return _PARTITION.pack(partition) + _U64.pack(offset)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with *prefix* (None: no bound)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return None
