"""The hot path: turn one consumed batch into ONE atomic RocksDB write.

The write holds the entity puts and deletes, the index entries, the quarantined
records, the new positions and the counters, so the stored position is never
ahead of the data and never behind it.

Per-record Python work is what limits bootstrap speed, so the loop below is
written for it: locals instead of attribute lookups, one dict entry per key
(the last record of a key in a batch wins), one read of the stored record per
distinct key (needed for the exact key count, the cross-partition rule and
index maintenance).

A view's first bootstrap and every rebuild copy skip this path: they are bulk
loads (:mod:`statestore.bulk`), which stage sorted files and merge them once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .codecs import NO_KEY, not_utf8
from .errors import CodecError
from .indexes import index_changes
from .records import (
    NO_SCHEMA,
    STORED_KIND,
    HeaderHook,
    Record,
    applied_at_key,
    counter_key,
    dropping_key,
    misplaced_key,
    misplaced_report,
    pack_header,
    pack_int,
    position_key,
    quarantine_key,
    quarantine_report,
    schema_count_key,
    supersedes,
    unpack_header,
)
from .storage import META

if TYPE_CHECKING:
    from .slot import Slot
    from .storage import Batch

__all__ = ["Applied", "HeaderHook", "Record", "apply_records", "drop_partitions"]


@dataclass(slots=True)
class Applied:
    """What one batch changed, for counters, progress and change listeners."""

    records: int = 0
    nbytes: int = 0
    puts: int = 0
    deletes: int = 0
    quarantined: int = 0
    # Keyed records in another partition than the view's partitioner gives their key, and
    # the first of them: (partition, offset, key, the partition the partitioner gives).
    misplaced: int = 0
    misplaced_first: tuple[int, int, bytes, int] | None = None
    keys_delta: int = 0
    positions: dict[int, int] = field(default_factory=dict)
    # (stored key, partition, offset, stored record or None for a delete), in apply order;
    # filled only while the view has listeners.
    changes: list[tuple[bytes, int, int, bytes | None]] = field(default_factory=list)
    schema_delta: dict[int, int] = field(default_factory=dict)
    applied_at_ms: int = 0
    failure: str | None = None


def apply_records(
    slot: Slot,
    records: Sequence[Record],
    *,
    track: bool = False,
    end_positions: dict[int, int] | None = None,
    partitions: int = 0,
) -> Applied:
    """Apply *records* (in consume order) to *slot* in one write; return what changed.

    *track* fills ``Applied.changes`` (for change listeners). The slot's in-memory
    positions and counters are left for the caller to advance by what is returned.

    *end_positions* may carry positions the consumer reached beyond the last
    record (compaction holes, transaction markers) so the view records them.
    A key that moved partitions (the topic grew) resolves to its newest record
    (``records.supersedes``), whichever partition was read last.

    With a partitioner, each keyed record is checked to sit in the partition it gives
    for *partitions* (the topic's partition count); those elsewhere are counted.
    """
    out = Applied()
    # stored key -> (partition, offset, timestamp, schema id, value, parsed value or None)
    latest: dict[bytes, tuple[int, int, int, int, bytes | None, Any]] = {}
    latest_get = latest.get
    quarantined: list[tuple[int, int, int, bytes | None, bytes | None, str]] = []
    positions = out.positions
    utf8_keys = slot.key_codec.name == "string"
    key_from_kafka = slot.key_codec.from_kafka
    check = slot.value_codec.check
    check_value = slot.checks_values
    # An indexed JSON view parses each value once: the check's result feeds the index.
    parse = getattr(slot.value_codec, "parse", None) if slot.has_indexes else None
    parsed: Any = None
    fail_fast = slot.config.on_error == "fail"
    count = 0
    nbytes = 0
    storage = slot.storage
    batch = storage.batch()

    for partition, offset, timestamp, key, value in records:
        positions[partition] = offset + 1
        count += 1
        if key is None:
            reason = NO_KEY
        else:
            try:
                if utf8_keys:
                    key.decode("utf-8")
                    stored_key = key
                else:
                    stored_key = key_from_kafka(key)
                if value is None:
                    schema_id = NO_SCHEMA
                else:
                    if parse is not None:
                        parsed = parse(value)
                        schema_id = NO_SCHEMA
                    else:
                        schema_id = check(value) if check_value else NO_SCHEMA
                    nbytes += len(value)
            except UnicodeDecodeError as exc:
                reason = not_utf8("key", exc)
            except CodecError as exc:
                reason = str(exc)
            else:
                prev = latest_get(stored_key)
                if prev is None or supersedes(partition, offset, timestamp, *prev[:3]):
                    latest[stored_key] = (partition, offset, timestamp, schema_id, value, parsed)
                continue
        if fail_fast:
            out.failure = f"partition {partition} offset {offset}: {reason}"
            # The bad record is not applied: the position stays on it.
            positions[partition] = offset
            count -= 1
            break
        quarantined.append((partition, offset, timestamp, key, value, reason))

    place = slot.placement
    if place is not None and partitions:
        # Apart from the loop above, so that views without a partitioner pay nothing.
        for partition, offset, _, key, _ in records[:count]:
            if key is not None:
                expected = place(key, partitions)
                if expected != partition:
                    out.misplaced += 1
                    if out.misplaced_first is None:
                        out.misplaced_first = (partition, offset, key, expected)

    if end_positions and out.failure is None:
        for partition, pos in end_positions.items():
            if pos > positions.get(partition, slot.positions.get(partition, -1)):
                positions[partition] = pos

    _apply_latest(slot, batch, latest, out, track)

    if quarantined:
        qcf = slot.quarantine_cf
        topic = slot.config.topic
        for partition, offset, timestamp, key, value, reason in quarantined:
            report = quarantine_report(topic, partition, offset, timestamp, key, value, reason)
            batch.put(qcf, quarantine_key(partition, offset), report)
        out.quarantined = len(quarantined)

    sid = slot.id
    for partition, pos in positions.items():
        batch.put(META, position_key(sid, partition), pack_int(pos))
    out.records = count
    out.nbytes = nbytes
    counters = slot.counters
    batch.put(META, counter_key(sid, "keys"), pack_int(counters["keys"] + out.keys_delta))
    batch.put(META, counter_key(sid, "records"), pack_int(counters["records"] + count))
    batch.put(META, counter_key(sid, "bytes"), pack_int(counters["bytes"] + nbytes))
    if out.quarantined:
        batch.put(
            META,
            counter_key(sid, "quarantined"),
            pack_int(counters["quarantined"] + out.quarantined),
        )
    if out.misplaced:
        batch.put(
            META, counter_key(sid, "misplaced"), pack_int(counters["misplaced"] + out.misplaced)
        )
        if slot.misplaced_first is None and out.misplaced_first is not None:
            batch.put(META, misplaced_key(sid), misplaced_report(*out.misplaced_first))
    for schema_id, change in out.schema_delta.items():
        if change:
            total = slot.schema_counts.get(schema_id, 0) + change
            batch.put(META, schema_count_key(sid, schema_id), pack_int(total))
    out.applied_at_ms = int(time.time() * 1000)
    batch.put(META, applied_at_key(sid), pack_int(out.applied_at_ms))
    storage.write(batch)
    return out


def _apply_latest(
    slot: Slot,
    batch: Batch,
    latest: dict[bytes, tuple[int, int, int, int, bytes | None, Any]],
    out: Applied,
    track: bool,
) -> None:
    """Put the newest record of each key of the batch, reading its stored record first."""
    storage = slot.storage
    cf = slot.entity_cf
    put, handle = batch.fast_put(cf)
    olds = storage.get_many(cf, list(latest))
    delta = 0
    puts = 0
    changes = out.changes
    indexed = slot.has_indexes
    schemas = slot.tracks_schemas
    schema_delta = out.schema_delta
    for (stored_key, (partition, offset, timestamp, schema_id, value, parsed)), old in zip(
        latest.items(), olds, strict=True
    ):
        if old is not None:
            _, old_partition, old_offset, old_ts, old_schema = unpack_header(old)
            if not supersedes(partition, offset, timestamp, old_partition, old_offset, old_ts):
                continue
            if schemas:
                schema_delta[old_schema] = schema_delta.get(old_schema, 0) - 1
        if value is None:
            if old is not None:
                batch.delete(cf, stored_key)
                delta -= 1
                out.deletes += 1
                if track:
                    changes.append((stored_key, partition, offset, None))
        else:
            data = pack_header(STORED_KIND, partition, offset, timestamp, schema_id) + value
            put(stored_key, data, handle)
            if old is None:
                delta += 1
            puts += 1
            if schemas:
                schema_delta[schema_id] = schema_delta.get(schema_id, 0) + 1
            if track:
                changes.append((stored_key, partition, offset, data))
        if indexed:
            index_changes(slot, batch, stored_key, old, value, parsed)
    out.puts = puts
    out.keys_delta = delta


def drop_partitions(
    slot: Slot, partitions: set[int], chunk: int = 10_000
) -> tuple[int, dict[int, int]]:
    """Delete every entity whose stored record came from one of *partitions*, with its
    index entries, and forget those partitions' positions (a partitioned instance gave
    them up). Written in batches of *chunk* keys, each with the counters as they then
    stand. The partitions are marked as being dropped first (``slot.dropping`` once the
    store is opened again), and the mark goes with the positions in the last batch: a
    drop cut short, or a snapshot taken during one, is finished by the next read of the
    slot's partitions (ingest.py), whoever owns them then.

    Returns ``(keys deleted, change of each schema's count)``; the caller updates the
    slot's in-memory counters and positions.
    """
    storage = slot.storage
    cf = slot.entity_cf
    sid = slot.id
    indexed = slot.has_indexes
    schemas = slot.tracks_schemas
    deleted = 0
    schema_delta: dict[int, int] = {}

    def counters(batch: Batch) -> None:
        batch.put(META, counter_key(sid, "keys"), pack_int(slot.counters["keys"] - deleted))
        for schema_id, change in schema_delta.items():
            total = slot.schema_counts.get(schema_id, 0) + change
            batch.put(META, schema_count_key(sid, schema_id), pack_int(total))

    batch = storage.batch()
    marked = sorted(set(partitions) | slot.dropping)
    batch.put(META, dropping_key(sid), orjson.dumps(marked))
    storage.write(batch)
    batch = storage.batch()
    pending = 0
    for stored_key, data in storage.scan(cf, cache=False):
        _, partition, _, _, schema_id = unpack_header(data)
        if partition not in partitions:
            continue
        batch.delete(cf, stored_key)
        if indexed:
            index_changes(slot, batch, stored_key, data, None)
        if schemas:
            schema_delta[schema_id] = schema_delta.get(schema_id, 0) - 1
        deleted += 1
        pending += 1
        if pending >= chunk:
            counters(batch)
            storage.write(batch)
            batch = storage.batch()
            pending = 0
    for partition in partitions:
        batch.delete(META, position_key(sid, partition))
    if slot.dropping <= partitions:
        batch.delete(META, dropping_key(sid))
    else:
        batch.put(META, dropping_key(sid), orjson.dumps(sorted(slot.dropping - partitions)))
    counters(batch)
    storage.write(batch)
    return deleted, schema_delta
