"""A view: one topic materialised in RocksDB, with its runtime state and its reads.

The data lives in a :class:`~statestore.slot.Slot` (one generation's column
families and metadata); the write side works on the slot. The view holds what
is not stored (state, reason, end offsets, load progress), answers reads from
its current slot, and is changed by the ingest loop only through the named
methods below, under its lock. A rebuild swaps in another slot in one write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from .apply import Applied, apply_records, drop_partitions
from .codecs import KeyCodec, ValueCodec, key_codec, value_codec
from .config import ViewConfig
from .cursor import CursorSigner
from .errors import (
    CodecError,
    CursorError,
    InvalidRangeError,
    NotReadyError,
    PositionTimeoutError,
    RegistryUnavailableError,
    UnknownIndexError,
)
from .history import ViewHistory, read_history, write_history
from .indexes import (
    IndexValue,
    entry_value_length,
    index_range,
    index_value,
    index_value_key,
    sync_indexes,
)
from .metrics import freshness_histogram
from .position import format_position
from .records import (
    HEADER_SIZE,
    NO_SCHEMA,
    Entity,
    HeaderHook,
    Record,
    misplaced_report,
    prefix_end,
    slot_id,
    unpack_header,
)
from .slot import Slot, current_generation, discard_slot
from .status import LoadStatus, Partitioning, PartitionStatus, ViewState, ViewStatus
from .storage import Storage

if TYPE_CHECKING:
    from .schemas import Schemas

__all__ = ["Page", "View"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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
        # Codecs whose framing may sit in record headers fold it into the key/value with this.
        self.header_hook = header_hook
        # The writer schemas of a registry view: Avro, Protobuf, JSON Schema (bulk-load workers
        # fetch some; the view keeps them).
        self.schemas = schemas
        # Age of the oldest record of each batch applied while following (metrics.py).
        self.freshness = freshness_histogram()
        if generation is None:
            generation = current_generation(storage, self.name)
        # Replaced as a whole by adopt(): a reader that took it reads one generation throughout.
        self.slot = Slot(config, storage, generation, self.key_codec, self.value_codec)
        # An RLock-backed condition: status() and applied_position() nest under it.
        self._cond = threading.Condition(threading.RLock())
        self.state: ViewState = "starting"
        self.reason: str | None = None
        # The end offsets the ingest loop read to (its fetches); lag is measured against the
        # newer of these and the ends polled for the purpose (observe_ends).
        self.end_offsets: dict[int, int] = {}
        self._polled_ends: dict[int, int] = {}
        self.bootstrap_seconds: float | None = None
        self.bootstrap_records = 0
        # Staleness events and rebuilds over every process (kept in the store).
        self.history: ViewHistory = read_history(storage, self.name)
        self.listeners: list[ChangeListener] = []
        self.load: LoadStatus | None = None
        self._applied_batches = 0
        self._position_cache: tuple[tuple[int, int], str] | None = None
        self._watchers: list[Callable[[], None]] = []
        # The topic's partition count as last read (the partitioner's modulus).
        self.partition_count = 0
        # A partitioned cluster's instance: the partitions the group gave it (None: every
        # partition, a replicated view), those it keeps a standby copy of for another
        # instance, and those of either it has read to the end since it took them.
        self.owned: frozenset[int] | None = None
        self.standby: frozenset[int] = frozenset()
        self._caught: frozenset[int] = frozenset()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call *callback* after every change of positions or state, from the thread that made
        it and under the view's lock (so it must only hand over, never block); returns the
        function that stops the calls. Async waiters use it instead of a blocked thread."""
        with self._cond:
            self._watchers.append(callback)

        def stop() -> None:
            with self._cond:
                if callback in self._watchers:
                    self._watchers.remove(callback)

        return stop

    def _changed(self) -> None:
        """Wake what waits on a position or a state (the caller holds the lock)."""
        self._cond.notify_all()
        for callback in self._watchers:
            try:
                callback()
            except Exception:  # a waiter's trouble is never the ingest loop's
                log.exception("view.watcher_failed view=%s", self.name)

    @property
    def generation(self) -> int:
        return self.slot.generation

    @property
    def servable(self) -> bool:
        return self.slot.servable

    @property
    def bulk(self) -> bool:
        return self.slot.bulk

    # -- slots -----------------------------------------------------------------------

    def prepare(self) -> str | None:
        """Create the slot's families and indexes; return why it must be rebuilt, if so."""
        reason = self.slot.prepare()
        if reason is None and not self.storage.read_only:
            sync_indexes(self.slot)
        return reason

    def shadow(self) -> View:
        """A fresh, empty next generation of this view, to be built beside it."""
        generation = self.slot.generation + 1
        discard_slot(self.storage, slot_id(self.name, generation))  # an interrupted rebuild's
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
        shadow.owned = self.owned
        shadow.standby = self.standby
        shadow.partition_count = self.partition_count
        shadow.prepare()
        return shadow

    def adopt(
        self,
        shadow: View,
        grace: float | None = 5.0,
        *,
        cause: str = "requested",
        reason: str = "rebuild requested",
    ) -> None:
        """Switch to the caught-up *shadow* in one write; drop the old copy after *grace* seconds.

        The rebuild is counted in the view's history with its *cause* and *reason*.

        Readers that picked the old slot just before the switch finish their read
        within the grace period, so no read sees a half-built or vanished view.
        """
        old = self.slot.id
        shadow.slot.make_current()
        with self._cond:
            self.slot = shadow.slot
            self.end_offsets = shadow.end_offsets
            self.bootstrap_seconds = shadow.bootstrap_seconds
            self.bootstrap_records = shadow.bootstrap_records
            self._remember(self.history.rebuilt(cause, reason))
            self._applied_batches += 1
            self._changed()
        log.info("view.swapped view=%s generation=%d", self.name, self.slot.generation)
        if grace is None:
            discard_slot(self.storage, old)
            return
        timer = threading.Timer(grace, self._drop_old, args=(old,))
        timer.daemon = True
        timer.start()

    def _drop_old(self, slot_id: str) -> None:
        try:
            discard_slot(self.storage, slot_id)
        except Exception:
            # A closed store drops leftovers at its next start instead.
            log.debug("view.drop_deferred view=%s slot=%s", self.name, slot_id)

    def wipe(self, reason: str) -> None:
        """Replace the data with an empty new generation at once (codec or topic changed)."""
        self.adopt(self.shadow(), grace=None, cause="config_changed", reason=reason)

    def _remember(self, history: ViewHistory) -> None:
        self.history = history
        if not self.storage.read_only:
            write_history(self.storage, self.name, history)

    # -- ingest ----------------------------------------------------------------------

    def apply(self, records: list[Record], end_positions: dict[int, int] | None = None) -> Applied:
        """Apply one consumed batch atomically and wake readers waiting on a position."""
        slot = self.slot
        applied = apply_records(
            slot,
            records,
            track=bool(self.listeners),
            end_positions=end_positions,
            partitions=self.partition_count or len(self.end_offsets),
        )
        with self._cond:
            slot.positions.update(applied.positions)
            c = slot.counters
            c["keys"] += applied.keys_delta
            c["records"] += applied.records
            c["bytes"] += applied.nbytes
            c["quarantined"] += applied.quarantined
            if applied.misplaced:
                c["misplaced"] += applied.misplaced
                if slot.misplaced_first is None and applied.misplaced_first is not None:
                    slot.misplaced_first = orjson.loads(misplaced_report(*applied.misplaced_first))
            counts = slot.schema_counts
            for schema_id, change in applied.schema_delta.items():
                counts[schema_id] = counts.get(schema_id, 0) + change
            slot.last_applied_at_ms = applied.applied_at_ms
            self._applied_batches += 1
            self._changed()
        for listener in list(self.listeners):
            try:
                listener(self, applied)
            except Exception:
                log.exception("view.listener_failed view=%s", self.name)
        return applied

    def begin_bulk(self) -> bool:
        """Load the slot in bulk if it has never been read into; True when loading in bulk."""
        return self.slot.begin_bulk()

    def show_load(self, load: LoadStatus | None) -> None:
        """A bulk load's phase and progress, for status (None: no load under way)."""
        with self._cond:
            self.load = load

    def show_bulk_progress(self, positions: dict[int, int], records: int) -> None:
        """How far a bulk load has read each partition without a gap, and the records read
        that far (status and lag only: the view serves nothing until the merge)."""
        with self._cond:
            self.slot.positions.update(positions)
            self.slot.counters["records"] = records
            self._applied_batches += 1

    def finish_bulk(
        self,
        positions: dict[int, int],
        counters: dict[str, int],
        schema_counts: dict[int, int],
        applied_at_ms: int,
    ) -> None:
        """Take the state a bulk load's merge has just written; reads are served from now."""
        slot = self.slot
        with self._cond:
            slot.positions = dict(positions)
            slot.counters.update(counters)
            slot.schema_counts = dict(schema_counts)
            slot.last_applied_at_ms = applied_at_ms
            slot.bulk = False
            self.load = None
            self._applied_batches += 1
            self._changed()

    def follow_slot(self, slot: Slot) -> None:
        """Serve *slot*, read afresh from a store another process writes (a secondary
        copy's catch-up), and wake what waits on a position."""
        with self._cond:
            self.slot = slot
            self._applied_batches += 1
            self._changed()

    @property
    def reads(self) -> frozenset[int] | None:
        """The partitions this view reads: None for all (a replicated view), else those
        it owns and those it keeps standby copies of."""
        return None if self.owned is None else self.owned | self.standby

    @property
    def serving(self) -> frozenset[int]:
        """Owned partitions read to the end since they were taken: those it answers for."""
        return self._caught if self.owned is None else self._caught & self.owned

    @property
    def standing_by(self) -> frozenset[int]:
        """Standby copies read to the end (a failover can be answered from them at once)."""
        return self._caught & self.standby

    def mine(self, ends: dict[int, int]) -> dict[int, int]:
        """*ends* of the partitions this view reads."""
        reads = self.reads
        return ends if reads is None else {p: o for p, o in ends.items() if p in reads}

    def set_owned(self, owned: frozenset[int]) -> None:
        """The group moved partitions: stop answering for those given up at once (a
        partition kept as a standby copy stays read)."""
        with self._cond:
            self.owned = owned
            self._narrow()

    def set_standby(self, standby: frozenset[int]) -> None:
        """The partitions to keep standby copies of (those owned are not among them)."""
        with self._cond:
            self.standby = standby
            self._narrow()

    def _narrow(self) -> None:
        reads = self.reads
        if reads is not None:
            self._caught = self._caught & reads
        self.end_offsets = self.mine(self.end_offsets)
        self._polled_ends = self.mine(self._polled_ends)
        self._changed()

    def mark_serving(self, partitions: frozenset[int]) -> None:
        """*partitions* were read to the end offsets: answer for those still read (owned,
        or kept as standby copies)."""
        with self._cond:
            reads = self.reads
            self._caught = self._caught | (partitions if reads is None else partitions & reads)
            self._changed()

    def drop_partitions(self, partitions: set[int]) -> int:
        """Delete what the store holds of *partitions* (given up); the keys deleted."""
        slot = self.slot
        deleted, schema_delta = drop_partitions(slot, partitions)
        with self._cond:
            slot.counters["keys"] -= deleted
            for schema_id, change in schema_delta.items():
                slot.schema_counts[schema_id] = slot.schema_counts.get(schema_id, 0) + change
            for p in partitions:
                slot.positions.pop(p, None)
            slot.dropping = slot.dropping - partitions
            self._applied_batches += 1
            self._changed()
        return deleted

    def set_targets(self, ends: dict[int, int], *, replace: bool = False) -> None:
        """The end offsets lag is measured against: *replace* them all, or update some."""
        ends = self.mine(ends)
        with self._cond:
            if replace:
                self.end_offsets = dict(ends)
            else:
                self.end_offsets.update(ends)

    def bootstrapped(self, seconds: float, records: int) -> None:
        """Record the first bootstrap's time and records (later catch-ups keep them)."""
        if self.bootstrap_seconds is None:
            self.bootstrap_seconds = seconds
            self.bootstrap_records = records

    def mark_caught_up(self) -> None:
        self.slot.mark_caught_up()

    def note_topic_id(self, topic_id: str, *, replace: bool = False) -> None:
        """Remember the id of the topic the current slot is read from."""
        self.slot.note_topic_id(topic_id, replace=replace)

    def touch_synced(self) -> None:
        self.slot.touch_synced()

    def went_stale(self, cause: str, reason: str) -> None:
        """Count a staleness event, kept in the store (the status and metrics show it)."""
        with self._cond:
            self._remember(self.history.stale(cause, reason))
            self._changed()

    def observe_ends(self, ends: dict[int, int]) -> None:
        """End offsets polled for lag alone (the ingest loop's own stay as they are)."""
        with self._cond:
            self._polled_ends = dict(self.mine(ends))

    def forget_positions(self) -> None:
        """Read again from each partition's log start (a stale view kept as it is)."""
        with self._cond:
            self.slot.positions.clear()

    def set_state(self, state: ViewState, reason: str | None = None) -> None:
        with self._cond:
            if state != self.state:
                log.info("view.state view=%s state=%s reason=%s", self.name, state, reason or "-")
            self.state = state
            self.reason = reason
            self._changed()

    def set_reason(self, reason: str | None) -> None:
        """Say why the view is in its state, keeping the state."""
        self.set_state(self.state, reason)

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

    def _served(self) -> Slot:
        """The slot reads come from; NotReadyError while its first bulk load runs."""
        slot = self.slot
        if slot.bulk:
            raise NotReadyError(
                f"view {self.name!r} is loading its first bootstrap; its entities are readable "
                "once it has caught up"
            )
        return slot

    def get(self, key: str) -> Entity | None:
        slot = self._served()
        stored_key = self.key_codec.from_text(key)
        data = self.storage.get(slot.entity_cf, stored_key)
        return None if data is None else self.entity(stored_key, data)

    def lookup(self, keys: list[str]) -> list[Entity | None]:
        slot = self._served()
        stored = [self.key_codec.from_text(k) for k in keys]
        datas = self.storage.get_many(slot.entity_cf, stored)
        return [
            None if d is None else self.entity(k, d) for k, d in zip(stored, datas, strict=True)
        ]

    def scan(
        self,
        prefix: str = "",
        after: str | None = None,
        limit: int = 100,
        *,
        start: str | None = None,
        end: str | None = None,
    ) -> Page:
        """A page of entities whose key starts with *prefix* and lies from *start* (inclusive)
        to *end* (exclusive), in stored-key order, after the cursor *after*.

        Empty or None *start*/*end* leave that side open; a prefix and a range together
        read the keys both admit.
        """
        slot = self._served()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        scope = f"scan:{self.name}:{slot.generation}"
        low = self.key_codec.from_text(prefix) if prefix else b""
        high = prefix_end(low) if low else None
        if start or end:
            first = self.key_codec.from_text(start) if start else b""
            stop = self.key_codec.from_text(end) if end else None
            if stop is not None and first > stop:
                raise InvalidRangeError(
                    f"view {self.name!r}: the key range start {start!r} is after its end {end!r}"
                )
            low = max(low, first)
            if stop is not None:
                high = stop if high is None else min(high, stop)
        begin = self._resume(scope, after, low, high, "prefix or key range")
        found = self.storage.scan(slot.entity_cf, begin, high)
        return Page(*self._page(scope, ((key, self.entity(key, d)) for key, d in found), limit))

    def by(
        self,
        field: str,
        value: Any,
        after: str | None = None,
        limit: int = 100,
        *,
        start: str | None = None,
    ) -> Page:
        """A page of entities whose indexed *field* equals *value*, in key order, from the
        key *start* on (inclusive) when given."""
        slot = self.slot
        if field not in slot.index_cfs:
            raise UnknownIndexError(self.name, field, self.config.indexes)
        slot = self._served()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        cf = slot.index_cfs[field]
        prefix = index_value_key(value)
        scope = f"by:{self.name}:{slot.generation}:{field}:{prefix.hex()}"
        begin = prefix + self.key_codec.from_text(start) if start else prefix
        if after:
            begin = max(begin, prefix + self.signer.open(scope, after) + b"\x00")
        n = len(prefix)
        path = slot.index_paths[field]

        def matches() -> Iterator[tuple[bytes, Entity]]:
            for ikey, _ in self.storage.scan(cf, begin, prefix_end(prefix)):
                key = ikey[n:]
                data = self.storage.get(slot.entity_cf, key)
                if data is None:
                    continue
                entity = self.entity(key, data)
                if index_value(entity.value, path) != prefix[:-1]:
                    # Changed between the index scan and this read: no longer a match.
                    continue
                yield key, entity

        return Page(*self._page(scope, matches(), limit))

    def by_range(
        self,
        field: str,
        start: IndexValue | None = None,
        end: IndexValue | None = None,
        after: str | None = None,
        limit: int = 100,
        *,
        start_key: str | None = None,
    ) -> Page:
        """A page of entities whose indexed *field* lies from *start* (inclusive) to *end*
        (exclusive), in the order of the field's values, then of keys; with *start_key*,
        the entities of the *start* value from that key on (inclusive), then the rest.

        A range covers values of one type (the type of its bounds; indexes.py states the
        order); without bounds, every entity the index holds.
        """
        slot = self.slot
        if field not in slot.index_cfs:
            raise UnknownIndexError(self.name, field, self.config.indexes)
        low, high = index_range(self.name, field, start, end)
        slot = self._served()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        cf = slot.index_cfs[field]
        scope = f"by_range:{self.name}:{slot.generation}:{field}"
        begin = self._resume(scope, after, low, high, "index range")
        if start_key:
            if start is None:
                raise InvalidRangeError(
                    f"view {self.name!r}, index {field!r}: a start key needs a start value"
                )
            begin = max(begin, index_value_key(start) + self.key_codec.from_text(start_key))
        path = slot.index_paths[field]

        def matches() -> Iterator[tuple[bytes, Entity]]:
            for entry, _ in self.storage.scan(cf, begin, high):
                n = entry_value_length(entry)
                key = entry[n + 1 :]
                data = self.storage.get(slot.entity_cf, key)
                if data is None:
                    continue
                entity = self.entity(key, data)
                if index_value(entity.value, path) != entry[:n]:
                    # Changed between the index scan and this read: listed under its new value.
                    continue
                yield entry, entity

        return Page(*self._page(scope, matches(), limit))

    def _resume(
        self, scope: str, after: str | None, low: bytes, high: bytes | None, what: str
    ) -> bytes:
        """Where a read from *low* to *high* starts: *low*, or just past the cursor *after*
        (which must lie in the range)."""
        if not after:
            return low
        last = self.signer.open(scope, after)
        if last < low or (high is not None and last >= high):
            raise CursorError(f"cursor does not belong to this {what}")
        return last + b"\x00"

    def _page(
        self, scope: str, found: Iterator[tuple[bytes, _T]], limit: int
    ) -> tuple[list[_T], str | None]:
        """Up to *limit* items of *found* (each with the position a cursor resumes after),
        and the cursor after the last one when more follow."""
        items: list[_T] = []
        last = b""
        for position, item in found:
            if len(items) == limit:
                return items, self.signer.make(scope, last)
            items.append(item)
            last = position
        return items, None

    def quarantine(
        self, after: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of quarantined records in (partition, offset) order, with the next cursor."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        slot = self.slot
        scope = f"quarantine:{self.name}:{slot.generation}"
        start = b""
        if after:
            start = self.signer.open(scope, after) + b"\x00"
        found = self.storage.scan(slot.quarantine_cf, start, None)
        return self._page(scope, ((key, orjson.loads(data)) for key, data in found), limit)

    def iter_entities(self) -> Iterator[Entity]:
        """Every entity in key order."""
        slot = self._served()
        for key, data in self.storage.scan(slot.entity_cf):
            yield self.entity(key, data)

    # -- positions ---------------------------------------------------------------------

    def applied_position(self) -> dict[int, int]:
        """``{partition: offset of the last applied record}``; ``-1`` when nothing yet."""
        with self._cond:
            parts = set(self.slot.positions) | set(self.end_offsets)
            return {p: self.slot.positions.get(p, 0) - 1 for p in sorted(parts)}

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
            return all(self.slot.positions.get(p, 0) > o for p, o in position.items())

        with self._cond:
            while not reached():
                left = deadline - time.monotonic()
                if left <= 0 or self.state == "failed":
                    raise PositionTimeoutError(self.name, position, self.applied_position())
                self._cond.wait(left)
        return self.applied_position()

    def _ends(self) -> dict[int, int]:
        """Per partition, the newer of the fetched and the polled end offset."""
        ends = dict(self.end_offsets)
        for p, end in self._polled_ends.items():
            if end > ends.get(p, -1):
                ends[p] = end
        return ends

    def lag(self) -> int | None:
        """Records between the applied positions and the newest end offsets known."""
        with self._cond:
            ends = self._ends()
            if not ends:
                return None
            return sum(max(0, end - self.slot.positions.get(p, 0)) for p, end in ends.items())

    def behind_fetched(self) -> bool:
        """Whether any partition is below the end offset the ingest loop last fetched to."""
        positions = self.slot.positions
        return any(positions.get(p, 0) < end for p, end in self.end_offsets.items())

    def caught_up(self, targets: dict[int, int]) -> bool:
        return all(self.slot.positions.get(p, 0) >= end for p, end in targets.items())

    def status(self) -> ViewStatus:
        with self._cond:
            slot = self.slot
            ends = self._ends()
            parts = sorted(set(slot.positions) | set(ends))
            partitions = []
            for p in parts:
                pos = slot.positions.get(p, 0)
                end = ends.get(p)
                partitions.append(
                    PartitionStatus(p, pos, end, None if end is None else max(0, end - pos))
                )
            return ViewStatus(
                name=self.name,
                topic=self.config.topic,
                state=self.state,
                reason=self.reason,
                keys=slot.counters["keys"],
                records_applied=slot.counters["records"],
                bytes_applied=slot.counters["bytes"],
                quarantined=slot.counters["quarantined"],
                lag=self.lag(),
                partitions=tuple(partitions),
                bootstrap_seconds=self.bootstrap_seconds,
                bootstrap_records=self.bootstrap_records,
                last_applied_at_ms=slot.last_applied_at_ms,
                generation=slot.generation,
                rebuilds=self.history.rebuilds,
                stale_events=self.history.stale_events,
                last_stale=self.history.last_stale,
                last_rebuild=self.history.last_rebuild,
                servable=slot.servable,
                schema_entities={k: n for k, n in sorted(slot.schema_counts.items()) if n},
                load=self.load,
                partitioning=None
                if self.config.partitioner is None
                else Partitioning(
                    self.config.partitioner,
                    slot.counters["misplaced"],
                    dict(slot.checked_from),
                    slot.misplaced_first,
                ),
            )
