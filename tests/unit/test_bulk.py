"""A bulk load (staged SST files, then one merge) must leave exactly the view that
record-by-record apply leaves, whatever the keys, partitions, ranges, buffer sizes,
and wherever it was stopped and resumed."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_apply import VALUES, apply_in
from test_apply import open_view as open_plain_view

from statestore.bulk import StagedFiles, merge_view
from statestore.errors import NotReadyError, StorageError
from statestore.ranges import (
    StaleRangeError,
    begin,
    limits_of,
    plan,
    read_progress,
    remaining,
)
from statestore.records import Record, stage_key, stage_key_maker, staged_key
from statestore.stage import Piece, Stager
from statestore.storage import Storage
from statestore.view import View

# Keys that stress the staging encoding: NUL bytes, prefixes of one another, 0xFF, empty.
KEYS = st.sampled_from(
    [b"a", b"a\x00", b"a\x00\x00", b"a\x00b", b"a\x00\xff", b"ab", b"", b"\x00", b"\xff", b"k 1"]
)


class Message:
    """What the Kafka client's consume returns, for the stager: one record."""

    __slots__ = ("_r",)

    def __init__(self, record: Record) -> None:
        self._r = record

    def partition(self) -> int:
        return self._r[0]

    def offset(self) -> int:
        return self._r[1]

    def timestamp(self) -> tuple[int, int]:
        return (1, self._r[2])

    def key(self) -> bytes | None:
        return self._r[3]

    def value(self) -> bytes | None:
        return self._r[4]

    def headers(self) -> None:
        return None


