"""Bootstrap, resume and follow against the real local broker."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from statestore import PositionTimeoutError, StateStore, ViewFailedError
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


def entities(store: StateStore, view: str) -> dict[bytes, bytes]:
    """The whole view as {key bytes: canonical JSON bytes}."""
    return {e.key.encode(): orjson.dumps(e.value) for e in store.view(view).iter_entities()}


def canonical(expected: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: orjson.dumps(orjson.loads(v)) for k, v in expected.items()}


def updates(
    n_keys: int, n_records: int, seed: int = 7, tombstones: float = 0.1
) -> list[tuple[bytes, bytes | None]]:
    rnd = random.Random(seed)
    out: list[tuple[bytes, bytes | None]] = []
    for i in range(n_records):
        key = f"k-{rnd.randrange(n_keys):05d}".encode()
        if rnd.random() < tombstones:
            out.append((key, None))
        else:
            out.append((key, orjson.dumps({"i": i, "status": rnd.choice(["a", "b", "c"])})))
    return out


# (partitions, records) -> (topic, what was produced, the config of the view ``v`` of it)
ViewOf = Callable[[int, Sequence[tuple[Any, ...]]], tuple[str, Any, Any]]


@pytest.fixture
def view_of(topic_factory: Any, produce: Any, make_config: Any) -> ViewOf:
    """A new topic of *partitions* holding *records*, and the config of the view ``v`` of it."""

    def make(partitions: int, records: Sequence[tuple[Any, ...]]) -> tuple[str, Any, Any]:
        topic = topic_factory(partitions)
        produced = produce(topic, records)
        return topic, produced, make_config({"name": "v", "topic": topic})

    return make


def test_multi_partition_bootstrap_equals_the_reduction(view_of: ViewOf) -> None:
    """Bootstrapping a 6-partition topic with updates and tombstones yields exactly the last value per key."""
    _, produced, config = view_of(6, updates(500, 5000))
    with StateStore(config) as store:
        assert not store.ready()
        status = store.bootstrap()["v"]
        assert store.ready()
        expected = canonical(produced.latest())
        assert entities(store, "v") == expected
        assert status.keys == len(expected)
        assert status.lag == 0
        assert status.records_applied == 5000
        assert {p.partition: p.position for p in status.partitions} == {
            p: 1 + max(o for pp, o, _, _ in produced.records if pp == p) for p in range(6)
        }


def test_restart_resumes_from_stored_positions(view_of: ViewOf, produce: Any) -> None:
    """A second bootstrap after a restart reads only the records produced since, never from zero."""
    topic, first, config = view_of(3, updates(100, 1000))
    with StateStore(config) as store:
        assert store.bootstrap()["v"].records_applied == 1000
    more = produce(topic, updates(100, 37, seed=8))
    with StateStore(config) as store:
        before = store.view("v").slot.counters["records"]
        status = store.bootstrap()["v"]
        assert status.records_applied - before == 37
        first.records.extend(more.records)
        assert entities(store, "v") == canonical(first.latest())


def test_follow_applies_updates_and_new_partitions(
    view_of: ViewOf, produce: Any, admin: AdminClient
) -> None:
    """While following, updates and deletes appear, and partitions added to the topic are read from offset 0."""
    topic, _, config = view_of(2, [("a", b'{"v":1}'), ("b", b'{"v":1}')])
    with StateStore(config) as store:
        store.bootstrap()
        store._ingestor("v").metadata_interval = 0.5
        store.start()
        sent = produce(topic, [("a", b'{"v":2}'), ("b", None)])
        for partition, offset, _, _ in sent.records:
            store.wait_for("v", {partition: offset}, timeout=10)
        a = store.get("v", "a")
        assert a is not None and a.value == {"v": 2}
        assert store.get("v", "b") is None
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=30)
        # The producer must see partition 3 before it can write to it.
        eventually(
            lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 4,
            "the topic to have 4 partitions",
            timeout=20,
        )
        produce(topic, [("c", b'{"v":3}'), ("d", b'{"v":4}')], partition=3)
        eventually(lambda: store.get("v", "d") is not None, "key d in the view", timeout=20)
        c = store.get("v", "c")
        assert c is not None and c.partition == 3 and c.offset == 0


def test_wait_for_times_out_with_the_reached_position(view_of: ViewOf) -> None:
    """Waiting for an offset the topic does not have yet raises with the position actually applied."""
    _, _, config = view_of(1, [("a", b"{}"), ("b", b"{}")])
    with StateStore(config) as store:
        store.bootstrap()
        assert store.wait_for("v", {0: 1}, timeout=0.1) == {0: 1}
        with pytest.raises(PositionTimeoutError) as info:
            store.wait_for("v", {0: 50}, timeout=0.2)
        assert info.value.reached == {0: 1}


ODD_KEYS = [
    "with space",
    "a/b/c",
    "100%",
    "what?",
    "#hash",
    "emoji 🚚📦",
    "x" * 300,
    "ctrl\x01\x7f",
    "%2F encoded",
    "",
]


def test_odd_keys_round_trip(view_of: ViewOf) -> None:
    """Keys with spaces, slashes, percent signs, emoji, control characters and 300 characters are stored and found exactly."""
    _, _, config = view_of(3, [(k, orjson.dumps({"k": k})) for k in ODD_KEYS])
    with StateStore(config) as store:
        store.bootstrap()
        for key in ODD_KEYS:
            entity = store.get("v", key)
            assert entity is not None and entity.key == key and entity.value == {"k": key}
        page = store.scan("v", prefix="emoji")
        assert [e.key for e in page.items] == ["emoji 🚚📦"]


def test_paging_visits_every_key_once(view_of: ViewOf, produce: Any) -> None:
    """Paging a prefix with cursors returns every matching key once, in key order, while writes land elsewhere."""
    keys = [f"p-{i:04d}" for i in range(250)] + [f"q-{i:04d}" for i in range(50)]
    topic, _, config = view_of(3, [(k, b"{}") for k in keys])
    with StateStore(config) as store:
        store.bootstrap()
        store.start()
        seen: list[str] = []
        after = None
        while True:
            page = store.scan("v", prefix="p-", after=after, limit=40)
            seen.extend(e.key for e in page.items)
            produce(topic, [(f"q-{len(seen):04d}x", b"{}"), ("o-0", b"{}")])
            if page.next is None:
                break
            after = page.next
        assert seen == sorted(k for k in keys if k.startswith("p-"))


def test_missing_topic_fails_one_view_while_others_serve(
    topic_factory: Any, produce: Any, make_config: Any
) -> None:
    """A view over a topic that does not exist is failed with the reason; the other view is ready."""
    topic = topic_factory(1)
    produce(topic, [("a", b"{}")])
    config = make_config(
        {"name": "good", "topic": topic}, {"name": "bad", "topic": "no-such-topic-x1"}
    )
    with StateStore(config) as store:
        with pytest.raises(ViewFailedError, match="no-such-topic-x1"):
            store.bootstrap()
        assert store.view("good").state == "ready"
        assert store.get("good", "a") is not None
        bad = store.view("bad").status()
        assert bad.state == "failed" and bad.reason is not None and "does not exist" in bad.reason


def test_missing_topic_can_be_waited_for(
    admin: AdminClient, produce: Any, make_config: Any
) -> None:
    """With missing_topic = wait, the view waits for its topic and catches up once it is created."""
    import uuid

    from confluent_kafka.admin import NewTopic

    name = f"later-{uuid.uuid4().hex[:8]}"
    config = make_config({"name": "v", "topic": name, "missing_topic": "wait"})
    with StateStore(config) as store:
        store._ingestor("v").wait_interval = 0.2
        store.start()
        eventually(
            lambda: "waiting" in (store.view("v").reason or ""),
            "the view to say it is waiting for its topic",
            timeout=20,
        )
        assert not store.ready()
        admin.create_topics([NewTopic(name, 1, 1, config={"cleanup.policy": "compact"})])[
            name
        ].result()
        produced = produce(name, [("a", b'{"x":1}')])
        eventually(store.ready, "the store to be ready", timeout=30)
        # Ready may come before the record (caught up to the empty new topic): wait for it.
        store.wait_for("v", produced.last_offsets(), timeout=30)
        assert store.get("v", "a") is not None
    admin.delete_topics([name])


def test_transaction_markers_at_the_tail_do_not_stall_bootstrap(
    topic_factory: Any, make_config: Any, bootstrap_servers: str
) -> None:
    """Committed and aborted transactions: bootstrap ends at the end offset, and aborted records are not in the view."""
    import uuid

    topic = topic_factory(1)
    # A transactional producer per transaction: on Kafka 4's transactions (KIP-890), a
    # transaction ended right after the same producer's commit can be refused with
    # INVALID_TXN_STATE while the commit's markers are still being written.
    for key, value, commit in (
        (b"a", b'{"v":1}', True),
        (b"b", b'{"v":"aborted"}', False),
        (b"c", b'{"v":3}', True),
    ):
        p = Producer(
            {"bootstrap.servers": bootstrap_servers, "transactional.id": f"tx-{uuid.uuid4().hex}"}
        )
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(topic, key=key, value=value)
        assert p.flush(30) == 0  # in the log before the transaction ends, aborted or not
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    with StateStore(make_config({"name": "v", "topic": topic})) as store:
        status = store.bootstrap()["v"]
        assert status.lag == 0
        assert store.get("v", "a") is not None and store.get("v", "c") is not None
        assert store.get("v", "b") is None
        assert status.keys == 2


def test_compacted_topic_gives_the_same_view(
    topic_factory: Any, produce: Any, make_config: Any, bootstrap_servers: str
) -> None:
    """After the broker has really compacted the topic (old values and tombstones gone), the view is the same reduction."""
    topic = topic_factory(
        1,
        segment_ms="100",
        min_cleanable_dirty_ratio="0.01",
        delete_retention_ms="100",
        min_compaction_lag_ms="0",
    )
    log = updates(40, 600, seed=3, tombstones=0.2)
    produced = produce(topic, log)
    expected = canonical(produced.latest())

    def count_log() -> int:
        c = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "count",
                "enable.auto.commit": False,
            }
        )
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, 0)])
        n, pos = 0, 0
        deadline = time.monotonic() + 20
        while pos < high and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    n += 1
                    pos = m.offset() + 1
            if pos < high:
                tp = c.position([TopicPartition(topic, 0)])[0]
                pos = max(pos, tp.offset)
        c.close()
        return n

    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        produce(topic, [("zz-roll", b'{"roll":1}')])  # rolls the segment so the cleaner can run
        expected[b"zz-roll"] = b'{"roll":1}'
        if count_log() <= len(expected) + 5 or time.monotonic() > deadline:
            break
    assert count_log() < len(log), "the broker did not compact the topic"
    with StateStore(make_config({"name": "v", "topic": topic})) as store:
        status = store.bootstrap()["v"]
        assert entities(store, "v") == expected
        assert status.lag == 0


def test_log_start_past_stored_position_rebuilds_the_view(
    topic_factory: Any, produce: Any, make_config: Any, admin: AdminClient
) -> None:
    """When retention moved the log start past the stored position, the view is rebuilt from the log start and says why."""
    topic = topic_factory(
        1, cleanup_policy="compact,delete"
    )  # the broker refuses delete_records on compact-only topics
    produce(topic, [("a", b'{"v":1}'), ("b", b'{"v":1}')])
    config = make_config({"name": "v", "topic": topic})
    with StateStore(config) as store:
        store.bootstrap()
    produce(topic, [("a", b'{"v":2}'), ("c", b'{"v":1}'), ("d", b'{"v":1}')])
    admin.delete_records([TopicPartition(topic, 0, 4)])[TopicPartition(topic, 0, 4)].result(
        timeout=30
    )  # type: ignore[index]
    with StateStore(config) as store:
        status = store.bootstrap()["v"]
        history = store.view("v").history
        assert history.rebuilds == history.stale_events == 1
        assert history.last_stale is not None and history.last_stale.cause == "below_log_start"
        assert history.last_rebuild is not None
        assert history.last_rebuild.cause == "below_log_start"
        assert history.last_rebuild.reason.startswith("stale: ")
        assert status.state == "ready"
        assert {e.key for e in store.view("v").iter_entities()} == {"d"}


def test_changed_codec_rebuilds_the_view(
    topic_factory: Any, produce: Any, make_config: Any
) -> None:
    """Changing a view's value codec is detected by its fingerprint and the view is rebuilt, not misread."""
    topic = topic_factory(1)
    produce(topic, [("a", b'{"v":1}')])
    with StateStore(make_config({"name": "v", "topic": topic})) as store:
        store.bootstrap()
    with StateStore(make_config({"name": "v", "topic": topic, "value": "string"})) as store:
        assert store.view("v").generation == 1
        store.bootstrap()
        a = store.get("v", "a")
        assert a is not None and a.value == '{"v":1}'
