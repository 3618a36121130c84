"""The ingest loop over an in-memory log: holes settle, readiness is exact, the view is the reduction."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import (
    TOPIC,
    Harness,
    HarnessFactory,
    StopAfter,
    doc,
    harness_fixture,
    make_harness,
)

from statestore import Config, StateStore, StoreConfig, ViewConfig
from statestore.errors import KafkaError
from statestore.storage import Storage
from statestore.testing import MemoryKafka, MemoryTopic

harness = harness_fixture


def fill(topic: MemoryTopic, n: int, keys: int = 10, partition: int | None = None) -> None:
    for i in range(n):
        topic.produce(f"k{i % keys}", doc(i), partition=partition)


# -- holes: offsets without a record below the high watermark ---------------------------


def compacted_middle(topic: MemoryTopic) -> None:
    fill(topic, 40, keys=5, partition=0)
    topic.produce("last", doc(99), partition=0)
    topic.compact(0)


def compacted_tombstones(topic: MemoryTopic) -> None:
    topic.produce_many([("a", doc(1)), ("b", doc(2)), ("a", None), ("c", doc(3))], partition=0)
    topic.compact(0, tombstones=True)


def markers_at_the_tail(topic: MemoryTopic) -> None:
    fill(topic, 10, partition=0)
    topic.marker(0, 2)


def markers_between_transactions(topic: MemoryTopic) -> None:
    for _ in range(5):
        fill(topic, 3, partition=0)
        topic.marker(0)
    fill(topic, 2, partition=0)


def aborted_records_at_the_tail(topic: MemoryTopic) -> None:
    fill(topic, 10, partition=0)
    topic.gap(0, 4)


def aborted_records_before_more(topic: MemoryTopic) -> None:
    fill(topic, 5, partition=0)
    topic.gap(0, 4)
    fill(topic, 5, partition=0)


def only_holes(topic: MemoryTopic) -> None:
    topic.marker(0, 3)
    topic.gap(0, 2)


HOLES = [
    compacted_middle,
    compacted_tombstones,
    markers_at_the_tail,
    markers_between_transactions,
    aborted_records_at_the_tail,
    aborted_records_before_more,
    only_holes,
]


@pytest.mark.parametrize("shape", HOLES, ids=[f.__name__ for f in HOLES])
@pytest.mark.parametrize("partitions", [1, 3])
def test_holes_settle_and_the_view_is_ready_at_the_end_offsets(
    harness: HarnessFactory, shape: Any, partitions: int
) -> None:
    """Offsets without a record (compaction, markers, aborted records) never stall bootstrap: every
    partition's position reaches its high watermark and the view equals the reduction."""
    h = harness(partitions)
    shape(h.topic)
    for p in range(1, partitions):
        fill(h.topic, 4, partition=p)
    assert h.catch_up()
    assert h.view.state == "ready"
    assert h.positions() == h.ends()
    assert h.entities() == h.expected()
    assert h.progress[-1].done and h.progress[-1].remaining == 0


def test_a_hole_is_skipped_only_after_the_settle_time(harness: HarnessFactory) -> None:
    """While the settle time has not passed, a stalled partition keeps the view bootstrapping below its end."""
    h = harness(2, options={"hole_settle": 3600.0})
    fill(h.topic, 5, partition=0)
    aborted_records_at_the_tail(h.topic)  # partition 0 ends on 4 aborted offsets
    fill(h.topic, 3, partition=1)
    assert not h.catch_up(StopAfter(turns=20))
    assert h.view.state == "bootstrapping"
    assert h.positions() == {0: 15, 1: 3}
    assert h.ends() == {0: 19, 1: 3}
    assert "next_record_offset" not in h.kafka.calls


