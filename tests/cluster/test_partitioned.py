"""A partitioned cluster of `statestore serve` processes on loopback ports, against the
real broker: Kafka's consumer group shares the partitions out, any instance answers for
any key, a killed instance's partitions move, a joining one takes some, tokens hold on
forwarded calls, and a producer's other partitioner is caught.

The oracle is the producer: what librdkafka wrote where (its delivery reports), reduced
per key. Nothing here computes a hash or asks the store how it routes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.config import write_config
from tests.support.metrics import parse
from tests.support.processes import Server, clean_env, free_port, run
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 6
KEYS = 300
SESSION_MS = 6000  # the broker's group.min.session.timeout.ms
VIEW = "v"
TOKEN_ENV = "TEST_CLUSTER_TOKEN"
TOKEN = "cluster-test-token-1"


class Instances:
    """`statestore serve` processes of one partitioned cluster over one topic."""

    def __init__(self, root: Path, topic: str, *, partitioner: str = "murmur2_random") -> None:
        self.root = root
        self.topic = topic
        self.partitioner = partitioner
        self.name = f"c-{root.name[-20:].strip('_')}-{time.monotonic_ns() % 10**9}"
        self.servers: list[Server] = []
        self.cluster: dict[str, Any] = {}
        self.api: dict[str, Any] = {"allow_anonymous": True}
        self.tokens: list[dict[str, Any]] = []
        self.store: dict[str, Any] = {}

    def start(self, n: int = 1) -> list[Server]:
        started = []
        for _ in range(n):
            d = self.root / f"i{len(self.servers)}"
            d.mkdir()
            port = free_port()
            config = write_config(
                d,
                [
                    {
                        "name": VIEW,
                        "topic": self.topic,
                        "partitioner": self.partitioner,
                        "indexes": ["round"],
                    }
                ],
                port=port,
                api=self.api,
                tokens=self.tokens,
                store_options=self.store,
                log={"format": "json"},
                cluster={
                    "mode": "partitioned",
                    "name": self.name,
                    "advertised_url": f"http://127.0.0.1:{port}",
                    "session_timeout_ms": SESSION_MS,
                    **self.cluster,
                },
            )
            server = Server(config, port, d, d / "serve.log", env=clean_env(**{TOKEN_ENV: TOKEN}))
            self.servers.append(server)
            started.append(server)
        for server in started:
            server.wait_ready(timeout=120)
        return started

    def serving(
        self, produce: Callable[..., Any], n: int, *, check: bool = True
    ) -> tuple[list[Server], Any, dict[str, Any]]:
        """The test's records produced, then *n* instances settled (and, with *check*, each
        answering every key as the reduction says): the servers, what was produced, and
        the reduction."""
        produced = _produce_keys(produce, self.topic)
        expected = expected_of(produced)
        servers = self.start(n)
        wait_settled(servers)
        for server in servers if check else ():
            eventually(lambda s=server: not check_reads(s, all_keys(), expected), "all keys", 60)
        return servers, produced, expected

    def live(self) -> list[Server]:
        return [s for s in self.servers if s.alive()]

    def close(self) -> None:
        for s in self.servers:
            if s.alive():
                s.close()


@pytest.fixture
def instances(tmp_path: Path, topic_factory: Callable[..., str]) -> Iterator[Instances]:
    cluster = Instances(tmp_path, topic_factory(PARTITIONS))
    try:
        yield cluster
    finally:
        cluster.close()


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _table(server: Server) -> dict[str, Any] | None:
    try:
        r = server.http.get("/cluster", headers=_headers())
    except httpx.TransportError:
        return None
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def settled(servers: list[Server]) -> bool:
    """Every live instance sees the same owner for every partition, the owners are the
    live instances, and each serves what it owns."""
    tables = [_table(s) for s in servers]
    if any(t is None or not t["joined"] for t in tables):
        return False
    owners = [t["views"][VIEW]["owners"] for t in tables if t is not None]
    if len(owners[0]) != PARTITIONS or None in owners[0].values():
        return False
    if any(o != owners[0] for o in owners):
        return False
    selves = {}
    for t in tables:
        assert t is not None
        me = next(m for m in t["members"] if m["self"])
        topic_owned = next(iter(me["owned"].values()), [])
        if sorted(me["serving"][VIEW]) != sorted(topic_owned):
            return False
        selves[me["member"]] = me
    # Each instance that owns something is live; and all live instances own some (6 >= n).
    return set(owners[0].values()) == set(selves)


def wait_settled(servers: list[Server], timeout: float = 90) -> None:
    eventually(lambda: settled(servers), f"{len(servers)} instances settling", timeout)


def expected_of(produced: Any) -> dict[str, Any]:
    """Key -> value (decoded JSON) of the producer's reduction; deleted keys absent."""
    import orjson

    return {k.decode(): orjson.loads(v) for k, v in produced.latest().items()}


