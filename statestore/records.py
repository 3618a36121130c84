"""Records and every name the store's layout uses, defined once.

An entity is stored as a fixed header (partition, offset, timestamp, schema id)
followed by the raw value bytes from Kafka: ingest copies bytes, reads decode.
Here too: the column-family names of a slot, the metadata keys, the staging and
control keys of a bulk load, the stored form of a quarantined record, and the
newest-record rule (``supersedes``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from .codecs import b64

__all__ = [
    "CONTROL_END",
    "CONTROL_PREFIX",
    "HEADER_SIZE",
    "NO_SCHEMA",
    "STAGE_TAIL_SIZE",
    "STARTS_KEY",
    "STORED_KIND",
    "TOMBSTONE_KIND",
    "Entity",
    "HeaderHook",
    "Record",
    "applied_at_key",
    "bulk_key",
    "caught_up_key",
    "counter_key",
    "dropping_key",
    "entity_family",
    "family_owner",
    "fingerprint_key",
    "generation_key",
    "history_key",
    "index_done_key",
    "index_family_prefix",
    "is_progress_key",
    "is_sample_key",
    "is_staged_quarantine_key",
    "key_group_start",
    "misplaced_key",
    "misplaced_report",
    "pack_header",
    "pack_int",
    "pack_progress",
    "pack_samples",
    "partition_of_position_key",
    "partitioner_key",
    "position_key",
    "position_prefix",
    "prefix_end",
    "progress_key",
    "quarantine_family",
    "quarantine_key",
    "quarantine_report",
    "sample_key",
    "schema_count_key",
    "schema_count_prefix",
    "slot_id",
    "slot_meta_prefix",
    "stage_key",
    "stage_key_maker",
    "staged_key",
    "staged_quarantine_key",
    "staged_quarantine_origin",
    "staging_family",
    "supersedes",
    "synced_at_key",
    "topic_id_key",
    "unpack_header",
    "unpack_int",
    "unpack_progress",
    "unpack_samples",
]

# (partition, offset, timestamp_ms, key, value) as read from Kafka; value None = tombstone.
Record = tuple[int, int, int, bytes | None, bytes | None]

# Rewrites (headers, key, value) into (key, value) for views whose framing may live in
# record headers (schema ids written as headers instead of a value prefix).
HeaderHook = Callable[
    [list[tuple[str, bytes]] | None, bytes | None, bytes | None], tuple[bytes | None, bytes | None]
]

_HEADER = struct.Struct(">Biqqi")
HEADER_SIZE = _HEADER.size
# (kind, partition, offset, timestamp, schema id) of a stored or staged record.
unpack_header = _HEADER.unpack_from
pack_header = _HEADER.pack
_PARTITION = struct.Struct(">i")
_U64 = struct.Struct(">q")
NO_SCHEMA = -1
# The first header byte: a stored (or staged) value, or a staged tombstone.
STORED_KIND = 1
TOMBSTONE_KIND = 0


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


# -- column families ---------------------------------------------------------------------
# A slot (one generation of a view) is "<view>#<generation>". Its families are
# "<kind>.<slot>": v (entities), q (quarantine), s (a bulk load's staging), and
# "i.<slot>.<field>" per index. "meta" holds the metadata keys below.

_SLOT_KINDS = ("v", "q", "s", "i")


def slot_id(view: str, generation: int) -> str:
    return f"{view}#{generation}"


def entity_family(slot: str) -> str:
    return f"v.{slot}"


def quarantine_family(slot: str) -> str:
    return f"q.{slot}"


def staging_family(slot: str) -> str:
    return f"s.{slot}"


def index_family_prefix(slot: str) -> str:
    """The index families of *slot* are this prefix and the indexed field."""
    return f"i.{slot}."


def family_owner(family: str) -> str | None:
    """The view a slot's column family belongs to (None: not a slot's family)."""
    kind, dot, rest = family.partition(".")
    if not dot or kind not in _SLOT_KINDS or "#" not in rest:
        return None
    return rest.split("#", 1)[0]


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
    # "index2": entries in the order-preserving encoding (indexes.py). A marker of the
    # earlier JSON-text encoding ("index/") is not this key, so such an index is rebuilt.
    return f"t/{slot}/index2/{field}".encode()


def caught_up_key(slot: str) -> bytes:
    return f"t/{slot}/caught_up_at".encode()


def topic_id_key(slot: str) -> bytes:
    """The id of the topic the slot was read from (a recreated topic has another)."""
    return f"t/{slot}/topic_id".encode()


# Store- and view-level history (not a slot's: it outlives rebuilds); see history.py.
STARTS_KEY = b"history/starts"


def history_key(view: str) -> bytes:
    return f"history/view/{view}".encode()


def partitioner_key(slot: str) -> bytes:
    """The partitioner the slot's records are checked against, and from which positions
    (JSON: name, from; from is empty when every record read was checked)."""
    return f"t/{slot}/partitioner".encode()


def misplaced_key(slot: str) -> bytes:
    """The first record the follow path found in another partition than the view's
    partitioner gives its key (JSON: partition, offset, key, expected)."""
    return f"t/{slot}/misplaced".encode()


def dropping_key(slot: str) -> bytes:
    """The partitions a partitioned instance is deleting from the slot (JSON list), set
    before the first key goes and deleted with their positions: a drop that was cut
    short (a crash, a checkpoint taken meanwhile) is finished before anything else."""
    return f"t/{slot}/dropping".encode()


def bulk_key(slot: str) -> bytes:
    """Set while the slot is loaded in bulk (its first bootstrap), until the final merge."""
    return f"t/{slot}/bulk".encode()


# -- which record of a key wins --------------------------------------------------------


def supersedes(
    partition: int,
    offset: int,
    timestamp: int,
    other_partition: int,
    other_offset: int,
    other_ts: int,
) -> bool:
    """Whether a record replaces *other* as the current record of their key.

    Within a partition the later offset wins. A key that moved partitions (the topic
    grew) resolves to the newer timestamp, ties to the higher partition, so the
    result never depends on the order partitions were read in. The follow path and
    the bulk merge both ask this function.
    """
    if partition == other_partition:
        return offset > other_offset
    return (timestamp, partition) > (other_ts, other_partition)


# -- the staging family of a bulk load ---------------------------------------------------
#
# A bulk load (first bootstrap, rebuild copy) stages the newest record of each key per
# offset range under (key, partition, offset), in sorted SST files; one merge at the end
# keeps one record per key. The staging key escapes NUL in the stored key
# (NUL -> NUL 0xFF) and ends with NUL NUL, the partition and the offset, so every entry
# of one key sorts next to the others in (partition, offset) order, before any longer key
# that starts with it, and the key is recovered from all but the last 14 bytes.
#
# Each staged SST file also carries *control* entries under the prefix NUL 0x01, which no
# staging key can start with: the progress of each offset range it covers and the records
# it quarantined. They are ingested in the same file as the data they describe, so the
# progress of a bulk load is durable exactly when its data is.

_STAGE_TAIL = struct.Struct(">iq")
STAGE_TAIL_SIZE = 2 + _STAGE_TAIL.size  # NUL NUL, partition, offset
# (reached, records, bytes, quarantined, misplaced); entries written before misplaced
# records were counted lack the last field.
_PROGRESS = struct.Struct(">qqqqq")
_PROGRESS_4 = struct.Struct(">qqqq")
CONTROL_PREFIX = b"\x00\x01"
CONTROL_END = b"\x00\x02"
_PROGRESS_PREFIX = CONTROL_PREFIX + b"P"
_QUARANTINE_PREFIX = CONTROL_PREFIX + b"Q"
_SAMPLE_PREFIX = CONTROL_PREFIX + b"S"
_LEN = struct.Struct(">H")


def stage_key(stored_key: bytes, partition: int, offset: int) -> bytes:
    """The staging key of the record of *stored_key* at *partition*, *offset*."""
    if b"\x00" in stored_key:
        stored_key = stored_key.replace(b"\x00", b"\x00\xff")
    return stored_key + b"\x00\x00" + _STAGE_TAIL.pack(partition, offset)


def stage_key_maker(partition: int) -> Callable[[bytes, int], bytes]:
    """``stage_key`` for one partition, faster in a loop over that partition's records."""
    middle = b"\x00\x00" + _PARTITION.pack(partition)
    pack_offset = _U64.pack

    def make(stored_key: bytes, offset: int) -> bytes:
        if b"\x00" in stored_key:
            stored_key = stored_key.replace(b"\x00", b"\x00\xff")
        return stored_key + middle + pack_offset(offset)

    return make


