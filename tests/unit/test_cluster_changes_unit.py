"""The pieces of a partitioned cluster's gathered change stream that need no cluster:
its ids, the name of an owner map, and reading an owner's server-sent events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from statestore.api.changes import sse_event
from statestore.api.cluster_changes import GatheredId, SseParser, owner_epoch
from statestore.changes import is_gathered_id

_member = st.text("abcdefghij-0123456789", min_size=1, max_size=30)
_local_id = st.builds(
    lambda s, g, n: f"{s:08x}-{g}-{n}",
    st.integers(0, 2**32 - 1),
    st.integers(0, 99),
    st.integers(0, 10**9),
)


@given(st.text("0123456789abcdef", min_size=1, max_size=12), st.dictionaries(_member, _local_id))
def test_a_gathered_id_reads_back_as_written(epoch: str, ids: dict[str, str]) -> None:
    text = str(GatheredId(epoch, ids))
    assert is_gathered_id(text)
    assert GatheredId.parse(text) == GatheredId(epoch, ids)
    # Fit for an SSE `id:` line and the route's pattern: no padding, no line breaks.
    assert "=" not in text and "\n" not in text


def test_text_that_is_not_a_gathered_id_reads_as_none() -> None:
    owner_id_not_a_change_id = str(GatheredId("abc", {"m": "12"}))
    for text in (
        "",
        "0badc0de-0-12",
        "g1.",
        "g1.!!!",
        "g1.bm90IGpzb24",
        "g1.WzEsMl0",
        owner_id_not_a_change_id,
    ):
        assert GatheredId.parse(text) is None, text


def test_an_owner_map_names_its_owners_not_their_urls_or_order() -> None:
    a = {0: ("m1", None), 1: ("m2", "http://127.0.0.1:1")}
    same = {1: ("m2", "http://127.0.0.1:2"), 0: ("m1", "http://127.0.0.1:3")}
    moved = {0: ("m2", None), 1: ("m2", "http://127.0.0.1:1")}
    assert owner_epoch(a) == owner_epoch(same)
    assert owner_epoch(a) != owner_epoch(moved)
    assert owner_epoch(a) != owner_epoch({0: ("m1", None), 1: None})


@given(st.lists(st.integers(1, 60), max_size=8))
def test_events_are_read_whole_however_the_bytes_are_cut(cuts: list[int]) -> None:
    stream = (
        sse_event("subscribed", b'{"id": "x-0-0", "resumed": false}', "x-0-0")
        + b": keep-alive\n\n"
        + sse_event("change", b'{"key": "a:b", "value": "line: two"}', "x-0-1")
        + sse_event("dropped", b'{"last_id": "x-0-1"}')
    )
    parser = SseParser()
    got = []
    at = 0
    for n in [*cuts, len(stream)]:
        got += parser.feed(stream[at : at + n])
        at += n
    got += parser.feed(stream[at:])
    assert got == [
        ("subscribed", "x-0-0", b'{"id": "x-0-0", "resumed": false}'),
        ("change", "x-0-1", b'{"key": "a:b", "value": "line: two"}'),
        ("dropped", None, b'{"last_id": "x-0-1"}'),
    ]