def check_reads(server: Server, keys: list[str], expected: dict[str, Any]) -> list[str]:
    """Each key read from *server*: the problems (empty: every answer is the reduction's)."""
    problems = []
    for key in keys:
        r = server.http.get(f"/views/{VIEW}/entities/{key}", headers=_headers())
        if key in expected:
            if r.status_code != 200 or r.json()["value"] != expected[key]:
                problems.append(f"{key}: {r.status_code} {r.text[:200]}")
        elif r.status_code != 404 or r.json()["error"]["code"] != "not_found":
            problems.append(f"{key} (deleted): {r.status_code} {r.text[:200]}")
    return problems


def _produce_keys(
    produce: Callable[..., Any], topic: str, partitioner: str = "murmur2_random"
) -> Any:
    records: list[tuple[str, str | None]] = [
        (f"key-{i:04d}", f'{{"i": {i}, "round": 1}}') for i in range(KEYS)
    ]
    records += [(f"key-{i:04d}", f'{{"i": {i}, "round": 2}}') for i in range(0, KEYS, 3)]
    records += [(f"key-{i:04d}", None) for i in range(0, KEYS, 10)]
    return produce(topic, records, partitioner=partitioner)


def all_keys() -> list[str]:
    return [f"key-{i:04d}" for i in range(KEYS)]