def key_group_start(stored_key: bytes) -> bytes:
    """The smallest staging key of *stored_key*: where its entries begin, after every entry
    of any smaller key (a bound that never splits one key's entries)."""
    if b"\x00" in stored_key:
        stored_key = stored_key.replace(b"\x00", b"\x00\xff")
    return stored_key + b"\x00\x00"


def staged_key(key: bytes) -> bytes:
    """The stored key of a staging key."""
    body = key[:-STAGE_TAIL_SIZE]
    return body.replace(b"\x00\xff", b"\x00") if b"\x00" in body else body


def progress_key(partition: int, start: int) -> bytes:
    """Control entry: how far the staged range of *partition* that starts at *start* got."""
    return _PROGRESS_PREFIX + _STAGE_TAIL.pack(partition, start)


def pack_progress(
    reached: int, records: int, nbytes: int, quarantined: int, misplaced: int = 0
) -> bytes:
    return _PROGRESS.pack(reached, records, nbytes, quarantined, misplaced)


def is_progress_key(key: bytes) -> bool:
    return key.startswith(_PROGRESS_PREFIX)


def unpack_progress(key: bytes, value: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(partition, start, reached, records, bytes, quarantined, misplaced) of a progress
    entry."""
    partition, start = _STAGE_TAIL.unpack_from(key, len(_PROGRESS_PREFIX))
    if len(value) == _PROGRESS_4.size:
        return (partition, start, *_PROGRESS_4.unpack(value), 0)
    return (partition, start, *_PROGRESS.unpack(value))


def sample_key(worker: int, pid: int, file: int) -> bytes:
    """Control entry: stored keys sampled from one staged file (to split the merge by key)."""
    return _SAMPLE_PREFIX + struct.pack(">iiq", worker, pid, file)


def is_sample_key(key: bytes) -> bool:
    return key.startswith(_SAMPLE_PREFIX)


def pack_samples(keys: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(min(len(k), 0xFFFF)) + k[:0xFFFF] for k in keys)


def unpack_samples(data: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        (n,) = _LEN.unpack_from(data, i)
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def is_staged_quarantine_key(key: bytes) -> bool:
    return key.startswith(_QUARANTINE_PREFIX)


def staged_quarantine_key(partition: int, offset: int) -> bytes:
    """Control entry: a record quarantined by a bulk load (moved to ``q.<slot>`` by the merge)."""
    return _QUARANTINE_PREFIX + _STAGE_TAIL.pack(partition, offset)


def staged_quarantine_origin(key: bytes) -> tuple[int, int]:
    partition, offset = _STAGE_TAIL.unpack_from(key, len(_QUARANTINE_PREFIX))
    return int(partition), int(offset)


def quarantine_key(partition: int, offset: int) -> bytes:
    return _PARTITION.pack(partition) + _U64.pack(offset)


def quarantine_report(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
) -> bytes:
    """The stored form of a quarantined record (JSON; key and value as base64 text)."""
    return orjson.dumps(
        {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
            "key": b64(key),
            "value": b64(value),
            "reason": reason,
        }
    )


def misplaced_report(partition: int, offset: int, key: bytes, expected: int) -> bytes:
    """The stored form of a misplaced record's coordinates (JSON; the key as base64 text)."""
    return orjson.dumps(
        {"partition": partition, "offset": offset, "key": b64(key), "expected": expected}
    )


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with *prefix* (None: no bound)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return None
