"""The end of a bulk load: one merge of the staging family into the slot.

Per key the newest staged record wins (``records.supersedes``); the winners are
written as a sorted SST file, each index's entries as another, and ingested. A big
merge is split by key range over worker processes, each of which opens the store
read-only (its staging family is nothing but ingested files, never written while
the merge runs) and writes the files of its range; split points come from the
stored keys each staged file sampled. The owner then moves the quarantined
records and writes the positions, the exact counters and the end of the bulk mark
in one final write. A merge cut short is done again from the unchanged staging
family: the entity, index and quarantine families are emptied first.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ViewConfig
from .errors import BulkWorkerError
from .indexes import index_value
from .logs import configure_child
from .records import (
    CONTROL_END,
    CONTROL_PREFIX,
    HEADER_SIZE,
    NO_SCHEMA,
    STAGE_TAIL_SIZE,
    TOMBSTONE_KIND,
    is_sample_key,
    is_staged_quarantine_key,
    key_group_start,
    quarantine_key,
    staged_key,
    staged_quarantine_origin,
    supersedes,
    unpack_header,
    unpack_samples,
)
from .storage import SstFile, Storage
from .workers import Process, exit_text, owner_gone

if TYPE_CHECKING:
    from .ranges import Progress
    from .schemas import Schemas
    from .slot import Slot

__all__ = ["MergeSpec", "Merged", "merge", "staged_winners"]

log = logging.getLogger(__name__)


def staged_winners(
    storage: Storage,
    staging_cf: str,
    limits: dict[int, int] | None = None,
    low: bytes = b"",
    high: bytes | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, stored record) the merge keeps, in key order, of the staging keys in [low, high).

    Per key the newest record wins (``records.supersedes``); a tombstone that wins
    leaves the key absent. With *limits*, records at or past a partition's limit are
    left out (the part read beyond a bad record, under ``on_error = "fail"``).

    The loop runs once per staged entry, so it decodes as little as it can: entries
    of one key share the staging key up to its (partition, offset) tail, and within
    one partition they come in offset order, so only a key staged from several
    partitions needs its records' timestamps compared.
    """
    tail = STAGE_TAIL_SIZE
    group = b""
    best_key = best = b""
    for lo, hi in _data_spans(low, high):
        for skey, data in storage.scan(staging_cf, lo, hi, cache=False):
            if limits is not None:
                _, p, o, _, _ = unpack_header(data)
                if o >= limits.get(p, 0):
                    continue
            g = skey[:-tail]
            if g == group and best:
                if skey[-tail:-8] != best_key[-tail:-8]:
                    _, p, o, t, _ = unpack_header(data)
                    _, bp, bo, bt, _ = unpack_header(best)
                    if not supersedes(p, o, t, bp, bo, bt):
                        continue
                best_key, best = skey, data
                continue
            if best and best[0] != TOMBSTONE_KIND:
                yield staged_key(best_key), best
            group, best_key, best = g, skey, data
    if best and best[0] != TOMBSTONE_KIND:
        yield staged_key(best_key), best


def _data_spans(low: bytes, high: bytes | None) -> list[tuple[bytes, bytes | None]]:
    """[low, high) without the control entries' range."""
    spans: list[tuple[bytes, bytes | None]] = []
    if low < CONTROL_PREFIX:
        spans.append((low, CONTROL_PREFIX if high is None or high > CONTROL_PREFIX else high))
    start = max(low, CONTROL_END)
    if high is None or start < high:
        spans.append((start, high))
    return spans


@dataclass(frozen=True, slots=True)
class MergeSpec:
    """One key range of a merge, for a worker process (or this one): picklable."""

    index: int
    store: str
    view: ViewConfig
    staging_cf: str
    limits: dict[int, int] | None
    low: bytes
    high: bytes | None
    out_dir: str
    registry: dict[str, Any]
    known_schemas: tuple[dict[int, dict[str, Any]], dict[bytes, int]] | None
    log_level: int

    def run(self, conn: Connection) -> None:
        """The worker process: merge this range, report the files written."""
        configure_child(self.log_level, f"merge-worker-{self.index}")
        owner_pid = os.getppid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            started = time.monotonic()
            storage = Storage(Path(self.store), read_only=True)
            try:
                opened = time.monotonic()
                result = _merge_range(self, storage, _decoder(self), lambda: owner_gone(owner_pid))
            finally:
                storage.close()
            log.info(
                "merge.range worker=%d keys=%d open_s=%.3f merge_s=%.3f",
                self.index,
                result.keys,
                opened - started,
                time.monotonic() - opened,
            )
            conn.send(("merged", result))
        except OSError:
            os._exit(1)  # the owner is gone
        except Exception as exc:
            log.exception("merge.worker_crashed worker=%d", self.index)
            conn.send(("error", f"merge worker {self.index}: {exc}"))
        finally:
            conn.close()


