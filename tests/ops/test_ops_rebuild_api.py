"""POST /views/{view}/rebuild: a rebuild beside the served copy, swapped in under live readers."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient
from ops_support import send

from statestore import ApiConfig, Config, StateStore, TokenConfig
from statestore.api import create_app
from tests.support.env import Env
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def following(env: Env) -> Iterator[tuple[StateStore, TestClient]]:
    """A started store over 3 partitions of 20,000 keys, caught up, and a client of its app.

    Its reads take seconds by construction (a fetch of 4 KB per partition, then 100 ms
    before the next once a record waits in the queue), so readers see a rebuild under way.
    """
    topic = env.topic(3)
    env.produce(topic, [(f"k{i:05d}", b'{"n": %d}' % i) for i in range(20_000)])
    slow_reads = {
        "max.partition.fetch.bytes": 4096,
        "queued.min.messages": 1,
        "fetch.queue.backoff.ms": 100,
    }
    config = env.config({"name": "v", "topic": topic}, {"name": "w", "topic": topic}, **slow_reads)
    with StateStore(config) as store:
        store.start()
        eventually(store.ready, "the views caught up")
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            yield store, client


def test_readers_see_no_404_and_no_503_while_a_view_is_rebuilt_and_swapped(
    following: tuple[StateStore, TestClient],
) -> None:
    """Reader threads getting live keys during an online rebuild get 200 every time, before, during and after the swap."""
    store, client = following
    stop = threading.Event()
    codes: Counter[int] = Counter()
    states: Counter[str] = Counter()
    lock = threading.Lock()

    def read(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            state = store.view("v").state
            key = f"k{rnd.randrange(20_000):05d}"
            resp = client.get(f"/views/v/entities/{key}")
            ok = resp.status_code == 200 and resp.json()["key"] == key
            with lock:
                codes[resp.status_code if ok else -resp.status_code] += 1
                states[state] += 1

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(4)]
    for t in readers:
        t.start()
    try:
        eventually(lambda: sum(codes.values()) >= 200, "the readers got going")
        resp = client.post("/views/v/rebuild", params={"wait": "true"})
        after = sum(codes.values())
        eventually(lambda: sum(codes.values()) >= after + 200, "reads after the swap")
    finally:
        stop.set()
        for t in readers:
            t.join(30)

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["state"], body["generation"], body["keys"], body["rebuilds"]) == (
        "ready",
        1,
        20_000,
        1,
    )
    assert set(codes) == {200}, codes
    assert states["rebuilding"] > 0, states
    assert store.view("w").status().generation == 0


def test_rebuild_answers_202_at_once_and_the_view_status_shows_the_swap(
    following: tuple[StateStore, TestClient],
) -> None:
    """Without wait, the route answers 202 with the view rebuilding (or done) and a Location; the swap follows."""
    _, client = following

    resp = client.post("/views/v/rebuild")

    assert resp.status_code == 202, resp.text
    assert resp.headers["location"] == "/views/v"
    assert "x-statestore-position" in resp.headers
    body = resp.json()
    assert body["state"] == "rebuilding" or body["generation"] == 1
    eventually(
        lambda: (
            client.get("/views/v").json()["generation"] == 1
            and client.get("/views/v").json()["state"] == "ready"
        ),
        "the swap",
    )


def test_rebuild_of_an_unknown_view_is_404(following: tuple[StateStore, TestClient]) -> None:
    """An unknown view answers 404 unknown_view, like every view route."""
    _, client = following

    resp = client.post("/views/nope/rebuild")

    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "unknown_view"


def test_rebuild_is_scoped_by_token(env: Env) -> None:
    """Without a token the route is 401; a token scoped to other views is 403, and so is a
    read token of the view; an admin token of the view rebuilds."""
    topic = env.topic(1)
    env.produce(topic, [("a", b"{}")])
    base = env.config({"name": "v", "topic": topic}, {"name": "w", "topic": topic})
    config = base.model_copy(
        update={
            "api": ApiConfig(
                tokens=(
                    TokenConfig(env="OPS_T", views=("w",), name="ops", admin=True),
                    TokenConfig(env="READ_T", views=("w",), name="reader"),
                )
            )
        }
    )
    with StateStore(config) as store:
        store.start()
        eventually(store.ready, "the views caught up")
        app = create_app(config, store=store, environ={"OPS_T": "tok", "READ_T": "rd"})
        with TestClient(app, base_url="http://localhost") as client:
            anonymous = client.post("/views/v/rebuild")
            other = client.post("/views/v/rebuild", headers={"Authorization": "Bearer tok"})
            reader = client.post("/views/w/rebuild", headers={"Authorization": "Bearer rd"})
            fitting = client.post(
                "/views/w/rebuild", params={"wait": "true"}, headers={"Authorization": "Bearer tok"}
            )

    assert anonymous.status_code == 401
    assert other.status_code == 403
    assert reader.status_code == 403
    assert "admin = true" in reader.json()["error"]["message"]
    assert fitting.status_code == 200, fitting.text
    assert fitting.json()["generation"] == 1


def test_a_failed_view_rebuilt_through_the_api_follows_its_topic_again(
    topic_factory: Callable[..., str],
    admin: AdminClient,
    make_config: Callable[..., Config],
) -> None:
    """A view failed by on_stale=fail is rebuilt on request, then applies new records again."""
    topic = topic_factory(1, cleanup_policy="compact,delete")
    send(topic, [(f"a{i}", {"i": i}, 0, None) for i in range(5)])
    config = make_config({"name": "v", "topic": topic, "on_stale": "fail"})
    with StateStore(config) as store:
        store.bootstrap()
    send(topic, [(f"b{i}", {"i": i}, 0, None) for i in range(5)])
    for future in admin.delete_records([TopicPartition(topic, 0, 7)]).values():
        future.result(timeout=30)
    with StateStore(config) as store:
        store.start()
        eventually(lambda: store.view("v").state == "failed", "the view failed")
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            resp = client.post("/views/v/rebuild", params={"wait": "true"})
            send(topic, [("c", {"i": 0}, 0, None)])
            eventually(lambda: store.get("v", "c") is not None, "the new record applied")
            status = client.get("/views/v").json()

    assert resp.status_code == 200, resp.text
    assert status["state"] == "ready"
    assert status["keys"] == 4
