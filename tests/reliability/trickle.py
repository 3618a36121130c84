"""A background producer of entity updates and tombstones, switched on and off by a test,
so that kills and broker stops land while a view follows new records."""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from reliability_support import entity_records

from tests.support.kafka import fast_producer


@dataclass(eq=False)
class Trickle:
    """While ``on`` is set, produces *batch* records over *keys* keys (sequence numbers from
    *seq* on) every *interval* seconds to *topic*, keys drawn from a generator seeded with
    *seed*; *producer* adds producer properties."""

    bootstrap: str
    topic: str
    seed: int
    # Above the sequence numbers of a test's initial records: its updates are told apart.
    seq: int = 10_000_000
    _: KW_ONLY
    keys: int
    batch: int
    interval: float
    producer: dict[str, Any] | None = None
    on: threading.Event = field(default_factory=threading.Event, init=False)
    done: threading.Event = field(default_factory=threading.Event, init=False)
    errors: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # Held while a batch is produced: pause() takes it to know no batch is under way.
        self._batch_lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._producer = fast_producer(self.bootstrap, **{"linger.ms": 5, **(self.producer or {})})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _run(self) -> None:
        while not self.done.is_set():
            if not self.on.wait(0.1):
                continue
            with self._batch_lock:
                if not self.on.is_set():
                    continue
                records = entity_records(self._rng, self.batch, keys=self.keys, start=self.seq)
                for key, value in records:
                    with contextlib.suppress(BufferError):
                        self._producer.produce(
                            self.topic, key=key, value=value, on_delivery=self._report
                        )
                self.seq += self.batch
                self._producer.poll(0)
            self.done.wait(self.interval)  # the pace of the updates; ends at once when done

    def pause(self) -> None:
        """Stop producing and wait until everything produced so far is in the log."""
        self.on.clear()
        with self._batch_lock:  # a batch under way ends; none starts once `on` is clear
            pass
        assert self._producer.flush(120) == 0, "records were not delivered"
        assert not self.errors, self.errors[:3]

    def close(self) -> None:
        """Stop the thread and flush what is left, without asserting (for a ``finally:``)."""
        self.on.clear()
        self.done.set()
        self._thread.join(10)
        self._producer.flush(120)
