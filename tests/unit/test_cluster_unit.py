"""A partitioned instance without a broker: reading only owned partitions, dropping those
given up (with their index entries), the routing table's decisions, the narrowing of
``min_position``, and the [cluster] settings refused.

The real-broker side (the consumer group, three serving processes) is
tests/cluster/test_partitioned.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from statestore import ConfigError, InvalidRangeError, StateStore, ViewConfig
from statestore.api.cluster import _narrowed
from statestore.api.errors import ApiError
from statestore.apply import drop_partitions
from statestore.cluster import Cluster
from statestore.config import ClusterConfig, load_config
from statestore.ingest import Ingestor
from statestore.records import dropping_key
from statestore.storage import META
from statestore.testing import MemoryKafka
from statestore.view import View
from tests.support.config import store_config

PARTITIONS = 4


def _store(tmp_path: Path, kafka: MemoryKafka, **view: Any) -> StateStore:
    vc = ViewConfig(name="v", topic="t", indexes=("g",), partitioner="consistent", **view)
    return StateStore(store_config(tmp_path / "store", [vc]), client=kafka)


def _fill(kafka: MemoryKafka) -> dict[int, dict[bytes, bytes]]:
    """60 keys over 4 partitions (some updated, some deleted): per partition, the reduction."""
    topic = kafka.create_topic("t", PARTITIONS)
    out: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    for i in range(60):
        key = f"k{i:03d}".encode()
        value = orjson.dumps({"g": i % 5, "i": i})
        partition, _ = topic.produce(key, value)
        out[partition][key] = value
        if i % 7 == 0:
            topic.produce(key, None)
            del out[partition][key]
    return out


def _keys(view: View) -> set[bytes]:
    return {e.key.encode() for e in view.iter_entities()}


def _indexed(view: View) -> set[str]:
    found: set[str] = set()
    for g in range(5):
        found.update(e.key for e in view.by("g", g, limit=1000).items)
    return found


def _assert_holds(
    view: View, by_partition: dict[int, dict[bytes, bytes]], partitions: list[int]
) -> None:
    """*view* holds exactly the keys of *partitions*: entities, index entries, the key
    count, positions, status, and it answers for them."""
    held = {k: v for p in partitions for k, v in by_partition[p].items()}
    assert _keys(view) == set(held)
    assert _indexed(view) == {k.decode() for k in held}
    assert view.slot.counters["keys"] == len(held)
    assert sorted(view.slot.positions) == partitions
    assert [p.partition for p in view.status().partitions] == partitions
    assert view.serving == frozenset(partitions)


def test_a_view_reads_only_its_partitions_and_drops_those_given_up(tmp_path: Path) -> None:
    """Owning partitions 0 and 1, the view holds their keys alone; given 1 and 2 instead,
    partition 0's keys, index entries and position are gone and 2's are read."""
    kafka = MemoryKafka()
    by_partition = _fill(kafka)
    stop = threading.Event()
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        view.set_owned(frozenset({0, 1}))
        ingestor = Ingestor(view, kafka)
        assert ingestor.catch_up(stop)
        _assert_holds(view, by_partition, [0, 1])

        view.set_owned(frozenset({1, 2}))
        assert view.serving == frozenset({1})  # stops answering for 0 at once
        ingestor.take_assignment()
        assert ingestor.catch_up(stop)
        _assert_holds(view, by_partition, [1, 2])
        ingestor.close()


def _owning_all(view: View, kafka: MemoryKafka) -> Ingestor:
    """*view* given every partition and caught up: its ingestor."""
    view.set_owned(frozenset(range(PARTITIONS)))
    ingestor = Ingestor(view, kafka)
    assert ingestor.catch_up(threading.Event())
    return ingestor


def _whole_store(tmp_path: Path) -> tuple[MemoryKafka, dict[int, dict[bytes, bytes]]]:
    """A store under *tmp_path* that read every partition of a filled topic, closed: the
    topic, and per partition its reduction."""
    kafka = MemoryKafka()
    by_partition = _fill(kafka)
    with _store(tmp_path, kafka) as store:
        _owning_all(store.view("v"), kafka).close()
    return kafka, by_partition


def test_a_drop_survives_a_restart(tmp_path: Path) -> None:
    """What a drop wrote is the store's: reopened, the counters and positions agree."""
    kafka = MemoryKafka()
    by_partition = _fill(kafka)
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        ingestor = _owning_all(view, kafka)
        view.set_owned(frozenset({3}))
        ingestor.take_assignment()
        ingestor.close()
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        assert _keys(view) == set(by_partition[3])
        assert view.slot.counters["keys"] == len(by_partition[3])
        assert sorted(view.slot.positions) == [3]


