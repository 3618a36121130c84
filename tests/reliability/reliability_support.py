"""Helpers for the reliability tests: topics, fast producers, the independent log reduction,
`statestore` subprocesses and the comparison of a view with its log.

The reduction of a topic is computed here with a plain consumer and no statestore code:
it is the oracle every test compares the view with.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from statestore import StateStore, load_config

REPO = Path(__file__).resolve().parents[2]
STATESTORE = REPO / ".venv" / "bin" / "statestore"
SHARED_BOOTSTRAP = os.environ.get("STATESTORE_TEST_BOOTSTRAP", "127.0.0.1:9092")
REGISTRY_URL = os.environ.get("STATESTORE_TEST_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7")

# (key, value, headers); value None is a tombstone.
Rec = tuple[bytes | None, bytes | None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: none of the caller's STATESTORE_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")}
    env.update(extra)
    return env


# -- topics and producers ---------------------------------------------------------------


class Topics:
    """Uniquely named topics on one broker, deleted by :meth:`close`."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.created: list[str] = []

    def create(self, partitions: int = 3, *, prefix: str = "rel", **config: str) -> str:
        name = f"statestore-{prefix}-{uuid.uuid4().hex[:10]}"
        conf = {"cleanup.policy": "compact", **config}
        # A broker started moments ago may not take CreateTopics at once (its controller
        # is still settling): ask again rather than fail the scenario on set-up.
        for attempt in range(4):
            future = self.admin.create_topics([NewTopic(name, partitions, 1, config=conf)])[name]
            try:
                future.result(30)
                break
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    break
                if attempt == 3:
                    raise
            except TimeoutError:
                if attempt == 3:
                    raise
        self.created.append(name)
        return name

    def close(self) -> None:
        if self.created:
            with contextlib.suppress(KafkaException):
                for fut in self.admin.delete_topics(self.created, operation_timeout=30).values():
                    with contextlib.suppress(KafkaException):
                        fut.result(30)
            self.created.clear()


def fast_producer(bootstrap: str, **conf: Any) -> Producer:
    """A producer tuned for throughput: batches of up to 10k records, lz4, 50 ms linger."""
    base: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 50,
        "compression.type": "lz4",
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "enable.idempotence": True,
        # Connection failures while a broker is stopped on purpose are expected; delivery
        # errors still reach the callbacks.
        "log_level": 2,
    }
    base.update(conf)
    return Producer(base)


def produce_all(
    producer: Producer,
    topic: str,
    records: Iterable[Rec],
    *,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    on_delivery: Callable[[Any, Any], None] | None = None,
) -> int:
    """Produce *records* and wait for all of them; fail on any delivery error."""
    errors: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        elif on_delivery is not None:
            on_delivery(err, msg)

    n = 0
    for key, value in records:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
    left = producer.flush(120)
    if errors or left:
        raise AssertionError(f"produce to {topic} failed: {errors[:3] or f'{left} undelivered'}")
    return n


def entity_records(
    rng: random.Random, n: int, *, keys: int, start: int = 0, tombstones: float = 0.1
) -> Iterator[Rec]:
    """*n* JSON records over *keys* keys, ``tombstones`` of them deletes; values carry a seq."""
    for i in range(start, start + n):
        key = f"k-{rng.randrange(keys):06d}".encode()
        if rng.random() < tombstones:
            yield key, None
        else:
            yield key, orjson.dumps({"seq": i, "pad": "x" * rng.randrange(10, 120)})


# -- the independent reduction of a log ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_log(bootstrap: str, topic: str, timeout: float = 180.0) -> list[LogRecord]:
    """Every record of *topic* up to the high watermarks of now, with a plain consumer."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic=topic, timeout=30).topics[topic]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"statestore-oracle-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        }
    )
    try:
        highs = {}
        for p in md.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            highs[p] = high
        wanted = {p for p, h in highs.items() if h > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(wanted)])
        out: list[LogRecord] = []
        deadline = time.monotonic() + timeout
        while wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} did not reach {highs} in {timeout}s")
            for m in consumer.consume(10_000, 0.5):
                if m.error() is not None:
                    raise AssertionError(f"oracle consumer error on {topic}: {m.error()}")
                p, o = m.partition(), m.offset()
                if o < highs[p]:
                    out.append(LogRecord(p, o, m.key(), m.value()))
                if o + 1 >= highs[p]:
                    wanted.discard(p)
        return out
    finally:
        consumer.close()


def reduce_log(
    records: Iterable[LogRecord], is_good: Callable[[LogRecord], bool] = lambda r: True
) -> dict[bytes, LogRecord]:
    """Last good record per key in log order; a tombstone removes the key."""
    out: dict[bytes, LogRecord] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is None or not is_good(r):
            continue
        if r.value is None:
            out.pop(r.key, None)
        else:
            out[r.key] = r
    return out


# -- the view and the comparison -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEntity:
    partition: int
    offset: int
    value: Any


def read_view(config_path: Path, view: str) -> tuple[dict[bytes, StoredEntity], Any]:
    """Every entity of *view* through the embedded API, read-only, and the view's status."""
    with StateStore(load_config(config_path), read_only=True) as store:
        v = store.view(view)
        entities = {
            v.key_codec.from_text(e.key): StoredEntity(e.partition, e.offset, e.value)
            for e in v.iter_entities()
        }
        return entities, v.status()


