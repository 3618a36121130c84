"""The worker side of a bulk load: read offset ranges, check records, stage sorted SST files.

A :class:`Stager` reads its :class:`Piece` s (offset ranges of partitions) with
one consumer, checks every record exactly as the follow path does (key, value
codec, quarantine), keeps the newest record per key and partition in memory,
and when its buffer is full (or its pieces are done) writes them, sorted, into
one SST file together with the control entries that say how far each piece got
and which records it quarantined. The process that owns the store ingests the
file: data and progress become durable together, or not at all.

It runs in a spawned worker process (``worker_main``) or, for small loads, in the
thread of the bootstrap itself; the loop is the same.
"""

from __future__ import annotations

import logging
import operator
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs import NO_KEY, KeyCodec, ValueCodec, not_utf8
from .errors import CodecError, RegistryUnavailableError
from .partitioners import Partitioner
from .records import (
    NO_SCHEMA,
    STORED_KIND,
    TOMBSTONE_KIND,
    HeaderHook,
    pack_header,
    pack_progress,
    pack_samples,
    progress_key,
    quarantine_report,
    sample_key,
    stage_key_maker,
    staged_key,
    staged_quarantine_key,
)
from .storage import SstFile

__all__ = ["Piece", "Staged", "Stager"]

log = logging.getLogger(__name__)

# Rough bytes of memory one buffered record takes beyond its key and value (the dict
# slot, the tuple, the bytes and int objects), for the buffer budget.
_ENTRY_OVERHEAD = 320
_first = operator.itemgetter(0)
# Stored keys sampled from each staged file, for splitting the merge by key range.
_SAMPLES = 16


