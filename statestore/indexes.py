"""Secondary indexes: one column family per indexed field, maintained with the entities.

An index entry's key is the canonical JSON of the field's value, a NUL byte, then
the entity's stored key; its value is empty. Canonical JSON never contains a raw
NUL, so an equality lookup is a prefix scan, in entity-key order, however many
entities share the value.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import orjson

from .records import HEADER_SIZE, index_done_key, pack_int
from .storage import META, Batch

if TYPE_CHECKING:
    from .slot import Slot

__all__ = [
    "index_changes",
    "index_value",
    "index_value_key",
    "move_index_entries",
    "parse_index_value",
    "sync_indexes",
]

log = logging.getLogger(__name__)

_BACKFILL_BATCH = 10_000


def index_value(value: Any, path: tuple[str, ...]) -> bytes | None:
    """Canonical JSON of the scalar at *path* in *value*; None when absent or not a scalar."""
    node = value
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None or isinstance(node, (dict, list)):
        return None
    return orjson.dumps(node, default=_scalar_text)


def _scalar_text(value: Any) -> str:
    """Avro scalars orjson has no JSON form for (bytes, Decimal) index by their text."""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def parse_index_value(text: str) -> str | int | float | bool:
    """The value a user typed for an index lookup (URL, CLI).

    A JSON number, boolean or quoted string is that value — ``42`` matches the number
    42, ``"42"`` (quotes included) the string "42" — and any other text is itself a
    string: ``in_transit``.
    """
    if text[:1] in ('"', "-", "t", "f") or text[:1].isdigit():
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, float) and not math.isfinite(value):
            return text
        if isinstance(value, bool | int | float | str):
            return value
    return text


def index_value_key(value: Any) -> bytes:
    """The prefix under which entities whose field equals *value* are indexed."""
    return orjson.dumps(value) + b"\x00"


def index_changes(
    slot: Slot,
    batch: Batch,
    key: bytes,
    old: bytes | None,
    new_raw: bytes | None,
    new_value: Any = None,
) -> None:
    """Move index entries of *key* from its stored record *old* to its new value (same batch).

    *new_value* is the new value already decoded, when the caller has it.
    """
    old_value = slot.decode_quietly(old[HEADER_SIZE:]) if old is not None else None
    if new_value is None and new_raw is not None:
        new_value = slot.decode_quietly(new_raw)
    move_index_entries(slot, batch, key, old_value, new_value)


def move_index_entries(
    slot: Slot, batch: Batch, key: bytes, old_value: Any, new_value: Any
) -> None:
    """Put in *batch* the index changes for *key* going from *old_value* to *new_value*."""
    for field, path in slot.index_paths.items():
        before = index_value(old_value, path) if old_value is not None else None
        after = index_value(new_value, path) if new_value is not None else None
        if before == after:
            continue
        cf = slot.index_cfs[field]
        if before is not None:
            batch.delete(cf, before + b"\x00" + key)
        if after is not None:
            batch.put(cf, after + b"\x00" + key, b"")


def sync_indexes(slot: Slot) -> None:
    """Make the slot's index families match the config: backfill new ones, drop removed ones.

    A backfill reads the stored view, not Kafka. It is marked done in the metadata
    only when complete, so one interrupted by a crash is redone from scratch.
    """
    storage = slot.storage
    prefix = slot.index_prefix
    wanted = set(slot.index_cfs.values())
    for family in storage.families():
        if family.startswith(prefix) and family not in wanted:
            log.info("index.drop view=%s family=%s", slot.config.name, family)
            storage.drop_family(family)
    for field, cf in slot.index_cfs.items():
        done = storage.get(META, index_done_key(slot.id, field)) is not None
        if done and storage.has_family(cf):
            continue
        storage.drop_family(cf)
        storage.create_family(cf)
        count = _backfill(slot, field, cf)
        batch = storage.batch()
        batch.put(META, index_done_key(slot.id, field), pack_int(count))
        storage.write(batch)
        log.info("index.backfilled view=%s field=%s entries=%d", slot.config.name, field, count)


def _backfill(slot: Slot, field: str, cf: str) -> int:
    storage = slot.storage
    path = slot.index_paths[field]
    batch = storage.batch()
    count = 0
    for key, data in storage.scan(slot.entity_cf):
        value = index_value(slot.decode_quietly(data[HEADER_SIZE:]), path)
        if value is None:
            continue
        batch.put(cf, value + b"\x00" + key, b"")
        count += 1
        if len(batch) >= _BACKFILL_BATCH:
            storage.write(batch)
            batch = storage.batch()
    storage.write(batch)
    return count