def test_the_view_is_ready_exactly_when_the_last_partition_reaches_its_end(
    harness: HarnessFactory,
) -> None:
    """A restart with a short settle time finishes the stalled partition, and only then is the view ready."""
    h = harness(2, options={"hole_settle": 3600.0})
    aborted_records_at_the_tail(h.topic)
    fill(h.topic, 3, partition=1)
    assert not h.catch_up(StopAfter(turns=20))
    assert not any(s == "ready" for s, _ in h.states)
    h2 = h.restart()
    assert h2.catch_up()
    assert h2.view.state == "ready"
    assert h2.positions() == {0: 14, 1: 3}
    assert h2.kafka.calls["next_record_offset"] == 1


def test_records_after_a_gap_carry_the_position_without_a_probe(harness: HarnessFactory) -> None:
    """Records written after an aborted range move the position past it; no hole probe is needed."""
    h = harness(1)
    aborted_records_before_more(h.topic)
    assert h.catch_up()
    assert h.positions() == {0: 14}
    assert "next_record_offset" not in h.kafka.calls


def test_a_probe_that_cannot_tell_never_skips(harness: HarnessFactory) -> None:
    """When the hole probe fails, the range is not skipped; the view says why and settles once it answers."""
    h = harness(1)
    aborted_records_at_the_tail(h.topic)
    h.kafka.fail("next_record_offset", KafkaError("no answer within 3s"), times=2)
    stop = StopAfter()
    assert h.catch_up(stop)
    assert ("bootstrapping", "no answer within 3s") in h.states
    assert h.kafka.calls["next_record_offset"] == 3
    assert stop.waits == [0.0, 0.0]  # wait_interval between tries
    assert h.view.state == "ready" and h.view.reason is None
    assert h.positions() == {0: 14}


def test_holes_at_the_tail_settle_while_following(harness: HarnessFactory) -> None:
    """A transaction that ends in markers and aborted records after catch-up still lets lag reach zero."""
    h = harness(1)
    fill(h.topic, 5, partition=0)
    assert h.catch_up()
    with h.following():
        fill(h.topic, 3, partition=0)
        h.topic.marker(0)
        h.topic.gap(0, 2)
        h.until(lambda: h.positions() == {0: 11}, "the position reaches the end past the holes")
        h.until(lambda: h.view.lag() == 0, "lag is zero")
    assert h.entities() == h.expected()


# -- tombstones ------------------------------------------------------------------------


def test_tombstones_delete_keys_and_unknown_tombstones_are_harmless(
    harness: HarnessFactory,
) -> None:
    """A tombstone removes its key; one for a key never seen changes nothing; a key written again returns."""
    h = harness(1)
    h.topic.produce_many(
        [("a", doc(1)), ("b", doc(2)), ("a", None), ("ghost", None), ("b", None), ("b", doc(3))]
    )
    assert h.catch_up()
    assert h.entities() == {"b": {"i": 3}}
    assert h.view.status().keys == 1


def test_tombstones_while_following_remove_keys(harness: HarnessFactory) -> None:
    """Tombstones that arrive while following remove their keys from the served view."""
    h = harness(2)
    fill(h.topic, 20, keys=5)
    assert h.catch_up()
    with h.following():
        for k in ("k1", "k3"):
            h.topic.produce(k, None)
        h.until(lambda: set(h.entities()) == {"k0", "k2", "k4"}, "the deleted keys are gone")
    assert h.entities() == h.expected()


# -- topic identity ---------------------------------------------------------------------


def recreate(kafka: MemoryKafka, partitions: int = 1) -> MemoryTopic:
    kafka.delete_topic(TOPIC)
    return kafka.create_topic(TOPIC, partitions)


def test_the_topic_id_is_remembered_at_the_first_bootstrap(harness: HarnessFactory) -> None:
    """The first bootstrap stores the topic's id; a restart over the same topic is accepted."""
    h = harness(1)
    fill(h.topic, 3)
    assert h.catch_up()
    assert h.view.slot.topic_id == h.topic.id
    h2 = h.restart()
    fill(h2.topic, 2)
    assert h2.catch_up()
    assert h2.view.history.stale_events == 0


