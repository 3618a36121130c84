"""A first bootstrap loads in bulk (staging family, then one merge): the view it leaves must
be exactly the one record-by-record apply leaves, whatever the keys, partitions and batching."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_apply import VALUES, apply_in
from test_apply import open_view as open_plain_view

from statestore.apply import Record
from statestore.errors import NotReadyError, StorageError
from statestore.records import stage_key, stage_suffix, staged_key
from statestore.storage import Storage
from statestore.view import View

# Keys that stress the staging encoding: NUL bytes, prefixes of one another, 0xFF, empty.
KEYS = st.sampled_from(
    [b"a", b"a\x00", b"a\x00\x00", b"a\x00b", b"a\x00\xff", b"ab", b"", b"\x00", b"\xff", b"k 1"]
)


def open_view(path: Path) -> tuple[Storage, View]:
    return open_plain_view(path, key="bytes", indexes=("status",))


def records_of(log: list[tuple[bytes, int, bytes | None]]) -> list[Record]:
    """Records in read order, timestamps rising within each partition and unique overall,
    partitions interleaved so that read order and timestamp order differ across them."""
    offsets: dict[int, int] = {}
    out: list[Record] = []
    for key, partition, value in log:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        timestamp = 1_000 + offset * 10 + (6, 1, 5)[partition]
        out.append((partition, offset, timestamp, key, value))
    return out


def bulk_load(
    path: Path, records: list[Record], cuts: list[int], chunk: int
) -> tuple[Storage, View]:
    storage, view = open_view(path)
    view.begin_bulk()
    assert view.bulk
    apply_in(view, records, cuts)
    before_merge = entities(view)
    view.finish_bulk(chunk=chunk)
    # What the view shows of its staged records (for inspection) is what the merge kept.
    assert entities(view) == before_merge
    assert not view.bulk
    assert not storage.has_family(view.staging_cf)
    return storage, view


def entities(view: View) -> dict[str, Any]:
    return {e.key: (e.partition, e.offset, e.timestamp, e.value) for e in view.iter_entities()}


def snapshot(view: View) -> dict[str, Any]:
    return {
        "entities": entities(view),
        "keys": view.counters["keys"],
        "records": view.counters["records"],
        "quarantined": view.counters["quarantined"],
        "positions": dict(view.positions),
        "index": {s: sorted(e.key for e in view.by("status", s, limit=1000).items) for s in "xyz"},
    }


LOGS = st.lists(st.tuples(KEYS, st.integers(0, 2), VALUES), max_size=80)
CUTS = st.lists(st.integers(1, 15), max_size=8)


@settings(max_examples=40, deadline=None)
@given(log=LOGS, cuts=CUTS, bulk_cuts=CUTS, chunk=st.integers(1, 5))
def test_bulk_load_equals_record_by_record_apply(
    log: list[tuple[bytes, int, bytes | None]], cuts: list[int], bulk_cuts: list[int], chunk: int
) -> None:
    """Each key in one partition (as a key-hashing producer writes), tombstones, bad records,
    any batching and merge chunk size: the merged view equals the one applied record by
    record, counts and indexes included."""
    records = records_of([(key, sum(key) % 3, value) for key, _, value in log])
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        plain_storage, plain = open_view(Path(a))
        apply_in(plain, records, cuts)
        bulk_storage, bulk = bulk_load(Path(b), records, bulk_cuts, chunk)
        assert snapshot(bulk) == snapshot(plain)
        plain_storage.close()
        bulk_storage.close()


@settings(max_examples=40, deadline=None)
@given(log=LOGS, cuts=CUTS, chunk=st.integers(1, 5))
def test_a_key_in_several_partitions_resolves_to_its_newest_record(
    log: list[tuple[bytes, int, bytes | None]], cuts: list[int], chunk: int
) -> None:
    """A key written to several partitions (the topic grew): the newest record by timestamp
    among each partition's last good record of the key wins, and a newest tombstone deletes
    the key whichever partition was read first."""
    records = records_of(log)
    last: dict[bytes, dict[int, tuple[int, int, bytes | None]]] = {}
    for partition, offset, timestamp, key, value in records:
        if value != b"{bad json":
            last.setdefault(key, {})[partition] = (timestamp, offset, value)
    expected = {}
    for key, by_partition in last.items():
        partition, (timestamp, offset, value) = max(by_partition.items(), key=lambda i: i[1][0])
        if value is not None:
            expected[key.hex()] = (partition, offset, timestamp, orjson.loads(value))
    with tempfile.TemporaryDirectory() as tmp:
        storage, view = bulk_load(Path(tmp), records, cuts, chunk)
        assert snapshot(view)["entities"] == expected
        assert view.counters["keys"] == len(expected)
        storage.close()


@given(key=st.binary(max_size=12), other=st.binary(max_size=12), p=st.integers(0, 2**31 - 1))
def test_staging_keys_group_each_key_and_decode(key: bytes, other: bytes, p: int) -> None:
    """The staging key decodes back to the key, and sorts like the key: every entry of one key
    sorts together, never interleaved with another key's entries."""
    assert staged_key(stage_key(key, stage_suffix(p))) == key
    if key != other:
        low = min(stage_key(key, stage_suffix(0)), stage_key(key, stage_suffix(2**31 - 1)))
        high = max(stage_key(key, stage_suffix(0)), stage_key(key, stage_suffix(2**31 - 1)))
        assert not low < stage_key(other, stage_suffix(p)) < high
        assert (stage_key(key, stage_suffix(p)) < stage_key(other, stage_suffix(0))) == (
            key < other
        )


