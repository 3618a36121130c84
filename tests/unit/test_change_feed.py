"""Change feeds on a real store, fed by applying batches directly (no broker involved)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from statestore import (
    Config,
    InvalidKeyError,
    NotReadyError,
    StateStore,
    UnknownViewError,
    ViewConfig,
)
from statestore.apply import Record
from statestore.changes import (
    Change,
    ChangeId,
    FeedCursor,
    FellBehindError,
    Reset,
    key_matcher,
)
from statestore.codecs import key_codec
from tests.support.config import store_config


def config_at(path: Path) -> Config:
    """A store with a JSON view ``v`` and a bytes view ``b``; batch size 1 so tiny buffers hold."""
    return store_config(
        path,
        [
            ViewConfig(name="v", topic="unused-v"),
            ViewConfig(name="b", topic="unused-b", key="bytes", value="bytes"),
        ],
        store_options={"batch_size": 1},
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(config_at(tmp_path / "store")) as opened:
        yield opened


def put(partition: int, offset: int, key: str, value: object) -> Record:
    return (partition, offset, 1000 + offset, key.encode(), orjson.dumps(value))


def delete(partition: int, offset: int, key: str) -> Record:
    return (partition, offset, 1000 + offset, key.encode(), None)


def changes(events: list[Change | Reset]) -> list[Change]:
    assert all(isinstance(e, Change) for e in events), events
    return [e for e in events if isinstance(e, Change)]


def seqs(events: list[Change | Reset]) -> list[int]:
    return [ChangeId.parse(e.id).seq for e in events]


def test_changes_are_numbered_decoded_and_carry_their_record(store: StateStore) -> None:
    """Each applied put and delete arrives once, numbered 1, 2, 3, ... with its decoded value and position."""
    view = store.view("v")
    with store.changes("v") as sub:
        view.apply([put(0, 0, "a", {"n": 1}), put(1, 0, "b", {"n": 2})])
        view.apply([delete(0, 1, "a")])
        got = changes(sub.poll())
    assert seqs(list(got)) == [1, 2, 3]
    assert [(c.key, c.value, c.partition, c.offset, c.deleted) for c in got] == [
        ("a", {"n": 1}, 0, 0, False),
        ("b", {"n": 2}, 1, 0, False),
        ("a", None, 0, 1, True),
    ]
    assert got[0].timestamp == 1000
    assert got[2].timestamp is None
    assert got[2].to_dict()["op"] == "delete" and got[0].to_dict()["op"] == "put"


def test_a_batch_sends_the_last_change_per_key_in_offset_order(store: StateStore) -> None:
    """Within one batch only a key's last change is sent, and a partition's changes come in offset order."""
    view = store.view("v")
    with store.changes("v") as sub:
        view.apply([put(0, 0, "k1", 1), put(0, 1, "k2", 2), put(1, 0, "k3", 3), put(0, 2, "k1", 4)])
        got = changes(sub.poll())
    assert [(c.partition, c.offset, c.key, c.value) for c in got] == [
        (0, 1, "k2", 2),
        (0, 2, "k1", 4),
        (1, 0, "k3", 3),
    ]


def test_a_tombstone_for_an_absent_key_sends_nothing(store: StateStore) -> None:
    """Deleting a key the view does not hold changes nothing, so no event is sent."""
    with store.changes("v") as sub:
        store.view("v").apply([delete(0, 0, "never-there")])
        assert sub.poll() == []


def test_resuming_after_an_id_continues_exactly(store: StateStore) -> None:
    """A subscriber given the id of the last change it saw gets exactly the changes after it."""
    view = store.view("v")
    first = store.changes("v")
    view.apply([put(0, i, f"k{i}", i) for i in range(5)])
    seen = first.poll(limit=2)
    first.close()
    view.apply([put(0, i, f"k{i}", i) for i in range(5, 8)])
    with store.changes("v", last_id=seen[-1].id) as again:
        assert again.resumed
        rest = changes(again.poll())
    assert seqs(seen) + seqs(list(rest)) == list(range(1, 9))
    assert [c.offset for c in rest] == list(range(2, 8))


def test_an_id_older_than_the_buffer_gets_a_reset_then_new_changes(store: StateStore) -> None:
    """Resuming from a change the buffer no longer holds starts with a reset, never a silent gap."""
    view = store.view("v")
    store.change_feed("v", buffer=4)
    with store.changes("v") as sub:
        view.apply([put(0, 0, "k0", 0)])
        old = sub.poll()[-1].id
        view.apply([put(0, i, f"k{i}", i) for i in range(1, 10)])
        assert len(sub.feed) == 4
    with store.changes("v", last_id=old) as late:
        assert not late.resumed
        first, *rest = late.poll()
        assert isinstance(first, Reset) and "no longer buffered" in first.reason
        assert rest == []
        view.apply([put(0, 10, "k10", 10)])
        assert [c.key for c in changes(late.poll())] == ["k10"]
        assert ChangeId.parse(first.id).seq == 10


def test_an_id_from_another_stream_gets_a_reset(store: StateStore) -> None:
    """An id written before a restart (another stream) resets; a malformed one is refused."""
    with store.changes("v", last_id="0badc0de-0-12") as sub:
        (reset,) = sub.poll()
        assert isinstance(reset, Reset) and "restarted" in reset.reason
    with pytest.raises(ValueError, match="not a change id"):
        store.changes("v", last_id="12")


def test_a_subscriber_with_too_much_waiting_is_dropped(store: StateStore) -> None:
    """Once more than max_pending changes wait for a subscriber it is dropped, while other readers get everything."""
    view = store.view("v")
    slow = store.changes("v", max_pending=3)
    fast = store.changes("v", max_pending=3)
    received: list[Change] = []
    for batch in range(4):
        view.apply([put(0, batch * 2 + i, f"k{batch}-{i}", i) for i in range(2)])
        received += changes(fast.poll())
    assert len(received) == 8
    assert [c.offset for c in received] == list(range(8))
    with pytest.raises(FellBehindError) as caught:
        slow.poll()
    assert caught.value.last_id == slow.start_id
    assert slow.feed.subscribers() == 1


def test_one_batch_larger_than_max_pending_does_not_drop_a_reader_that_keeps_up(
    store: StateStore,
) -> None:
    """max_pending counts what a reader left unread before a batch, so a reader that keeps up survives big batches."""
    view = store.view("v")
    with store.changes("v", max_pending=2) as sub:
        for round_ in range(3):
            view.apply([put(0, round_ * 5 + i, f"k{i}", round_) for i in range(5)])
            assert len(changes(sub.poll())) == 5


def test_a_subscriber_the_buffer_moved_past_is_dropped_and_resumes_with_a_reset(
    store: StateStore,
) -> None:
    """A subscriber whose next change left the buffer is dropped; resubscribing from its last id resets."""
    view = store.view("v")
    store.change_feed("v", buffer=3)
    sub = store.changes("v")
    view.apply([put(0, i, f"k{i}", i) for i in range(6)])
    with pytest.raises(FellBehindError) as caught:
        sub.poll()
    assert "fell behind" in str(caught.value)
    with store.changes("v", last_id=caught.value.last_id) as again:
        assert isinstance(again.poll()[0], Reset)


def test_the_byte_budget_bounds_the_buffer(store: StateStore) -> None:
    """The buffer lets the oldest changes go once their bytes exceed the budget."""
    view = store.view("v")
    feed = store.change_feed("v", buffer=100, buffer_bytes=1500)
    view.apply([put(0, i, f"k{i}", "x" * 500) for i in range(10)])
    assert 1 <= len(feed) <= 3


def test_the_prefix_filters_on_key_text(store: StateStore) -> None:
    """Only changes whose key text starts with the prefix are sent, numbered as in the whole stream."""
    view = store.view("v")
    with store.changes("v", prefix="a/") as sub:
        view.apply(
            [put(0, 0, "a/1", 1), put(0, 1, "b/1", 2), put(0, 2, "a/2", 3), put(0, 3, "ab", 4)]
        )
        got = changes(sub.poll())
    assert [c.key for c in got] == ["a/1", "a/2"]
    assert seqs(list(got)) == [1, 3]


def test_a_partition_filter_keeps_the_changes_of_those_partitions(store: StateStore) -> None:
    """Given partitions, only the changes of records from them are sent (with the prefix,
    both hold); ids stay those of the whole stream."""
    view = store.view("v")
    feed = store.change_feed("v")
    with feed.open(partitions=frozenset({0, 2}), prefix="a") as sub:
        view.apply([put(0, 0, "a0", 0), put(1, 0, "a1", 1), put(2, 0, "a2", 2), put(2, 1, "b2", 3)])
        got = changes(sub.poll())
    assert [(c.key, c.partition) for c in got] == [("a0", 0), ("a2", 2)]
    assert seqs(list(got)) == [1, 3]


def test_an_id_of_a_gathered_stream_gets_a_reset(store: StateStore) -> None:
    """An id a partitioned cluster's gathered stream wrote, given to one instance's feed:
    a reset that says so, then the changes from now on."""
    feed = store.change_feed("v")
    with feed.open(last_id="g1.eyJlIjoiYWJjIiwibSI6e319") as sub:
        assert not sub.resumed
        (reset,) = sub.poll()
        assert isinstance(reset, Reset) and "gathered stream" in reset.reason
        store.view("v").apply([put(0, 0, "k", 1)])
        assert [c.key for c in changes(sub.poll())] == ["k"]


def test_bytes_keys_filter_on_their_hex_text(store: StateStore) -> None:
    """For bytes keys the prefix is hex text, odd lengths and upper case included."""
    view = store.view("b")
    with store.changes("b", prefix="AB1") as sub:
        view.apply(
            [
                (0, 0, 1, b"\xab\x10", b"x"),
                (0, 1, 1, b"\xab\x20", b"y"),
                (0, 2, 1, b"\xab", b"z"),
                (0, 3, 1, b"\xab\x1f\x00", b""),
            ]
        )
        got = changes(sub.poll())
    assert [c.key for c in got] == ["ab10", "ab1f00"]
    assert got[0].value == b"x"


def test_a_prefix_that_is_not_hex_is_refused_for_bytes_keys() -> None:
    """A bytes-key prefix must be hex."""
    with pytest.raises(InvalidKeyError):
        key_matcher(key_codec("bytes"), "zz")


def test_a_rebuild_swap_resets_subscribers(store: StateStore) -> None:
    """When the view switches to a rebuilt generation, subscribers get a reset and ids of the old one reset."""
    view = store.view("v")
    with store.changes("v") as sub:
        view.apply([put(0, 0, "a", 1)])
        before = sub.poll()[-1].id
        view.wipe("the test changes the view")
        (reset,) = sub.poll()
        assert isinstance(reset, Reset) and "rebuilt" in reset.reason
        assert ChangeId.parse(reset.id).generation == view.generation == 1
        view.apply([put(0, 1, "a", 2)])
        (after,) = changes(sub.poll())
        assert ChangeId.parse(after.id).generation == 1 and after.value == 2
    with store.changes("v", last_id=before) as old:
        assert isinstance(old.poll()[0], Reset)


def test_iteration_waits_for_changes_and_ends_on_close(store: StateStore) -> None:
    """Iterating a subscription blocks until changes arrive and ends when it is closed."""
    sub = store.changes("v")
    got: list[Change | Reset] = []
    arrived = threading.Event()

    def read() -> None:
        for event in sub:
            got.append(event)
            arrived.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    store.view("v").apply([put(0, 0, "a", 1)])
    assert arrived.wait(10)
    sub.close()
    reader.join(10)
    assert not reader.is_alive()
    assert [c.key for c in changes(got)] == ["a"]


def test_the_waker_runs_once_per_wait(store: StateStore) -> None:
    """A subscriber's waker runs when changes arrive after an empty poll, and not again until it polls."""
    calls: list[int] = []
    with store.changes("v") as sub:
        sub.set_waker(lambda: calls.append(1))
        assert sub.poll() == []
        store.view("v").apply([put(0, 0, "a", 1)])
        store.view("v").apply([put(0, 1, "b", 1)])
        assert len(calls) == 1
        assert len(sub.poll()) == 2