def test_every_key_from_every_instance(instances: Instances, produce: Callable[..., Any]) -> None:
    """Three instances split the partitions; each answers every key (its own, or the
    owner's answer forwarded with the owner named) exactly as the producer's reduction,
    lookups are split by owner and come back in order with every partition's position,
    and a position read from one instance is waited for by whichever answers. Each
    instance's first load is a bulk load by two worker processes of its partitions."""
    instances.store = {"bulk_min_records": 1, "bootstrap_workers": 2}
    servers, produced, expected = instances.serving(produce, 3, check=False)
    table = _table(servers[0])
    assert table is not None
    owners = table["views"][VIEW]["owners"]
    urls = {m["member"]: m["url"] for m in table["members"]}
    assert len(set(owners.values())) == 3  # 6 partitions over 3 instances: 2 each
    # Bulk loads of a share of the partitions check placement against all of them.
    assert all(m["misplaced"][VIEW] == 0 for m in table["members"])
    ends = produced.last_offsets()
    for server in servers:
        eventually(
            lambda server=server: not check_reads(server, all_keys()[:1], expected),
            "first read",
            60,
        )
        assert check_reads(server, all_keys(), expected) == []
        # Forwarded answers name their owner, and it is the one GET /cluster names.
        mine = next(m["member"] for m in _table(server)["members"] if m["self"])  # type: ignore[index]
        forwarded = 0
        for key in all_keys()[:40]:
            r = server.http.get(f"/views/{VIEW}/entities/{key}", headers=_headers())
            owner = r.headers.get("x-statestore-owner")
            if owner is not None:
                forwarded += 1
                assert owner != mine and owner in urls
        assert forwarded > 0
        # One lookup over every key: in order, nulls for deleted keys, every partition's
        # position in one header.
        keys = [*all_keys(), "never-written"]
        r = server.http.post(f"/views/{VIEW}/lookup", json={"keys": keys}, headers=_headers())
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [None if i is None else i["value"] for i in items] == [expected.get(k) for k in keys]
        position = dict(
            tuple(map(int, part.split(":")))  # type: ignore[misc]
            for part in r.headers["x-statestore-position"].split(",")
        )
        assert position == {p: ends.get(p, -1) for p in range(PARTITIONS)}
    # /metrics: the members, and per instance 2 partitions owned and served.
    for server in servers:
        found = parse(server.http.get("/metrics").text)
        assert found[("statestore_cluster_members", ())] == 3
        assert found[("statestore_cluster_partitions", (("state", "owned"), ("view", VIEW)))] == 2
        assert found[("statestore_cluster_partitions", (("state", "serving"), ("view", VIEW)))] == 2
        assert found[("statestore_cluster_rebalances_total", ())] >= 1
    # `statestore status` beside the running instances names the members and what each owns.
    config = instances.root / "i0" / "statestore.toml"
    done = run(
        ["-c", config, "status", "--json"], instances.root, env=clean_env(**{TOKEN_ENV: TOKEN})
    )
    assert done.returncode == 0, done.stderr
    members = json.loads(done.stdout)["cluster"]["members"]
    assert {m["url"] for m in members} == {s.url for s in servers}
    owned = sorted(p for m in members for p in m["owned"][instances.topic])
    assert owned == list(range(PARTITIONS))
    shown = run(["-c", config, "status"], instances.root, env=clean_env(**{TOKEN_ENV: TOKEN}))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(f"cluster {instances.name}: ") == 3
    # Read-your-writes across instances: a write's whole position, waited for anywhere.
    wrote = produce(
        instances.topic, [("key-0001", '{"i": 1, "round": 3}')], partitioner="murmur2_random"
    )
    (p, offset, _, _) = wrote.records[0]
    position = ",".join(f"{q}:{offset if q == p else ends.get(q, -1)}" for q in range(PARTITIONS))
    for server in servers:
        r = server.http.get(
            f"/views/{VIEW}/entities/key-0001",
            params={"min_position": position, "wait_ms": 20000},
            headers=_headers(),
        )
        assert r.status_code == 200, r.text
        assert r.json()["value"] == {"i": 1, "round": 3}


def standby_copies(servers: list[Server]) -> bool:
    """Every partition has a standby copy read to the end on an instance not owning it."""
    table = _table(servers[0])
    if table is None:
        return False
    owners = table["views"][VIEW]["owners"]
    copies = {
        (int(p), m["member"]) for m in table["members"] for p in m.get("standby", {}).get(VIEW, [])
    }
    return all(any(q == int(p) and m != owner for q, m in copies) for p, owner in owners.items())


