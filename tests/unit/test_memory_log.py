"""The in-memory topic log (statestore.testing) behaves as the broker does where ingest cares."""

from __future__ import annotations

import threading
import time

import pytest

from statestore.errors import KafkaError, OffsetOutOfRangeError, TopicMissingError
from statestore.testing import MemoryKafka, MemoryMessage


def kafka_with(partitions: int = 1) -> MemoryKafka:
    kafka = MemoryKafka()
    kafka.create_topic("t", partitions)
    return kafka


def test_offsets_are_consecutive_per_partition_and_a_key_keeps_its_partition() -> None:
    """Each produce takes its partition's next offset; the same key always lands in the same partition."""
    topic = kafka_with(4).topic("t")
    placed = topic.produce_many([("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")])
    a = [placed[i] for i in (0, 2, 3)]
    assert len({p for p, _ in a}) == 1
    offsets = [o for _, o in a]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    for p in range(4):
        held = [r.offset for r in topic.records(p)]
        assert held == list(range(len(held)))
        assert topic.watermarks(p) == (0, len(held))


def test_markers_and_gaps_move_the_high_watermark_without_records() -> None:
    """Markers and gaps take offsets that hold no record; the high watermark counts them."""
    topic = kafka_with().topic("t")
    topic.produce("k", "v", partition=0)
    topic.marker(0, 2)
    topic.gap(0, 3)
    assert topic.watermarks(0) == (0, 6)
    assert [r.offset for r in topic.records(0)] == [0]


@pytest.mark.parametrize("tombstones", [False, True])
def test_compaction_keeps_the_newest_record_per_key(tombstones: bool) -> None:
    """Compaction leaves the newest record of each key (tombstones only when asked), watermarks unchanged."""
    topic = kafka_with().topic("t")
    topic.produce_many([("a", "1"), ("b", "1"), ("a", "2"), ("b", None), ("c", "1")], partition=0)
    topic.compact(tombstones=tombstones)
    kept = [(r.offset, r.key) for r in topic.records(0)]
    if tombstones:
        assert kept == [(2, b"a"), (4, b"c")]
    else:
        assert kept == [(2, b"a"), (3, b"b"), (4, b"c")]
    assert topic.watermarks(0) == (0, 5)
    assert topic.latest() == {b"a": b"2", b"c": b"1"}


def test_delete_records_moves_the_log_start_and_reading_from_zero_starts_there() -> None:
    """After delete_records the log start moves, and a reader assigned at 0 starts from it."""
    kafka = kafka_with()
    topic = kafka.topic("t")
    topic.produce_many([(f"k{i}", str(i)) for i in range(5)], partition=0)
    topic.delete_records(0, 3)
    assert topic.watermarks(0) == (3, 5)
    source = kafka.source("s", "t")
    source.assign({0: 0})
    assert [r[1] for r in source.poll(10, 0)] == [3, 4]
    assert source.positions() == {0: 5}


def test_a_reader_passes_markers_but_stops_before_gaps() -> None:
    """Transaction markers are passed over by the reader's position; gap offsets are not."""
    kafka = kafka_with(2)
    topic = kafka.topic("t")
    topic.produce("a", "1", partition=0)
    topic.marker(0)
    topic.produce("b", "1", partition=1)
    topic.gap(1, 2)
    source = kafka.source("s", "t")
    source.assign({0: 0, 1: 0})
    assert len(source.poll(10, 0)) == 2
    assert source.positions() == {0: 2, 1: 1}
    assert source.cached_high() == {0: 2, 1: 3}


def test_records_after_a_gap_carry_the_position_past_it() -> None:
    """A record written after a gap is read, and the position moves past both."""
    kafka = kafka_with()
    topic = kafka.topic("t")
    topic.gap(0, 4)
    topic.produce("a", "1", partition=0)
    source = kafka.source("s", "t")
    source.assign({0: 0})
    assert [r[1] for r in source.poll(10, 0)] == [4]
    assert source.positions() == {0: 5}


def test_an_empty_poll_waits_for_its_timeout() -> None:
    """A poll with nothing to read returns empty after its timeout, not at once and not later."""
    kafka = kafka_with()
    source = kafka.source("s", "t")
    source.assign({0: 0})
    started = time.monotonic()
    assert source.poll(10, 0.05) == []
    assert 0.05 <= time.monotonic() - started < 1.0


def test_a_poll_wakes_up_when_a_record_arrives() -> None:
    """A waiting poll returns the record produced meanwhile, well before its timeout."""
    kafka = kafka_with()
    source = kafka.source("s", "t")
    source.assign({0: 0})
    waiting = threading.Event()
    got: list[object] = []

    def read() -> None:
        waiting.set()
        got.extend(source.poll(10, 30.0))

    thread = threading.Thread(target=read)
    thread.start()
    assert waiting.wait(5)
    kafka.topic("t").produce("k", "v", partition=0)
    thread.join(5)
    assert not thread.is_alive()
    assert [r[3] for r in got] == [b"k"]  # type: ignore[index]


