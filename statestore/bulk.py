"""A bulk load: a view's first bootstrap, and every rebuild copy, read in parallel.

The process that owns the store plans the work (the offset ranges still to read,
shared by records remaining, a partition split into ranges when it has more than
a worker's share), runs the :mod:`~statestore.stage` workers in spawned processes
(or, for a small load, in its own thread), and ingests the sorted SST files they
write into the slot's staging family. Each file carries the progress of the
ranges it covers, so a load stopped or killed anywhere resumes from what was
ingested, with nothing read twice into the counters.

Once every range is read, one merge keeps the newest record per key
(``records.supersedes``), writes the entities as a sorted SST file, builds the
indexes, moves the quarantined records, and writes the positions, the exact key
count and the other counters, clearing the bulk mark, in one final write. A merge
cut short is done again from the unchanged staging family.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    BulkWorkerError,
    KafkaError,
    StateStoreError,
    StorageError,
    TopicMissingError,
)
from .merge import merge
from .ranges import Progress, StaleRangeError, begin, limits_of, plan, shown
from .stage import Piece, Staged, Stager
from .stage_worker import WorkerSpec
from .status import LoadStatus
from .workers import Process, exit_text

if TYPE_CHECKING:
    from .view import View

__all__ = ["BulkSettings", "StagedFiles", "bulk_load", "merge_view"]

log = logging.getLogger(__name__)

# Memory of the owning process and of each worker that is not staging buffer (the
# interpreter, the Kafka client and its 8 MB fetch queue, RocksDB), in MB, as measured
# here: the owner peaks at ~80 MB, a worker at ~120 MB with its 8 MB buffer.
_OWNER_BASE_MB = 80
_WORKER_BASE_MB = 110
_MIN_BUFFER_MB = 4
# Bigger buffers buy no speed, only memory: 5M records loaded by two workers in the same
# time with 4, 8, 32 and 60 MB each (more, smaller files merge at the same cost), while
# the peak RSS of all processes went up by ~70 MB from 8 to 32 MB.
_MAX_BUFFER_MB = 8
# Writing a file holds the buffer and the encoded records of one partition's share of it.
_FLUSH_FACTOR = 1.2


@dataclass(frozen=True, slots=True)
class BulkSettings:
    """How a bulk load runs: worker processes, one memory budget, the client settings."""

    kafka: dict[str, Any]
    registry: dict[str, Any]
    workers: int = 2
    memory_mb: int = 400
    # Below this many records per worker, a load runs in fewer processes (one: in-thread).
    min_records_per_worker: int = 100_000
    batch_size: int = 10_000

    def buffer_bytes(self, processes: int) -> int:
        """Each stager's buffer: what the budget leaves once every process's base is paid."""
        free = (
            self.memory_mb - _OWNER_BASE_MB - _WORKER_BASE_MB * (processes if processes > 1 else 0)
        )
        share = free / max(1, processes) / _FLUSH_FACTOR
        return int(min(_MAX_BUFFER_MB, max(_MIN_BUFFER_MB, share)) * 1024 * 1024)


# -- the owning process ------------------------------------------------------------------


ReportFn = Callable[[int, int], None]  # (records read so far in this run, remaining)


def bulk_load(
    view: View,
    settings: BulkSettings,
    targets: dict[int, int],
    lows: dict[int, int],
    stop: threading.Event,
    *,
    report: ReportFn | None = None,
    trouble: Callable[[str], None] | None = None,
) -> tuple[int, str | None]:
    """Read the view's slot to *targets* in bulk and merge it; (records read, failure).

    Returns with the view merged and positioned at *targets*; or, when stopped, with
    the slot still in bulk and what was read ingested (``failure`` None, records as
    read); or, after a bad record under ``on_error = "fail"``, merged up to it with the
    failure text.
    """
    slot = view.slot
    progress, gaps = begin(slot, targets, lows)
    total = sum(g.size for g in gaps)
    groups = plan(gaps, _processes(settings, total)) if gaps else []
    out_dir = Path(slot.storage.path) / "bulk" / slot.id
    shutil.rmtree(out_dir, ignore_errors=True)  # files of a run that died before ingesting them
    out_dir.mkdir(parents=True, exist_ok=True)
    state = StagedFiles(view, progress, report, total, len(groups) if len(groups) > 1 else 0)
    log.info(
        "bulk.start view=%s slot=%s ranges=%d offsets=%d processes=%d",
        view.name,
        slot.id,
        len(gaps),
        total,
        len(groups) if len(groups) > 1 else 0,
    )
    failure: str | None = None
    if len(groups) == 1:
        failure = _run_here(view, settings, groups[0], out_dir, state, stop, trouble)
    elif groups:
        failure = _run_workers(view, settings, groups, out_dir, state, stop, trouble)
    if stop.is_set() and failure is None:
        view.show_load(None)
        log.info(
            "bulk.stopped view=%s records=%d (kept: the next run reads the rest)",
            view.name,
            sum(v[1] for v in state.progress.values()),
        )
        return state.read_now, None
    limits = limits_of(state.progress, targets, lows)
    if failure is None and any(limits[p] < targets[p] for p in targets):
        raise BulkWorkerError(
            f"view {view.name!r}: the bulk load ended with ranges unread "
            f"({ {p: (limits[p], targets[p]) for p in targets if limits[p] < targets[p]} })"
        )
    processes = _processes(settings, sum(v[1] for v in state.progress.values()))
    state.merging(processes)
    merge_view(
        view, limits, state.progress, out_dir, processes=processes, registry=settings.registry
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    return state.read_now, failure


def merge_view(
    view: View,
    limits: dict[int, int],
    progress: Progress,
    tmp_dir: Path,
    *,
    processes: int = 1,
    registry: dict[str, Any] | None = None,
) -> int:
    """Merge the view's staged records into its slot and serve them from now; the keys."""
    merged = merge(
        view.slot, view.schemas, limits, progress, tmp_dir, processes=processes, registry=registry
    )
    view.finish_bulk(merged.positions, merged.counters, merged.schema_counts, merged.applied_at_ms)
    return merged.counters["keys"]