def test_a_drop_cut_short_is_finished_before_the_partition_is_read_again(
    tmp_path: Path,
) -> None:
    """A drop that stopped after its first batch (a crash; or a snapshot taken meanwhile)
    left part of the partition's keys and its position. Reopened, the store knows; given
    the partition again, the instance finishes the drop and reads it from the log start,
    rather than take the remains for the whole partition."""
    kafka, by_partition = _whole_store(tmp_path)
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        storage = view.slot.storage
        real_write = storage.write
        writes = []

        def cut_short(batch: Any) -> None:
            if len(writes) == 2:  # the mark, then one batch of keys
                raise OSError("the process died here")
            writes.append(batch)
            real_write(batch)

        storage.write = cut_short  # type: ignore[method-assign]
        with pytest.raises(OSError, match="died"):
            drop_partitions(view.slot, {0}, chunk=2)
        storage.write = real_write  # type: ignore[method-assign]
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        assert view.slot.dropping == frozenset({0})
        assert 0 in view.slot.positions  # the remains look whole but for the mark
        assert len(_keys(view) & set(by_partition[0])) == len(by_partition[0]) - 2
        view.set_owned(frozenset(range(PARTITIONS)))
        ingestor = Ingestor(view, kafka)
        ingestor.take_assignment()
        assert view.slot.dropping == frozenset()
        assert ingestor.catch_up(threading.Event())
        _assert_holds(view, by_partition, list(range(PARTITIONS)))
        ingestor.close()
    with _store(tmp_path, kafka) as store:
        assert store.view("v").slot.dropping == frozenset()


def test_a_replicated_store_finishes_a_drop_it_was_seeded_with(tmp_path: Path) -> None:
    """A replicated view whose store holds a drop cut short (seeded from a partitioned
    instance's snapshot taken during one) deletes the remains and reads that partition
    from the log start before it answers."""
    kafka, by_partition = _whole_store(tmp_path)
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        storage = view.slot.storage
        batch = storage.batch()
        batch.put(META, dropping_key(view.slot.id), orjson.dumps([1]))
        for key in list(by_partition[1])[:3]:
            batch.delete(view.slot.entity_cf, key)  # what the cut-short drop deleted
        storage.write(batch)
    with _store(tmp_path, kafka) as store:
        view = store.view("v")
        assert view.slot.dropping == frozenset({1})
        assert view.owned is None  # replicated
        ingestor = Ingestor(view, kafka)
        assert ingestor.catch_up(threading.Event())
        assert view.slot.dropping == frozenset()
        assert _keys(view) == {k for p in by_partition.values() for k in p}
        ingestor.close()


# -- the routing table -------------------------------------------------------------------


@pytest.fixture
def owning_0(tmp_path: Path) -> Iterator[tuple[View, Cluster]]:
    """A store's view owning partition 0 of 4, and its cluster's routing table (no broker)."""
    kafka = MemoryKafka()
    kafka.create_topic("t", PARTITIONS)
    config = ClusterConfig(mode="partitioned", name="c", advertised_url="http://127.0.0.1:1")
    with _store(tmp_path, kafka) as store:
        cluster = Cluster(config, kafka, store.views, lambda view: None)  # type: ignore[arg-type]
        view = store.view("v")
        view.partition_count = PARTITIONS
        view.set_owned(frozenset({0}))
        yield view, cluster


def _record(member: str, owned: list[int], **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "member": member,
            "url": f"http://{member}:8000",
            "owned": {"t": owned},
            "serving": {"v": owned},
            **extra,
        }
    )


def _key_in(partition: int) -> bytes:
    from statestore.partitioners import partitioner

    place = partitioner("consistent")
    return next(k for i in range(1000) if place(k := f"x{i}".encode(), PARTITIONS) == partition)