@dataclass(frozen=True, slots=True)
class MergedRange:
    """What one range of a merge wrote: its entity file, its index files, its counts."""

    entities: str | None
    indexes: dict[str, str]
    keys: int
    schema_counts: dict[int, int]


def _decoder(spec: MergeSpec) -> Any:
    """The value decoder index entries need (None: the view has no index)."""
    vc = spec.view
    if not vc.indexes:
        return None
    if vc.uses_registry:
        from .registry_codecs import registry_codecs
        from .schemas import Schemas

        return registry_codecs(vc, Schemas(None, spec.registry, known=spec.known_schemas))[1].decode
    from .codecs import value_codec

    return value_codec(vc.value).decode


def _merge_range(spec: MergeSpec, storage: Storage, decode: Any, gone: Any = None) -> MergedRange:
    out = Path(spec.out_dir)
    entities = SstFile(out / f"entities-{spec.index:03d}.sst", compress=True)
    paths = {f: tuple(f.split(".")) for f in spec.view.indexes}
    entries: dict[str, list[bytes]] = {f: [] for f in paths}
    schema_counts: dict[int, int] = {}
    tracks = spec.view.uses_registry
    keys = 0
    for key, data in staged_winners(storage, spec.staging_cf, spec.limits, spec.low, spec.high):
        entities.add(key, data)
        keys += 1
        if tracks:
            schema_id = unpack_header(data)[4]
            schema_counts[schema_id] = schema_counts.get(schema_id, 0) + 1
        if decode is not None:
            try:
                value = decode(data[HEADER_SIZE:])
            except Exception:
                value = None
            if value is not None:
                for field, path in paths.items():
                    iv = index_value(value, path)
                    if iv is not None:
                        entries[field].append(iv + b"\x00" + key)
        if gone is not None and keys % 65536 == 0 and gone():
            os._exit(1)
    index_files: dict[str, str] = {}
    for field, items in entries.items():
        items.sort()
        sst = SstFile(out / f"index-{field}-{spec.index:03d}.sst", compress=True)
        for item in items:
            sst.add(item, b"")
        if sst.finish():
            index_files[field] = str(sst.path)
    return MergedRange(
        str(entities.path) if entities.finish() else None, index_files, keys, schema_counts
    )


