"""Shared fixtures: the real local broker (started by `make test`), topics, producers, configs."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from statestore import Config, StoreConfig, ViewConfig

BOOTSTRAP = os.environ.get("STATESTORE_TEST_BOOTSTRAP", "127.0.0.1:9092")

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
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(
            f"no Kafka broker answers at {BOOTSTRAP}: start it with `scripts/local-kafka start` "
            f"(make test does) — {exc}"
        )
    return BOOTSTRAP


@pytest.fixture(scope="session")
def admin(bootstrap_servers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers})


@pytest.fixture
def topic_factory(admin: AdminClient) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics (compacted by default); deleted after the test."""
    created: list[str] = []

    def make(partitions: int = 3, *, prefix: str = "t", **config: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        conf = {"cleanup.policy": "compact"}
        conf.update({k.replace("_", "."): v for k, v in config.items()})
        admin.create_topics([NewTopic(name, partitions, 1, config=conf)])[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                fut.result(timeout=30)


class Produced:
    """What a producer wrote: (partition, offset, key, value) in order."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, bytes | None, bytes | None]] = []

    def latest(self) -> dict[bytes, bytes]:
        """The reduction of the log: last value per key, tombstones removing keys."""
        out: dict[bytes, bytes] = {}
        for _, _, key, value in sorted(self.records, key=lambda r: (r[0], r[1])):
            if key is None:
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
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
        p = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5, **conf})
        out = Produced()

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                raise AssertionError(f"delivery failed: {err}")
            out.records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

        for key, value in records:
            kwargs: dict[str, Any] = {"key": _b(key), "value": _b(value), "on_delivery": report}
            if partition is not None:
                kwargs["partition"] = partition
            if headers:
                kwargs["headers"] = headers
            while True:
                try:
                    p.produce(topic, **kwargs)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(30) == 0, "producer did not deliver everything"
        return out

    return send


@pytest.fixture
def make_config(tmp_path: Path, bootstrap_servers: str) -> Callable[..., Config]:
    """Build a Config with the given views, a store under tmp_path and the local broker."""

    def make(*views: ViewConfig | dict[str, Any], store: str = "store", **kafka: Any) -> Config:
        vs = tuple(v if isinstance(v, ViewConfig) else ViewConfig(**v) for v in views)
        kconf: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, **kafka}
        return Config(kafka=kconf, store=StoreConfig(path=tmp_path / store), views=vs)

    return make
