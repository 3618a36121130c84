"""Fixtures every suite may use: the real local broker (started by `make services`), topics,
producers, configs. They are built from tests/support, which holds the plain functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from statestore import Config, ViewConfig
from tests.support.config import store_config
from tests.support.env import Env
from tests.support.kafka import BOOTSTRAP, Topics, produce_all, require_broker
from tests.support.oracle import LogRecord, reduce_log

KV = tuple[bytes | str | None, bytes | str | None]

# The logs of the services `make test` starts, and the lines of each worth showing
# (the registry's include its access log; the broker's INFO lines are routine).
_VAR = Path(__file__).resolve().parents[1] / "var"
_SERVICE_LOGS = {
    "schema registry": (_VAR / "registry/logs/registry.log", ("",)),
    "Kafka broker warnings and errors": (_VAR / "kafka/logs/server.log", (" WARN ", " ERROR ")),
    "S3 server (s3proxy) warnings and errors": (
        _VAR / "s3/logs/s3proxy.log",
        (" WARN ", " ERROR "),
    ),
}
_TAIL_LINES = 30


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """After a failed run, the last lines of each service log: a hung or restarted
    service is then visible in the CI output, not only on the machine that ran it."""
    if exitstatus == 0:
        return
    for name, (path, marks) in _SERVICE_LOGS.items():
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if any(m in line for m in marks)]
        lines = lines[-_TAIL_LINES:]
        if not lines:
            continue
        terminalreporter.write_sep("-", f"{name} log, last {len(lines)} lines ({path})")
        for line in lines:
            terminalreporter.write_line(line[:400])


def _b(x: bytes | str | None) -> bytes | None:
    return x.encode() if isinstance(x, str) else x


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    """The local broker's address; fails (never skips) when the broker is not running."""
    require_broker(BOOTSTRAP, "start it with `make services`")
    return BOOTSTRAP


@pytest.fixture(scope="session")
def admin(bootstrap_servers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers})


@pytest.fixture
def topics(bootstrap_servers: str) -> Iterator[Topics]:
    """Unique compacted topics for one test, deleted after it."""
    made = Topics(bootstrap_servers)
    yield made
    made.close()


@pytest.fixture
def topic_factory(topics: Topics) -> Callable[..., str]:
    """``topic_factory(partitions=3, *, prefix=..., **config)``: a uniquely named topic
    (compacted unless *config* says otherwise), deleted after the test."""
    return topics.create


class Produced:
    """What a producer wrote: (partition, offset, key, value) in order."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, bytes | None, bytes | None]] = []

    def latest(self) -> dict[bytes, bytes]:
        """The reduction of the log: last value per key, tombstones removing keys."""
        reduced = reduce_log(LogRecord(*r) for r in self.records)
        return {key: r.value for key, r in reduced.items() if r.value is not None}

    def last_offsets(self) -> dict[int, int]:
        """The offset of the last record written to each partition: the position to wait for."""
        out: dict[int, int] = {}
        for partition, offset, _, _ in self.records:
            out[partition] = max(offset, out.get(partition, -1))
        return out


@pytest.fixture
def produce(bootstrap_servers: str) -> Callable[..., Produced]:
    """Produce records synchronously; returns their partitions and offsets."""

    def send(
        topic: str,
        records: Iterable[KV],
        *,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        **conf: Any,
    ) -> Produced:
        out = Produced()

        def delivered(err: Any, msg: Any) -> None:
            out.records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

        # Idempotent unless *conf* says otherwise: the log holds the records in the order
        # given, a retried batch neither doubled nor moved behind a later one.
        producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "linger.ms": 5,
                "enable.idempotence": True,
                **conf,
            }
        )
        produce_all(
            producer,
            topic,
            ((_b(key), _b(value)) for key, value in records),
            partition=partition,
            headers=headers,
            on_delivery=delivered,
            timeout=30,
        )
        return out

    return send


@pytest.fixture
def make_config(tmp_path: Path, bootstrap_servers: str) -> Callable[..., Config]:
    """Build a Config with the given views, a store under tmp_path and the local broker."""

    def make(*views: ViewConfig | dict[str, Any], store: str = "store", **kafka: Any) -> Config:
        return store_config(tmp_path / store, views, bootstrap=bootstrap_servers, kafka=kafka)

    return make


@pytest.fixture
def env(
    topic_factory: Callable[..., str],
    produce: Callable[..., Produced],
    make_config: Callable[..., Config],
) -> Env:
    """``topic_factory``, ``produce`` and ``make_config`` as one (tests/support/env.py)."""
    return Env(topic_factory, produce, make_config)