@pytest.mark.parametrize("standbys", [0, 1])
def test_a_killed_instance_moves_its_partitions(
    instances: Instances, produce: Callable[..., Any], standbys: int
) -> None:
    """kill -9 of one instance, reading every key from the two others until the group has
    moved its partitions and they answer for them. Without standby copies its keys answer
    503 with Retry-After meanwhile; with them (``standbys = 1``) the copies answer: never a
    503. Never a 404 or another value."""
    instances.cluster = {"standbys": standbys}
    servers, _, expected = instances.serving(produce, 3)
    if standbys:
        eventually(lambda: standby_copies(servers), "standby copies", 60)
    victim, survivors = servers[0], servers[1:]
    seen: dict[int, int] = {}
    wrong: list[str] = []
    victim.popen.kill()
    victim.popen.wait(30)
    killed = time.monotonic()
    answered_at: list[float] = []
    moves: list[str] = []

    def whole() -> bool:
        good = True
        for server in survivors:
            for key in all_keys():
                r = server.http.get(f"/views/{VIEW}/entities/{key}", headers=_headers())
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    assert r.headers.get("retry-after") == "1"
                    error = r.json()["error"]
                    assert error["code"] in ("partition_moving", "owner_unavailable")
                    moves.append(f"{time.monotonic() - killed:.1f}s {error['message']}")
                    good = False
                elif key in expected:
                    if r.status_code != 200 or r.json()["value"] != expected[key]:
                        wrong.append(f"{key}: {r.status_code} {r.text[:200]}")
                elif r.status_code != 404:
                    wrong.append(f"{key} (deleted): {r.status_code} {r.text[:200]}")
        if good and not answered_at:
            answered_at.append(time.monotonic() - killed)
        return good and settled(survivors)

    eventually(whole, "every key answered by the owners after kill -9", SESSION_MS / 1000 + 90)
    moved_after = time.monotonic() - killed
    assert wrong == []
    if standbys:
        assert seen.get(503, 0) == 0, (seen, moves[:3], moves[-3:])
    else:
        assert seen.get(503, 0) > 0  # the move was seen, and answered as a move
    print(
        f"failover (standbys={standbys}): every key answered {answered_at[0]:.1f} s after "
        f"kill -9, partitions moved in {moved_after:.1f} s (session {SESSION_MS} ms)"
    )


