"""Key ranges and index ranges on a real RocksDB store: order, paging, and refused input."""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore import CursorError, InvalidRangeError, UnknownIndexError
from statestore.apply import Record
from statestore.config import ViewConfig
from statestore.cursor import CursorSigner
from statestore.indexes import encode_index_value, index_range
from statestore.records import index_done_key
from statestore.storage import META, Storage
from statestore.view import Page, View

NUMBERS = st.one_of(
    st.integers(-(2**64) + 1, 2**64 - 1),
    st.floats(allow_nan=False),
    st.integers(-(2**53) - 5000, -(2**53) + 5000),
    st.integers(2**63 - 5000, 2**63 + 5000),
)
TEXTS = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["", "a", "a ", "a!", "a\x00", "a\x01", "a\x02", 'a"', "a\\", "New", "New York"]
)


def open_view(path: Path, indexes: tuple[str, ...] = ("n", "s")) -> tuple[Storage, View]:
    storage = Storage(path)
    view = View(ViewConfig(name="v", topic="t", indexes=indexes), storage, CursorSigner(b"k" * 32))
    view.prepare()
    return storage, view


def records(values: dict[str, object]) -> list[Record]:
    return [(0, i, 0, k.encode(), orjson.dumps(v)) for i, (k, v) in enumerate(values.items())]


def every_page(read: object, limit: int) -> list[str]:
    """Keys of every page *read(after, limit)* returns, following the cursors."""
    keys: list[str] = []
    after: str | None = None
    while True:
        page: Page = read(after, limit)  # type: ignore[operator]
        assert len(page.items) <= limit
        keys += [e.key for e in page.items]
        if page.next is None:
            return keys
        after = page.next


@settings(max_examples=300, deadline=None)
@given(a=NUMBERS, b=NUMBERS)
def test_numbers_encode_in_numeric_order(a: float, b: float) -> None:
    """Two numbers (integers of up to 64 bits and floats alike) encode in numeric order, and
    encode equal exactly when they are equal."""
    ea, eb = encode_index_value(a), encode_index_value(b)
    assert ea is not None and eb is not None
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


@settings(max_examples=300, deadline=None)
@given(a=TEXTS, b=TEXTS, key=st.binary(max_size=4))
def test_strings_encode_in_code_point_order(a: str, b: str, key: bytes) -> None:
    """Strings encode in code-point order, also with the NUL separator and a key after them."""
    ea, eb = encode_index_value(a), encode_index_value(b)
    assert ea is not None and eb is not None
    assert (ea < eb) == (a < b)
    if a != b:
        assert (ea + b"\x00" + key < eb + b"\x00" + key) == (a < b)
    assert b"\x00" not in ea


def test_types_order_and_unindexable_values() -> None:
    """Booleans sort before numbers and numbers before strings; NaN and 65-bit integers are
    not indexed; 1 and 1.0 are one value, -0.0 is 0; datetimes, bytes and decimals index as
    their text."""
    encoded = [encode_index_value(v) for v in (False, True, -1, 0, 1e300, "", "0")]
    assert encoded == sorted(encoded)  # type: ignore[type-var]
    assert encode_index_value(math.nan) is None
    assert encode_index_value(2**64) is None
    assert encode_index_value(1) == encode_index_value(1.0)
    assert encode_index_value(-0.0) == encode_index_value(0)
    assert encode_index_value(True) != encode_index_value(1)
    when = datetime(2026, 12, 1, 16, 30, tzinfo=UTC)
    assert encode_index_value(when) == encode_index_value("2026-12-01T16:30:00+00:00")
    assert encode_index_value(b"\x01\xff") == encode_index_value("01ff")
    assert encode_index_value(Decimal("12.50")) == encode_index_value("12.50")


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (1, "z", "a number"),
        (True, 3, "a boolean"),
        (5, 2, "after its end"),
        ("b", "a", "after its end"),
        (math.nan, None, "not an indexable value"),
        (None, math.inf * 0, "not an indexable value"),
    ],
)
def test_bad_index_ranges_are_refused(start: object, end: object, words: str) -> None:
    """Bounds of two types, a start after the end, or an unindexable bound raise
    InvalidRangeError naming the view and the index."""
    with pytest.raises(InvalidRangeError, match=words) as err:
        index_range("v", "n", start, end)  # type: ignore[arg-type]
    assert "'v'" in str(err.value) and "'n'" in str(err.value)


KEYS = st.sets(st.text("abc/é ", min_size=0, max_size=4), max_size=40)
BOUND = st.none() | st.text("abc/é ", max_size=3)