@dataclass(frozen=True, slots=True)
class Piece:
    """The offsets ``[start, end)`` of one partition, read by one worker."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Staged:
    """One SST file a worker wrote, and what it covers.

    ``progress`` holds ``(partition, start, reached, records, bytes, quarantined,
    misplaced)`` per piece, cumulative since the piece's start; ``schemas`` the writer schemas
    the worker fetched that the store has not cached yet.
    """

    worker: int
    path: str | None
    progress: tuple[tuple[int, int, int, int, int, int, int], ...]
    schemas: tuple[tuple[int, dict[str, Any], bytes | None], ...] = ()


@dataclass(slots=True)
class _Reading:
    """A piece being read: where it stands and what it counted."""

    piece: Piece
    reached: int
    records: int = 0
    nbytes: int = 0
    quarantined: int = 0
    misplaced: int = 0
    flushed_at: int = -1
    later: list[Piece] = field(default_factory=list)

    def as_progress(self) -> tuple[int, int, int, int, int, int, int]:
        p = self.piece
        return (
            p.partition,
            p.start,
            self.reached,
            self.records,
            self.nbytes,
            self.quarantined,
            self.misplaced,
        )


class Stager:
    """Reads pieces of one topic and stages their records into sorted SST files."""

    def __init__(
        self,
        *,
        worker: int,
        topic: str,
        keys: KeyCodec,
        values: ValueCodec,
        checks_values: bool,
        tracks_schemas: bool,
        header_hook: HeaderHook | None,
        fail_fast: bool,
        out_dir: Path,
        budget_bytes: int,
        emit: Callable[[Staged], None],
        new_schemas: Callable[[], list[tuple[int, dict[str, Any], bytes | None]]] | None = None,
        on_trouble: Callable[[str], None] | None = None,
        on_read: Callable[[int], None] | None = None,
        batch_size: int = 10_000,
        placement: Partitioner | None = None,
        partitions: int = 0,
    ) -> None:
        self.worker = worker
        self.topic = topic
        self._keys = keys
        self._values = values
        self._checks_values = checks_values
        self._tracks_schemas = tracks_schemas
        self._hook = header_hook
        self._fail_fast = fail_fast
        self._out = Path(out_dir)
        self._budget = budget_bytes
        self._emit = emit
        self._new_schemas = new_schemas
        self._on_trouble = on_trouble
        self._on_read = on_read
        self.read = 0
        self._batch_size = batch_size
        self._placement = placement
        self._partitions = partitions
        self._files = 0
        self._reading: dict[int, _Reading] = {}
        # Per partition: stored key -> its newest message, or (offset, timestamp, schema
        # id, value) where the value was rewritten or its schema id is needed.
        self._buffers: dict[int, dict[bytes, Any]] = {}
        self._finished: list[_Reading] = []
        self._quarantine: list[tuple[int, int, bytes]] = []
        self._used = 0
        self.failure: str | None = None

    # -- the loop --------------------------------------------------------------------

    def run(self, reader: Any, pieces: list[Piece], stopped: Callable[[], bool]) -> str | None:
        """Read *pieces* to their ends (or until *stopped*); return a failure, if any.

        *reader* is a ``kafka.RangeReader``. Every record read is in an emitted file
        when this returns, whether the pieces are done or the load was stopped.
        """
        for piece in sorted(pieces, key=lambda p: (p.partition, p.start)):
            r = self._reading.get(piece.partition)
            if r is None:
                self._reading[piece.partition] = _Reading(piece, piece.start)
                self._buffers[piece.partition] = {}
                reader.assign(piece.partition, piece.start)
            else:
                r.later.append(piece)
        backoff = 0.0
        pending: list[Any] = []
        while self._reading and self.failure is None and not stopped():
            if not pending:
                pending = reader.poll(self._batch_size, 0.2)
                if not pending:
                    self._settle(reader)
                    continue
            try:
                n = len(pending)
                pending = self._stage(pending, reader)
                self.read += n - len(pending)
                if self._on_read is not None:
                    self._on_read(self.read)
                self._settle(reader)
            except _Retry as exc:
                # What came before the record is staged; the record is tried again.
                pending = exc.rest
                backoff = min(30.0, max(0.5, backoff * 2))
                self._trouble(
                    f"schema registry unavailable, retrying in {backoff:.1f}s: {exc.reason}"
                )
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline and not stopped():
                    time.sleep(0.1)
                continue
            backoff = 0.0
            if self._used >= self._budget:
                self.flush()
        self.flush()
        return self.failure

    def _stage(self, msgs: list[Any], reader: Any) -> list[Any]:
        """Stage *msgs*; the messages left when the registry failed (none otherwise).

        The hot loop of a bulk load. Messages come in runs of one partition, so the
        piece's counters live in locals for the run and are written back when it
        ends. A buffered record is the message itself where the value is stored as
        read (no tuple built per record); views that rewrite values or count schema
        ids buffer ``(offset, timestamp, schema id, value)``.
        """
        reading = self._reading
        buffers = self._buffers
        utf8_keys = self._keys.name == "string"
        key_from_kafka = self._keys.from_kafka
        check = self._values.check
        check_value = self._checks_values
        hook = self._hook
        as_message = hook is None and not self._tracks_schemas
        # The partitioner records are checked against (None: not checked).
        place = self._placement if self._partitions else None
        partitions = self._partitions
        cur = -1
        r: _Reading | None = None
        buf: dict[bytes, Any] = {}
        end = reached = records = nbytes = 0
        start_records = start_bytes = 0
        i = -1
        try:
            for i, m in enumerate(msgs):  # noqa: B007  # i says where a registry outage stopped
                partition = m.partition()
                if partition != cur:
                    if r is not None:
                        r.reached, r.records, r.nbytes = reached, records, nbytes
                        self._used += (records - start_records) * _ENTRY_OVERHEAD + (
                            nbytes - start_bytes
                        )
                    cur = partition
                    r = reading.get(partition)
                    if r is None:
                        end = -1  # not (or no longer) read here: every offset is past it
                        continue
                    buf = buffers[partition]
                    end, reached = r.piece.end, r.reached
                    records = start_records = r.records
                    nbytes = start_bytes = r.nbytes
                offset = m.offset()
                if offset >= end:
                    if r is not None:
                        r.reached, r.records, r.nbytes = reached, records, nbytes
                        self._done(r, reader)
                    # The partition's next piece (if this worker has one) may start here.
                    r = reading.get(partition)
                    if r is None:
                        end = -1
                        continue
                    buf = buffers[partition]
                    end, reached = r.piece.end, r.reached
                    records = start_records = r.records
                    nbytes = start_bytes = r.nbytes
                    if offset >= end:
                        continue
                if offset < reached:
                    continue
                key = m.key()
                value = m.value()
                if hook is not None:
                    headers = m.headers()
                    if headers:
                        key, value = hook(headers, key, value)
                try:
                    if key is None:
                        raise CodecError(NO_KEY)
                    if utf8_keys:
                        key.decode("utf-8")
                        stored_key = key
                    else:
                        stored_key = key_from_kafka(key)
                    if value is None:
                        schema_id = NO_SCHEMA
                    else:
                        schema_id = check(value) if check_value else NO_SCHEMA
                except (UnicodeDecodeError, CodecError) as exc:
                    assert r is not None
                    r.reached, r.records, r.nbytes = reached, records, nbytes
                    self._reject(r, m, key, value, _reason(exc))
                    if self.failure is not None:
                        return []
                    reached, records, nbytes = r.reached, r.records, r.nbytes
                    start_records, start_bytes = records, nbytes
                    continue
                if place is not None and place(key, partitions) != partition:
                    r.misplaced += 1  # type: ignore[union-attr]  # set for the partition's run
                reached = offset + 1
                records += 1
                if value is not None:
                    nbytes += len(value)
                if as_message:
                    buf[stored_key] = m
                else:
                    buf[stored_key] = (offset, m.timestamp()[1], schema_id, value)
        except RegistryUnavailableError as exc:
            if r is not None:
                r.reached, r.records, r.nbytes = reached, records, nbytes
            raise _Retry(msgs[i:], str(exc)) from None
        if r is not None:
            r.reached, r.records, r.nbytes = reached, records, nbytes
            self._used += (records - start_records) * _ENTRY_OVERHEAD + (nbytes - start_bytes)
        return []

    def _reject(
        self, r: _Reading, m: Any, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        offset = m.offset()
        if self._fail_fast:
            # The bad record is not applied: the piece stops just before it.
            self.failure = f"partition {r.piece.partition} offset {offset}: {reason}"
            return
        data = quarantine_report(
            self.topic, r.piece.partition, offset, m.timestamp()[1], key, value, reason
        )
        self._quarantine.append((r.piece.partition, offset, data))
        self._used += len(data) + _ENTRY_OVERHEAD
        r.reached = offset + 1
        r.records += 1
        r.quarantined += 1
        if value is not None:
            r.nbytes += len(value)

    def _settle(self, reader: Any) -> None:
        """Finish pieces read to their last offset, or whose partition end the broker
        reported at or past the piece's end (compaction holes, transaction markers)."""
        for partition, r in list(self._reading.items()):
            eof = reader.eof.get(partition)
            if r.reached >= r.piece.end or (eof is not None and eof >= r.piece.end):
                self._done(r, reader)

    def _done(self, r: _Reading, reader: Any) -> None:
        """The piece is read to its end: the rest of its range holds no record."""
        r.reached = r.piece.end
        partition = r.piece.partition
        self._finished.append(r)
        del self._reading[partition]
        if not r.later:
            reader.unassign(partition)
            return
        # Another piece of the same partition, after a gap another worker reads: its
        # records must not replace this piece's in the buffer, so this one is written first.
        self.flush()
        nxt = r.later.pop(0)
        self._reading[partition] = _Reading(nxt, nxt.start, later=r.later)
        reader.seek(partition, nxt.start)

    # -- files -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what is buffered, with the progress of every piece, into one SST file."""
        readings = [
            r for r in (*self._reading.values(), *self._finished) if r.reached != r.flushed_at
        ]
        if not readings and not self._quarantine:
            return
        # Each partition's buffer is freed as its records are encoded: the file's records
        # never sit in memory twice over.
        items: list[tuple[bytes, bytes]] = []
        append = items.append
        pack = pack_header
        for partition, buf in self._buffers.items():
            key_of = stage_key_maker(partition)
            for stored_key, entry in buf.items():
                if type(entry) is tuple:
                    offset, timestamp, schema_id, value = entry
                else:
                    offset = entry.offset()
                    timestamp = entry.timestamp()[1]
                    value = entry.value()
                    schema_id = NO_SCHEMA
                if value is None:
                    data = pack(TOMBSTONE_KIND, partition, offset, timestamp, NO_SCHEMA)
                else:
                    data = pack(STORED_KIND, partition, offset, timestamp, schema_id) + value
                append((key_of(stored_key, offset), data))
            buf.clear()
        self._files += 1
        if items:
            step = max(1, len(items) // _SAMPLES)
            keys = sorted(staged_key(k) for k, _ in items[::step])
            append((sample_key(self.worker, os.getpid(), self._files), pack_samples(keys)))
        for partition, offset, report in self._quarantine:
            append((staged_quarantine_key(partition, offset), report))
        self._quarantine.clear()
        for r in readings:
            append(
                (
                    progress_key(r.piece.partition, r.piece.start),
                    pack_progress(*r.as_progress()[2:]),
                )
            )
            r.flushed_at = r.reached
        # By key alone: comparing (key, value) tuples tests each pair of keys for
        # equality before ordering them.
        items.sort(key=_first)
        path = self._out / f"w{self.worker}-{self._files:06d}.sst"
        sst = SstFile(path)
        sst.add_sorted(items)
        sst.finish()
        self._used = 0
        self._finished.clear()
        schemas = tuple(self._new_schemas()) if self._new_schemas is not None else ()
        self._emit(
            Staged(self.worker, str(path), tuple(r.as_progress() for r in readings), schemas)
        )

    def _trouble(self, text: str) -> None:
        log.warning("bulk.trouble worker=%d reason=%s", self.worker, text)
        if self._on_trouble is not None:
            self._on_trouble(text)


class _Retry(RegistryUnavailableError):
    """The registry failed mid-batch: the messages from the failed one on are to be retried."""

    def __init__(self, rest: list[Any], reason: str) -> None:
        super().__init__(reason)
        self.rest = rest
        self.reason = reason


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return not_utf8("key", exc)
    return str(exc)