def test_one_feed_per_view_whatever_the_number_of_subscribers(store: StateStore) -> None:
    """Subscribers of a view share one feed, attached to the view once."""
    view = store.view("v")
    listeners = len(view.listeners)
    with store.changes("v") as one, store.changes("v", prefix="x") as two:
        assert one.feed is two.feed
        assert len(view.listeners) == listeners + 1


def test_a_cursor_changes_only_through_its_named_methods() -> None:
    """drop keeps the first reason, reset_to moves to the head with a reset that is taken once,
    advance never goes back, fire wakes once per arm, close stops once."""
    cursor = FeedCursor(5, max_pending=3)
    cursor.drop("first reason")
    cursor.drop("second reason")
    assert cursor.dropped == "first reason"

    cursor = FeedCursor(5)
    cursor.arm()
    cursor.reset_to(9, "rebuilt")
    assert (cursor.seq, cursor.armed) == (9, False)
    assert cursor.take_reset() == "rebuilt"
    assert cursor.take_reset() is None

    cursor.advance(12)
    cursor.advance(10)
    assert cursor.seq == 12

    assert not cursor.fire()
    cursor.arm()
    assert cursor.fire()
    assert not cursor.fire()

    assert cursor.close()
    assert not cursor.close()
    assert cursor.closed


