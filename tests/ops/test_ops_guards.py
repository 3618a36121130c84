"""Staleness guards: a view that may have missed records or tombstones is rebuilt, failed or flagged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from ops_support import keys_of, send

from statestore import Config, StateStore, ViewFailedError, ViewStatus
from tests.support.kafka import BOOTSTRAP
from tests.support.metrics import samples
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


def _bootstrap_again(
    config: Config, *, fails: str | None = None, raise_on_failure: bool = True
) -> tuple[ViewStatus, list[str], Any]:
    """Open the store of *config* again and bootstrap it: the status of the view ``v``, its
    keys and the store's metric samples. With *fails*, the bootstrap must raise
    ViewFailedError matching it."""
    with StateStore(config) as store:
        if fails is None:
            store.bootstrap(raise_on_failure=raise_on_failure)
        else:
            with pytest.raises(ViewFailedError, match=fails):
                store.bootstrap()
        return store.view("v").status(), keys_of(store, "v"), samples(store)


def _bootstrap_ignoring(config: Config) -> tuple[ViewStatus, str, list[str]]:
    """Bootstrap a view set to on_stale=ignore again: it must serve on, saying why it may be
    wrong. Its status, that reason and its keys."""
    status, keys, _ = _bootstrap_again(config)
    assert status.state == "ready"
    assert status.reason is not None and status.reason.startswith("stale, ignored:")
    return status, status.reason, keys


def _log_keys(topic: str) -> set[str]:
    """Every key that still has a record (value or tombstone) in partition 0 of *topic*."""
    consumer = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": "ops-test", "enable.auto.commit": False}
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        keys: set[str] = set()
        position = low
        while position < high:
            msg = consumer.poll(1.0)
            if msg is None:
                position = consumer.position([TopicPartition(topic, 0)])[0].offset
                continue
            assert msg.error() is None, msg.error()
            key, offset = msg.key(), msg.offset()
            assert key is not None and offset is not None
            keys.add(key.decode())
            position = offset + 1
        return keys
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class Away:
    """What can happen to a topic while its view ``v`` (on_stale = *policy*) is not
    running; each method returns the view's config, bootstrapped before it happened."""

    topic_factory: Callable[..., str]
    admin: AdminClient
    make_config: Callable[..., Config]

    def _bootstrapped_to_10(self, topic: str, policy: str) -> Config:
        """The view of *topic*, bootstrapped over 10 records a0..a9."""
        send(topic, [(f"a{i}", {"i": i}, 0, None) for i in range(10)])
        config = self.make_config({"name": "v", "topic": topic, "on_stale": policy})
        with StateStore(config) as store:
            store.bootstrap()
        return config

    def records_deleted(self, policy: str) -> Config:
        """Bootstrapped to offset 10, then records 10..19 produced and 0..14 deleted."""
        topic = self.topic_factory(1, cleanup_policy="compact,delete")
        config = self._bootstrapped_to_10(topic, policy)
        send(topic, [(f"b{i}", {"i": i}, 0, None) for i in range(10)])
        futures = self.admin.delete_records([TopicPartition(topic, 0, 15)])
        for future in futures.values():
            future.result(timeout=30)
        return config

    def tombstones_cleaned(self, policy: str) -> Config:
        """Bootstrapped with k0..k4; then k0 and k1 deleted and their tombstones compacted away."""
        topic = self.topic_factory(
            1,
            delete_retention_ms="2000",
            segment_ms="100",
            min_cleanable_dirty_ratio="0.01",
            min_compaction_lag_ms="0",
        )
        send(topic, [(f"k{i}", {"i": i}, 0, None) for i in range(5)])
        config = self.make_config({"name": "v", "topic": topic, "on_stale": policy})
        with StateStore(config) as store:
            store.bootstrap()
        send(topic, [("k0", None, 0, None), ("k1", None, 0, None)])
        # New records roll segments so the cleaner compacts the tombstones, then drops
        # them once delete.retention.ms has passed.
        deadline = time.monotonic() + 120
        n = 0
        while {"k0", "k1"} & _log_keys(topic):
            assert time.monotonic() < deadline, "the broker never cleaned the tombstones"
            time.sleep(0.3)
            n += 1
            send(topic, [("filler", {"n": n}, 0, None)])
        return config

    def topic_recreated(self, policy: str) -> Config:
        """Bootstrapped to offset 10 of a topic that is then deleted, created again under
        the same name and filled past the view's position (20 records of other keys): no
        offset betrays it, only the topic's id."""
        topic = self.topic_factory(1)
        config = self._bootstrapped_to_10(topic, policy)
        for future in self.admin.delete_topics([topic], operation_timeout=30).values():
            future.result(timeout=30)

        def created_again() -> bool:  # the name is free once the broker has finished deleting
            new = NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"})
            try:
                self.admin.create_topics([new])[topic].result(timeout=30)
            except KafkaException:
                return False
            return True

        eventually(created_again, "the topic created again under its name")
        send(topic, [(f"b{i}", {"i": i}, 0, None) for i in range(20)])
        return config