def test_each_partition_resolves_to_one_owner_or_moves(owning_0: tuple[View, Cluster]) -> None:
    view, cluster = owning_0
    now_ms = int(time.time() * 1000)
    cluster._read(
        [
            (b"a", _record("a", [1, 2]), now_ms),
            (b"b", _record("b", [2]), now_ms),
            (b"old", _record("old", [3]), now_ms - 60_000),  # silent for a minute
        ]
    )
    route = cluster.route(view, _key_in(0))
    assert (route.kind, route.partition) == ("moving", 0)  # owned, not read yet
    assert "loading" in route.reason
    view.mark_serving(frozenset({0}))
    assert cluster.route(view, _key_in(0)).kind == "local"
    one = cluster.route(view, _key_in(1))
    assert (one.kind, one.url, one.member) == ("remote", "http://a:8000", "a")
    two = cluster.route(view, _key_in(2))
    assert two.kind == "moving" and "claimed by 2" in two.reason
    stale = cluster.route(view, _key_in(3))
    assert stale.kind == "moving" and "no owner" in stale.reason
    # b leaves (its record deleted): 2 is a's alone.
    cluster._read([(b"b", None, now_ms)])
    assert cluster.route(view, _key_in(2)).url == "http://a:8000"
    owners = cluster.describe()["views"]["v"]["owners"]
    assert owners == {"0": cluster.member, "1": "a", "2": "a", "3": None}
    # A record that is not one is skipped; the table keeps what it had.
    cluster._read([(b"a", b"not json", now_ms)])
    assert cluster.route(view, _key_in(1)).member == "a"


def test_a_change_stream_follows_owners_that_answer_for_their_partitions(
    owning_0: tuple[View, Cluster],
) -> None:
    """The owner map a change stream follows: each partition's one live owner; with
    ``serving``, only once that owner answers for it (this instance included)."""
    view, cluster = owning_0
    now_ms = int(time.time() * 1000)
    loading = orjson.dumps(
        {"member": "b", "url": "http://b:8000", "owned": {"t": [2, 3]}, "serving": {"v": [2]}}
    )
    cluster._read([(b"a", _record("a", [1]), now_ms), (b"b", loading, now_ms)])
    me = cluster.member
    owners = {0: (me, None), 1: ("a", "http://a:8000"), 2: ("b", "http://b:8000")}
    assert cluster.owners(view) == {**owners, 3: ("b", "http://b:8000")}
    assert cluster.owners(view, serving=True) == {**owners, 0: None, 3: None}
    view.mark_serving(frozenset({0}))
    assert cluster.owners(view, serving=True) == {**owners, 3: None}
    cluster._read([(b"c", _record("c", [3]), now_ms)])  # two claims: moving
    assert cluster.owners(view)[3] is None


def test_misplaced_records_anywhere_refuse_every_key(owning_0: tuple[View, Cluster]) -> None:
    view, cluster = owning_0
    view.mark_serving(frozenset({0}))
    now_ms = int(time.time() * 1000)
    cluster._read([(b"a", _record("a", [1, 2, 3], misplaced={"v": 4}), now_ms)])
    for partition in range(PARTITIONS):
        route = cluster.route(view, _key_in(partition))
        assert route.kind == "refused"
        assert "4 on a" in route.reason and "'consistent'" in route.reason
    cluster._read([(b"a", _record("a", [1, 2, 3], misplaced={"v": 0}), now_ms)])
    assert cluster.route(view, _key_in(0)).kind == "local"


# -- min_position, narrowed to the partitions asked --------------------------------------


@pytest.mark.parametrize(
    ("query", "partitions", "narrowed"),
    [
        (b"", {0}, b""),
        (b"wait_ms=5", {0}, b"wait_ms=5"),
        (b"min_position=0:5,1:7,2:9&wait_ms=5", {1}, b"min_position=1:7&wait_ms=5"),
        (b"min_position=0:5,1:7&wait_ms=5", {1, 0}, b"min_position=0:5,1:7&wait_ms=5"),
        (b"min_position=0:5&wait_ms=5", {3}, b"wait_ms=5"),
        (b"min_position=nonsense", {0}, b"min_position=nonsense"),
    ],
)
def test_min_position_keeps_the_partitions_asked(
    query: bytes, partitions: set[int], narrowed: bytes
) -> None:
    assert _narrowed(query, partitions) == narrowed


# -- settings ---------------------------------------------------------------------------


def _load(
    tmp_path: Path, cluster: str, view: str = 'partitioner = "murmur2"', extra: str = ""
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'{extra}\n[cluster]\n{cluster}\n[[views]]\nname = "v"\ntopic = "t"\n{view}\n',
        encoding="utf-8",
    )
    load_config(path, environ={})


GOOD = 'mode = "partitioned"\nname = "c"\nadvertised_url = "http://10.0.0.5:8000"'


