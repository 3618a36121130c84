"""The partitioners' arithmetic against oracles written from their specifications: the
Java client's murmur2 test vectors, FNV-1a from its definition with Sarama's absolute
value, CRC-32 as zlib computes it. (tests/integration/test_partitioning.py checks them
against the partitions librdkafka itself chooses.)
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore import StateStore, ViewConfig
from statestore.partitioners import PARTITIONERS, partitioner
from statestore.testing import MemoryKafka
from tests.support.config import store_config

# murmur2 of these strings, as int32, from the Java client's own tests of Utils.murmur2.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("text", sorted(JAVA_MURMUR2))
@pytest.mark.parametrize("count", [1, 3, 12, 1000, 2**31 - 1])
def test_murmur2_places_keys_as_the_java_client_does(text: str, count: int) -> None:
    """Java: ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``."""
    expected = (JAVA_MURMUR2[text] & 0x7FFFFFFF) % count
    assert partitioner("murmur2")(text.encode(), count) == expected
    assert partitioner("murmur2_random")(text.encode(), count) == expected


def _fnv1a_sarama(data: bytes) -> int:
    """FNV-1a, 32 bits, as its definition gives it; then Sarama's: the absolute value
    of the hash read as an int32 (wrapping at INT32_MIN)."""
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return abs(signed) & 0xFFFFFFFF


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=10_000))
def test_fnv1a_follows_its_definition_and_saramas_absolute_value(key: bytes, count: int) -> None:
    expected = _fnv1a_sarama(key) % count
    assert partitioner("fnv1a")(key, count) == expected
    assert partitioner("fnv1a_random")(key, count) == expected


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=10_000))
def test_consistent_is_crc32_of_the_key(key: bytes, count: int) -> None:
    expected = binascii.crc32(key) % count
    assert partitioner("consistent")(key, count) == expected
    assert partitioner("consistent_random")(key, count) == expected


@given(st.sampled_from(PARTITIONERS), st.binary(max_size=64), st.integers(1, 500))
def test_every_partitioner_gives_a_partition_of_the_topic(
    name: str, key: bytes, count: int
) -> None:
    assert 0 <= partitioner(name)(key, count) < count


def test_an_unknown_partitioner_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown partitioner 'java'; known: murmur2, "):
        partitioner("java")


# -- the check, on the follow path over an in-memory log ------------------------------


def _store(tmp_path: Path, kafka: MemoryKafka, partitioner_name: str | None) -> StateStore:
    view = ViewConfig(name="v", topic="t", partitioner=partitioner_name)  # type: ignore[arg-type]
    return StateStore(store_config(tmp_path / "store", [view]), client=kafka)


def test_records_elsewhere_than_the_partitioner_says_are_counted_and_the_first_named(
    tmp_path: Path,
) -> None:
    """The in-memory log places keys by CRC-32 as librdkafka's ``consistent`` does: only
    the records put elsewhere by hand are counted; the first is kept with its key."""
    kafka = MemoryKafka()
    topic = kafka.create_topic("t", 3)
    for i in range(30):
        topic.produce(f"k{i}", "{}")
    home = binascii.crc32(b"k7") % 3
    astray = [topic.produce("k7", "{}", partition=(home + 1) % 3) for _ in range(2)]
    with _store(tmp_path, kafka, "consistent") as store:
        store.bootstrap()
        partitioning = store.view("v").status().partitioning
    assert partitioning is not None
    assert partitioning.misplaced == 2
    assert partitioning.first == {
        "partition": astray[0][0],
        "offset": astray[0][1],
        "key": base64.b64encode(b"k7").decode(),
        "expected": home,
    }


def test_the_partition_count_follows_the_topic_as_it_grows(tmp_path: Path) -> None:
    """Records placed for the topic's new partition count after it grew are not counted."""
    kafka = MemoryKafka()
    topic = kafka.create_topic("t", 2)
    for i in range(20):
        topic.produce(f"k{i}", "{}")
    with _store(tmp_path, kafka, "consistent") as store:
        store.bootstrap()
        topic.add_partitions(3)
        for i in range(20, 60):
            topic.produce(f"k{i}", "{}")  # placed by CRC-32 over 5 partitions
        store.bootstrap()
        status = store.view("v").status()
    assert status.keys == 60
    assert status.partitioning is not None and status.partitioning.misplaced == 0


def test_a_view_without_a_partitioner_counts_nothing(tmp_path: Path) -> None:
    kafka = MemoryKafka()
    topic = kafka.create_topic("t", 3)
    topic.produce("k", "{}", partition=(binascii.crc32(b"k") + 1) % 3)
    with _store(tmp_path, kafka, None) as store:
        store.bootstrap()
        status = store.view("v").status()
    assert status.partitioning is None
    assert "partitioning" in status.to_dict() and status.to_dict()["partitioning"] is None
