"""``GET /views/{view}/changes`` over real HTTP (uvicorn on 127.0.0.1) against the real broker."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_support import Kafka, Rec, make_config, ready_store, serve_app

from statestore import ApiConfig, Config, StateStore, TokenConfig, ViewConfig
from statestore.api import create_app
from statestore.api.changes import ChangeStreamSettings
from statestore.changes import ChangeId

pytestmark = pytest.mark.integration

ALL_TOKEN = "tok-changes-all-5d1e"
GATE_TOKEN = "tok-changes-gate-9a0c"
ENV = {"SS_CHANGES_ALL": ALL_TOKEN, "SS_CHANGES_GATE": GATE_TOKEN}


@dataclass
class Setup:
    """A store following its own topics, and the URLs of servers over it."""

    config: Config
    store: StateStore
    kafka: Kafka
    topics: dict[str, str]
    url: str
    slow_url: str
    secured_url: str


@pytest.fixture(scope="module")
def setup(kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Views orders (3 partitions), slow, pfx and gate, each on its own topic, served three ways."""
    topics = kafka.topics_for(orders=3, slow=1, pfx=1, gate=1)
    for topic in topics.values():
        kafka.produce(topic, [("seed", {"seed": True}, 0)])
    config = make_config(
        Path(tmp_path_factory.mktemp("changes")) / "store",
        [ViewConfig(name=name, topic=topic) for name, topic in topics.items()],
    )
    store = ready_store(config)
    secured = config.model_copy(
        update={
            "api": ApiConfig(
                tokens=(
                    TokenConfig(env="SS_CHANGES_ALL", name="all"),
                    TokenConfig(env="SS_CHANGES_GATE", views=("gate",), name="gate-reader"),
                )
            )
        }
    )
    slow_app = create_app(config, store=store)
    slow_app.state.change_stream = ChangeStreamSettings(max_pending=50, batch=20)
    try:
        with (
            serve_app(create_app(config, store=store)) as url,
            serve_app(slow_app, sndbuf=32 * 1024) as slow_url,
            serve_app(create_app(secured, store=store, environ=ENV)) as secured_url,
        ):
            yield Setup(config, store, kafka, topics, url, slow_url, secured_url)
    finally:
        store.close()


@dataclass(frozen=True)
class Event:
    event: str
    id: str | None
    data: dict[str, Any]


class EventStream:
    """A server-sent event client over one httpx streaming response."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, **params: str) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(60, connect=10))
        self._stream = self._client.stream("GET", url, headers=headers, params=params)
        self.response = self._stream.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> Event:
        """The next event (comments such as keep-alives are skipped)."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if "data" in fields:
                    return Event(
                        fields.get("event", "message"),
                        fields.get("id"),
                        orjson.loads(fields["data"]),
                    )
                fields.clear()
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        raise AssertionError("the stream ended")

    def changes(self, count: int) -> list[Event]:
        """The next *count* events, which must all be changes."""
        got = [self.next() for _ in range(count)]
        assert all(e.event == "change" for e in got), [e for e in got if e.event != "change"]
        return got

    def close(self) -> None:
        self._stream.__exit__(None, None, None)
        self._client.close()


@contextlib.contextmanager
def events(url: str, headers: dict[str, str] | None = None, **params: str) -> Iterator[EventStream]:
    stream = EventStream(url, headers, **params)
    try:
        yield stream
    finally:
        stream.close()


def applied(setup: Setup, view: str, positions: list[tuple[int, int]]) -> None:
    """Wait until *view* has applied every produced (partition, offset)."""
    last: dict[int, int] = {}
    for partition, offset in positions:
        last[partition] = max(offset, last.get(partition, -1))
    setup.store.wait_for(view, last, timeout=120)


def seq(event: Event) -> int:
    assert event.id is not None
    return ChangeId.parse(event.id).seq


def test_every_change_arrives_in_order_across_a_reconnect(setup: Setup) -> None:
    """Every put and delete on several partitions arrives once, in offset order per partition, across a disconnect and a Last-Event-ID reconnect."""
    url = f"{setup.url}/views/orders/changes"
    topic = setup.topics["orders"]
    keys = [f"o-{i:03d}" for i in range(300)]
    with events(url) as first:
        hello = first.next()
        assert hello.event == "subscribed" and hello.data["resumed"] is False
        puts: list[Rec] = [(k, {"n": i}, i % 3) for i, k in enumerate(keys)]
        produced = dict(zip(setup.kafka.produce(topic, puts), puts, strict=True))
        received = first.changes(150)
    last_id = received[-1].id
    assert last_id is not None
    applied(setup, "orders", list(produced))
    # Each key changes once per phase, so no batch folds two changes of a key together.
    updates: list[Rec] = [(k, {"n": i, "v": 2}, i % 3) for i, k in enumerate(keys[:100])]
    deletes: list[Rec] = [(k, None, (i + 100) % 3) for i, k in enumerate(keys[100:200])]
    later = updates + deletes
    produced.update(zip(setup.kafka.produce(topic, later), later, strict=True))
    applied(setup, "orders", list(produced))

    with events(url, headers={"Last-Event-ID": last_id}) as again:
        hello = again.next()
        assert hello.event == "subscribed" and hello.data["resumed"] is True
        assert hello.id == last_id
        received += again.changes(len(produced) - len(received))
        marker = setup.kafka.produce(topic, [("o-marker", {"end": True}, 0)])
        (after,) = again.changes(1)
    assert (after.data["partition"], after.data["offset"]) == marker[0]

    numbers = [seq(e) for e in received]
    assert numbers == list(range(numbers[0], numbers[0] + len(received)))
    positions = [(e.data["partition"], e.data["offset"]) for e in received]
    assert sorted(positions) == sorted(produced)
    for partition in range(3):
        offsets = [o for p, o in positions if p == partition]
        assert offsets == sorted(offsets)
    for event in received:
        key, value, _ = produced[(event.data["partition"], event.data["offset"])]
        assert event.data["key"] == key
        assert event.data["value"] == value
        assert event.data["op"] == ("delete" if value is None else "put")
        assert (event.data["timestamp"] is None) == (value is None)


