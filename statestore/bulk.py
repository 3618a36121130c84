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
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ViewConfig
from .errors import (
    BulkWorkerError,
    KafkaError,
    OffsetOutOfRangeError,
    StaleViewError,
    StateStoreError,
    StorageError,
    TopicMissingError,
)
from .merge import merge
from .records import (
    CONTROL_END,
    CONTROL_PREFIX,
    is_progress_key,
    pack_progress,
    progress_key,
    unpack_progress,
)
from .stage import Piece, Staged, Stager
from .workers import Process, exit_text, owner_gone

if TYPE_CHECKING:
    from .view import View

__all__ = [
    "BulkSettings",
    "BulkWorkerError",
    "StagedFiles",
    "StaleRangeError",
    "begin",
    "bulk_load",
    "limits_of",
    "plan",
    "read_progress",
    "remaining",
]

log = logging.getLogger(__name__)

# Memory of the owning process and of each worker that is not staging buffer (the
# interpreter, the Kafka client and its fetch queue, RocksDB's caches), in MB.
_OWNER_BASE_MB = 140
_WORKER_BASE_MB = 70
_MIN_BUFFER_MB = 4
_MERGE_CHUNK = 20_000

# (partition, start) -> (reached, records, bytes, quarantined)
Progress = dict[tuple[int, int], tuple[int, int, int, int]]