def _processes(settings: BulkSettings, records: int) -> int:
    """How many processes share *records*: no more than the work is worth."""
    return max(1, min(settings.workers, records // max(1, settings.min_records_per_worker)))


@dataclass(eq=False, slots=True)
class StagedFiles:
    """The owning process's side of a load: ingest each staged file, keep the progress."""

    view: View
    progress: Progress
    report: ReportFn | None
    total: int
    processes: int = 0
    _started_ms: int = field(init=False, default_factory=lambda: int(time.time() * 1000))
    read_now: int = field(init=False, default=0)
    offsets_done: int = field(init=False, default=0)
    # Records each stager has read so far (durable or not yet), for progress reports.
    _reading: dict[int, int] = field(init=False, default_factory=dict)
    _reported: float = field(init=False, default=0.0)

    def reading(self, worker: int, records: int) -> None:
        """A stager has read *records* so far in this run (progress only, not durable)."""
        self._reading[worker] = records
        now = time.monotonic()
        if now - self._reported >= 0.1:
            self._reported = now
            self._report()

    def _report(self) -> None:
        read = max(self.read_now, sum(self._reading.values()))
        left = max(0, self.total - max(self.offsets_done, read))
        self.view.show_load(LoadStatus("reading", self.processes, read, left, self._started_ms))
        if self.report is not None:
            self.report(read, left)

    def merging(self, processes: int) -> None:
        self.view.show_load(LoadStatus("merging", processes, self.read_now, 0, self._started_ms))

    def ingest(self, staged: Staged) -> None:
        view = self.view
        if staged.schemas:
            schemas = view.schemas
            if schemas is None:
                raise StorageError(
                    f"view {view.name!r}: a worker sent schemas to a view without any"
                )
            for schema_id, doc, guid in staged.schemas:
                schemas.adopt(schema_id, doc, guid)
        if staged.path is not None:
            view.storage.ingest(view.slot.staging_cf, Path(staged.path))
        for p, start, reached, records, nbytes, quarantined, misplaced in staged.progress:
            before = self.progress.get((p, start))
            done_before = before[0] if before else start
            self.read_now += records - (before[1] if before else 0)
            self.offsets_done += reached - done_before
            self.progress[(p, start)] = (reached, records, nbytes, quarantined, misplaced)
        view.show_bulk_progress(*shown(self.progress))
        self._report()


def _run_here(
    view: View,
    settings: BulkSettings,
    pieces: list[Piece],
    out_dir: Path,
    owner: StagedFiles,
    stop: threading.Event,
    trouble: Callable[[str], None] | None,
) -> str | None:
    """A load small enough for one process: the stager runs in this thread."""
    from .kafka import KafkaClient

    client = KafkaClient(settings.kafka)
    slot = view.slot
    reader = client.range_reader(f"statestore.{view.name}.bulk", view.config.topic)
    stager = Stager(
        worker=0,
        topic=view.config.topic,
        keys=slot.key_codec,
        values=slot.value_codec,
        checks_values=slot.checks_values,
        tracks_schemas=slot.tracks_schemas,
        header_hook=view.header_hook,
        fail_fast=view.config.on_error == "fail",
        out_dir=out_dir,
        budget_bytes=settings.buffer_bytes(1),
        emit=owner.ingest,
        on_trouble=trouble,
        on_read=lambda n: owner.reading(0, n),
        batch_size=settings.batch_size,
        placement=view.slot.placement,
        partitions=view.partition_count or len(view.end_offsets),
    )
    try:
        return stager.run(reader, pieces, stop.is_set)
    finally:
        reader.close()
        client.close()


def _run_workers(
    view: View,
    settings: BulkSettings,
    groups: list[list[Piece]],
    out_dir: Path,
    owner: StagedFiles,
    stop: threading.Event,
    trouble: Callable[[str], None] | None,
) -> str | None:
    """Run one worker process per group; ingest their files as they come.

    Workers are fresh interpreters (``python -m statestore._worker``), never forks of
    this process (whose Kafka client threads would not survive a fork) and never
    re-imports of its main module (an embedding script without a main guard would
    run again in each). Each reads its spec from stdin and sends its reports over a
    pipe; SIGTERM asks it to write what it holds and stop.
    """
    known = view.schemas.cached() if view.schemas is not None else None
    budget = settings.buffer_bytes(len(groups))
    workers: list[Process] = []
    try:
        for i, pieces in enumerate(groups):
            spec = WorkerSpec(
                worker=i,
                view=view.config,
                kafka=settings.kafka,
                registry=settings.registry,
                known_schemas=known,
                pieces=tuple(pieces),
                out_dir=str(out_dir),
                budget_bytes=budget,
                batch_size=settings.batch_size,
                log_level=logging.getLogger("statestore").getEffectiveLevel(),
                partitions=view.partition_count or len(view.end_offsets),
            )
            workers.append(Process.start(spec.worker, spec))
        return _collect(view, workers, owner, stop, trouble)
    finally:
        for w in workers:
            w.halt()
        for w in workers:
            w.reap()


def _collect(
    view: View,
    workers: list[Process],
    owner: StagedFiles,
    stop: threading.Event,
    trouble: Callable[[str], None] | None,
) -> str | None:
    """Ingest the workers' files until each has said it is done; raise when one failed."""
    failure: str | None = None
    error: StateStoreError | None = None
    running = {w.index: w for w in workers}

    def halt_all() -> None:
        for w in workers:
            w.halt()

    while running:
        if stop.is_set():
            halt_all()
        ready = wait([w.conn for w in running.values() if w.open], timeout=0.2)
        for w in list(running.values()):
            if w.conn not in ready:
                continue
            try:
                msg = w.conn.recv()
            except EOFError:
                # The pipe closed without a last word: the process ended abnormally.
                w.open = False
                del running[w.index]
                code = w.proc.wait()
                halt_all()
                if error is None:
                    error = BulkWorkerError(
                        f"view {view.name!r}: bulk-load worker {w.index} (pid {w.proc.pid}) "
                        f"died: {exit_text(code)}"
                    )
                continue
            kind = msg[0]
            if kind == "staged":
                owner.ingest(msg[1])
            elif kind == "read":
                owner.reading(w.index, msg[2])
            elif kind == "trouble":
                if trouble is not None:
                    trouble(msg[2])
            elif kind == "done":
                del running[w.index]
                if msg[2] is not None and failure is None:
                    failure = msg[2]
                    halt_all()
            elif kind == "error":
                del running[w.index]
                halt_all()
                if error is None:
                    error = _error_of(msg[2], msg[3])
    if error is not None:
        raise error
    return failure


def _error_of(kind: str, text: str) -> StateStoreError:
    if kind == "stale":
        return StaleRangeError(text)
    if kind == "missing":
        return TopicMissingError(text)
    if kind == "kafka":
        return KafkaError(text)
    if kind == "storage":
        return StorageError(text)
    return BulkWorkerError(text)