def index_differences(config_path: Path, view: str, field: str) -> list[str]:
    """Values of an indexed *field* whose index lookup differs from a scan of the view."""
    with StateStore(load_config(config_path), read_only=True) as store:
        by_value: dict[Any, set[str]] = {}
        for e in store.view(view).iter_entities():
            if isinstance(e.value, dict) and field in e.value:
                by_value.setdefault(e.value[field], set()).add(e.key)
        diffs = []
        for value, keys in sorted(by_value.items(), key=lambda kv: repr(kv[0])):
            hits = {e.key for e in store.by(view, field, value, limit=1_000_000).items}
            if hits != keys:
                diffs.append(f"{field}={value!r}: index {len(hits)} keys, view {len(keys)}")
        return diffs


def differences(
    view: dict[bytes, StoredEntity],
    expected: dict[bytes, LogRecord],
    decode: Callable[[bytes], Any] = orjson.loads,
    limit: int = 20,
) -> list[str]:
    """Key-by-key differences between a view and the reduction of its log (empty: equal)."""
    diffs: list[str] = []
    for key in sorted(set(view) | set(expected)):
        got, want = view.get(key), expected.get(key)
        if got is None:
            diffs.append(f"{key!r}: missing (log has offset {want.partition}:{want.offset})")  # type: ignore[union-attr]
        elif want is None:
            diffs.append(f"{key!r}: in the view ({got.partition}:{got.offset}) but not in the log")
        elif (got.partition, got.offset) != (want.partition, want.offset):
            diffs.append(
                f"{key!r}: view has {got.partition}:{got.offset}, log {want.partition}:{want.offset}"
            )
        elif want.value is not None and got.value != decode(want.value):
            diffs.append(f"{key!r}: value differs at {got.partition}:{got.offset}")
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


# -- statestore subprocesses -------------------------------------------------------------


def write_config(
    directory: Path,
    views: list[dict[str, Any]],
    *,
    bootstrap: str,
    store: Path | None = None,
    port: int | None = None,
    kafka: dict[str, Any] | None = None,
    store_options: dict[str, Any] | None = None,
    registry: str | None = None,
    name: str = "statestore.toml",
) -> Path:
    """A TOML config file in *directory* (its store beside it unless *store* is given)."""
    lines = ["[kafka]", f'"bootstrap.servers" = {json.dumps(bootstrap)}']
    for k, v in (kafka or {}).items():
        lines.append(f"{json.dumps(k)} = {json.dumps(v)}")
    lines += ["", "[store]", f"path = {json.dumps(str(store or directory / 'store'))}"]
    for k, v in (store_options or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines += ["", "[api]", 'host = "127.0.0.1"', f"port = {port or free_port()}", ""]
    if registry is not None:
        lines += ["[schema_registry]", f"url = {json.dumps(registry)}", ""]
    for view in views:
        lines.append("[[views]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in view.items()]
        lines.append("")
    path = directory / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_cli(
    args: list[str | Path], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STATESTORE), *map(str, args)],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Proc:
    """A `statestore` subprocess whose stderr goes to a log file that can be searched."""

    def __init__(self, args: list[str | Path], cwd: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [str(STATESTORE), *map(str, args)],
            cwd=cwd,
            env=clean_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._offset = log.stat().st_size

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """What this process wrote so far."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_line(self, needle: str, timeout: float) -> bool:
        """True once *needle* appears in the output; False when the process ended or time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return True
            if not self.alive():
                return needle in self.output()
            time.sleep(0.02)
        return False

    def kill(self) -> int:
        """SIGKILL and reap; return the exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        code = self.popen.wait(60)
        self._log.close()
        return code

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, wait, SIGKILL if it does not end; return the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(30)
        self._log.close()
        return code

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._log.close()
        return code

    def rss_bytes(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None


class Server(Proc):
    """`statestore serve` on a loopback port."""

    def __init__(self, config: Path, port: int, cwd: Path, log: Path) -> None:
        super().__init__(["-c", config, "serve", "--port", str(port)], cwd, log)
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(
                    f"serve exited with {self.popen.returncode}:\n{self.output()[-3000:]}"
                )
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"serve did not become ready in {timeout}s:\n{self.output()[-3000:]}")

    def view_info(self, view: str) -> dict[str, Any]:
        response = self.http.get(f"/views/{view}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait_caught_up(self, view: str, ends: dict[int, int], timeout: float = 180) -> None:
        """Until the view's positions reach *ends* (partition -> high watermark)."""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                info = self.view_info(view)
                pos = {p["partition"]: p["position"] for p in info["partitions"]}
                if all(pos.get(p, 0) >= e for p, e in ends.items()):
                    return
            time.sleep(0.2)
        raise AssertionError(f"view {view} did not reach {ends}: {info}")

    def close(self) -> int:
        self.http.close()
        return self.terminate()


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "statestore-oracle-marks"})
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in sorted(md.partitions)
        }
    finally:
        consumer.close()
