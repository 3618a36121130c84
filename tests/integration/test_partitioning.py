"""The partitioner check against the real broker: records placed by librdkafka's own
partitioners are never counted as misplaced, and records a producer put in another
partition are counted, by the bulk load (in process and in worker processes) and by
the follow path, shown in the status and in /metrics.

The oracle is the producer: where librdkafka put each key (its delivery reports), and
which records the test forced into another partition. Nothing here computes a hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from statestore import Config, StateStore, ViewConfig
from statestore.api import create_app
from statestore.api.models import ViewInfo
from statestore.partitioners import PARTITIONERS
from tests.support.metrics import samples

pytestmark = pytest.mark.integration

PARTITIONS = 5
KEYS = 300


def _placed_by(produce: Callable[..., Any], topic: str, name: str) -> dict[bytes, int]:
    """*KEYS* keyed records produced with librdkafka's *name* partitioner: key -> partition."""
    done = produce(
        topic, ((f"key-{i:05d}", f'{{"i": {i}}}') for i in range(KEYS)), partitioner=name
    )
    return {key: partition for partition, _, key, _ in done.records}


def _bulk(config: Config, workers: int) -> Config:
    """*config* with its first bootstraps read by *workers* processes however few the
    records (1: in the store's own process)."""
    store = config.store.model_copy(update={"bootstrap_workers": workers, "bulk_min_records": 1})
    return config.model_copy(update={"store": store})


@pytest.mark.parametrize("name", PARTITIONERS)
@pytest.mark.parametrize("workers", [1, 2])
def test_records_placed_by_librdkafka_are_never_misplaced(
    name: str,
    workers: int,
    topic_factory: Callable[..., str],
    produce: Callable[..., Any],
    make_config: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each partitioner as librdkafka runs it: a bulk load (in process, or in workers)
    counts no record misplaced, and the keys did spread over the partitions."""
    topic = topic_factory(PARTITIONS)
    placed = _placed_by(produce, topic, name)
    assert len(set(placed.values())) == PARTITIONS  # the keys did spread
    config = _bulk(make_config({"name": "v", "topic": topic, "partitioner": name}), workers)
    with caplog.at_level(logging.INFO, logger="statestore"), StateStore(config) as store:
        store.bootstrap()
        status = store.view("v").status()
    # Read in the store's own process (processes=0) or by worker processes.
    started = next(m for m in caplog.messages if "bulk.start" in m)
    assert f"processes={0 if workers == 1 else workers}" in started
    assert status.keys == KEYS
    assert status.partitioning is not None
    assert (status.partitioning.partitioner, status.partitioning.misplaced) == (name, 0)
    assert status.partitioning.checked_from == {}


def test_records_in_another_partition_are_counted_by_the_bulk_load_and_the_follow_path(
    topic_factory: Callable[..., str],
    produce: Callable[..., Any],
    make_config: Callable[..., Any],
) -> None:
    """Records forced into another partition than murmur2 (the Java default) gives their
    key are counted wherever they are read, and the follow path names the first."""
    topic = topic_factory(PARTITIONS)
    placed = _placed_by(produce, topic, "murmur2")
    keys = sorted(placed)
    # Ten records of three keys, each in the partition after the one the key belongs to.
    astray = [keys[0]] * 4 + [keys[1]] * 3 + [keys[2]] * 3
    for key in astray:
        produce(topic, [(key, '{"astray": true}')], partition=(placed[key] + 1) % PARTITIONS)

    config = _bulk(make_config({"name": "v", "topic": topic, "partitioner": "murmur2"}), 2)
    with StateStore(config) as store:
        store.bootstrap()
        partitioning = store.view("v").status().partitioning
        assert partitioning is not None
        assert partitioning.misplaced == len(astray)
        assert partitioning.first is None  # a bulk load counts; it names none

        # Following: two more astray records and a few well placed ones.
        store.start()
        well = produce(topic, [(keys[3], "{}"), (keys[4], "{}")], partitioner="murmur2")
        late = produce(topic, [(keys[5], "{}")], partition=(placed[keys[5]] + 2) % PARTITIONS)
        late2 = produce(topic, [(keys[5], "{}")], partition=(placed[keys[5]] + 2) % PARTITIONS)
        wanted = {**well.last_offsets(), **late.last_offsets()}
        wanted.update(late2.last_offsets())
        store.wait_for("v", wanted, timeout=30)
        status = store.view("v").status()
        scraped = samples(store)
        app = create_app(config, store=store, start=False)
        with TestClient(app, base_url="http://localhost") as client:
            body = client.get("/views/v").json()
    ViewInfo.model_validate(body)
    assert body["partitioning"] == status.to_dict()["partitioning"]
    assert status.partitioning is not None
    assert status.partitioning.misplaced == len(astray) + 2
    first = status.partitioning.first
    assert first is not None
    (p, o, _, _) = late.records[0]
    assert (first["partition"], first["offset"]) == (p, o)
    assert first["expected"] == placed[keys[5]]
    assert scraped[("statestore_misplaced_records_total", (("view", "v"),))] == len(astray) + 2

    # The stored count, the first record and the declared partitioner outlive a restart.
    with StateStore(config, read_only=True) as store:
        again = store.view("v").status().partitioning
    assert again == status.partitioning


def test_a_partitioner_declared_later_checks_from_where_the_view_stood(
    topic_factory: Callable[..., str],
    produce: Callable[..., Any],
    make_config: Callable[..., Any],
) -> None:
    """Records read before the partitioner was declared are not counted, and the status
    says from which positions on records were checked; a view without one has none."""
    topic = topic_factory(PARTITIONS)
    placed = _placed_by(produce, topic, "consistent_random")
    key = sorted(placed)[0]
    produce(topic, [(key, "{}")], partition=(placed[key] + 1) % PARTITIONS)
    plain = make_config({"name": "v", "topic": topic})
    with StateStore(plain) as store:
        store.bootstrap()
        assert store.view("v").status().partitioning is None
        before = {p.partition: p.position for p in store.view("v").status().partitions}

    declared = make_config({"name": "v", "topic": topic, "partitioner": "consistent"})
    produce(topic, [(key, "{}")], partition=(placed[key] + 1) % PARTITIONS)
    with StateStore(declared) as store:
        store.bootstrap()
        partitioning = store.view("v").status().partitioning
    assert partitioning is not None
    assert partitioning.checked_from == {p: o for p, o in before.items() if o > 0}
    assert partitioning.misplaced == 1  # the record produced after it was declared


def test_a_partitioner_on_registry_keys_or_an_unknown_one_is_a_config_error() -> None:
    """Registry keys may carry their schema id in a header (not the bytes hashed); an
    unknown name lists the known ones."""
    with pytest.raises(ValueError, match="partitioner is checked on string, bytes and json"):
        ViewConfig(name="v", topic="t", key="avro", value="avro", partitioner="murmur2")
    with pytest.raises(ValueError, match="murmur2"):
        ViewConfig(name="v", topic="t", partitioner="java")  # type: ignore[arg-type]
