"""A view: one topic materialised in RocksDB, with its runtime state and its reads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .apply import Applied, apply_records
from .codecs import KeyCodec, ValueCodec, key_codec, value_codec
from .config import ViewConfig
from .cursor import CursorSigner
from .errors import (
    CodecError,
    CursorError,
    NotReadyError,
    PositionTimeoutError,
    RegistryUnavailableError,
    UnknownIndexError,
)
from .indexes import index_value, index_value_key, move_index_entries, sync_indexes
from .position import format_position
from .records import (
    HEADER_SIZE,
    NO_SCHEMA,
    Entity,
    HeaderHook,
    Record,
    applied_at_key,
    bulk_key,
    caught_up_key,
    counter_key,
    fingerprint_key,
    generation_key,
    pack_int,
    partition_of_position_key,
    position_prefix,
    prefix_end,
    schema_count_prefix,
    slot_meta_prefix,
    synced_at_key,
    unpack_header,
    unpack_int,
)
from .status import LoadStatus, PartitionStatus, ViewState, ViewStatus
from .storage import META, Batch, Storage

if TYPE_CHECKING:
    from .schemas import Schemas

__all__ = ["Page", "View"]

log = logging.getLogger(__name__)

_COUNTERS = ("keys", "records", "bytes", "quarantined")
ChangeListener = Callable[["View", Applied], None]


@dataclass(frozen=True, slots=True)
class Page:
    """A page of entities in key order; ``next`` resumes after the last one (None: done)."""

    items: list[Entity]
    next: str | None


class View:
    """One configured view over its current storage slot."""

    def __init__(
        self,
        config: ViewConfig,
        storage: Storage,
        signer: CursorSigner,
        *,
        keys: KeyCodec | None = None,
        values: ValueCodec | None = None,
        header_hook: HeaderHook | None = None,
        schemas: Schemas | None = None,
        generation: int | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.storage = storage
        self.signer = signer
        self.key_codec = keys or key_codec(config.key)
        self.value_codec = values or value_codec(config.value)
        self.checks_values = config.value != "bytes"
        self.index_paths = {f: tuple(f.split(".")) for f in config.indexes}
        self.has_indexes = bool(self.index_paths)
        self.tracks_schemas = "avro" in (config.key, config.value)
        # Codecs whose framing may sit in record headers fold it into the key/value with this.
        self.header_hook = header_hook
        # The writer schemas of an Avro view (bulk-load workers fetch some; the view keeps them).
        self.schemas = schemas
        # An RLock-backed condition: status() and applied_position() nest under it.
        self._cond = threading.Condition(threading.RLock())
        self.state: ViewState = "starting"
        self.reason: str | None = None
        self.end_offsets: dict[int, int] = {}
        self.bootstrap_seconds: float | None = None
        self.bootstrap_records = 0
        self.rebuilds = 0
        self.stale_events = 0
        self.listeners: list[ChangeListener] = []
        self.load: LoadStatus | None = None
        self._applied_batches = 0
        self._position_cache: tuple[tuple[int, int], str] | None = None
        self._load_slot(generation)

    # -- slot, positions and counters ------------------------------------------------

    def _load_slot(self, generation: int | None = None) -> None:
        if generation is None:
            raw = self.storage.get(META, generation_key(self.name))
            generation = unpack_int(raw) if raw is not None else 0
        self.generation = generation
        self.slot = f"{self.name}#{self.generation}"
        self.entity_cf = f"v.{self.slot}"
        self.quarantine_cf = f"q.{self.slot}"
        self.staging_cf = f"s.{self.slot}"
        self.index_cfs = {f: f"i.{self.slot}.{f}" for f in self.config.indexes}
        self.positions: dict[int, int] = {}
        prefix = position_prefix(self.slot)
        for key, value in self.storage.scan(META, prefix, prefix_end(prefix)):
            self.positions[partition_of_position_key(key)] = unpack_int(value)
        self.counters = {
            name: self._meta_int(counter_key(self.slot, name)) or 0 for name in _COUNTERS
        }
        self.last_applied_at_ms = self._meta_int(applied_at_key(self.slot))
        self.schema_counts: dict[int, int] = {}
        prefix = schema_count_prefix(self.slot)
        for key, value in self.storage.scan(META, prefix, prefix_end(prefix)):
            self.schema_counts[partition_of_position_key(key)] = unpack_int(value)
        # Caught up at least once (persisted): the stored copy may be served while it catches up again.
        self.servable = self._meta_int(caught_up_key(self.slot)) is not None
        self.synced_at_ms = self._meta_int(synced_at_key(self.slot))
        # Loaded in bulk (first bootstrap): records sit in the staging family until the merge.
        self.bulk = self._meta_int(bulk_key(self.slot)) is not None

    def _meta_int(self, key: bytes) -> int | None:
        raw = self.storage.get(META, key)
        return unpack_int(raw) if raw is not None else None

    def prepare(self) -> str | None:
        """Create the slot's column families and indexes; return why it must be rebuilt, if so."""
        stored_fp = self.storage.get(META, fingerprint_key(self.slot))
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
            batch.put(META, fingerprint_key(self.slot), want)
            self.storage.write(batch)
        if reason is None:
            sync_indexes(self)
        return reason

    def families(self, slot: str | None = None) -> list[str]:
        """Every column family of *slot* (default: the current one)."""
        slot = slot or self.slot
        return [
            f
            for f in self.storage.families()
            if f in (f"v.{slot}", f"q.{slot}", f"s.{slot}") or f.startswith(f"i.{slot}.")
        ]

    def discard_slot(self, slot: str) -> None:
        """Drop a slot's column families and metadata (never the current one)."""
        for prefix in slot_meta_prefix(slot):
            self.storage.delete_range(META, prefix, prefix_end(prefix) or b"\xff" * 64)
        for family in self.families(slot):
            self.storage.drop_family(family)

    def shadow(self) -> View:
        """A fresh, empty next generation of this view, to be built beside it."""
        generation = self.generation + 1
        self.discard_slot(f"{self.name}#{generation}")  # leftovers of an interrupted rebuild
        shadow = View(
            self.config,
            self.storage,
            self.signer,
            keys=self.key_codec,
            values=self.value_codec,
            header_hook=self.header_hook,
            schemas=self.schemas,
            generation=generation,
        )
        shadow.state = "rebuilding"
        shadow.prepare()
        return shadow

    def adopt(self, shadow: View, grace: float | None = 5.0) -> None:
        """Switch to the caught-up *shadow* in one write; drop the old copy after *grace* seconds.

        Readers that picked the old column family just before the switch finish
        their read within the grace period, so no read sees a half-built or
        vanished view.
        """
        old_slot = self.slot
        batch = self.storage.batch()
        batch.put(META, generation_key(self.name), pack_int(shadow.generation))
        self.storage.write(batch)
        with self._cond:
            for attr in (
                "generation",
                "slot",
                "entity_cf",
                "quarantine_cf",
                "staging_cf",
                "bulk",
                "index_cfs",
                "positions",
                "counters",
                "last_applied_at_ms",
                "schema_counts",
                "servable",
                "synced_at_ms",
                "end_offsets",
                "bootstrap_seconds",
                "bootstrap_records",
            ):
                setattr(self, attr, getattr(shadow, attr))
            self.rebuilds += 1
            self._applied_batches += 1
            self._cond.notify_all()
        log.info("view.swapped view=%s generation=%d", self.name, self.generation)
        if grace is None:
            self.discard_slot(old_slot)
            return
        timer = threading.Timer(grace, self._drop_old, args=(old_slot,))
        timer.daemon = True
        timer.start()

    def _drop_old(self, slot: str) -> None:
        try:
            self.discard_slot(slot)
        except Exception:
            # A closed store drops leftovers at its next start instead.
            log.debug("view.drop_deferred view=%s slot=%s", self.name, slot)

    def wipe(self) -> None:
        """Replace the data with an empty new generation at once (codec or topic changed)."""
        self.adopt(self.shadow(), grace=None)

    def touch_synced(self) -> None:
        """Record that the view has read everything up to the end offsets now."""
        now = int(time.time() * 1000)
        batch = self.storage.batch()
        batch.put(META, synced_at_key(self.slot), pack_int(now))
        self.storage.write(batch)
        self.synced_at_ms = now

    # -- ingest ----------------------------------------------------------------------

    def apply(self, records: list[Record], end_positions: dict[int, int] | None = None) -> Applied:
        """Apply one consumed batch atomically and wake readers waiting on a position."""
        applied = apply_records(self, records, end_positions=end_positions)
        with self._cond:
            self.positions.update(applied.positions)
            c = self.counters
            c["keys"] += applied.keys_delta
            c["records"] += applied.records
            c["bytes"] += applied.nbytes
            c["quarantined"] += applied.quarantined
            for schema_id, change in applied.schema_delta.items():
                self.schema_counts[schema_id] = self.schema_counts.get(schema_id, 0) + change
            self.last_applied_at_ms = applied.applied_at_ms
            self._applied_batches += 1
            self._cond.notify_all()
        for listener in list(self.listeners):
            try:
                listener(self, applied)
            except Exception:
                log.exception("view.listener_failed view=%s", self.name)
        return applied

    def index_changes(
        self,
        batch: Batch,
        key: bytes,
        old: bytes | None,
        new_raw: bytes | None,
        new_value: Any = None,
    ) -> None:
        """Move index entries of *key* from its old value to its new one (same batch).

        *new_value* is the new value already decoded, when the caller has it.
        """
        old_value = self.decode_quietly(old[HEADER_SIZE:]) if old is not None else None
        if new_value is None and new_raw is not None:
            new_value = self.decode_quietly(new_raw)
        move_index_entries(self, batch, key, old_value, new_value)

    def decode_quietly(self, raw: bytes) -> Any:
        try:
            return self.value_codec.decode(raw)
        except Exception:
            return None

    def begin_bulk(self) -> None:
        """Load this slot in bulk if it has never been read into: see ``apply``."""
        if self.bulk or self.servable or self.positions or self.storage.read_only:
            return
        self.storage.create_family(self.staging_cf)
        batch = self.storage.batch()
        batch.put(META, bulk_key(self.slot), pack_int(int(time.time() * 1000)))
        self.storage.write(batch)
        self.bulk = True

    def show_load(self, load: LoadStatus | None) -> None:
        """A bulk load's phase and progress, for status (None: no load under way)."""
        with self._cond:
            self.load = load

    def show_bulk_progress(self, positions: dict[int, int], records: int) -> None:
        """How far a bulk load has read each partition without a gap, and the records read
        that far (status and lag only: the view serves nothing until the merge)."""
        with self._cond:
            self.positions.update(positions)
            self.counters["records"] = records
            self._applied_batches += 1

    def finish_bulk(
        self,
        positions: dict[int, int],
        keys: int,
        records: int,
        nbytes: int,
        quarantined: int,
        schema_counts: dict[int, int],
        applied_at_ms: int,
    ) -> None:
        """Take the state a bulk load's merge has just written; reads are served from now."""
        with self._cond:
            self.positions = dict(positions)
            self.counters.update(keys=keys, records=records, bytes=nbytes, quarantined=quarantined)
            self.schema_counts = dict(schema_counts)
            self.last_applied_at_ms = applied_at_ms
            self.bulk = False
            self.load = None
            self._applied_batches += 1
            self._cond.notify_all()

    def mark_caught_up(self) -> None:
        """Record that this generation has caught up once, so restarts may serve it at once."""
        if not self.servable:
            batch = self.storage.batch()
            batch.put(META, caught_up_key(self.slot), pack_int(int(time.time() * 1000)))
            self.storage.write(batch)
            self.servable = True

    def set_state(self, state: ViewState, reason: str | None = None) -> None:
        with self._cond:
            if state != self.state:
                log.info("view.state view=%s state=%s reason=%s", self.name, state, reason or "-")
            self.state = state
            self.reason = reason
            self._cond.notify_all()

    # -- reads -------------------------------------------------------------------------

    def entity(self, stored_key: bytes, data: bytes) -> Entity:
        _, partition, offset, timestamp, schema_id = unpack_header(data)
        try:
            value = self.value_codec.decode(data[HEADER_SIZE:])
        except RegistryUnavailableError:
            raise
        except Exception as exc:
            raise CodecError(
                f"view {self.name!r}: stored value at partition {partition} offset {offset} "
                f"cannot be decoded: {exc}"
            ) from exc
        return Entity(
            self.key_codec.to_text(stored_key),
            value,
            partition,
            offset,
            timestamp if timestamp >= 0 else None,
            None if schema_id == NO_SCHEMA else schema_id,
        )

    def _loading(self) -> NotReadyError:
        return NotReadyError(
            f"view {self.name!r} is loading its first bootstrap; its entities are readable "
            "once it has caught up"
        )

    def get(self, key: str) -> Entity | None:
        if self.bulk:
            raise self._loading()
        stored_key = self.key_codec.from_text(key)
        data = self.storage.get(self.entity_cf, stored_key)
        return None if data is None else self.entity(stored_key, data)

    def lookup(self, keys: list[str]) -> list[Entity | None]:
        if self.bulk:
            raise self._loading()
        stored = [self.key_codec.from_text(k) for k in keys]
        datas = self.storage.get_many(self.entity_cf, stored)
        return [
            None if d is None else self.entity(k, d) for k, d in zip(stored, datas, strict=True)
        ]

    def scan(self, prefix: str = "", after: str | None = None, limit: int = 100) -> Page:
        """A page of entities whose key starts with *prefix*, after the cursor *after*."""
        if self.bulk:
            raise self._loading()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        scope = f"scan:{self.name}:{self.generation}"
        low = self.key_codec.from_text(prefix) if prefix else b""
        high = prefix_end(low) if low else None
        start = low
        if after:
            last = self.signer.open(scope, after)
            if last < low or (high is not None and last >= high):
                raise CursorError("cursor does not belong to this prefix")
            start = last + b"\x00"
        items: list[Entity] = []
        last_key = b""
        for key, data in self.storage.scan(self.entity_cf, start, high):
            if len(items) == limit:
                return Page(items, self.signer.make(scope, last_key))
            items.append(self.entity(key, data))
            last_key = key
        return Page(items, None)

    def by(self, field: str, value: Any, after: str | None = None, limit: int = 100) -> Page:
        """A page of entities whose indexed *field* equals *value*, in key order."""
        if field not in self.index_cfs:
            raise UnknownIndexError(self.name, field, self.config.indexes)
        if self.bulk:
            raise self._loading()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        cf = self.index_cfs[field]
        prefix = index_value_key(value)
        scope = f"by:{self.name}:{self.generation}:{field}:{prefix.hex()}"
        start = prefix
        if after:
            start = prefix + self.signer.open(scope, after) + b"\x00"
        items: list[Entity] = []
        last_key = b""
        n = len(prefix)
        path = self.index_paths[field]
        for ikey, _ in self.storage.scan(cf, start, prefix_end(prefix)):
            key = ikey[n:]
            data = self.storage.get(self.entity_cf, key)
            if data is None:
                continue
            entity = self.entity(key, data)
            if index_value(entity.value, path) != prefix[:-1]:
                # Changed between the index scan and this read: no longer a match.
                continue
            if len(items) == limit:
                return Page(items, self.signer.make(scope, last_key))
            items.append(entity)
            last_key = key
        return Page(items, None)

    def quarantine(
        self, after: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of quarantined records in (partition, offset) order, with the next cursor."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        scope = f"quarantine:{self.name}:{self.generation}"
        start = b""
        if after:
            start = self.signer.open(scope, after) + b"\x00"
        items: list[dict[str, Any]] = []
        last = b""
        for key, data in self.storage.scan(self.quarantine_cf, start, None):
            if len(items) == limit:
                return items, self.signer.make(scope, last)
            items.append(orjson.loads(data))
            last = key
        return items, None

    def iter_entities(self) -> Iterator[Entity]:
        """Every entity in key order."""
        if self.bulk:
            raise self._loading()
        for key, data in self.storage.scan(self.entity_cf):
            yield self.entity(key, data)

    # -- positions ---------------------------------------------------------------------

    def applied_position(self) -> dict[int, int]:
        """``{partition: offset of the last applied record}``; ``-1`` when nothing yet."""
        with self._cond:
            parts = set(self.positions) | set(self.end_offsets)
            return {p: self.positions.get(p, 0) - 1 for p in sorted(parts)}

    def position_text(self) -> str:
        """``applied_position()`` as ``"0:12,1:7"``, formatted once per applied batch.

        Positions only grow and are updated after their batch is written, so a text
        formatted just after a newer batch never names data a later read cannot see.
        """
        key = (self._applied_batches, len(self.end_offsets))
        cached = self._position_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        text = format_position(self.applied_position())
        self._position_cache = (key, text)
        return text

    def wait_for(self, position: dict[int, int], timeout: float) -> dict[int, int]:
        """Block until every ``partition: offset`` in *position* is applied; else raise."""
        deadline = time.monotonic() + max(0.0, timeout)

        def reached() -> bool:
            return all(self.positions.get(p, 0) > o for p, o in position.items())

        with self._cond:
            while not reached():
                left = deadline - time.monotonic()
                if left <= 0 or self.state == "failed":
                    raise PositionTimeoutError(self.name, position, self.applied_position())
                self._cond.wait(left)
        return self.applied_position()

    def lag(self) -> int | None:
        if not self.end_offsets:
            return None
        return sum(max(0, end - self.positions.get(p, 0)) for p, end in self.end_offsets.items())

    def caught_up(self, targets: dict[int, int]) -> bool:
        return all(self.positions.get(p, 0) >= end for p, end in targets.items())

    def status(self) -> ViewStatus:
        with self._cond:
            parts = sorted(set(self.positions) | set(self.end_offsets))
            partitions = []
            for p in parts:
                pos = self.positions.get(p, 0)
                end = self.end_offsets.get(p)
                partitions.append(
                    PartitionStatus(p, pos, end, None if end is None else max(0, end - pos))
                )
            return ViewStatus(
                name=self.name,
                topic=self.config.topic,
                state=self.state,
                reason=self.reason,
                keys=self.counters["keys"],
                records_applied=self.counters["records"],
                bytes_applied=self.counters["bytes"],
                quarantined=self.counters["quarantined"],
                lag=self.lag(),
                partitions=tuple(partitions),
                bootstrap_seconds=self.bootstrap_seconds,
                bootstrap_records=self.bootstrap_records,
                last_applied_at_ms=self.last_applied_at_ms,
                generation=self.generation,
                rebuilds=self.rebuilds,
                stale_events=self.stale_events,
                servable=self.servable,
                schema_entities={k: n for k, n in sorted(self.schema_counts.items()) if n},
                load=self.load,
            )