def test_reads_refuse_while_loading_and_work_after(tmp_path: Path) -> None:
    """A view in its first bulk load refuses reads instead of answering from a partial copy."""
    storage, view = open_view(tmp_path)
    view.begin_bulk()
    view.apply([(0, 0, 1, b"k", b'{"status":"x"}')])
    for read in (
        lambda: view.get(b"k".hex()),
        lambda: view.lookup([b"k".hex()]),
        lambda: view.scan(),
        lambda: view.by("status", "x"),
    ):
        with pytest.raises(NotReadyError):
            read()
    view.finish_bulk()
    entity = view.get(b"k".hex())
    assert entity is not None and entity.value == {"status": "x"}
    storage.close()


def test_a_merge_interrupted_by_a_crash_is_done_again(tmp_path: Path) -> None:
    """The bulk mark survives a merge that stopped half-way; reopened, the merge runs again and
    gives the same view, and the staging family is gone after it."""
    records = records_of([(bytes([65 + i % 7]), i % 3, b'{"status":"y"}') for i in range(40)])
    storage, view = open_view(tmp_path)
    view.begin_bulk()
    view.apply(records)
    writes = 0
    real_write = storage.write

    def failing_write(batch: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise StorageError("disk went away")
        real_write(batch)

    storage.write = failing_write  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        view.finish_bulk(chunk=2)
    storage.close()

    storage, view = open_view(tmp_path)
    assert view.bulk and storage.has_family(view.staging_cf)
    assert view.finish_bulk(chunk=2) == 7
    assert view.counters["keys"] == 7
    assert sorted(e.key for e in view.by("status", "y", limit=100).items) == [
        c.encode().hex() for c in "ABCDEFG"
    ]
    storage.close()
    storage, view = open_view(tmp_path)
    assert not view.bulk and not storage.has_family(view.staging_cf)
    assert view.counters["keys"] == 7
    storage.close()


def test_a_used_slot_is_never_bulk_loaded(tmp_path: Path) -> None:
    """Bulk load is for a slot nothing was applied to: one with positions keeps applying record by record."""
    storage, view = open_view(tmp_path)
    view.apply([(0, 0, 1, b"k", b'{"status":"x"}')])
    view.begin_bulk()
    assert not view.bulk
    storage.close()