class StaleRangeError(StaleViewError):
    """Records a bulk load still had to read were deleted (retention) before it read them."""


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
        return max(_MIN_BUFFER_MB, free // max(1, processes)) * 1024 * 1024


# -- planning ---------------------------------------------------------------------------


def read_progress(view: View) -> Progress:
    """The progress entries of the slot's staging family."""
    out: Progress = {}
    for key, value in view.storage.scan(view.staging_cf, CONTROL_PREFIX, CONTROL_END):
        if is_progress_key(key):
            p, start, reached, records, nbytes, quarantined = unpack_progress(key, value)
            out[(p, start)] = (reached, records, nbytes, quarantined)
    return out


def covered(progress: Progress, partition: int, base: int) -> int:
    """How far from *base* the ranges read of *partition* reach without a gap."""
    reach = base
    for start, (reached, *_) in sorted((s, v) for (p, s), v in progress.items() if p == partition):
        if start > reach:
            break
        reach = max(reach, reached)
    return reach


def begin(
    view: View, targets: dict[int, int], lows: dict[int, int]
) -> tuple[Progress, list[Piece]]:
    """The progress of the view's bulk load so far and the ranges left to read.

    A partition's first load records where it starts (an empty progress entry), so a
    worker that dies before writing anything leaves a gap from there, never a range
    nobody knows was to be read.
    """
    progress = read_progress(view)
    started = {p for p, _ in progress}
    fresh = {p: lows.get(p, 0) for p in targets if p not in started}
    if fresh:
        batch = view.storage.batch()
        for p, start in fresh.items():
            batch.put(view.staging_cf, progress_key(p, start), pack_progress(start, 0, 0, 0))
            progress[(p, start)] = (start, 0, 0, 0)
        view.storage.write(batch)
    return progress, remaining(progress, targets, lows, view.config.topic)


def remaining(
    progress: Progress, targets: dict[int, int], lows: dict[int, int], topic: str
) -> list[Piece]:
    """The ranges below *targets* no ingested file covers; raise when one was deleted."""
    gaps: list[Piece] = []
    for partition, end in sorted(targets.items()):
        spans = sorted((s, v[0]) for (p, s), v in progress.items() if p == partition)
        low = lows.get(partition, 0)
        cur = spans[0][0] if spans else low
        for start, reached in spans:
            if start > cur:
                gaps.append(Piece(partition, cur, start))
            cur = max(cur, reached)
        if cur < end:
            gaps.append(Piece(partition, cur, end))
    for gap in gaps:
        if gap.start < lows.get(gap.partition, 0):
            raise StaleRangeError(
                f"{topic}[{gap.partition}]: offsets from {gap.start} were deleted (log start "
                f"{lows[gap.partition]}) before the bulk load read them"
            )
    return gaps


def plan(gaps: list[Piece], workers: int) -> list[list[Piece]]:
    """Share *gaps* among *workers* by records, cutting a partition where a share ends.

    Each worker gets one contiguous run of the ranges laid end to end, so it reads at
    most one range of a partition per gap.
    """
    total = sum(g.size for g in gaps)
    workers = max(1, min(workers, total)) if total else 1
    share = -(-total // workers)
    groups: list[list[Piece]] = [[] for _ in range(workers)]
    w, room = 0, share
    for gap in gaps:
        start = gap.start
        while start < gap.end:
            take = gap.end - start if w == workers - 1 else min(gap.end - start, room)
            groups[w].append(Piece(gap.partition, start, start + take))
            start += take
            room -= take
            if room <= 0 and w < workers - 1:
                w, room = w + 1, share
    return [g for g in groups if g]


# -- the owning process ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a staging worker process needs: picklable, no open handle."""

    worker: int
    view: ViewConfig
    kafka: dict[str, Any]
    registry: dict[str, Any]
    known_schemas: tuple[dict[int, dict[str, Any]], dict[bytes, int]] | None
    pieces: tuple[Piece, ...]
    out_dir: str
    budget_bytes: int
    batch_size: int
    log_level: int

    def run(self, conn: Connection) -> None:
        worker_main(self, conn)


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
    progress, gaps = begin(view, targets, lows)
    total = sum(g.size for g in gaps)
    groups = plan(gaps, _processes(settings, total)) if gaps else []
    out_dir = Path(view.storage.path) / "bulk" / view.slot
    shutil.rmtree(out_dir, ignore_errors=True)  # files of a run that died before ingesting them
    out_dir.mkdir(parents=True, exist_ok=True)
    read_before = sum(v[1] for v in progress.values())
    state = StagedFiles(view, progress, report, read_before, total)
    log.info(
        "bulk.start view=%s slot=%s ranges=%d offsets=%d processes=%d",
        view.name,
        view.slot,
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
    merge(
        view,
        limits,
        state.progress,
        out_dir,
        processes=_processes(settings, sum(v[1] for v in state.progress.values())),
        registry=settings.registry,
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    return state.read_now, failure


def _processes(settings: BulkSettings, records: int) -> int:
    """How many processes share *records*: no more than the work is worth."""
    return max(1, min(settings.workers, records // max(1, settings.min_records_per_worker)))


def limits_of(progress: Progress, targets: dict[int, int], lows: dict[int, int]) -> dict[int, int]:
    """Per partition of *targets*, how far the ingested ranges reach without a gap."""
    return {p: covered(progress, p, _base(progress, p, lows)) for p in targets}


def shown(progress: Progress) -> tuple[dict[int, int], int]:
    """What status shows of a bulk load: how far each partition is read without a gap, and
    the records read that far."""
    positions = {p: covered(progress, p, _base(progress, p, {})) for p, _ in progress}
    records = sum(v[1] for (p, _), v in progress.items() if v[0] <= positions[p])
    return positions, records


def _base(progress: Progress, partition: int, lows: dict[int, int]) -> int:
    starts = [s for p, s in progress if p == partition]
    return min(starts) if starts else lows.get(partition, 0)


class StagedFiles:
    """The owning process's side of a load: ingest each staged file, keep the progress."""

    def __init__(
        self, view: View, progress: Progress, report: ReportFn | None, read_before: int, total: int
    ) -> None:
        self.view = view
        self.progress = progress
        self.report = report
        self.read_before = read_before
        self.total = total
        self.read_now = 0
        self.offsets_done = 0
        # Records each stager has read so far (durable or not yet), for progress reports.
        self._reading: dict[int, int] = {}
        self._reported = 0.0

    def reading(self, worker: int, records: int) -> None:
        """A stager has read *records* so far in this run (progress only, not durable)."""
        self._reading[worker] = records
        now = time.monotonic()
        if now - self._reported >= 0.1:
            self._reported = now
            self._report()

    def _report(self) -> None:
        if self.report is not None:
            read = max(self.read_now, sum(self._reading.values()))
            self.report(read, max(0, self.total - max(self.offsets_done, read)))

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
            view.storage.ingest(view.staging_cf, Path(staged.path))
        for p, start, reached, records, nbytes, quarantined in staged.progress:
            before = self.progress.get((p, start))
            done_before = before[0] if before else start
            self.read_now += records - (before[1] if before else 0)
            self.offsets_done += reached - done_before
            self.progress[(p, start)] = (reached, records, nbytes, quarantined)
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
    reader = client.range_reader(f"statestore.{view.name}.bulk", view.config.topic)
    stager = Stager(
        worker=0,
        topic=view.config.topic,
        keys=view.key_codec,
        values=view.value_codec,
        checks_values=view.checks_values,
        tracks_schemas=view.tracks_schemas,
        header_hook=view.header_hook,
        fail_fast=view.config.on_error == "fail",
        out_dir=out_dir,
        budget_bytes=settings.buffer_bytes(1),
        emit=owner.ingest,
        on_trouble=trouble,
        on_read=lambda n: owner.reading(0, n),
        batch_size=settings.batch_size,
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


# -- the worker process --------------------------------------------------------------------


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """A bulk-load worker process: stage its pieces, report to the owner over *conn*."""
    logging.basicConfig(
        level=spec.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s bulk-worker-{spec.worker} %(name)s: %(message)s",
    )
    owner_pid = os.getppid()
    halted = threading.Event()
    # The owner decides when to stop: Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: halted.set())
    from .codecs import key_codec, value_codec
    from .kafka import KafkaClient

    vc = spec.view
    schemas: Any = None
    hook = None
    if "avro" in (vc.key, vc.value):
        from .avro import avro_codecs
        from .schemas import Schemas

        schemas = Schemas(None, spec.registry, known=spec.known_schemas)
        keys, values, hook = avro_codecs(vc, schemas)
    else:
        keys, values = key_codec(vc.key), value_codec(vc.value)

    def tell(msg: tuple[Any, ...]) -> None:
        try:
            conn.send(msg)
        except OSError:
            # The owner is gone (killed): nobody will ingest what this worker writes.
            os._exit(1)

    said: dict[str, float] = {}
    told = [0.0]

    def on_read(records: int) -> None:
        now = time.monotonic()
        if now - told[0] >= 0.1:
            told[0] = now
            tell(("read", spec.worker, records))

    def on_trouble(text: str) -> None:
        now = time.monotonic()
        if now - said.get(text, -1e9) >= 5.0:
            said[text] = now
            tell(("trouble", spec.worker, text))

    def stopped() -> bool:
        if owner_gone(owner_pid):
            # The owner is gone (killed): nobody will ingest what this worker writes.
            os._exit(1)
        return halted.is_set()

    client = KafkaClient(spec.kafka)
    client.on_error = lambda text, fatal: on_trouble(f"Kafka unreachable: {text}")
    reader = client.range_reader(f"statestore.{vc.name}.bulk{spec.worker}", vc.topic)
    stager = Stager(
        worker=spec.worker,
        topic=vc.topic,
        keys=keys,
        values=values,
        checks_values=vc.value != "bytes",
        tracks_schemas="avro" in (vc.key, vc.value),
        header_hook=hook,
        fail_fast=vc.on_error == "fail",
        out_dir=Path(spec.out_dir),
        budget_bytes=spec.budget_bytes,
        emit=lambda staged: tell(("staged", staged)),
        new_schemas=schemas.take_new if schemas is not None else None,
        on_trouble=on_trouble,
        on_read=on_read,
        batch_size=spec.batch_size,
    )
    try:
        failure = stager.run(reader, list(spec.pieces), stopped)
        tell(("done", spec.worker, failure))
    except OffsetOutOfRangeError as exc:
        tell(("error", spec.worker, "stale", str(exc)))
    except TopicMissingError as exc:
        tell(("error", spec.worker, "missing", str(exc)))
    except KafkaError as exc:
        tell(("error", spec.worker, "kafka", str(exc)))
    except StorageError as exc:
        tell(("error", spec.worker, "storage", str(exc)))
    except Exception as exc:
        log.exception("bulk.worker_crashed worker=%d", spec.worker)
        tell(("error", spec.worker, "fatal", f"bulk-load worker {spec.worker}: {exc!r}"))
    finally:
        reader.close()
        client.close()
        conn.close()