def test_a_partitioned_cluster_loads(tmp_path: Path) -> None:
    _load(tmp_path, GOOD)
    _load(tmp_path, 'mode = "replicated"', view="")  # the default needs nothing
    # Snapshots of its share, and a seed (docs/cluster.md, "Snapshots").
    _load(tmp_path, GOOD, extra='[snapshots]\ndest = "/tmp/s"\n[store]\nseed = "/tmp/s"')


@pytest.mark.parametrize(
    ("cluster", "view", "extra", "said"),
    [
        ('mode = "partitioned"\nname = "c"', 'partitioner = "murmur2"', "", "advertised_url"),
        (GOOD, "", "", "declares its partitioner"),
        (GOOD, 'partitioner = "murmur2"\nkey = "json"', "", "string or bytes keys"),
        (GOOD, 'partitioner = "murmur2"', "[api]\nworkers = 2", "workers = 1"),
        (
            'mode = "partitioned"\nname = "c"\nadvertised_url = "ftp://x"',
            'partitioner = "murmur2"',
            "",
            "not a base URL",
        ),
        (
            'mode = "partitioned"\nname = "c d"\nadvertised_url = "http://x:1"',
            'partitioner = "murmur2"',
            "",
            "letters, digits",
        ),
        ('mode = "sharded"', "", "", "mode"),
    ],
)
def test_settings_a_partitioned_cluster_cannot_use_are_refused(
    tmp_path: Path, cluster: str, view: str, extra: str, said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        _load(tmp_path, cluster, view, extra)


def test_a_partitioned_store_is_not_loaded_whole_outside_serve(tmp_path: Path) -> None:
    """`statestore bootstrap` (and an offline rebuild) would read every partition: refused,
    saying that the group decides which are the instance's."""
    kafka = MemoryKafka()
    _fill(kafka)
    cluster = ClusterConfig(mode="partitioned", name="c", advertised_url="http://127.0.0.1:1")
    with _store(tmp_path, kafka) as plain:
        config = plain.config.model_copy(update={"cluster": cluster})
    with StateStore(config, client=kafka) as store:
        with pytest.raises(ConfigError, match="consumer group gives it"):
            store.bootstrap()
        with pytest.raises(ConfigError, match="consumer group gives it"):
            store.rebuild()
        assert store.view("v").slot.counters["keys"] == 0


def test_each_instance_takes_its_own_settings_from_the_environment(tmp_path: Path) -> None:
    """One file for every pod; the pod's URL and member id from ``STATESTORE_CLUSTER__*``."""
    path = tmp_path / "c.toml"
    path.write_text('[[views]]\nname = "v"\ntopic = "t"\npartitioner = "murmur2"\n')
    config = load_config(
        path,
        environ={
            "STATESTORE_CLUSTER__MODE": "partitioned",
            "STATESTORE_CLUSTER__NAME": "c",
            "STATESTORE_CLUSTER__ADVERTISED_URL": "http://p-0.statestore:8000",
            "STATESTORE_CLUSTER__INSTANCE_ID": "p-0",
            "STATESTORE_CLUSTER__FORWARD": "false",
        },
    )
    assert config.cluster == ClusterConfig(
        mode="partitioned",
        name="c",
        advertised_url="http://p-0.statestore:8000",
        instance_id="p-0",
        forward=False,
    )


def test_a_gathered_reads_cursor_continues_only_its_own_read() -> None:
    from statestore.api.cluster import _cursor, _open_cursor

    ident = {"view": "v", "prefix": "key-0", "start": "", "end": "key-1"}
    cursor = _cursor("key-0042", ident)
    assert _open_cursor(cursor, ident) == "key-0042"
    assert _open_cursor(_cursor([1.5, "k"], ident), ident) == [1.5, "k"]
    for name, other in (("view", "w"), ("prefix", "key-"), ("start", "a")):
        with pytest.raises(ApiError, match="another read"):
            _open_cursor(cursor, {**ident, name: other})
    for junk in ("", "g1.", "g1.!!!", cursor[3:], "g1." + "e30"):
        with pytest.raises(ApiError) as raised:
            _open_cursor(junk, ident)
        assert raised.value.code == "invalid_cursor"


def test_an_index_query_starts_at_a_key(tmp_path: Path) -> None:
    """``by(..., start=)``, which a gathered index query asks of each owner: the matching
    keys from *start* on, in key order, combined with a cursor, also through the reader."""
    kafka = MemoryKafka()
    by_partition = _fill(kafka)
    with _store(tmp_path, kafka) as store:
        store.bootstrap()
        matching = sorted(
            k.decode()
            for held in by_partition.values()
            for k, v in held.items()
            if orjson.loads(v)["g"] == 2
        )
        view = store.view("v")
        assert [e.key for e in view.by("g", 2, limit=100).items] == matching
        assert [e.key for e in view.by("g", 2, limit=100, start="k030").items] == [
            k for k in matching if k >= "k030"
        ]
        first = view.by("g", 2, limit=2, start="k010")
        rest = store.by("v", "g", 2, after=first.next, limit=100, start="k010")
        assert [e.key for e in first.items + rest.items] == [k for k in matching if k >= "k010"]


def test_standby_copies_follow_the_owner_ring_and_answer_while_a_partition_moves(
    tmp_path: Path,
) -> None:
    """``standbys = 1``: a partition's copy is kept by the next live member after its
    owner (by member id); it answers when the owner is gone or its successor still reads
    it, and stays kept while no one owns the partition."""
    kafka = MemoryKafka()
    kafka.create_topic("t", PARTITIONS)
    config = ClusterConfig(
        mode="partitioned",
        name="c",
        advertised_url="http://127.0.0.1:1",
        instance_id="m",
        standbys=1,
    )
    with _store(tmp_path, kafka) as store:
        cluster = Cluster(config, kafka, store.views, lambda view: None)  # type: ignore[arg-type]
        cluster._group = SimpleNamespace(owned={"t": {0}})  # type: ignore[assignment]
        view = store.view("v")
        view.partition_count = PARTITIONS
        view.set_owned(frozenset({0}))
        view.mark_serving(frozenset({0}))
        now_ms = int(time.time() * 1000)
        cluster._read([(b"a", _record("a", [1, 2]), now_ms), (b"z", _record("z", [3]), now_ms)])
        cluster._keep_standbys()  # ring a -> m -> z -> a: m keeps a's partitions
        assert view.standby == frozenset({1, 2})
        assert view.reads == frozenset({0, 1, 2})
        assert cluster.route(view, _key_in(1)).standby is None  # not read to the end yet
        view.mark_serving(frozenset({1, 2}))
        assert view.standing_by == frozenset({1, 2}) and view.serving == frozenset({0})
        owner = cluster.route(view, _key_in(1))
        assert (owner.kind, owner.member) == ("remote", "a")
        assert owner.standby is not None and owner.standby.kind == "local"
        # a is gone: the copy answers, and stays kept while no one owns 1 and 2.
        cluster._read([(b"a", None, now_ms)])
        gone = cluster.route(view, _key_in(1))
        assert (gone.kind, gone.copy) == ("local", True)
        cluster._keep_standbys()  # ring m -> z -> m: m also keeps z's 3
        assert view.standby == frozenset({1, 2, 3})
        # z takes 1 and still reads it: the copy answers; once z answers for it, z does.
        cluster._read([(b"z", _record("z", [1, 3], serving={"v": [3]}), now_ms)])
        assert cluster.route(view, _key_in(1)).kind == "local"
        cluster._read([(b"z", _record("z", [1, 3]), now_ms)])
        moved = cluster.route(view, _key_in(1))
        assert (moved.kind, moved.member) == ("remote", "z")
        # Another instance's copy is found through its membership record.
        assert cluster.route(view, _key_in(3)).kind == "remote"
        cluster._keep_standbys()  # 1 and 3 are z's, 2 still no one's: all kept here
        assert view.standby == frozenset({1, 2, 3})


def test_an_index_range_starts_at_a_key_of_its_start_value(tmp_path: Path) -> None:
    """``by_range(..., start_key=)``, which a gathered index range asks of each owner:
    the entries of the start value from that key on, then every later value."""
    kafka = MemoryKafka()
    by_partition = _fill(kafka)
    with _store(tmp_path, kafka) as store:
        store.bootstrap()
        values = {
            k.decode(): orjson.loads(v)["g"]
            for held in by_partition.values()
            for k, v in held.items()
        }
        ordered = sorted(values, key=lambda k: (values[k], k))
        page = store.by_range("v", "g", start=2, end=4, limit=100, start_key="k030")
        assert [e.key for e in page.items] == [
            k for k in ordered if (values[k] == 2 and k >= "k030") or values[k] == 3
        ]
        with pytest.raises(InvalidRangeError, match="start key needs a start value"):
            store.by_range("v", "g", start_key="k030")