def test_a_slow_client_is_dropped_without_holding_back_ingest(setup: Setup) -> None:
    """A client that stops reading neither slows ingest nor other clients; when it reads again it is told it was dropped."""
    topic = setup.topics["slow"]
    host, port = setup.slow_url.removeprefix("http://").split(":")
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(60)
    slow.connect((host, int(port)))
    try:
        slow.sendall(
            f"GET /views/slow/changes HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        seen = b""
        while b"event: subscribed" not in seen:
            chunk = slow.recv(4096)
            assert chunk, "the server closed the stream"
            seen += chunk
        assert seen.startswith(b"HTTP/1.1 200")
        # From here on the slow client reads nothing until ingest has caught up.
        with events(f"{setup.url}/views/slow/changes") as fast:
            assert fast.next().event == "subscribed"
            records: list[Rec] = [
                (f"s-{i:04d}", {"n": i, "pad": "x" * 2000}, 0) for i in range(3000)
            ]
            positions = setup.kafka.produce(topic, records)
            applied(setup, "slow", positions)
            got = fast.changes(len(records))
        assert [(e.data["partition"], e.data["offset"]) for e in got] == positions

        tail = b""
        while b"event: dropped" not in tail:
            chunk = slow.recv(65536)
            assert chunk, "the stream ended without telling the client it was dropped"
            tail = tail[-64:] + chunk
        rest = tail[tail.index(b"event: dropped") :]
        while b"\n\n" not in rest:
            rest += slow.recv(4096)
        data = orjson.loads(rest.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        assert "fell behind" in data["message"]
        ChangeId.parse(data["last_id"])
    finally:
        slow.close()


def test_prefix_filters_changes_by_key_text(setup: Setup) -> None:
    """With prefix=, only changes of keys whose text starts with it are streamed."""
    topic = setup.topics["pfx"]
    with events(f"{setup.url}/views/pfx/changes", prefix="a/") as stream:
        assert stream.next().event == "subscribed"
        setup.kafka.produce(
            topic, [("a/1", 1, 0), ("b/1", 2, 0), ("a/2", 3, 0), ("ab", 4, 0), ("a/3", 5, 0)]
        )
        got = stream.changes(3)
    assert [(e.data["key"], e.data["value"]) for e in got] == [("a/1", 1), ("a/2", 3), ("a/3", 5)]


def test_an_unknown_last_event_id_resets_then_streams(setup: Setup) -> None:
    """A Last-Event-ID from before a server restart gets event: reset, then the changes applied from then on."""
    url = f"{setup.url}/views/gate/changes"
    with events(url, headers={"Last-Event-ID": "0badc0de-0-41"}) as stream:
        hello = stream.next()
        assert hello.event == "subscribed" and hello.data["resumed"] is False
        reset = stream.next()
        assert reset.event == "reset" and "restarted" in reset.data["reason"]
        assert reset.id == hello.id
        (position,) = setup.kafka.produce(setup.topics["gate"], [("g-1", {"g": 1}, 0)])
        (change,) = stream.changes(1)
    assert (change.data["partition"], change.data["offset"]) == position
    assert seq(change) == seq(reset) + 1


def test_a_malformed_last_event_id_is_refused(setup: Setup) -> None:
    """A Last-Event-ID this server never writes answers 422 before any stream starts."""
    response = httpx.get(
        f"{setup.url}/views/gate/changes", headers={"Last-Event-ID": "yesterday"}, timeout=10
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_unknown_view_is_404(setup: Setup) -> None:
    """The change stream of a view that is not configured answers 404 unknown_view."""
    response = httpx.get(f"{setup.url}/views/nope/changes", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_view"


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [(None, 401, "unauthorized"), ("wrong", 401, "unauthorized"), (GATE_TOKEN, 403, "forbidden")],
)
def test_the_stream_needs_a_token_scoped_to_the_view(
    setup: Setup, token: str | None, status: int, code: str
) -> None:
    """Without a valid token, or with one not scoped to the view, the stream is refused."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{setup.secured_url}/views/orders/changes", headers=headers, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_a_scoped_token_streams_its_view(setup: Setup) -> None:
    """A token scoped to the view opens its event stream, which carries the view's position."""
    headers = {"Authorization": f"Bearer {GATE_TOKEN}"}
    with events(f"{setup.secured_url}/views/gate/changes", headers=headers) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert "X-Statestore-Position" in stream.response.headers
        assert stream.next().event == "subscribed"


def test_closing_the_store_ends_its_streams(kafka: Kafka, tmp_path: Path) -> None:
    """A store that closes closes its change feeds: an open stream ends, and a new one is
    refused as not ready."""
    topics = kafka.topics_for(closing=1)
    config = make_config(tmp_path / "store", [ViewConfig(name="closing", topic=topics["closing"])])
    store = ready_store(config)
    try:
        with serve_app(create_app(config, store=store)) as url:
            with events(f"{url}/views/closing/changes") as stream:
                assert stream.next().event == "subscribed"
                store.close()
                with pytest.raises(AssertionError, match="the stream ended"):
                    stream.next()
            response = httpx.get(f"{url}/views/closing/changes", timeout=10)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "not_ready"
    finally:
        store.close()