def test_max_records_is_honoured_and_partitions_take_turns() -> None:
    """A poll returns at most max_records, and successive polls start at different partitions."""
    kafka = kafka_with(2)
    topic = kafka.topic("t")
    for p in (0, 1):
        topic.produce_many([(f"k{i}", "v") for i in range(5)], partition=p)
    source = kafka.source("s", "t")
    source.assign({0: 0, 1: 0})
    first, second = source.poll(3, 0), source.poll(3, 0)
    assert len(first) == len(second) == 3
    assert first[0][0] != second[0][0]


@pytest.mark.parametrize(("seek", "low"), [(1, 2), (9, 0)])
def test_reading_outside_the_log_is_offset_out_of_range(seek: int, low: int) -> None:
    """A position below the log start or past the high watermark raises OffsetOutOfRangeError."""
    kafka = kafka_with()
    topic = kafka.topic("t")
    topic.produce_many([(f"k{i}", "v") for i in range(4)], partition=0)
    topic.delete_records(0, low)
    source = kafka.source("s", "t")
    source.assign({0: seek})
    with pytest.raises(OffsetOutOfRangeError):
        source.poll(10, 0)


def test_a_deleted_topic_is_missing_to_requests_and_readers() -> None:
    """Once the topic is deleted, metadata requests and reads raise TopicMissingError."""
    kafka = kafka_with()
    source = kafka.source("s", "t")
    source.assign({0: 0})
    kafka.delete_topic("t")
    with pytest.raises(TopicMissingError):
        kafka.partitions("t")
    with pytest.raises(TopicMissingError):
        source.poll(10, 0)
    assert kafka.topic_id("t") is None


def test_injected_failures_happen_the_given_number_of_times_in_order() -> None:
    """fail() makes the next calls raise its errors in the order queued, then requests succeed again."""
    kafka = kafka_with()
    kafka.fail("watermarks", KafkaError("first"), times=2)
    kafka.fail("watermarks", KafkaError("second"))
    raised = []
    for _ in range(3):
        with pytest.raises(KafkaError) as exc:
            kafka.watermarks("t", 0)
        raised.append(str(exc.value))
    assert raised == ["first", "first", "second"]
    assert kafka.watermarks("t", 0) == (0, 0)
    assert kafka.calls["watermarks"] == 4


def test_a_recreated_topic_has_a_new_id_and_an_unknown_id_is_none() -> None:
    """A topic created again under its name gets a new id; a failing or absent id is None."""
    kafka = kafka_with()
    first = kafka.topic_id("t")
    kafka.delete_topic("t")
    kafka.create_topic("t", 1)
    second = kafka.topic_id("t")
    assert first and second and first != second
    kafka.fail("topic_id", KafkaError("no DESCRIBE right"))
    assert kafka.topic_id("t") is None
    kafka.topic("t").id = None
    assert kafka.topic_id("t") is None


@pytest.mark.parametrize(("start", "found"), [(0, 0), (1, 3), (4, None)])
def test_next_record_offset_finds_the_first_record_at_or_after_start(
    start: int, found: int | None
) -> None:
    """The hole probe answers the first record's offset at or after start, None when there is none."""
    kafka = kafka_with()
    topic = kafka.topic("t")
    topic.produce("a", "1", partition=0)
    topic.marker(0, 2)
    topic.produce("b", "1", partition=0)
    topic.gap(0, 2)
    assert kafka.next_record_offset("t", 0, start) == found


def test_the_header_hook_folds_headers_into_key_and_value() -> None:
    """Records with headers go through the source's header hook; records without do not."""
    kafka = kafka_with()
    topic = kafka.topic("t")
    topic.produce("a", "1", partition=0, headers=[("h", b"x")])
    topic.produce("b", "2", partition=0)
    calls: list[object] = []

    def hook(headers: object, key: bytes | None, value: bytes | None) -> tuple[bytes, bytes]:
        calls.append(headers)
        return (key or b"") + b"!", (value or b"") + b"!"

    source = kafka.source("s", "t", hook)
    source.assign({0: 0})
    assert [(r[3], r[4]) for r in source.poll(10, 0)] == [(b"a!", b"1!"), (b"b", b"2")]
    assert calls == [[("h", b"x")]]


def test_a_range_reader_reports_the_end_it_reached() -> None:
    """The bulk reader returns message objects and notes each partition's end offset once reached."""
    kafka = kafka_with(2)
    topic = kafka.topic("t")
    topic.produce("a", "1", partition=0, timestamp=7)
    topic.marker(0)
    reader = kafka.range_reader("r", "t")
    reader.assign(0, 0)
    reader.assign(1, 0)
    msgs = reader.poll(10, 0)
    assert [(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()) for m in msgs] == [
        (0, 0, b"a", b"1", (1, 7))
    ]
    assert isinstance(msgs[0], MemoryMessage) and msgs[0].error() is None
    assert reader.eof == {0: 2, 1: 0}
    reader.seek(0, 0)
    assert 0 not in reader.eof
    reader.unassign(1)
    reader.close()


def test_the_client_offers_no_settings_for_worker_processes() -> None:
    """settings() is empty: no other process can reach an in-memory log (no bulk load runs)."""
    kafka = kafka_with(3)
    assert kafka.settings() == {}
    assert kafka.partitions("t") == [0, 1, 2]
    assert kafka.end_offsets("t") == {0: 0, 1: 0, 2: 0}
    assert kafka.topic_config("t")["cleanup.policy"] == "compact"