def test_a_joining_instance_takes_partitions_without_errors(
    instances: Instances, produce: Callable[..., Any]
) -> None:
    """Two instances serve; a third joins while a reader keeps asking the first for every
    key: each answer is the reduction's or a 503 of a moving partition, and afterwards
    all three own partitions and answer every key."""
    servers, _, expected = instances.serving(produce, 2)
    stop = threading.Event()
    wrong: list[str] = []
    counts = {"ok": 0, "moving": 0}

    def reader() -> None:
        with httpx.Client(base_url=servers[0].url, timeout=30) as http:
            while not stop.is_set():
                for key in all_keys():
                    r = http.get(f"/views/{VIEW}/entities/{key}", headers=_headers())
                    if r.status_code == 503 and r.json()["error"]["code"] == "partition_moving":
                        counts["moving"] += 1
                    elif (
                        key in expected
                        and r.status_code == 200
                        and r.json()["value"] == expected[key]
                    ) or (key not in expected and r.status_code == 404):
                        counts["ok"] += 1
                    else:
                        wrong.append(f"{key}: {r.status_code} {r.text[:200]}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        joined = instances.start(1)
        wait_settled(instances.live())
        assert len(set(_table(servers[0])["views"][VIEW]["owners"].values())) == 3  # type: ignore[index]
        for server in instances.live():
            eventually(lambda s=server: not check_reads(s, all_keys(), expected), "all keys", 60)
    finally:
        stop.set()
        thread.join(60)
    assert wrong == []
    assert counts["ok"] > 0
    assert check_reads(joined[0], all_keys(), expected) == []


def test_without_forwarding_a_key_elsewhere_is_a_redirect(
    instances: Instances, produce: Callable[..., Any]
) -> None:
    """``forward = false``: a key another instance owns is a 307 to the same path there,
    which answers it; a lookup spanning owners is a 409 that says to split it."""
    instances.cluster = {"forward": False}
    servers, _, expected = instances.serving(produce, 2, check=False)
    urls = {s.url for s in servers}
    redirected = 0
    for key in all_keys()[:60]:
        r = servers[0].http.get(f"/views/{VIEW}/entities/{key}", params={"wait_ms": 5})
        if r.status_code == 307:
            redirected += 1
            location = r.headers["location"]
            assert location.startswith(tuple(urls - {servers[0].url}))
            assert location.endswith(f"/views/{VIEW}/entities/{key}?wait_ms=5")
            answer = httpx.get(location)
        else:
            answer = r
        if key in expected:
            assert answer.status_code == 200 and answer.json()["value"] == expected[key]
        else:
            assert answer.status_code == 404
    assert redirected > 0
    r = servers[0].http.post(f"/views/{VIEW}/lookup", json={"keys": all_keys()})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "keys_span_owners"


def test_tokens_hold_on_forwarded_calls(instances: Instances, produce: Callable[..., Any]) -> None:
    """With tokens: the caller's token travels with a forwarded read and the owner checks
    it; no token is a 401 at the first instance; a call that claims to be forwarded but
    carries no token is a 401 at the owner too."""
    instances.api = {}
    instances.tokens = [{"env": TOKEN_ENV, "views": [VIEW], "name": "reader"}]
    servers, _, expected = instances.serving(produce, 2)
    key = next(k for k in all_keys() if k in expected)
    for server in servers:
        assert server.http.get(f"/views/{VIEW}/entities/{key}").status_code == 401
        r = server.http.post(f"/views/{VIEW}/lookup", json={"keys": all_keys()})
        assert r.status_code == 401
        bad = {"Authorization": "Bearer not-the-token"}
        assert server.http.get(f"/views/{VIEW}/entities/{key}", headers=bad).status_code == 401
    for server in servers:
        r = server.http.get(
            f"/views/{VIEW}/entities/{key}", headers={"X-Statestore-Forwarded": "someone"}
        )
        assert r.status_code == 401


def test_a_producer_with_another_partitioner_is_caught(
    instances: Instances, produce: Callable[..., Any]
) -> None:
    """Records produced with librdkafka's default (consistent_random) into a cluster that
    declares murmur2: the instances count them, GET /cluster shows where, and no key is
    answered (409 misplaced_records, naming the partitioner), rather than a wrong 404."""
    instances.partitioner = "murmur2"
    produce(
        instances.topic,
        [(f"key-{i:04d}", f'{{"i": {i}}}') for i in range(KEYS)],
        partitioner="consistent_random",
    )
    servers = instances.start(2)
    wait_settled(servers)

    def counted() -> bool:
        table = _table(servers[0])
        return table is not None and sum(m["misplaced"][VIEW] for m in table["members"]) > 0

    eventually(counted, "misplaced records counted", 60)
    for server in servers:
        for key in all_keys()[:20]:
            r = server.http.get(f"/views/{VIEW}/entities/{key}")
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "misplaced_records"
            assert "'murmur2'" in error["message"]
        r = server.http.post(f"/views/{VIEW}/lookup", json={"keys": all_keys()[:5]})
        assert r.status_code == 409


def test_a_scan_is_gathered_from_every_owner_in_key_order(
    instances: Instances, produce: Callable[..., Any]
) -> None:
    """Paging through a scan, or an index query, each page asked of another instance:
    every matching live key once, in key order, with prefixes and ranges; a cursor of
    another read is refused."""
    servers, _, expected = instances.serving(produce, 3)

    def pages(params: dict[str, str], limit: int, path: str = "entities") -> list[str]:
        keys: list[str] = []
        cursor = None
        for turn in range(1000):
            asked = {**params, "limit": str(limit), **({"after": cursor} if cursor else {})}
            r = servers[turn % 3].http.get(
                f"/views/{VIEW}/{path}", params=asked, headers=_headers()
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["items"]) <= limit
            for item in body["items"]:
                assert item["value"] == expected[item["key"]]
            keys += [item["key"] for item in body["items"]]
            cursor = body["next"]
            if cursor is None:
                return keys
        raise AssertionError("the scan did not end")

    everything = sorted(expected)
    assert pages({}, 37) == everything
    assert pages({}, 1000) == everything
    assert pages({"prefix": "key-01"}, 9) == [k for k in everything if k.startswith("key-01")]
    ranged = pages({"start": "key-0100", "end": "key-0200"}, 25)
    assert ranged == [k for k in everything if "key-0100" <= k < "key-0200"]
    first = servers[0].http.get(f"/views/{VIEW}/entities", params={"limit": "5"}).json()
    other = servers[1].http.get(
        f"/views/{VIEW}/entities", params={"prefix": "key-02", "after": first["next"]}
    )
    assert other.status_code == 422 and other.json()["error"]["code"] == "invalid_cursor"
    forged = servers[1].http.get(f"/views/{VIEW}/entities", params={"after": "nonsense"})
    assert forged.status_code == 422 and forged.json()["error"]["code"] == "invalid_cursor"
    for n in (1, 2):
        matching = [k for k in everything if expected[k]["round"] == n]
        assert pages({}, 13, f"by/round/{n}") == matching
        assert pages({"start": "key-0150"}, 7, f"by/round/{n}") == [
            k for k in matching if k >= "key-0150"
        ]
    elsewhere = servers[2].http.get(f"/views/{VIEW}/by/round/2", params={"after": first["next"]})
    assert elsewhere.status_code == 422
    by_round = sorted(everything, key=lambda k: (expected[k]["round"], k))
    assert pages({}, 11, "by/round") == by_round
    assert pages({"start": "2"}, 11, "by/round") == [
        k for k in by_round if expected[k]["round"] >= 2
    ]
    assert pages({"start": "1", "end": "2"}, 50, "by/round") == [
        k for k in by_round if expected[k]["round"] == 1
    ]
    unknown = servers[0].http.get(f"/views/{VIEW}/by/colour/red")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_index"


class Events:
    """One client of a change stream, read in a thread: the events as they come."""

    def __init__(self, server: Server, **params: str) -> None:
        self.events: list[tuple[str, str | None, dict[str, Any]]] = []
        self.status: int | None = None
        self.refused = ""  # the body of an answer other than 200
        self.position = ""
        headers = _headers()
        if "last_event_id" in params:
            headers["Last-Event-ID"] = params.pop("last_event_id")
        self._client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(30, read=None))
        self._ask = (f"/views/{VIEW}/changes", params, headers)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        path, params, headers = self._ask
        try:
            with self._client.stream("GET", path, params=params, headers=headers) as r:
                self.status = r.status_code
                self.position = r.headers.get("x-statestore-position", "")
                if r.status_code != 200:
                    self.refused = r.read().decode()
                    return
                name, event_id = "message", None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        self.events.append((name, event_id, json.loads(line[6:])))
                        name, event_id = "message", None
        except httpx.HTTPError:
            pass  # closed by the test

    def named(self, name: str) -> list[tuple[str | None, dict[str, Any]]]:
        return [(i, d) for n, i, d in list(self.events) if n == name]

    def changes(self) -> list[tuple[str | None, dict[str, Any]]]:
        return self.named("change")

    def close(self) -> None:
        self._client.close()
        self._thread.join(30)


