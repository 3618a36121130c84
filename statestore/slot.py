"""A slot: one generation of a view's storage, with its layout and its metadata.

A view is served from one slot at a time. A rebuild fills the next generation's
slot beside it, and the view switches slots in one write (``View.adopt``). The
slot owns the column-family names, the codecs the slot was built with and the
metadata stored for it (positions, counters, flags). The write side (apply,
indexes, bulk load, merge) works on a slot, never on a whole view.

Invariant: the in-memory positions, counters and schema counts equal what is
stored, once each write is done. Only the view that serves the slot changes
them, under its lock, right after its write; writers read them to compute the
next stored values.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .codecs import KeyCodec, ValueCodec
from .config import ViewConfig
from .partitioners import Partitioner, partitioner
from .records import (
    CONTROL_END,
    CONTROL_PREFIX,
    applied_at_key,
    bulk_key,
    caught_up_key,
    counter_key,
    dropping_key,
    entity_family,
    fingerprint_key,
    generation_key,
    index_family_prefix,
    is_progress_key,
    misplaced_key,
    pack_int,
    partition_of_position_key,
    partitioner_key,
    position_key,
    position_prefix,
    prefix_end,
    quarantine_family,
    schema_count_key,
    schema_count_prefix,
    slot_id,
    slot_meta_prefix,
    staging_family,
    synced_at_key,
    topic_id_key,
    unpack_int,
    unpack_progress,
)
from .storage import META, Storage

__all__ = [
    "COUNTERS",
    "Slot",
    "current_generation",
    "discard_slot",
    "meta_int",
    "slot_families",
    "stored_positions",
]

COUNTERS = ("keys", "records", "bytes", "quarantined", "misplaced")


def current_generation(storage: Storage, view: str) -> int:
    """The generation a view is served from (0 for a view never built)."""
    raw = storage.get(META, generation_key(view))
    return unpack_int(raw) if raw is not None else 0


def meta_int(storage: Storage, key: bytes) -> int | None:
    """The integer stored under the metadata *key*; None when there is none."""
    raw = storage.get(META, key)
    return unpack_int(raw) if raw is not None else None


def stored_positions(storage: Storage, slot_id: str) -> dict[int, int]:
    """``{partition: next offset to read}`` as the slot's metadata holds it."""
    prefix = position_prefix(slot_id)
    return {
        partition_of_position_key(key): unpack_int(value)
        for key, value in storage.scan(META, prefix, prefix_end(prefix))
    }


def slot_families(storage: Storage, slot_id: str) -> list[str]:
    """Every column family of the slot *slot_id* that exists."""
    own = {entity_family(slot_id), quarantine_family(slot_id), staging_family(slot_id)}
    index = index_family_prefix(slot_id)
    return [f for f in storage.families() if f in own or f.startswith(index)]


def discard_slot(storage: Storage, slot_id: str) -> None:
    """Drop a slot's column families and metadata."""
    for prefix in slot_meta_prefix(slot_id):
        storage.delete_range(META, prefix, prefix_end(prefix) or b"\xff" * 64)
    for family in slot_families(storage, slot_id):
        storage.drop_family(family)