def _split(storage: Storage, staging_cf: str, parts: int) -> list[tuple[bytes, bytes | None]]:
    """Key ranges of roughly equal numbers of staged entries, by the staged files' samples."""
    samples: list[bytes] = []
    for key, value in storage.scan(staging_cf, CONTROL_PREFIX, CONTROL_END):
        if is_sample_key(key):
            samples.extend(unpack_samples(value))
    samples.sort()
    bounds: list[bytes] = []
    for i in range(1, parts):
        if not samples:
            break
        bound = key_group_start(samples[len(samples) * i // parts])
        if not bounds or bound > bounds[-1]:
            bounds.append(bound)
    lows: list[bytes] = [b"", *bounds]
    highs: list[bytes | None] = [*bounds, None]
    return list(zip(lows, highs, strict=True))


@dataclass(frozen=True, slots=True)
class Merged:
    """What a merge stored: the slot's positions, counters and schema counts."""

    positions: dict[int, int]
    counters: dict[str, int]
    schema_counts: dict[int, int]
    applied_at_ms: int


def merge(
    slot: Slot,
    schemas: Schemas | None,
    limits: dict[int, int],
    progress: Progress,
    tmp_dir: Path,
    *,
    processes: int = 1,
    registry: dict[str, Any] | None = None,
) -> Merged:
    """Turn the staging family into the slot's entities, indexes and stored counters.

    The slot's in-memory state is left as it was: the view takes what is returned.
    """
    started = time.monotonic()
    storage = slot.storage
    name = slot.config.name
    log.info("bulk.merging view=%s slot=%s processes=%d", name, slot.id, processes)
    # Redone from scratch if an earlier merge was cut short (a first merge finds them empty).
    for cf in (slot.entity_cf, slot.quarantine_cf, *slot.index_cfs.values()):
        if storage.has_data(cf):
            storage.reset_family(cf)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    partial = any(limits.get(p, 0) < reached for (p, _), (reached, *_) in progress.items())
    specs = [
        MergeSpec(
            index=i,
            store=str(storage.path),
            view=slot.config,
            staging_cf=slot.staging_cf,
            limits=limits if partial else None,
            low=low,
            high=high,
            out_dir=str(tmp_dir),
            registry=registry or {},
            known_schemas=schemas.cached() if schemas is not None else None,
            log_level=logging.getLogger("statestore").getEffectiveLevel(),
        )
        for i, (low, high) in enumerate(_split(storage, slot.staging_cf, max(1, processes)))
    ]
    if len(specs) == 1:
        decode = slot.decode_quietly if slot.has_indexes else None
        results = [_merge_range(specs[0], storage, decode)]
    else:
        results = _run_merge_workers(name, specs)
    keys = 0
    schema_counts: dict[int, int] = {}
    for result in results:
        keys += result.keys
        for schema_id, n in result.schema_counts.items():
            schema_counts[schema_id] = schema_counts.get(schema_id, 0) + n
        if result.entities is not None:
            storage.ingest(slot.entity_cf, Path(result.entities))
        for field, path in result.indexes.items():
            storage.ingest(slot.index_cfs[field], Path(path))
    batch = storage.batch()
    quarantined = 0
    for skey, report in storage.scan(slot.staging_cf, CONTROL_PREFIX, CONTROL_END, cache=False):
        if not is_staged_quarantine_key(skey):
            continue
        p, o = staged_quarantine_origin(skey)
        if o < limits.get(p, 0):
            batch.put(slot.quarantine_cf, quarantine_key(p, o), report)
            quarantined += 1
    storage.write(batch)
    records = nbytes = misplaced = 0
    for (p, _), (reached, n, b, _, m) in progress.items():
        if reached <= limits.get(p, 0):
            records += n
            nbytes += b
            misplaced += m
    counters = {
        "keys": keys,
        "records": records,
        "bytes": nbytes,
        "quarantined": quarantined,
        "misplaced": misplaced,
    }
    schema_counts.pop(NO_SCHEMA, None)
    applied_at = slot.store_merged(limits, counters, schema_counts)
    storage.drop_family(slot.staging_cf)
    log.info(
        "bulk.merged view=%s keys=%d records=%d quarantined=%d processes=%d seconds=%.3f",
        name,
        keys,
        records,
        quarantined,
        len(specs),
        time.monotonic() - started,
    )
    return Merged(dict(limits), counters, schema_counts, applied_at)


def _run_merge_workers(view: str, specs: list[MergeSpec]) -> list[MergedRange]:
    procs = [Process.start(spec.index, spec) for spec in specs]
    results: dict[int, MergedRange] = {}
    error: str | None = None
    try:
        waiting = {p.index: p for p in procs}
        while waiting:
            for ready in wait([p.conn for p in waiting.values()]):
                proc = next(p for p in waiting.values() if p.conn is ready)
                del waiting[proc.index]
                try:
                    msg: tuple[Any, ...] = proc.conn.recv()
                except EOFError:
                    msg = (
                        "error",
                        f"merge worker {proc.index} died: {exit_text(proc.proc.wait())}",
                    )
                if msg[0] == "merged":
                    results[proc.index] = msg[1]
                elif error is None:
                    error = msg[1]
    finally:
        for p in procs:
            p.halt()
            p.reap()
    if error is not None:
        # Retried like a staging worker's death: the staged files are unchanged.
        raise BulkWorkerError(f"view {view!r}: {error}")
    return [results[i] for i in sorted(results)]
