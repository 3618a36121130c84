"""The apply logic on a real RocksDB store: the view equals the reduction of the log."""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.apply import Record
from statestore.config import ViewConfig
from statestore.cursor import CursorSigner
from statestore.storage import Storage
from statestore.view import View

KEYS = st.sampled_from(["a", "b", "c", "d/e", "ü", "k 1", ""])
VALUES = st.one_of(
    st.none(),
    st.integers(0, 1000).map(lambda n: orjson.dumps({"n": n, "status": ["x", "y", "z"][n % 3]})),
    st.just(b"{bad json"),
)


def open_view(path: Path, **options: object) -> tuple[Storage, View]:
    storage = Storage(path)
    view = View(ViewConfig(name="v", topic="t", **options), storage, CursorSigner(b"s" * 32))  # type: ignore[arg-type]
    view.prepare()
    return storage, view


def apply_in(view: View, records: list[Record], cuts: list[int]) -> None:
    """Apply *records* in batches of the sizes in *cuts*, then the rest in one batch."""
    i = 0
    for size in [*cuts, len(records)]:
        if i >= len(records):
            break
        view.apply(records[i : i + size])
        i += size


def reduce_log(log: list[tuple[str, bytes | None]]) -> dict[str, object]:
    expected: dict[str, object] = {}
    for key, value in log:
        if value is None:
            expected.pop(key, None)
        elif value != b"{bad json":
            expected[key] = orjson.loads(value)
    return expected


@settings(max_examples=60, deadline=None)
@given(
    log=st.lists(st.tuples(KEYS, VALUES), max_size=60),
    cuts=st.lists(st.integers(1, 20), max_size=10),
)
def test_view_equals_last_value_per_key(
    log: list[tuple[str, bytes | None]], cuts: list[int]
) -> None:
    """After any sequence of updates, tombstones and bad records, applied in any batching, the view holds exactly the last good value of each key."""
    with tempfile.TemporaryDirectory() as tmp:
        storage, view = open_view(Path(tmp), indexes=("status",))
        records: list[Record] = []
        offsets: dict[int, int] = {}
        for key, value in log:
            partition = sum(key.encode()) % 3  # a key always lives in one partition
            offset = offsets.get(partition, 0)
            offsets[partition] = offset + 1
            records.append((partition, offset, 1000 + offset, key.encode(), value))
        apply_in(view, records, cuts)
        expected = reduce_log(log)
        got = {e.key: e.value for e in view.iter_entities()}
        assert got == expected
        assert view.slot.counters["keys"] == len(expected)
        assert view.slot.counters["quarantined"] == sum(1 for _, v in log if v == b"{bad json")
        assert {p: o for p, o in view.slot.positions.items()} == offsets
        for status in ("x", "y", "z"):
            hits = {e.key for e in view.by("status", status, limit=1000).items}
            assert hits == {k for k, v in expected.items() if v["status"] == status}  # type: ignore[index]
        storage.close()


def test_positions_and_data_survive_reopen(tmp_path: Path) -> None:
    """What one write applied is exactly what a reopened store finds, positions included."""
    storage, view = open_view(tmp_path)
    view.apply([(0, 0, 1, b"k", b'{"a":1}'), (1, 0, 1, b"j", b'{"a":2}'), (0, 1, 2, b"k", None)])
    storage.close()
    storage, view = open_view(tmp_path)
    assert view.slot.positions == {0: 2, 1: 1}
    assert view.get("k") is None
    entity = view.get("j")
    assert (
        entity is not None
        and entity.value == {"a": 2}
        and (entity.partition, entity.offset) == (1, 0)
    )
    assert view.slot.counters["keys"] == 1
    storage.close()


def test_key_moved_across_partitions_resolves_by_timestamp(tmp_path: Path) -> None:
    """When a key shows up in two partitions, the newer record by timestamp wins whatever the read order."""
    storage, view = open_view(tmp_path)
    view.apply([(1, 0, 2000, b"k", b'{"v":"new"}')])
    view.apply([(0, 0, 1000, b"k", b'{"v":"old"}')])
    entity = view.get("k")
    assert entity is not None and entity.value == {"v": "new"}
    view.apply([(0, 1, 3000, b"k", b'{"v":"newest"}')])
    entity = view.get("k")
    assert entity is not None and entity.value == {"v": "newest"}
    storage.close()


def test_bad_record_keeps_last_good_value_and_is_quarantined(tmp_path: Path) -> None:
    """A malformed value is quarantined with its coordinates and the entity keeps its last good value."""
    storage, view = open_view(tmp_path)
    view.apply(
        [(0, 0, 1, b"k", b'{"a":1}'), (0, 1, 2, b"k", b"\x00garbage"), (0, 2, 3, None, b"{}")]
    )
    entity = view.get("k")
    assert entity is not None and entity.value == {"a": 1}
    items, nxt = view.quarantine()
    assert nxt is None
    assert [(q["partition"], q["offset"]) for q in items] == [(0, 1), (0, 2)]
    assert "not valid JSON" in items[0]["reason"] and "null key" in items[1]["reason"]
    assert view.slot.positions == {0: 3}
    storage.close()


def test_on_error_fail_stops_before_the_bad_record(tmp_path: Path) -> None:
    """With on_error = fail, records before the bad one are applied and the position stops on it."""
    storage, view = open_view(tmp_path, on_error="fail")
    applied = view.apply([(0, 0, 1, b"a", b"{}"), (0, 1, 1, b"b", b"nope"), (0, 2, 1, b"c", b"{}")])
    assert applied.failure is not None and "offset 1" in applied.failure
    assert view.get("a") is not None and view.get("c") is None
    assert view.slot.positions == {0: 1}
    storage.close()


def test_empty_value_is_data_not_a_tombstone(tmp_path: Path) -> None:
    """In a string view an empty value is stored as an empty string; it deletes nothing."""
    storage, view = open_view(tmp_path, value="string")
    view.apply([(0, 0, 1, b"k", b"x"), (0, 1, 2, b"k", b"")])
    entity = view.get("k")
    assert entity is not None and entity.value == ""
    storage.close()
