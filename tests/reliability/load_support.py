"""Load for the API and soak tests: self-checking entity values, a steady writer that
remembers where each record landed, and readers that hammer every read route and check
each entity they get back."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson

from tests.support.config import write_config
from tests.support.kafka import Topics, fast_producer, produce_all
from tests.support.processes import Server, free_port

KEYS = [f"e-{i:05d}" for i in range(5000)]
STATUSES = ("created", "in_transit", "delivered")
# Sequence numbers of the writer start here; lower ones are the seed values.
FIRST_SEQ = 1_000_000


def entity(key: str, seq: int) -> dict[str, Any]:
    """A value that proves itself whole: its digest covers every other field."""
    payload = hashlib.blake2b(f"{key}/{seq}".encode(), digest_size=32).hexdigest() * (1 + seq % 6)
    status = STATUSES[seq % 3]
    return {
        "key": key,
        "seq": seq,
        "status": status,
        "payload": payload,
        "digest": _digest(key, seq, status, payload),
    }


def _digest(key: str, seq: int, status: str, payload: str) -> str:
    return hashlib.blake2b(f"{key}|{seq}|{status}|{payload}".encode(), digest_size=8).hexdigest()


def is_whole(item: dict[str, Any]) -> bool:
    """True when the served entity is one record's value, complete, under its own key."""
    value = item.get("value")
    return (
        isinstance(value, dict)
        and value.get("key") == item.get("key")
        and value.get("digest")
        == _digest(
            value["key"], value.get("seq", -1), value.get("status", ""), value.get("payload", "")
        )
    )


def seed_records(keys: list[str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), orjson.dumps(entity(k, i))) for i, k in enumerate(keys)]


class Seeded(NamedTuple):
    """A topic holding the seed entities, a config with one view of it, a server on it."""

    topic: str
    config: Path
    server: Server


def seeded_server(topics: Topics, bootstrap: str, directory: Path, view: str) -> Seeded:
    """A topic (named after *view*) of one seed record per key of KEYS, a config in
    *directory* with *view* over it (indexed on status), and `statestore serve` on it,
    started but not waited for."""
    topic = topics.create(3, prefix=view)
    produce_all(fast_producer(bootstrap), topic, seed_records(KEYS))
    config = write_config(
        directory, [{"name": view, "topic": topic, "indexes": ["status"]}], bootstrap=bootstrap
    )
    return Seeded(topic, config, Server(config, free_port(), directory, directory / "serve.log"))


