"""Staleness and Kafka trouble over an in-memory log: each cause, each on_stale policy, and recovery."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from ingest_support import TOPIC, Harness, HarnessFactory, StopAfter, doc, harness_fixture

from statestore.errors import KafkaError

harness = harness_fixture


def fill(h: Harness, n: int, start: int = 0, keys: int = 8) -> None:
    for i in range(start, start + n):
        h.topic.produce(f"k{i % keys}", doc(i), partition=0)


def records_deleted(h: Harness) -> None:
    """The log start moves past the stored position (retention, delete_records)."""
    fill(h, 10, start=100, keys=12)
    h.topic.delete_records(0, 15)


def recreated_smaller_without_id(h: Harness) -> None:
    """The topic is created again with fewer records, and the broker gives no topic id."""
    h.kafka.delete_topic(TOPIC)
    h.topic = h.kafka.create_topic(TOPIC, 1)
    h.topic.id = None
    fill(h, 3, start=200, keys=3)


def recreated(h: Harness) -> None:
    """The topic is created again with more records than before, under a new id."""
    h.kafka.delete_topic(TOPIC)
    h.topic = h.kafka.create_topic(TOPIC, 1)
    fill(h, 20, start=300, keys=4)


CAUSES: list[tuple[str, Callable[[Harness], None]]] = [
    ("below_log_start", records_deleted),
    ("past_end_offset", recreated_smaller_without_id),
    ("topic_recreated", recreated),
]


def stale_restart(
    harness: HarnessFactory, policy: str, event: Callable[[Harness], None]
) -> Harness:
    h = harness(1, on_stale=policy)
    fill(h, 10)
    assert h.catch_up()
    event(h)
    h2 = h.restart()
    h2.topic = h.topic
    return h2


@pytest.mark.parametrize(("cause", "event"), CAUSES, ids=[c for c, _ in CAUSES])
def test_on_stale_fail_fails_the_view_and_says_how_to_rebuild(
    harness: HarnessFactory, cause: str, event: Callable[[Harness], None]
) -> None:
    """A stale view under on_stale = fail is failed, counted with its cause, and told to rebuild."""
    h = stale_restart(harness, "fail", event)
    assert not h.catch_up()
    assert h.view.state == "failed"
    assert "statestore rebuild --view v" in (h.view.reason or "")
    assert h.view.history.stale_events == 1
    assert h.view.history.last_stale is not None and h.view.history.last_stale.cause == cause
    assert h.view.history.rebuilds == 0


@pytest.mark.parametrize(("cause", "event"), CAUSES, ids=[c for c, _ in CAUSES])
def test_on_stale_rebuild_serves_the_reduction_of_the_log_as_it_is(
    harness: HarnessFactory, cause: str, event: Callable[[Harness], None]
) -> None:
    """A stale view under on_stale = rebuild is built again from the log start and says it was rebuilt."""
    h = stale_restart(harness, "rebuild", event)
    generation = h.view.generation
    assert h.catch_up()
    assert h.view.state == "ready"
    assert (h.view.reason or "").startswith("rebuilt: ")
    assert h.entities() == h.expected()
    assert h.positions() == h.ends()
    assert h.view.generation == generation + 1
    assert h.view.history.rebuilds == 1
    assert h.view.history.last_rebuild is not None and h.view.history.last_rebuild.cause == cause


@pytest.mark.parametrize(("cause", "event"), CAUSES, ids=[c for c, _ in CAUSES])
def test_on_stale_ignore_keeps_what_is_stored_and_reads_the_log_again(
    harness: HarnessFactory, cause: str, event: Callable[[Harness], None]
) -> None:
    """A stale view under on_stale = ignore keeps its entities, applies the log from its start, and says so."""
    h = stale_restart(harness, "ignore", event)
    before = h.entities()
    assert h.catch_up()
    assert h.view.state == "ready"
    assert (h.view.reason or "").startswith("stale, ignored: ")
    now = h.entities()
    expected = h.expected()
    assert set(now) == set(before) | set(expected)
    assert {k: now[k] for k in expected if k not in before} == {
        k: v for k, v in expected.items() if k not in before
    }
    assert h.positions() == h.ends()
    assert h.view.history.last_stale is not None and h.view.history.last_stale.cause == cause
    if h.topic.id is not None:  # the topic as it is now is the one the view reads
        assert h.view.slot.topic_id == h.topic.id


@pytest.mark.xfail(
    strict=True,
    reason="known: the newest-record rule compares offsets, so a recreated topic's records at "
    "lower offsets than the stored ones lose to them under on_stale = ignore",
)
def test_on_stale_ignore_applies_a_recreated_topics_records_to_stored_keys(
    harness: HarnessFactory,
) -> None:
    """Under on_stale = ignore, a key written again in a recreated (smaller) topic takes its new value."""
    h = stale_restart(harness, "ignore", recreated_smaller_without_id)
    assert h.catch_up()
    now = h.entities()
    assert {k: now[k] for k in h.expected()} == h.expected()


@pytest.mark.parametrize(("policy", "stale"), [("compact", True), ("delete", False)])
def test_a_view_away_longer_than_delete_retention_is_stale_on_compacted_topics(
    harness: HarnessFactory, policy: str, stale: bool
) -> None:
    """Out of sync for longer than delete.retention.ms, a view of a compacted topic may have
    missed tombstones (stale); a topic with cleanup.policy = delete has no such horizon."""
    config = {"cleanup.policy": policy, "delete.retention.ms": "0"}
    h = harness(1, on_stale="fail", topic_config=config)
    fill(h, 5)
    assert h.catch_up()
    synced = h.view.slot.synced_at_ms
    assert synced is not None
    h.until(lambda: time.time() * 1000 > synced + 1, "a millisecond has passed since the sync")
    h2 = h.restart()
    assert h2.catch_up() is not stale
    if stale:
        assert h2.view.history.last_stale is not None
        assert h2.view.history.last_stale.cause == "away_too_long"
        assert "delete.retention.ms" in (h2.view.reason or "")
    else:
        assert h2.view.history.stale_events == 0


def test_records_deleted_under_a_follower_rebuild_the_view(harness: HarnessFactory) -> None:
    """A follower whose position falls below the log start (offset out of range) rebuilds per on_stale."""
    h = harness(1)
    fill(h, 10)
    assert h.catch_up()
    with h.following():
        with h.kafka.changed:  # at once: the follower never reads the deleted records
            fill(h, 10, start=50, keys=20)
            h.topic.delete_records(0, 15)
        h.until(lambda: h.view.history.rebuilds == 1, "the view is rebuilt")
        h.until(lambda: h.view.state == "ready", "the rebuilt view is ready")
    assert h.entities() == h.expected()
    assert h.view.history.last_rebuild is not None
    assert h.view.history.last_rebuild.cause == "below_log_start"


# -- Kafka trouble and recovery -----------------------------------------------------------


def test_kafka_trouble_during_bootstrap_says_why_and_clears(harness: HarnessFactory) -> None:
    """A failing request during bootstrap keeps the view bootstrapping with the error as reason, waits, then retries."""
    h = harness(1, options={"wait_interval": 0.25})
    fill(h, 5)
    h.kafka.fail("watermarks", KafkaError("broker down"), times=2)
    stop = StopAfter()
    assert h.catch_up(stop)
    assert stop.waits == [0.25, 0.25]
    assert ("bootstrapping", "broker down") in h.states
    assert not h.seen("degraded")
    assert h.view.state == "ready" and h.view.reason is None
    assert h.ingestor.kafka_trouble is None


def test_kafka_trouble_while_following_degrades_then_recovers(harness: HarnessFactory) -> None:
    """Failing fetches make a ready view degraded with the error as reason; it is ready again once they work."""
    h = harness(1)
    fill(h, 5)
    assert h.catch_up()
    with h.following():
        h.kafka.fail("poll", KafkaError("broker down"), times=3)
        h.until(lambda: h.seen("degraded"), "the view is degraded")
        fill(h, 3, start=10)
        h.until(lambda: h.positions() == h.ends() and h.view.state == "ready", "ready again")
    assert ("degraded", "broker down") in h.states
    assert h.view.reason is None
    assert h.entities() == h.expected()


def test_a_client_error_degrades_until_the_metadata_answers(harness: HarnessFactory) -> None:
    """A client error callback (all brokers down) degrades a ready view until a metadata request succeeds."""
    h = harness(1, options={"metadata_interval": 3600.0})
    fill(h, 5)
    assert h.catch_up()
    h.ingestor.note_client_error("Kafka unreachable: _ALL_BROKERS_DOWN")
    assert h.view.state == "degraded"
    assert h.view.reason == "Kafka unreachable: _ALL_BROKERS_DOWN"
    h.ingestor.metadata_interval = 0.0
    with h.following():
        h.until(lambda: h.view.state == "ready", "ready once the metadata answers")
    assert h.view.reason is None


def test_recovery_keeps_the_note_of_a_stale_rebuild(harness: HarnessFactory) -> None:
    """After trouble, a view rebuilt for staleness is ready again with its rebuilt note, not a blank reason."""
    h = stale_restart(harness, "rebuild", records_deleted)
    assert h.catch_up()
    note = h.view.reason
    assert note is not None and note.startswith("rebuilt: ")
    with h.following():
        h.kafka.fail("poll", KafkaError("broker down"), times=2)
        h.until(lambda: h.seen("degraded"), "the view is degraded")
        h.until(lambda: h.view.state == "ready", "ready again")
    assert h.view.reason == note


@pytest.mark.parametrize("missing_topic", ["fail", "wait"])
def test_a_missing_topic_fails_or_is_waited_for(
    harness: HarnessFactory, missing_topic: str
) -> None:
    """A view whose topic does not exist fails (missing_topic = fail) or waits for it and then bootstraps."""
    h = harness(1, missing_topic=missing_topic)
    h.kafka.delete_topic(TOPIC)
    if missing_topic == "fail":
        assert not h.catch_up()
        assert h.view.state == "failed"
        assert "does not exist" in (h.view.reason or "")
        return
    stop = StopAfter(turns=10_000)
    asked = {"n": 0}

    def partitions_then_create(topic: str, timeout: float | None = None) -> list[int]:
        asked["n"] += 1
        if asked["n"] == 3:
            h.topic = h.kafka.create_topic(TOPIC, 1)
            fill(h, 4)
        return type(h.kafka).partitions(h.kafka, topic, timeout)

    h.kafka.partitions = partitions_then_create  # type: ignore[method-assign]
    assert h.catch_up(stop)
    assert len(stop.waits) == 2
    assert any(s == "bootstrapping" and "waiting for the topic" in (r or "") for s, r in h.states)
    assert h.view.state == "ready"
    assert h.entities() == h.expected()


def test_a_topic_deleted_under_a_follower_fails_the_view(harness: HarnessFactory) -> None:
    """The topic disappearing while the view follows it fails the view, naming the topic."""
    h = harness(1)
    fill(h, 3)
    assert h.catch_up()
    with h.following():
        h.kafka.delete_topic(TOPIC)
        h.until(lambda: h.view.state == "failed", "the view fails")
    assert "'t'" in (h.view.reason or "")