@pytest.fixture
def away(
    topic_factory: Callable[..., str], admin: AdminClient, make_config: Callable[..., Config]
) -> Away:
    """A topic's changes while its view is away, made with this test's topics and store."""
    return Away(topic_factory, admin, make_config)


def test_records_deleted_past_the_stored_position_rebuild_the_view(
    away: Away, caplog: pytest.LogCaptureFixture
) -> None:
    """on_stale=rebuild: a stored position below the log start rebuilds from it, logged and counted."""
    config = away.records_deleted("rebuild")

    with caplog.at_level(logging.WARNING):
        status, keys, metrics = _bootstrap_again(config)

    assert keys == [f"b{i}" for i in range(5, 10)]
    assert (status.state, status.generation, status.rebuilds, status.stale_events) == (
        "ready",
        1,
        1,
        1,
    )
    assert status.reason is not None and "below the log start offset 15" in status.reason
    assert {p.partition: p.position for p in status.partitions} == {0: 20}
    assert metrics[("statestore_stale_events_total", (("view", "v"),))] == 1
    assert any(
        "view.stale" in r.getMessage() and "below the log start offset 15" in r.getMessage()
        for r in caplog.records
    )


def test_records_deleted_past_the_stored_position_fail_the_view(away: Away) -> None:
    """on_stale=fail: the view fails with the reason and the command that rebuilds it."""
    config = away.records_deleted("fail")

    status, kept, metrics = _bootstrap_again(config, fails="below the log start offset 15")

    assert status.state == "failed"
    assert status.reason is not None
    assert "statestore rebuild --view v" in status.reason
    assert metrics[("statestore_stale_events_total", (("view", "v"),))] == 1
    assert metrics[("statestore_view_state", (("state", "failed"), ("view", "v")))] == 1
    assert kept == [f"a{i}" for i in range(10)]


def test_records_deleted_past_the_stored_position_ignored_keeps_serving_with_a_reason(
    away: Away,
) -> None:
    """on_stale=ignore: the view goes on from the log start, keeps what it had and says why it may be wrong."""
    status, reason, keys = _bootstrap_ignoring(away.records_deleted("ignore"))

    assert status.generation == 0
    assert status.stale_events == 1
    assert "below the log start offset 15" in reason
    assert keys == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5, 10)])
    assert {p.partition: p.position for p in status.partitions} == {0: 20}


def test_a_view_away_longer_than_delete_retention_is_rebuilt_without_the_deleted_keys(
    away: Away,
) -> None:
    """Back after longer than delete.retention.ms, with tombstones cleaned meanwhile: rebuilt, deleted keys gone."""
    config = away.tombstones_cleaned("rebuild")

    status, keys, metrics = _bootstrap_again(config)

    assert keys == ["filler", "k2", "k3", "k4"]
    assert (status.state, status.generation, status.stale_events) == ("ready", 1, 1)
    assert status.reason is not None and "delete.retention.ms" in status.reason
    assert metrics[("statestore_stale_events_total", (("view", "v"),))] == 1
    assert metrics[("statestore_rebuilds_total", (("view", "v"),))] == 1


def test_a_view_away_longer_than_delete_retention_fails_when_so_configured(away: Away) -> None:
    """on_stale=fail: the view fails, naming delete.retention.ms, and keeps its (untrusted) data."""
    config = away.tombstones_cleaned("fail")

    status, keys, _ = _bootstrap_again(config, raise_on_failure=False)

    assert status.state == "failed"
    assert status.reason is not None
    assert "delete.retention.ms" in status.reason
    assert "statestore rebuild --view v" in status.reason
    assert keys == ["k0", "k1", "k2", "k3", "k4"]


def test_a_view_away_longer_than_delete_retention_ignored_keeps_the_deleted_keys(
    away: Away,
) -> None:
    """on_stale=ignore: the view serves on with a reason, and keys whose tombstones it missed stay (the risk taken)."""
    _, reason, keys = _bootstrap_ignoring(away.tombstones_cleaned("ignore"))

    assert "delete.retention.ms" in reason
    assert keys == ["filler", "k0", "k1", "k2", "k3", "k4"]


def test_a_recreated_topic_rebuilds_the_view(away: Away) -> None:
    """on_stale=rebuild: a topic deleted and created again is detected by its id though it
    has grown past the stored positions; the view is rebuilt from the new topic alone."""
    config = away.topic_recreated("rebuild")

    status, keys, _ = _bootstrap_again(config)

    assert keys == sorted(f"b{i}" for i in range(20))
    assert (status.state, status.rebuilds, status.stale_events) == ("ready", 1, 1)
    assert status.reason is not None and "deleted and created again" in status.reason


def test_a_recreated_topic_fails_the_view_when_so_configured(away: Away) -> None:
    """on_stale=fail: the view fails naming the recreated topic and keeps what it had."""
    config = away.topic_recreated("fail")

    _, kept, _ = _bootstrap_again(config, fails="deleted and created again")

    assert kept == [f"a{i}" for i in range(10)]