class Reader:
    """A range reader over records in memory: assigned partitions are read round robin,
    a few records at a time, and the end of a partition is reported like the broker's EOF."""

    def __init__(self, records: list[Record], ends: dict[int, int]) -> None:
        self.by_partition: dict[int, list[Record]] = {}
        for r in records:
            self.by_partition.setdefault(r[0], []).append(r)
        self.ends = ends
        self.next: dict[int, int] = {}
        self.eof: dict[int, int] = {}

    def assign(self, partition: int, offset: int) -> None:
        self.next[partition] = offset

    def seek(self, partition: int, offset: int) -> None:
        self.eof.pop(partition, None)
        self.next[partition] = offset

    def unassign(self, partition: int) -> None:
        del self.next[partition]

    def poll(self, max_records: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        for p, at in sorted(self.next.items()):
            batch = [r for r in self.by_partition.get(p, []) if r[1] >= at][:3]
            if batch:
                out.extend(Message(r) for r in batch)
                self.next[p] = batch[-1][1] + 1
            else:
                self.eof[p] = self.ends.get(p, 0)
        return out


def open_view(path: Path) -> tuple[Storage, View]:
    return open_plain_view(path, key="bytes", indexes=("status",))


def records_of(log: list[tuple[bytes, int, bytes | None]], holes: list[int]) -> list[Record]:
    """Records in read order, timestamps rising within each partition and unique overall,
    partitions interleaved so that read order and timestamp order differ across them;
    *holes* skip offsets (compaction) before some records."""
    offsets: dict[int, int] = {}
    out: list[Record] = []
    for i, (key, partition, value) in enumerate(log):
        offset = offsets.get(partition, 0) + (holes[i % len(holes)] if holes else 0)
        offsets[partition] = offset + 1
        timestamp = 1_000 + offset * 10 + (6, 1, 5)[partition]
        out.append((partition, offset, timestamp, key, value))
    return out


def stage_all(
    view: View,
    path: Path,
    records: list[Record],
    ends: dict[int, int],
    *,
    workers: int,
    budget: int,
) -> None:
    """Stage every range left, one stager per worker's share, each running to the end."""
    progress, gaps = begin(view.slot, ends, {})
    files = StagedFiles(view, progress, None, 0)
    (path / "bulk").mkdir(exist_ok=True)
    for i, pieces in enumerate(plan(gaps, workers)):
        stager_for(view, path, i, budget, files.ingest).run(
            Reader(records, ends), pieces, lambda: False
        )


def stager_for(view: View, path: Path, worker: int, budget: int, emit: Any) -> Stager:
    return Stager(
        worker=worker,
        topic="t",
        keys=view.key_codec,
        values=view.value_codec,
        checks_values=True,
        tracks_schemas=False,
        header_hook=None,
        fail_fast=False,
        out_dir=path / "bulk",
        budget_bytes=budget,
        emit=emit,
        batch_size=4,
    )


class Died(Exception):
    """A worker killed before it could hand over its next file."""


def bulk_load(
    path: Path,
    records: list[Record],
    ends: dict[int, int],
    *,
    workers: int,
    budget: int,
    stops: list[int],
    deaths: list[int] = (),  # type: ignore[assignment]
) -> tuple[Storage, View]:
    """Load *records* in bulk. Run k stops after ``stops[k]`` files (the stager writes what it
    holds) and, when ``deaths[k]`` is given, its first worker dies after that many files
    (what it holds is lost); the store is reopened between runs, as after a crash."""
    storage, view = open_view(path)
    view.begin_bulk()
    runs = max(len(stops), len(deaths))
    for run in range(runs + 1):
        stop_after = stops[run] if run < len(stops) else None
        die_after = deaths[run] if run < len(deaths) else None
        progress, gaps = begin(view.slot, ends, {})
        files = StagedFiles(view, progress, None, sum(g.size for g in gaps))
        for i, pieces in enumerate(plan(gaps, workers) if gaps else []):
            written = [0]
            dies = die_after if i == 0 else None

            def emit(
                staged: Any,
                written: list[int] = written,
                dies: int | None = dies,
                files: StagedFiles = files,
            ) -> None:
                if dies is not None and written[0] >= dies:
                    raise Died
                written[0] += 1
                files.ingest(staged)

            stager = stager_for(view, path, i, budget, emit)
            (path / "bulk").mkdir(exist_ok=True)
            with contextlib.suppress(Died):
                stager.run(
                    Reader(records, ends),
                    pieces,
                    lambda s=stop_after, w=written: s is not None and w[0] >= s,  # type: ignore[misc]
                )
        if run < runs:
            storage.close()
            storage, view = open_view(path)
            assert view.bulk
    _merge(view, ends, path / "bulk")
    return storage, view


def _merge(view: View, ends: dict[int, int], tmp: Path) -> int:
    progress = read_progress(view.slot)
    return merge_view(view, limits_of(progress, ends, {}), progress, tmp)


def entities(view: View) -> dict[str, Any]:
    return {e.key: (e.partition, e.offset, e.timestamp, e.value) for e in view.iter_entities()}


def snapshot(view: View) -> dict[str, Any]:
    return {
        "entities": entities(view),
        "keys": view.slot.counters["keys"],
        "records": view.slot.counters["records"],
        "quarantined": view.slot.counters["quarantined"],
        "positions": dict(view.slot.positions),
        "index": {s: sorted(e.key for e in view.by("status", s, limit=1000).items) for s in "xyz"},
        "quarantine": [(q["partition"], q["offset"]) for q in view.quarantine(limit=1000)[0]],
    }


def ends_of(records: list[Record], tail: int) -> dict[int, int]:
    ends: dict[int, int] = {}
    for p, o, *_ in records:
        ends[p] = o + 1 + tail
    return ends


LOGS = st.lists(st.tuples(KEYS, st.integers(0, 2), VALUES), max_size=80)
CUTS = st.lists(st.integers(1, 15), max_size=8)
HOLES = st.lists(st.integers(0, 3), max_size=5)


@dataclass(frozen=True)
class Run:
    """How a bulk load runs (see :func:`bulk_load`), and *tail* records past the last one
    the end offsets count."""

    workers: int
    budget: int
    stops: list[int]
    deaths: list[int]
    tail: int

    def load(self, path: Path, records: list[Record], ends: dict[int, int]) -> tuple[Storage, View]:
        return bulk_load(
            path,
            records,
            ends,
            workers=self.workers,
            budget=self.budget,
            stops=self.stops,
            deaths=self.deaths,
        )


RUNS = st.builds(
    Run,
    workers=st.integers(1, 4),
    budget=st.sampled_from([1, 2_000, 1 << 20]),
    stops=st.lists(st.integers(0, 4), max_size=3),
    deaths=st.lists(st.integers(0, 3), max_size=3),
    tail=st.integers(0, 3),
)


@settings(max_examples=40, deadline=None)
@given(log=LOGS, cuts=CUTS, holes=HOLES, run=RUNS)
def test_bulk_load_equals_record_by_record_apply(
    log: list[tuple[bytes, int, bytes | None]], cuts: list[int], holes: list[int], run: Run
) -> None:
    """Each key in one partition (as a key-hashing producer writes), tombstones, bad records,
    compaction holes, partitions split over workers, any buffer size, stopped, or a worker
    killed, anywhere and resumed: the merged view equals the one applied record by record,
    counts, positions, quarantine and indexes included."""
    records = records_of([(key, sum(key) % 3, value) for key, _, value in log], holes)
    ends = ends_of(records, run.tail)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        plain_storage, plain = open_view(Path(a))
        apply_in(plain, records, cuts)
        plain.apply([], ends)
        bulk_storage, bulk = run.load(Path(b), records, ends)
        assert snapshot(bulk) == snapshot(plain)
        plain_storage.close()
        bulk_storage.close()


@settings(max_examples=40, deadline=None)
@given(log=LOGS, run=RUNS)
def test_a_key_in_several_partitions_resolves_to_its_newest_record(
    log: list[tuple[bytes, int, bytes | None]], run: Run
) -> None:
    """A key written to several partitions (the topic grew): the newest record by timestamp
    among each partition's last good record of the key wins, and a newest tombstone deletes
    the key whichever partition was read first."""
    records = records_of(log, [])
    last: dict[bytes, dict[int, tuple[int, int, bytes | None]]] = {}
    for partition, offset, timestamp, key, value in records:
        if value != b"{bad json":
            last.setdefault(key, {})[partition] = (timestamp, offset, value)  # type: ignore[index]
    expected = {}
    for key, by_partition in last.items():
        partition, (timestamp, offset, value) = max(by_partition.items(), key=lambda i: i[1][0])
        if value is not None:
            expected[key.hex()] = (partition, offset, timestamp, orjson.loads(value))
    with tempfile.TemporaryDirectory() as tmp:
        storage, view = run.load(Path(tmp), records, ends_of(records, run.tail))
        assert snapshot(view)["entities"] == expected
        assert view.slot.counters["keys"] == len(expected)
        storage.close()


@given(
    key=st.binary(max_size=12),
    other=st.binary(max_size=12),
    p=st.integers(0, 2**31 - 1),
    o=st.integers(0, 2**63 - 1),
)
def test_staging_keys_group_each_key_and_decode(key: bytes, other: bytes, p: int, o: int) -> None:
    """The staging key decodes back to the key, and sorts like the key: every entry of one key
    sorts together, never interleaved with another key's entries, and never among the
    control entries."""
    assert staged_key(stage_key(key, p, o)) == key
    assert stage_key_maker(p)(key, o) == stage_key(key, p, o)
    assert not (b"\x00\x01" <= stage_key(key, p, o) < b"\x00\x02")
    if key != other:
        low = stage_key(key, 0, 0)
        high = stage_key(key, 2**31 - 1, 2**63 - 1)
        assert not low < stage_key(other, p, o) < high
        assert (stage_key(key, p, o) < stage_key(other, 0, 0)) == (key < other)


def test_work_is_shared_by_records_and_big_partitions_are_split() -> None:
    """Two workers get equal shares of the records left; a partition bigger than a share is
    read by both, in two adjacent ranges; each worker reads a partition in one range."""
    gaps = [Piece(0, 0, 10), Piece(1, 5, 105), Piece(2, 0, 0)]
    groups = plan([g for g in gaps if g.size], 2)
    assert [sum(p.size for p in g) for g in groups] == [55, 55]
    assert groups == [[Piece(0, 0, 10), Piece(1, 5, 50)], [Piece(1, 50, 105)]]
    assert plan([Piece(0, 0, 3)], 8) == [[Piece(0, 0, 1)], [Piece(0, 1, 2)], [Piece(0, 2, 3)]]


def test_remaining_ranges_are_the_gaps_and_deleted_ones_are_stale() -> None:
    """What is left to read is every range below the end no ingested file covers; a gap the
    log start has moved past means records were deleted unread, and the load is stale."""
    progress = {(0, 0): (40, 40, 0, 0), (0, 60): (80, 20, 0, 0), (1, 10): (10, 0, 0, 0)}
    gaps = remaining(progress, {0: 100, 1: 30, 2: 5}, {1: 10, 2: 0}, "t")
    assert gaps == [Piece(0, 40, 60), Piece(0, 80, 100), Piece(1, 10, 30), Piece(2, 0, 5)]
    with pytest.raises(StaleRangeError, match=r"t\[0\]: offsets from 40 were deleted"):
        remaining(progress, {0: 100}, {0: 50}, "t")


def test_reads_refuse_while_loading_and_work_after(tmp_path: Path) -> None:
    """A view in its first bulk load refuses reads instead of answering from a partial copy."""
    storage, view = open_view(tmp_path)
    view.begin_bulk()
    for read in (
        lambda: view.get(b"k".hex()),
        lambda: view.lookup([b"k".hex()]),
        lambda: view.scan(),
        lambda: view.by("status", "x"),
        lambda: list(view.iter_entities()),
    ):
        with pytest.raises(NotReadyError):
            read()
    storage.close()
    records = [(0, 0, 1, b"k", b'{"status":"x"}')]
    storage, view = bulk_load(tmp_path, records, {0: 1}, workers=1, budget=1, stops=[])  # type: ignore[list-item]
    entity = view.get(b"k".hex())
    assert entity is not None and entity.value == {"status": "x"}
    storage.close()


def test_a_merge_interrupted_by_a_crash_is_done_again(tmp_path: Path) -> None:
    """The bulk mark survives a merge that stopped half-way (its indexes written, its
    entities not); reopened, the merge runs again and gives the same view, and the staging
    family is gone after it."""
    records: list[Record] = [
        (i % 3, i // 3, 1000 + i, bytes([65 + i % 7]), b'{"status":"y"}') for i in range(40)
    ]
    ends = ends_of(records, 0)
    storage, view = open_view(tmp_path)
    view.begin_bulk()
    stage_all(view, tmp_path, records, ends, workers=2, budget=1 << 20)
    real_ingest = storage.ingest

    def failing_ingest(cf: str, path: Path) -> None:
        if cf == view.slot.entity_cf:
            raise StorageError("disk went away")
        real_ingest(cf, path)

    storage.ingest = failing_ingest  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="disk went away"):
        _merge(view, ends, tmp_path / "bulk")
    storage.close()

    storage, view = open_view(tmp_path)
    assert view.bulk and storage.has_family(view.slot.staging_cf)
    assert _merge(view, ends, tmp_path / "bulk") == 7
    assert view.slot.counters["keys"] == 7
    assert view.slot.counters["records"] == 40
    assert sorted(e.key for e in view.by("status", "y", limit=100).items) == [
        c.encode().hex() for c in "ABCDEFG"
    ]
    storage.close()
    storage, view = open_view(tmp_path)
    assert not view.bulk and not storage.has_family(view.slot.staging_cf)
    assert view.slot.counters["keys"] == 7 and view.slot.positions == ends
    storage.close()


def test_a_used_slot_is_never_bulk_loaded(tmp_path: Path) -> None:
    """Bulk load is for a slot nothing was applied to: one with positions keeps applying record by record."""
    storage, view = open_view(tmp_path)
    view.apply([(0, 0, 1, b"k", b'{"status":"x"}')])
    view.begin_bulk()
    assert not view.bulk
    storage.close()


def test_a_merge_split_over_processes_equals_one_in_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Split by key range over three worker processes (each reading the store read-only),
    the merge leaves the same entities, index and counters as one merge in this process."""
    rnd = __import__("random").Random(5)
    log = [
        (bytes([rnd.randrange(97, 123)]) * rnd.randrange(1, 4), rnd.randrange(3), v)
        for v in [
            None if rnd.random() < 0.1 else orjson.dumps({"status": rnd.choice("xyz")})
            for _ in range(3_000)
        ]
    ]
    records = records_of(log, [1, 0, 2])
    ends = ends_of(records, 1)
    snapshots = []
    caplog.set_level(logging.INFO, logger="statestore")
    for processes in (1, 3):
        path = tmp_path / str(processes)
        path.mkdir()
        storage, view = open_view(path)
        view.begin_bulk()
        stage_all(view, path, records, ends, workers=2, budget=4_000)
        progress = read_progress(view.slot)
        merge_view(
            view, limits_of(progress, ends, {}), progress, path / "bulk", processes=processes
        )
        snapshots.append(snapshot(view))
        storage.close()
    assert snapshots[0] == snapshots[1]
    assert snapshots[0]["keys"] == len(snapshots[0]["entities"]) > 0
    assert "processes=3 seconds" in caplog.text
