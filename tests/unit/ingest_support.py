"""An Ingestor over an in-memory topic log and a real RocksDB store: the ingest loop without a broker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from statestore.config import ViewConfig
from statestore.cursor import CursorSigner
from statestore.ingest import Ingestor, Progress
from statestore.storage import Storage
from statestore.testing import MemoryKafka, MemoryTopic
from statestore.view import View
from tests.support.waits import eventually

TOPIC = "t"


class StopAfter(threading.Event):
    """A stop event that is set once the loop has asked *turns* times, or once *when()* is
    true: a single-threaded test runs the loop for a bounded number of turns, never a duration.

    Waits return at once; the timeouts asked for are kept in ``waits`` (the backoff).
    """

    def __init__(self, turns: int = 10_000, when: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.turns = turns
        self.when = when
        self.asked = 0
        self.waits: list[float] = []

    def is_set(self) -> bool:
        self.asked += 1
        if self.asked >= self.turns or (self.when is not None and self.when()):
            self.set()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()


@dataclass
class Harness:
    """One view of one in-memory topic, its ingestor, and what the view went through."""

    kafka: MemoryKafka
    topic: MemoryTopic
    storage: Storage
    view: View
    ingestor: Ingestor
    view_factory: Callable[[ViewConfig, Storage], View]
    states: list[tuple[str, str | None]] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)

    def catch_up(self, stop: threading.Event | None = None) -> bool:
        return self.ingestor.catch_up(stop or StopAfter(), self.progress.append)

    @contextlib.contextmanager
    def following(self) -> Iterator[threading.Event]:
        """The ingestor following in a thread of its own; stopped and joined on the way out."""
        stop = threading.Event()
        thread = threading.Thread(target=self.ingestor.follow, args=(stop,), daemon=True)
        thread.start()
        try:
            yield stop
        finally:
            stop.set()
            thread.join(10)
            assert not thread.is_alive(), "the follower did not stop"

    def until(self, check: Callable[[], bool], what: str) -> None:
        eventually(check, what, timeout=5.0)

    def entities(self) -> dict[str, Any]:
        return {e.key: e.value for e in self.view.iter_entities()}

    def expected(self) -> dict[str, Any]:
        """The reduction of the topic as it is now: the view must equal it."""
        return {k.decode(): orjson.loads(v) for k, v in self.topic.latest().items()}

    def ends(self) -> dict[int, int]:
        return {p: self.topic.watermarks(p)[1] for p in range(self.topic.partitions)}

    def positions(self) -> dict[int, int]:
        return dict(self.view.slot.positions)

    def seen(self, state: str) -> bool:
        return any(s == state for s, _ in self.states)

    def restart(self, **options: Any) -> Harness:
        """A new view and ingestor over the same store (a process restart), same topic."""
        self.ingestor.close()
        return make_harness(
            self.kafka,
            self.topic,
            self.storage,
            self.view.config,
            view_factory=self.view_factory,
            **options,
        )


def make_harness(
    kafka: MemoryKafka,
    topic: MemoryTopic,
    storage: Storage,
    config: ViewConfig,
    *,
    view_factory: Callable[[ViewConfig, Storage], View] | None = None,
    **options: Any,
) -> Harness:
    view_factory = view_factory or plain_view
    view = view_factory(config, storage)
    view.prepare()
    settings: dict[str, Any] = {
        "batch_size": 50,
        "poll_timeout": 0.01,
        "metadata_interval": 0.0,
        "wait_interval": 0.0,
        "hole_settle": 0.0,
    }
    settings.update(options)
    harness = Harness(kafka, topic, storage, view, Ingestor(view, kafka, **settings), view_factory)
    view.watch(lambda: harness.states.append((view.state, view.reason)))
    return harness


def plain_view(config: ViewConfig, storage: Storage) -> View:
    return View(config, storage, CursorSigner(b"s" * 32))


HarnessFactory = Callable[..., Harness]


def harness_factory(tmp_path: Path) -> Iterator[HarnessFactory]:
    """Make harnesses (a new topic in a new MemoryKafka each); close their stores afterwards."""
    stores: list[Storage] = []

    def make(
        partitions: int = 3,
        *,
        topic_config: dict[str, str] | None = None,
        view_factory: Callable[[ViewConfig, Storage], View] | None = None,
        options: dict[str, Any] | None = None,
        **view_options: Any,
    ) -> Harness:
        kafka = MemoryKafka()
        topic = kafka.create_topic(TOPIC, partitions, topic_config)
        storage = Storage(tmp_path / f"store{len(stores)}")
        stores.append(storage)
        config = ViewConfig(name="v", topic=TOPIC, **view_options)
        return make_harness(
            kafka, topic, storage, config, view_factory=view_factory, **(options or {})
        )

    yield make
    for storage in stores:
        storage.close()


@pytest.fixture
def harness_fixture(tmp_path: Path) -> Iterator[HarnessFactory]:
    """Make a view of a new in-memory topic with its ingestor (stores closed afterwards);
    a test module takes it as ``harness = harness_fixture``."""
    yield from harness_factory(tmp_path)


def doc(i: int, **more: Any) -> bytes:
    return orjson.dumps({"i": i, **more})
