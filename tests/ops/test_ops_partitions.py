"""Partitions added while following, and keys that move to another partition when the topic grows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]
from ops_support import send

from statestore import Config, StateStore
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


def _grow(admin: AdminClient, topic: str, count: int) -> None:
    admin.create_partitions([NewPartitions(topic, count)])[topic].result(timeout=30)
    eventually(
        lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == count,
        f"{topic} has {count} partitions",
    )


def _value(store: StateStore, key: str) -> object:
    entity = store.get("v", key)
    return None if entity is None else entity.value


def _position(store: StateStore, partition: int) -> int:
    return store.view("v").slot.positions.get(partition, 0)


@pytest.fixture
def following(
    topic_factory: Callable[..., str], make_config: Callable[..., Config]
) -> Iterator[tuple[StateStore, str]]:
    """A one-partition topic holding k (an old record) and a store following it, caught up."""
    topic = topic_factory(1)
    send(topic, [("k", {"v": "old"}, 0, NOW - 60_000)])
    with StateStore(make_config({"name": "v", "topic": topic})) as store:
        store.start()
        eventually(store.ready, "the view caught up")
        yield store, topic


def test_partitions_added_while_following_are_read_from_offset_0(
    following: tuple[StateStore, str], admin: AdminClient
) -> None:
    """Records in partitions added while the view follows are all applied, from each one's first offset."""
    store, topic = following

    _grow(admin, topic, 3)
    # Produced at once, likely before the view looks at the metadata again.
    send(topic, [("b", {"v": 1}, 1, None), ("c", {"v": 1}, 2, None), ("c", {"v": 2}, 2, None)])
    eventually(lambda: _value(store, "c") == {"v": 2}, "partition 2 applied")
    eventually(lambda: _value(store, "b") == {"v": 1}, "partition 1 applied")
    status = store.view("v").status()

    assert {p.partition: p.position for p in status.partitions} == {0: 1, 1: 1, 2: 2}
    assert {p.partition: p.lag for p in status.partitions} == {0: 0, 1: 0, 2: 0}
    assert status.keys == 3


def test_a_key_moved_to_a_new_partition_resolves_to_its_newest_record_by_timestamp(
    following: tuple[StateStore, str], admin: AdminClient
) -> None:
    """The newer record of a moved key wins; an older one arriving later on the old partition does not, nor after a rebuild."""
    store, topic = following

    _grow(admin, topic, 2)
    send(topic, [("k", {"v": "new"}, 1, NOW)])
    eventually(lambda: _value(store, "k") == {"v": "new"}, "the moved key applied")
    # A late writer still on the old partition, with an older timestamp.
    send(topic, [("k", {"v": "late"}, 0, NOW - 30_000)])
    eventually(lambda: _position(store, 0) == 2, "the late record read")
    followed = _value(store, "k")
    store.rebuild(["v"])
    rebuilt = _value(store, "k")

    assert followed == {"v": "new"}
    assert rebuilt == {"v": "new"}
    assert store.view("v").status().keys == 1


def test_an_older_record_read_after_a_tombstone_from_another_partition_brings_the_key_back(
    following: tuple[StateStore, str], admin: AdminClient
) -> None:
    """Documented limit: a deletion leaves nothing to compare timestamps with, so an older record read later revives the key."""
    store, topic = following

    _grow(admin, topic, 2)
    send(topic, [("k", None, 1, NOW)])
    eventually(lambda: _value(store, "k") is None, "the tombstone applied")
    send(topic, [("k", {"v": "late"}, 0, NOW - 30_000)])
    eventually(lambda: _position(store, 0) == 2, "the late record read")

    assert _value(store, "k") == {"v": "late"}