def test_a_cursor_wake_runs_its_waker_and_survives_a_failing_one() -> None:
    """wake calls the waker; a waker that raises (its loop closed) is logged, not raised."""
    calls: list[int] = []
    cursor = FeedCursor(0, waker=lambda: calls.append(1))
    cursor.wake("v")
    assert calls == [1]

    def broken() -> None:
        raise RuntimeError("event loop is closed")

    FeedCursor(0, waker=broken).wake("v")


def test_a_store_makes_one_feed_per_view_and_keeps_its_first_sizes(store: StateStore) -> None:
    """change_feed returns the feed made first (its sizes stand); each view has its own."""
    feed = store.change_feed("v", buffer=7)
    assert store.change_feed("v", buffer=99) is feed
    assert feed.capacity == 7
    assert store.change_feed("b") is not feed
    with pytest.raises(UnknownViewError):
        store.change_feed("nope")


def test_two_stores_never_share_a_feed(tmp_path: Path) -> None:
    """Each store owns its feeds: the same view name in two stores gives two feeds, and
    one store's changes never reach the other's subscribers."""
    with (
        StateStore(config_at(tmp_path / "one")) as one,
        StateStore(config_at(tmp_path / "two")) as two,
        one.changes("v") as ones,
        two.changes("v") as twos,
    ):
        assert ones.feed is not twos.feed
        one.view("v").apply([put(0, 0, "a", 1)])
        assert [c.key for c in changes(ones.poll())] == ["a"]
        assert twos.poll() == []


def test_closing_the_store_closes_its_feeds_and_ends_their_subscriptions(tmp_path: Path) -> None:
    """store.close() detaches and closes every feed: a waiting iteration ends, polls return
    nothing, and the closed store opens no new subscription."""
    store = StateStore(config_at(tmp_path / "store"))
    view = store.view("v")
    listeners = len(view.listeners)
    sub = store.changes("v")
    feed = sub.feed
    assert len(view.listeners) == listeners + 1
    started = threading.Event()
    got: list[Change | Reset] = []

    def read() -> None:
        started.set()
        got.extend(sub)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(10)
    store.close()
    reader.join(10)
    assert not reader.is_alive()
    assert got == []
    assert sub.closed and feed.closed and feed.subscribers() == 0
    assert len(view.listeners) == listeners
    assert sub.poll() == []
    with pytest.raises(NotReadyError, match="closed"):
        store.changes("v")
    with pytest.raises(NotReadyError, match="closed"):
        feed.open()