def test_a_recreated_topic_is_refused_when_on_stale_is_fail(harness: HarnessFactory) -> None:
    """A topic deleted and created again under its name (new id) fails a view set to on_stale = fail."""
    h = harness(1, on_stale="fail")
    fill(h.topic, 5)
    assert h.catch_up()
    h.topic = recreate(h.kafka)
    fill(h.topic, 10)
    h2 = h.restart()
    assert not h2.catch_up()
    assert h2.view.state == "failed"
    assert "deleted and created again" in (h2.view.reason or "")
    assert "statestore rebuild --view v" in (h2.view.reason or "")
    assert h2.view.history.last_stale is not None
    assert h2.view.history.last_stale.cause == "topic_recreated"


def test_a_recreated_topic_without_an_id_is_judged_by_its_offsets(
    harness: HarnessFactory,
) -> None:
    """A broker that gives no topic id leaves the offsets to judge: a stored position past the end is stale."""
    h = harness(1, on_stale="fail")
    fill(h.topic, 8)
    assert h.catch_up()
    h.topic = recreate(h.kafka)
    h.topic.id = None
    fill(h.topic, 2)
    h2 = h.restart()
    assert not h2.catch_up()
    assert h2.view.history.last_stale is not None
    assert h2.view.history.last_stale.cause == "past_end_offset"


def test_a_topic_recreated_while_following_is_noticed(harness: HarnessFactory) -> None:
    """The metadata check of a following view notices the new topic id and rebuilds from the new topic."""
    h = harness(1)
    fill(h.topic, 5)
    assert h.catch_up()
    with h.following():
        with h.kafka.changed:  # at once: the follower sees the new topic whole, past its position
            h.topic = recreate(h.kafka)
            fill(h.topic, 12, keys=3)
        h.until(lambda: h.view.history.rebuilds == 1, "the view is rebuilt")
        h.until(lambda: h.view.state == "ready", "the rebuilt view is ready")
    assert h.entities() == h.expected()
    assert h.view.slot.topic_id == h.topic.id
    assert (h.view.reason or "").startswith("rebuilt: topic 't' was deleted and created again")


# -- partitions -------------------------------------------------------------------------


def test_new_partitions_are_followed_from_their_start(harness: HarnessFactory) -> None:
    """Partitions added to the topic while following are read from offset 0."""
    h = harness(2)
    fill(h.topic, 10)
    assert h.catch_up()
    with h.following():
        h.topic.add_partitions(2)
        for p in (2, 3):
            fill(h.topic, 4, partition=p, keys=100)
        h.until(lambda: h.positions().get(3) == 4, "the new partitions are read")
        h.until(lambda: h.positions() == h.ends(), "every partition is at its end")
    assert h.entities() == h.expected()
    assert set(h.view.end_offsets) == {0, 1, 2, 3}


def test_partitions_added_while_stopped_are_read_at_restart(harness: HarnessFactory) -> None:
    """A restart finds partitions added meanwhile and reads them from the start."""
    h = harness(1)
    fill(h.topic, 5)
    assert h.catch_up()
    h.topic.add_partitions(2)
    fill(h.topic, 6, partition=2, keys=50)
    h2 = h.restart()
    assert h2.catch_up()
    assert h2.positions() == {0: 5, 1: 0, 2: 6}
    assert h2.entities() == h2.expected()


# -- restarts, batches and the reduction ---------------------------------------------


def test_a_restart_reads_only_what_was_produced_since(harness: HarnessFactory) -> None:
    """After a restart the loop starts at the stored positions: records read equal records produced since."""
    h = harness(3)
    fill(h.topic, 30)
    assert h.catch_up()
    fill(h.topic, 7)
    h2 = h.restart()
    assert h2.catch_up()
    assert h2.progress[-1].records == 7
    assert h2.entities() == h2.expected()


@pytest.mark.parametrize("batch_size", [1, 7, 5000])
def test_batch_size_does_not_change_the_view(harness: HarnessFactory, batch_size: int) -> None:
    """Whatever the batch size, the view equals the reduction and every record counts once."""
    h = harness(3, options={"batch_size": batch_size})
    fill(h.topic, 60, keys=13)
    assert h.catch_up()
    assert h.entities() == h.expected()
    assert h.view.status().records_applied == 60