def streamable(server: Server) -> bool:
    """*server* sees every member answering for each partition it owns (its stream then
    subscribes to every owner; before, it answers 503 partition_moving)."""
    table = _table(server)
    if table is None:
        return False
    return all(
        sorted(m["serving"].get(VIEW, [])) == sorted(next(iter(m["owned"].values()), []))
        for m in table["members"]
        if m["alive"]
    )


def _new_keys(produce: Callable[..., Any], topic: str, tag: str, n: int = 60) -> Any:
    """*n* new keys, once each (a batch sends a key's last change only)."""
    records = [(f"{tag}-{i:04d}", f'{{"i": {i}, "tag": "{tag}"}}') for i in range(n)]
    return produce(topic, records, partitioner="murmur2_random")


def _as_produced(produced: Any) -> set[tuple[int, int, str, str]]:
    """(partition, offset, key, value as canonical JSON text) of each record produced."""
    return {(p, o, k.decode(), _canonical(json.loads(v))) for p, o, k, v in produced.records}


def _seen(events: list[tuple[str | None, dict[str, Any]]]) -> set[tuple[int, int, str, str]]:
    return {(d["partition"], d["offset"], d["key"], _canonical(d["value"])) for _, d in events}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_the_change_stream_is_gathered_from_every_owner(
    instances: Instances, produce: Callable[..., Any]
) -> None:
    """One instance's change stream carries the changes of every partition, whichever
    instance owns it: each produced record once, each partition in offset order. Its last
    id resumes on another instance with exactly the changes after it; a prefix filters on
    every owner; an id of an older owner map resumes with a reset. When an instance dies
    and its partitions move, the stream sends a reset once they have new owners, then
    the changes of every partition again."""
    servers, _, _ = instances.serving(produce, 3, check=False)
    for server in servers:
        eventually(lambda s=server: streamable(s), "every owner seen answering", 30)
    first = Events(servers[0])
    prefixed = Events(servers[2], prefix="b-000")
    try:
        for events in (first, prefixed):
            eventually(lambda e=events: e.named("subscribed") or e.refused, "subscribed", 30)
            assert events.status == 200, events.refused
        assert sorted(int(p.split(":")[0]) for p in first.position.split(",")) == list(
            range(PARTITIONS)
        )
        ((start_id, subscribed),) = first.named("subscribed")
        assert subscribed == {"id": start_id, "resumed": False}
        assert start_id is not None and start_id.startswith("g1.")
        sent = _as_produced(_new_keys(produce, instances.topic, "a"))
        assert len({p for p, *_ in sent}) == PARTITIONS
        eventually(lambda: len(first.changes()) >= len(sent), "every change gathered", 60)
        got = first.changes()
        assert _seen(got) == sent and len(got) == len(sent)
        for partition in range(PARTITIONS):
            offsets = [d["offset"] for _, d in got if d["partition"] == partition]
            assert offsets == sorted(offsets)
        assert all(i is not None and i.startswith("g1.") for i, _ in got)
        # The 20th change's id, given to another instance: the changes after it, once each.
        more = _as_produced(_new_keys(produce, instances.topic, "b"))
        eventually(lambda: len(first.changes()) >= len(sent) + len(more), "more", 60)
        got = first.changes()
        resumed = Events(servers[1], last_event_id=str(got[19][0]))
        try:
            eventually(lambda: len(resumed.changes()) >= len(got) - 20, "resumed changes", 60)
            assert resumed.named("subscribed")[0][1]["resumed"] is True
            assert resumed.named("reset") == []
            assert _seen(resumed.changes()) == _seen(got[20:])
            assert len(resumed.changes()) == len(got) - 20
        finally:
            resumed.close()
        wanted = {r for r in more if r[2].startswith("b-000")}
        eventually(lambda: _seen(prefixed.changes()) == wanted, "prefixed changes", 60)
        # An id from another owner map (a forged epoch): subscribed, not resumed, a reset.
        stale = "g1.eyJlIjoiMDAwMDAwMDAwMDAwIiwibSI6e319"
        other = Events(servers[1], last_id=stale)
        try:
            eventually(lambda: other.named("reset"), "a reset for an old map", 30)
            assert other.named("subscribed")[0][1]["resumed"] is False
        finally:
            other.close()
        bad = servers[0].http.get(f"/views/{VIEW}/changes", params={"last_id": "g1.bm9uZQ"})
        assert bad.status_code == 422, bad.text
        # An instance dies: once its partitions have new owners, a reset; then every change.
        servers[2].popen.kill()
        servers[2].popen.wait(30)
        wait_settled(servers[:2])
        eventually(lambda: first.named("reset"), "a reset after the move", 60)
        (_, reset), *_ = first.named("reset")
        assert "moved between instances" in reset["reason"]
        before = len(first.changes())
        after = _as_produced(_new_keys(produce, instances.topic, "c"))
        eventually(lambda: _seen(first.changes()[before:]) >= after, "changes after the move", 60)
        assert first.named("dropped") == []
    finally:
        first.close()
        prefixed.close()