class LoadWriter:
    """Writes updates (5 % tombstones) at about *rate* records a second while switched on,
    remembering where each record landed."""

    def __init__(self, bootstrap: str, topic: str, seed: int, rate: int) -> None:
        self.producer = fast_producer(bootstrap, **{"linger.ms": 10})
        self.topic = topic
        self.rng = random.Random(seed)
        self.rate = rate
        self.seq = FIRST_SEQ
        self.landed: dict[tuple[str, int], tuple[int, int]] = {}
        self.written = 0
        self.errors: list[str] = []
        self.on = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _reporter(self, key: str, seq: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
            elif seq >= 0:
                self.landed[(key, seq)] = (msg.partition(), msg.offset())

        return report

    def _run(self) -> None:
        while not self.done.is_set():
            if not self.on.wait(0.1):
                continue
            started = time.monotonic()
            for _ in range(max(1, self.rate // 10)):
                key = self.rng.choice(KEYS)
                self.seq += 1
                if self.rng.random() < 0.05:
                    value, seq = None, -1
                else:
                    value, seq = orjson.dumps(entity(key, self.seq)), self.seq
                while True:
                    try:
                        self.producer.produce(
                            self.topic,
                            key=key.encode(),
                            value=value,
                            on_delivery=self._reporter(key, seq),
                        )
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.written += 1
            self.producer.poll(0)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    def pause(self) -> None:
        """Stop writing and wait until everything written is in the log."""
        self.on.clear()
        time.sleep(0.3)
        assert self.producer.flush(120) == 0
        assert not self.errors, self.errors[:3]

    def close(self) -> None:
        self.pause()
        self.done.set()
        self.thread.join(10)

    def misplaced(self, seen: list[tuple[str, int, int, int]]) -> list[str]:
        """Entities served at another offset than the record that carried their value."""
        return [
            f"{key} seq {seq}: served at {p}:{o}, written at {self.landed.get((key, seq))}"
            for key, seq, p, o in seen
            if seq >= FIRST_SEQ and self.landed.get((key, seq)) != (p, o)
        ]


@dataclass
class ReaderReport:
    """What one reader did and every problem it saw."""

    requests: int = 0
    errors: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    backwards: list[str] = field(default_factory=list)
    wrong_index: list[str] = field(default_factory=list)
    seen: list[tuple[str, int, int, int]] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def merge(self, other: ReaderReport) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.torn += other.torn
        self.backwards += other.backwards
        self.wrong_index += other.wrong_index
        self.seen += other.seen
        self.kinds.update(other.kinds)


def read_hard(
    url: str, view: str, until: float, seed: int, stop: threading.Event | None = None
) -> ReaderReport:
    """One reader: gets, lookups, scans and index queries in a tight loop until *until*."""
    rng = random.Random(seed)
    report = ReaderReport()
    last: dict[str, int] = {}

    def check(item: dict[str, Any]) -> None:
        key = item["key"]
        if not is_whole(item):
            report.torn.append(f"{key}: {str(item)[:200]}")
            return
        report.seen.append((key, item["value"]["seq"], item["partition"], item["offset"]))
        if item["offset"] < last.get(key, -1):
            report.backwards.append(f"{key}: offset {item['offset']} after {last[key]}")
        last[key] = item["offset"]

    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < until and not (stop is not None and stop.is_set()):
            op = rng.random()
            try:
                if op < 0.5:
                    report.kinds["get"] += 1
                    r = http.get(f"/views/{view}/entities/{rng.choice(KEYS)}")
                    if r.status_code == 200:
                        check(r.json())
                    elif r.status_code != 404:
                        report.errors.append(f"get {r.status_code}: {r.text[:200]}")
                elif op < 0.7:
                    report.kinds["lookup"] += 1
                    keys = rng.sample(KEYS, 50)
                    r = http.post(f"/views/{view}/lookup", json={"keys": keys})
                    if r.status_code != 200:
                        report.errors.append(f"lookup {r.status_code}: {r.text[:200]}")
                        continue
                    for asked, item in zip(keys, r.json()["items"], strict=True):
                        if item is None:
                            continue
                        if item["key"] != asked:
                            report.torn.append(f"lookup of {asked!r} answered {item['key']!r}")
                        check(item)
                elif op < 0.85:
                    report.kinds["scan"] += 1
                    prefix = f"e-{rng.randrange(50):02d}"
                    r = http.get(f"/views/{view}/entities", params={"prefix": prefix, "limit": 100})
                    if r.status_code != 200:
                        report.errors.append(f"scan {r.status_code}: {r.text[:200]}")
                        continue
                    for item in r.json()["items"]:
                        if not item["key"].startswith(prefix):
                            report.torn.append(f"scan {prefix!r} answered {item['key']!r}")
                        check(item)
                else:
                    report.kinds["by"] += 1
                    status = rng.choice(STATUSES)
                    r = http.get(f"/views/{view}/by/status/{status}", params={"limit": 100})
                    if r.status_code != 200:
                        report.errors.append(f"by {r.status_code}: {r.text[:200]}")
                        continue
                    for item in r.json()["items"]:
                        check(item)
                        if item["value"].get("status") != status:
                            report.wrong_index.append(
                                f"by/status/{status} answered {item['key']} with status "
                                f"{item['value'].get('status')!r} at offset {item['offset']}"
                            )
                report.requests += 1
            except httpx.HTTPError as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
    return report


def run_readers(
    url: str, view: str, seconds: float, readers: int, stop: threading.Event | None = None
) -> ReaderReport:
    """*readers* threads of :func:`read_hard` for *seconds*; their reports merged."""
    until = time.monotonic() + seconds
    reports: list[ReaderReport] = []
    threads = [
        threading.Thread(
            target=lambda i=i: reports.append(read_hard(url, view, until, 1000 + i, stop)),
            daemon=True,
        )
        for i in range(readers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    merged = ReaderReport()
    for r in reports:
        merged.merge(r)
    if len(reports) != readers:
        merged.errors.append(f"only {len(reports)} of {readers} readers finished")
    return merged