@settings(max_examples=50, deadline=None)
@given(keys=KEYS, start=BOUND, end=BOUND, prefix=st.text("ab", max_size=2), limit=st.integers(1, 7))
def test_key_ranges_page_through_exactly_the_keys_in_range(
    keys: set[str], start: str | None, end: str | None, prefix: str, limit: int
) -> None:
    """A scan with a prefix and a range returns, over all its pages, each key both admit once,
    in key order; a start after the end is refused."""
    with tempfile.TemporaryDirectory() as tmp:
        storage, view = open_view(Path(tmp))
        try:
            view.apply(records({k: {"n": 1} for k in keys}))
            enc = [(k.encode(), k) for k in keys]
            lo, hi = (start or "").encode(), end.encode() if end else None
            if hi is not None and lo > hi:
                with pytest.raises(InvalidRangeError):
                    view.scan(prefix, None, limit, start=start, end=end)
                return
            want = sorted(
                (b, k)
                for b, k in enc
                if b.startswith(prefix.encode()) and b >= lo and (hi is None or b < hi)
            )
            got = every_page(lambda a, n: view.scan(prefix, a, n, start=start, end=end), limit)
            assert got == [k for _, k in want]
        finally:
            storage.close()


VALUES = st.dictionaries(
    st.text("pq", min_size=1, max_size=5),
    st.one_of(st.integers(-300, 300), st.floats(-1e3, 1e3), st.text("xyz ", max_size=3)),
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(values=VALUES, a=st.integers(-300, 300), b=st.integers(-300, 300), limit=st.integers(1, 5))
def test_number_ranges_page_in_value_then_key_order(
    values: dict[str, float | str], a: int, b: int, limit: int
) -> None:
    """An index range over numbers returns, over all its pages, the entities whose value lies
    in [start, end), by value then key; strings of the same field stay out."""
    low, high = min(a, b), max(a, b)
    with tempfile.TemporaryDirectory() as tmp:
        storage, view = open_view(Path(tmp))
        try:
            view.apply(records({k: {"n": v} for k, v in values.items()}))
            numeric = [(v, k) for k, v in values.items() if not isinstance(v, str)]
            want = [k for v, k in sorted(numeric) if low <= v < high]
            got = every_page(lambda after, n: view.by_range("n", low, high, after, n), limit)
            assert got == want
            above = [k for v, k in sorted(numeric) if v >= low]
            assert every_page(lambda after, n: view.by_range("n", low, None, after, n), 3) == above
        finally:
            storage.close()


def test_range_cursors_are_checked(tmp_path: Path) -> None:
    """A cursor outside the range, of another kind of page, or malformed is a CursorError;
    a range on a field without an index is an UnknownIndexError."""
    storage, view = open_view(tmp_path)
    try:
        view.apply(records({f"k{i}": {"n": i, "s": f"s{i}"} for i in range(10)}))
        page = view.scan("", None, 2, start="k2", end="k8")
        assert [e.key for e in page.items] == ["k2", "k3"] and page.next is not None
        with pytest.raises(CursorError, match="key range"):
            view.scan("", page.next, 2, start="k5", end="k8")
        with pytest.raises(CursorError, match="malformed"):
            view.scan("", "not-a-cursor", 2, start="k2")
        by_page = view.by_range("n", 2, 8, None, 2)
        assert [e.key for e in by_page.items] == ["k2", "k3"] and by_page.next is not None
        with pytest.raises(CursorError, match="index range"):
            view.by_range("n", 5, 8, by_page.next, 2)
        with pytest.raises(CursorError, match="invalid cursor"):
            view.by_range("s", "s2", "s8", by_page.next, 2)  # another index's cursor
        with pytest.raises(CursorError, match="invalid cursor"):
            view.scan("", by_page.next, 2)
        with pytest.raises(UnknownIndexError):
            view.by_range("nope", 1, 2, None, 2)
    finally:
        storage.close()


def test_an_index_in_the_earlier_json_encoding_is_rebuilt(tmp_path: Path) -> None:
    """An index marked done in the earlier JSON-text encoding (its old marker only) is rebuilt
    from the stored view when the store opens, and then answers lookups and ranges."""
    storage, view = open_view(tmp_path, indexes=("n",))
    view.apply(records({"a": {"n": 10}, "b": {"n": 9}, "c": {"n": 100}}))
    slot = view.slot
    cf = slot.index_cfs["n"]
    batch = storage.batch()
    batch.delete(META, index_done_key(slot.id, "n"))
    batch.put(META, f"t/{slot.id}/index/n".encode(), b"")
    for entry, _ in list(storage.scan(cf)):
        batch.delete(cf, entry)
    for key, n in (("a", 10), ("b", 9), ("c", 100)):
        batch.put(cf, orjson.dumps(n) + b"\x00" + key.encode(), b"")
    storage.write(batch)
    storage.close()

    storage, view = open_view(tmp_path, indexes=("n",))
    try:
        assert [e.key for e in view.by("n", 9, None, 10).items] == ["b"]
        assert [e.key for e in view.by_range("n", 9, 101, None, 10).items] == ["b", "a", "c"]
    finally:
        storage.close()