# Records go where their key's hash sends them (as a producer sends them); markers and
# aborted ranges go to any partition.
RECORD = st.tuples(
    st.none(),
    st.sampled_from(["a", "b", "c", "d", "e/f", "ü"]),
    st.one_of(st.none(), st.integers(0, 99)),
)
EVENT = st.one_of(
    RECORD,
    st.tuples(st.integers(0, 2), st.sampled_from(["marker", "gap"]), st.integers(1, 3)),
)


def build(topic: MemoryTopic, events: list[tuple[Any, ...]]) -> None:
    for event in events:
        p, what, n = event
        if what == "marker":
            topic.marker(p, n)
        elif what == "gap":
            topic.gap(p, n)
        else:
            topic.produce(what, None if n is None else doc(n), partition=p)


def run_log(
    path: Path, events: list[tuple[Any, ...]], compact: bool, cut: int, batch_size: int
) -> Harness:
    """Bootstrap the first *cut* events, then (compacted or not) the rest after a restart."""
    kafka = MemoryKafka()
    topic = kafka.create_topic(TOPIC, 3)
    storage = Storage(path / "store")
    config = ViewConfig(name="v", topic=TOPIC)
    h = make_harness(kafka, topic, storage, config, batch_size=batch_size)
    build(topic, events[:cut])
    assert h.catch_up()
    build(topic, events[cut:])
    if compact:
        topic.compact()
    h2 = h.restart(batch_size=batch_size)
    assert h2.catch_up()
    return h2


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(EVENT, max_size=40),
    compact=st.booleans(),
    cut=st.integers(0, 40),
    batch_size=st.sampled_from([1, 3, 100]),
)
def test_the_view_is_the_reduction_of_any_log(
    events: list[tuple[Any, ...]], compact: bool, cut: int, batch_size: int
) -> None:
    """For generated logs (puts, tombstones, markers, aborted ranges, compaction, a restart
    anywhere), the view holds the last value of each key and stands at every end offset."""
    with tempfile.TemporaryDirectory(prefix="ingest-memory-") as tmp:
        h = run_log(Path(tmp), events, compact, cut, batch_size)
        try:
            assert h.entities() == h.expected()
            assert h.positions() == h.ends()
            assert h.view.state == "ready"
        finally:
            h.ingestor.close()
            h.storage.close()


# -- a whole store over the in-memory log ------------------------------------------------


def test_a_store_over_the_memory_log_bootstraps_without_a_bulk_load(tmp_path: Path) -> None:
    """StateStore(client=MemoryKafka()) serves the reduction; its first bootstrap runs no bulk load."""
    kafka = MemoryKafka()
    topic = kafka.create_topic("orders", 2)
    fill(topic, 50, keys=20)
    config = Config(
        store=StoreConfig(path=tmp_path / "store", bootstrap_workers=4, bulk_min_records=1),
        views=(ViewConfig(name="orders", topic="orders"),),
    )
    with StateStore(config, client=kafka) as store:
        status = store.bootstrap()["orders"]
        assert status.state == "ready" and status.keys == 20
        assert status.load is None
        assert store.get("orders", "k3") is not None
        assert {e.key for e in store.view("orders").iter_entities()} == {
            k.decode() for k in topic.latest()
        }
        assert not store.view("orders").bulk


def test_a_view_left_mid_bulk_load_fails_over_a_memory_log(harness: HarnessFactory) -> None:
    """A slot a Kafka bulk load left unfinished cannot be finished over the in-memory log: the view fails, saying so."""
    h = harness(1)
    fill(h.topic, 3)
    assert h.view.slot.begin_bulk()
    assert not h.catch_up()
    assert h.view.state == "failed"
    assert "only a Kafka client can finish" in (h.view.reason or "")