class Slot:
    """One generation of one view's storage, its metadata read at construction."""

    def __init__(
        self,
        config: ViewConfig,
        storage: Storage,
        generation: int,
        keys: KeyCodec,
        values: ValueCodec,
    ) -> None:
        self.config = config
        self.storage = storage
        self.generation = generation
        self.key_codec = keys
        self.value_codec = values
        self.id = slot_id(config.name, generation)
        self.entity_cf = entity_family(self.id)
        self.quarantine_cf = quarantine_family(self.id)
        self.staging_cf = staging_family(self.id)
        self.index_prefix = index_family_prefix(self.id)
        self.index_cfs = {f: self.index_prefix + f for f in config.indexes}
        self.index_paths = {f: tuple(f.split(".")) for f in config.indexes}
        self.has_indexes = bool(self.index_paths)
        self.checks_values = config.value != "bytes"
        self.tracks_schemas = config.uses_registry

        self.positions = stored_positions(storage, self.id)
        # Partitions whose drop was cut short (apply.drop_partitions): finished first.
        raw = storage.get(META, dropping_key(self.id))
        self.dropping: frozenset[int] = (
            frozenset(int(p) for p in orjson.loads(raw)) if raw is not None else frozenset()
        )
        self.counters = {
            name: meta_int(self.storage, counter_key(self.id, name)) or 0 for name in COUNTERS
        }
        self.last_applied_at_ms = meta_int(self.storage, applied_at_key(self.id))
        self.schema_counts: dict[int, int] = {}
        prefix = schema_count_prefix(self.id)
        for key, value in storage.scan(META, prefix, prefix_end(prefix)):
            self.schema_counts[partition_of_position_key(key)] = unpack_int(value)
        # Caught up at least once (persisted): the stored copy may be served while it catches up again.
        self.servable = meta_int(self.storage, caught_up_key(self.id)) is not None
        self.synced_at_ms = meta_int(self.storage, synced_at_key(self.id))
        # Loaded in bulk (first bootstrap): records sit in the staging family until the merge.
        self.bulk = meta_int(self.storage, bulk_key(self.id)) is not None
        raw = storage.get(META, topic_id_key(self.id))
        # The id of the topic read into the slot (None: not known yet).
        self.topic_id = raw.decode() if raw is not None else None
        # The partitioner keyed records are checked against (None: not checked), the
        # positions the check began at (empty: every record read was checked) and the
        # first record the follow path found misplaced.
        self.placement: Partitioner | None = (
            partitioner(config.partitioner) if config.partitioner else None
        )
        self.checked_from: dict[int, int] = {}
        self.misplaced_first: dict[str, Any] | None = None
        # The partitioner the stored count was made under (None: none).
        self._checked_under: str | None = None
        raw = storage.get(META, partitioner_key(self.id))
        if raw is not None:
            checked = orjson.loads(raw)
            self._checked_under = checked["name"]
            self.checked_from = {int(p): o for p, o in checked["from"].items()}
        raw = storage.get(META, misplaced_key(self.id))
        if raw is not None:
            self.misplaced_first = orjson.loads(raw)

    def _put_meta(self, key: bytes, value: int) -> None:
        batch = self.storage.batch()
        batch.put(META, key, pack_int(value))
        self.storage.write(batch)

    def families(self) -> list[str]:
        return slot_families(self.storage, self.id)

    def prepare(self) -> str | None:
        """Create the slot's families; return why the view must be rebuilt, if it must."""
        stored_fp = self.storage.get(META, fingerprint_key(self.id))
        want = self.config.fingerprint().encode()
        reason = None
        if stored_fp is not None and stored_fp != want:
            reason = (
                f"the view's topic or codecs changed since it was built "
                f"(fingerprint {stored_fp.decode()} -> {want.decode()})"
            )
        if self.storage.read_only:
            return reason
        for cf in (self.entity_cf, self.quarantine_cf):
            self.storage.create_family(cf)
        if not self.bulk and self.storage.has_family(self.staging_cf):
            self.storage.drop_family(self.staging_cf)  # merged, then interrupted before the drop
        if stored_fp is None:
            batch = self.storage.batch()
            batch.put(META, fingerprint_key(self.id), want)
            self.storage.write(batch)
        self._check_from_here()
        return reason

    def _check_from_here(self) -> None:
        """When the configured partitioner is not the one the stored count was made
        under, start counting again under it. ``checked_from`` is then where the slot
        stands: every record at or past it is checked (a bulk load under way: past the
        furthest offset it read of each partition)."""
        want = self.config.partitioner
        if self._checked_under == want:
            return
        read = dict(self.positions)
        if self.bulk:  # what the load read so far sits in its staging family
            for key, value in self.storage.scan(self.staging_cf, CONTROL_PREFIX, CONTROL_END):
                if is_progress_key(key):
                    p, _, reached, *_ = unpack_progress(key, value)
                    read[p] = max(read.get(p, 0), reached)
        self.checked_from = {p: o for p, o in read.items() if o > 0} if want else {}
        batch = self.storage.batch()
        batch.put(
            META,
            partitioner_key(self.id),
            orjson.dumps({"name": want, "from": {str(p): o for p, o in self.checked_from.items()}}),
        )
        batch.put(META, counter_key(self.id, "misplaced"), pack_int(0))
        batch.delete(META, misplaced_key(self.id))
        self.storage.write(batch)
        self.counters["misplaced"] = 0
        self.misplaced_first = None
        self._checked_under = want

    def make_current(self) -> None:
        """Store that the view is served from this slot (one write)."""
        self._put_meta(generation_key(self.config.name), self.generation)

    def begin_bulk(self) -> bool:
        """Mark a slot never read into as loading in bulk; True when it is loading in bulk."""
        if self.bulk or self.servable or self.positions or self.storage.read_only:
            return self.bulk
        self.storage.create_family(self.staging_cf)
        self._put_meta(bulk_key(self.id), int(time.time() * 1000))
        self.bulk = True
        return True

    def store_merged(
        self, positions: dict[int, int], counters: dict[str, int], schema_counts: dict[int, int]
    ) -> int:
        """Store a bulk load's merged state and end its bulk mark, in one write.

        Returns the time stored as last applied. The in-memory state is the view's
        to take (``View.finish_bulk``).
        """
        batch = self.storage.batch()
        for p, pos in positions.items():
            batch.put(META, position_key(self.id, p), pack_int(pos))
        for name in COUNTERS:
            batch.put(META, counter_key(self.id, name), pack_int(counters[name]))
        for schema_id, count in schema_counts.items():
            batch.put(META, schema_count_key(self.id, schema_id), pack_int(count))
        applied_at = int(time.time() * 1000)
        batch.put(META, applied_at_key(self.id), pack_int(applied_at))
        batch.delete(META, bulk_key(self.id))
        self.storage.write(batch)
        return applied_at

    def note_topic_id(self, topic_id: str, *, replace: bool = False) -> None:
        """Store the id of the topic the slot is read from (once, unless *replace*: a
        view kept across a recreated topic, ``on_stale = "ignore"``)."""
        if (self.topic_id is None or replace) and not self.storage.read_only:
            batch = self.storage.batch()
            batch.put(META, topic_id_key(self.id), topic_id.encode())
            self.storage.write(batch)
            self.topic_id = topic_id

    def mark_caught_up(self) -> None:
        """Record that this slot has caught up once, so restarts may serve it at once."""
        if not self.servable:
            self._put_meta(caught_up_key(self.id), int(time.time() * 1000))
            self.servable = True

    def touch_synced(self) -> None:
        """Record that the slot has read everything up to the end offsets now."""
        now = int(time.time() * 1000)
        self._put_meta(synced_at_key(self.id), now)
        self.synced_at_ms = now

    def decode_quietly(self, raw: bytes) -> Any:
        """A stored value decoded, or None when it cannot be (index maintenance skips it)."""
        try:
            return self.value_codec.decode(raw)
        except Exception:
            return None