def _expected_at(*produced: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """The reduction of everything *produced* (key -> decoded value), and each live key's
    partition as the producer's delivery reports say."""
    both = type(produced[0])()
    both.records = [r for p in produced for r in p.records]
    partition_of = {k.decode(): p for p, _, k, _ in both.records}
    expected = expected_of(both)
    return expected, {k: partition_of[k] for k in expected}


def _owned(server: Server, topic: str) -> set[int]:
    table = _table(server)
    assert table is not None
    me = next(m for m in table["members"] if m["self"])
    return set(me["owned"].get(topic, []))


def _read_from_kafka(server: Server) -> list[int]:
    """The records each load of the view set out to read (``bootstrap.start ... expected``)."""
    found = re.findall(r"bootstrap\.start view=v .*?expected=(\d+)", server.output())
    return [int(n) for n in found]


def test_instances_seeded_from_a_snapshot_read_only_its_tail(
    instances: Instances, produce: Callable[..., Any]
) -> None:
    """A replicated store's snapshot seeds two partitioned instances: each keeps the
    partitions the group gives it (the others' keys dropped), reads only what came after
    the snapshot, and every key is answered as the whole log's reduction. A partitioned
    instance's own snapshot holds its partitions alone; a third instance seeded from it
    joins, reads from the log start only what the snapshot lacks, and answers too."""
    first = _produce_keys(produce, instances.topic)
    whole = instances.root / "whole"
    whole.mkdir()
    config = write_config(whole, [{"name": VIEW, "topic": instances.topic, "indexes": ["round"]}])
    snaps = instances.root / "snaps"
    for args in (["bootstrap"], ["snapshot", "create", str(snaps), "--json"]):
        done = run(["-c", config, *args], whole)
        assert done.returncode == 0, done.stderr
    tail = produce(
        instances.topic,
        [("key-0001", '{"i": 1, "round": 9}'), ("key-0004", None)]
        + [(f"tail-{i:03d}", f'{{"i": {i}, "round": 9}}') for i in range(30)],
        partitioner="murmur2_random",
    )
    expected, partition_of = _expected_at(first, tail)
    instances.store = {"seed": str(snaps)}
    servers = instances.start(2)
    wait_settled(servers)
    for server in servers:
        eventually(lambda s=server: not check_reads(s, sorted(expected), expected), "keys", 60)
        assert check_reads(server, [*all_keys(), "tail-000"], expected) == []
        log = server.output()
        assert "snapshot.restored" in log
        # Only the tail: never more than what came after the snapshot.
        assert _read_from_kafka(server) and max(_read_from_kafka(server)) <= len(tail.records)
        owned = _owned(server, instances.topic)
        held = server.http.get(f"/views/{VIEW}", headers=_headers()).json()["keys"]
        assert held == sum(1 for k in expected if partition_of[k] in owned)
    # A partitioned instance's snapshot: its own partitions' positions, its keys.
    taken = servers[0].http.post(
        "/admin/snapshot", json={"dest": str(instances.root / "own")}, headers=_headers()
    )
    assert taken.status_code == 201, taken.text
    positions = taken.json()["views"][VIEW]["positions"]
    assert {int(p) for p in positions} == _owned(servers[0], instances.topic)
    instances.store = {"seed": str(instances.root / "own")}
    (third,) = instances.start(1)
    wait_settled(instances.live())
    for server in instances.live():
        eventually(lambda s=server: not check_reads(s, sorted(expected), expected), "keys", 60)
    assert "snapshot.restored" in third.output()
    owned = _owned(third, instances.topic)
    held = third.http.get(f"/views/{VIEW}", headers=_headers()).json()["keys"]
    assert held == sum(1 for k in expected if partition_of[k] in owned)
