"""Poisoned input: bad records of every kind mixed into good topics. Every good record is
served (over real HTTP), every bad one is quarantined with its offset, nothing crashes."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader
from run_mode import Figures, Mode

from tests.support.config import write_config
from tests.support.kafka import Topics, fast_producer
from tests.support.processes import Server, free_port
from tests.support.registry import REGISTRY_URL
from tests.support.schemas import field, optional, record

pytestmark = [pytest.mark.integration, pytest.mark.registry]

# The broker's default message.max.bytes is 1048588: values this close to it still fit.
NEAR_MAX = 1_048_588 - 200

ODD_KEYS = (
    "a/b",
    "/leading/and/trailing/",
    "a//b",
    "100%",
    "%2F",
    "%25",
    "%",
    "?q=1&r=2#frag",
    "..",
    ".",
    "a/../b",
    "  spaces  ",
    "plus+sign",
    "ключ",
    "鍵",
    "emoji 🎉🧪",
    "e\u0301 (decomposed)",
    "\u00e9 (composed)",
    "right\u202eto-left",
    "zero\u200bwidth",
    "nul\x00inside",
    "tab\there",
    "cr\rreturn",
    "escape\x1b[31m",
    "del\x7f",
    "bell\x07",
    "\x01\x02\x03",
    "k" * 4000,
)


@dataclass
class Item:
    """One produced record: what it is, whether a view must serve it, and where it landed."""

    kind: str
    key: bytes | None
    value: bytes | None
    good: bool
    partition: int = -1
    offset: int = -1


def json_mix(rng: random.Random, scale: int, *, null_keys: bool) -> list[Item]:
    """Good JSON records (odd keys, big values, updates, tombstones) and bad ones, shuffled."""
    items: list[Item] = []
    plain = [f"p-{i:05d}" for i in range(1500 * scale)]

    def good(kind: str, key: str, value: Any) -> None:
        raw = None if value is None else value if isinstance(value, bytes) else orjson.dumps(value)
        items.append(Item(kind, key.encode(), raw, True))

    def bad(kind: str, key: bytes | None, value: bytes | None) -> None:
        items.append(Item(kind, key, value, False))

    for k in plain:
        good("plain", k, {"k": k, "v": rng.random()})
    for k in rng.sample(plain, 500 * scale):
        good("update", k, {"k": k, "v": "updated", "n": rng.randrange(1 << 40)})
    for k in rng.sample(plain, 200 * scale):
        good("tombstone", k, None)
    for k in ODD_KEYS:
        good("odd key", k, {"key": k})
    good("empty key", "", {"key": ""})
    good("json null value", "json-null", b"null")
    good("whitespace around json", "spaced", b'  {"a": 1}  \n')
    for i in range(2):
        body = b'{"blob":"' + b"x" * (NEAR_MAX - 12) + b'"}'
        good("value near message.max.bytes", f"big-{i}", body)
    for _ in range(20 * scale):
        k = rng.choice(plain).encode()
        bad("random bytes", k, b"\xff" + rng.randbytes(rng.randrange(0, 300)))
        bad(
            "truncated json",
            k,
            orjson.dumps({"k": k.decode(), "pad": "y" * 50})[: rng.randrange(1, 40)],
        )
        bad("non-utf-8 key", b"\xff\xfe" + rng.randbytes(rng.randrange(0, 20)), b'{"a": 1}')
        bad("non-utf-8 key tombstone", b"\xc3\x28" + rng.randbytes(4), None)
        bad("empty value", k, b"")
    for value, kind in (
        (b"[" * 5000 + b"]" * 5000, "json nested 5000 deep"),
        (b'{"x": NaN}', "json NaN"),
        (b"1e400", "json number out of range"),
        (b'"\\ud800"', "json lone surrogate"),
        (b'{"x": "\xff"}', "invalid utf-8 inside json"),
        (b"\xef\xbb\xbf{}", "json with a byte order mark"),
        (b'{"a": 1} trailing', "json with trailing garbage"),
        (b'"a\x00b"', "json with a raw control character"),
    ):
        for _ in range(3 * scale):
            bad(kind, rng.choice(plain).encode(), value)
    bad("random bytes near message.max.bytes", b"big-bad", b"\xff" + rng.randbytes(NEAR_MAX - 1))
    if null_keys:
        for _ in range(20 * scale):
            bad("null key", None, orjson.dumps({"no": "key"}))
            bad("null key tombstone", None, None)
    # Updates must follow their creates; otherwise any order.
    first, rest = items[: len(plain)], items[len(plain) :]
    rng.shuffle(rest)
    return first + rest


def produce_items(bootstrap: str, topic: str, items: list[Item]) -> None:
    """Produce in order, recording where each record landed."""
    producer = fast_producer(
        bootstrap,
        **{"compression.type": "none", "message.max.bytes": 1_048_588, "enable.idempotence": False},
    )
    errors: list[str] = []

    def reporter(item: Item) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{item.kind}: {err}")
            else:
                item.partition, item.offset = msg.partition(), msg.offset()

        return report

    for item in items:
        while True:
            try:
                producer.produce(topic, key=item.key, value=item.value, on_delivery=reporter(item))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not errors, errors[:5]


def expected_view(items: list[Item]) -> dict[str, Item]:
    out: dict[str, Item] = {}
    for item in sorted(items, key=lambda i: (i.partition, i.offset)):
        if not item.good or item.key is None:
            continue
        if item.value is None:
            out.pop(item.key.decode(), None)
        else:
            out[item.key.decode()] = item
    return out


def key_path(key: str) -> str:
    return quote(key, safe="").replace(".", "%2E")


def seeded_rng() -> random.Random:
    """A random generator of a fresh seed, printed (shown with a failure, to replay it)."""
    seed = int.from_bytes(os.urandom(4))
    print(f"random seed: {seed}")
    return random.Random(seed)


def pages(http: httpx.Client, path: str, limit: int) -> Iterator[dict[str, Any]]:
    """Every item of the paged list at *path*, page after page until ``next`` is null."""
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        r = http.get(path, params=params)
        assert r.status_code == 200, r.text[:500]
        page = r.json()
        yield from page["items"]
        after = page["next"]
        if after is None:
            return


def scan_all(http: httpx.Client, view: str) -> dict[str, dict[str, Any]]:
    """Every entity of *view*, paging through the REST scan."""
    out: dict[str, dict[str, Any]] = {}
    for item in pages(http, f"/views/{view}/entities", 500):
        assert item["key"] not in out
        out[item["key"]] = item
    return out


def quarantine_all(http: httpx.Client, view: str) -> list[dict[str, Any]]:
    return list(pages(http, f"/views/{view}/quarantine", 200))


def check_view(server: Server, view: str, items: list[Item], decode: Any, figures: Figures) -> None:
    """The served view is the reduction of the good records; the quarantine holds exactly the bad ones."""
    http = server.http
    expected = expected_view(items)
    served = scan_all(http, view)
    assert sorted(served) == sorted(expected)
    for key, item in expected.items():
        got = served[key]
        assert (got["partition"], got["offset"]) == (item.partition, item.offset), key
        assert got["value"] == decode(item.value), key
    # Every key, however odd, also answers by its own URL and through lookup.
    unreachable = []
    for key in expected:
        if not key.startswith("p-"):
            r = http.get(f"/views/{view}/entities/{key_path(key)}")
            if r.status_code != 200 or r.json()["key"] != key:
                unreachable.append((key, r.status_code, r.text[:200]))
    assert unreachable == []
    keys = list(expected)
    for i in range(0, len(keys), 1000):
        chunk = keys[i : i + 1000]
        r = http.post(f"/views/{view}/lookup", json={"keys": chunk})
        assert r.status_code == 200, r.text[:300]
        assert [e["key"] for e in r.json()["items"]] == chunk

    bad = {(i.partition, i.offset): i for i in items if not i.good}
    quarantined = quarantine_all(http, view)
    assert {(q["partition"], q["offset"]) for q in quarantined} == set(bad)
    for q in quarantined:
        assert q["reason"], q
    info = server.view_info(view)
    assert info["quarantined"] == len(bad)
    assert info["state"] == "ready"
    assert http.get("/readyz").status_code == 200
    figures.add(
        "poisoned_input",
        **{
            view: {
                "records": len(items),
                "good": len(items) - len(bad),
                "bad": len(bad),
                "bad_kinds": dict(Counter(i.kind for i in bad.values())),
                "served_keys": len(served),
                "mismatches": 0,
            }
        },
    )


@pytest.mark.timeout(600)
def test_poisoned_json_topics_serve_good_and_quarantine_bad(
    topics: Topics, shared_bootstrap: str, tmp_path: Path, mode: Mode, figures: Figures
) -> None:
    """Mixed into a compacted topic and a delete-policy topic (null keys), every bad record is quarantined and every good one served, with no crash."""
    rng = seeded_rng()
    compacted = topics.create(3, prefix="poison")
    plain = topics.create(3, prefix="poison-nulls", **{"cleanup.policy": "delete"})
    mixes = {
        "poison": json_mix(rng, mode.poison_scale, null_keys=False),
        "poison_nulls": json_mix(rng, mode.poison_scale, null_keys=True),
    }
    produce_items(shared_bootstrap, compacted, mixes["poison"])
    produce_items(shared_bootstrap, plain, mixes["poison_nulls"])
    config = write_config(
        tmp_path,
        [{"name": "poison", "topic": compacted}, {"name": "poison_nulls", "topic": plain}],
        bootstrap=shared_bootstrap,
    )
    server = Server(config, free_port(), tmp_path, tmp_path / "serve.log")
    try:
        server.wait_ready()
        for view, items in mixes.items():
            check_view(server, view, items, orjson.loads, figures)
        assert server.alive()
    finally:
        code = server.close()
    assert code in (0, -15), server.output()[-3000:]
    assert "Traceback" not in server.output()


AVRO_SCHEMA = record(
    "Patient",
    [field("id", "string"), field("name", "string"), field("age", "int"), optional("notes")],
    namespace="dev.statestore.reliability",
)


def avro_mix(rng: random.Random, scale: int, topic: str) -> list[Item]:
    """Good Avro records and tombstones, with truncated and otherwise broken Avro mixed in."""
    client = SchemaRegistryClient({"url": REGISTRY_URL, "timeout": 10})
    serializer = AvroSerializer(
        client,
        json.dumps(AVRO_SCHEMA),
        conf={"subject.name.strategy": topic_subject_name_strategy},
    )
    ctx = SerializationContext(topic, MessageField.VALUE)

    def encode(i: int, key: str) -> bytes:
        record = {
            "id": key,
            "name": f"patient {i}",
            "age": i % 100,
            "notes": "n" * (i % 50) or None,
        }
        raw = serializer(record, ctx)
        assert raw is not None
        return raw

    keys = [f"pt-{i:05d}" for i in range(800 * scale)]
    items = [Item("avro", k.encode(), encode(i, k), True) for i, k in enumerate(keys)]
    rest: list[Item] = []
    for k in rng.sample(keys, 300 * scale):
        rest.append(Item("avro update", k.encode(), encode(rng.randrange(1000), k), True))
    for k in rng.sample(keys, 100 * scale):
        rest.append(Item("tombstone", k.encode(), None, True))
    framed = encode(1, "frame")
    schema_id = int.from_bytes(framed[1:5], "big")
    for _ in range(20 * scale):
        k = rng.choice(keys).encode()
        good_raw = encode(rng.randrange(1000), k.decode())
        rest += [
            Item("truncated avro", k, good_raw[: rng.randrange(5, len(good_raw) - 1)], False),
            Item("avro frame without a body", k, good_raw[:5], False),
            Item("random bytes", k, b"\x07" + rng.randbytes(rng.randrange(0, 200)), False),
            Item("magic byte only", k, b"\x00", False),
            Item("empty value", k, b"", False),
            Item(
                "unknown schema id",
                k,
                b"\x00" + (0x7FFF0000 + rng.randrange(1 << 16)).to_bytes(4, "big") + good_raw[5:],
                False,
            ),
            Item("json instead of avro", k, b'{"id": "x"}', False),
            Item("non-utf-8 key", b"\xff" + rng.randbytes(3), good_raw, False),
        ]
    assert schema_id > 0
    rest.append(
        Item(
            "random bytes near message.max.bytes",
            b"big-bad",
            b"\x00" + framed[1:5] + rng.randbytes(NEAR_MAX - 5),
            False,
        )
    )
    rng.shuffle(rest)
    return items + rest


def test_poisoned_avro_topic_serves_good_and_quarantines_bad(
    topics: Topics, shared_bootstrap: str, tmp_path: Path, mode: Mode, figures: Figures
) -> None:
    """Truncated, unframed and unknown-schema Avro mixed into an Avro topic is quarantined; every good record is served decoded."""
    rng = seeded_rng()
    topic = topics.create(3, prefix="poison-avro")
    items = avro_mix(rng, mode.poison_scale, topic)
    produce_items(shared_bootstrap, topic, items)
    config = write_config(
        tmp_path,
        [{"name": "poison_avro", "topic": topic, "value": "avro"}],
        bootstrap=shared_bootstrap,
        registry=REGISTRY_URL,
    )
    server = Server(config, free_port(), tmp_path, tmp_path / "serve.log")
    parsed = parse_schema(AVRO_SCHEMA)

    def decode(raw: bytes) -> Any:
        return schemaless_reader(BytesIO(raw[5:]), parsed)

    try:
        server.wait_ready()
        check_view(server, "poison_avro", items, decode, figures)
        assert server.alive()
    finally:
        code = server.close()
    assert code in (0, -15), server.output()[-3000:]
    assert "Traceback" not in server.output()


LINE_BREAK_KEYS = ("new\nline", "\n", "crlf\r\nkey", "trailing\n")


def test_keys_with_line_feeds_are_served_by_their_url(
    topics: Topics, shared_bootstrap: str, tmp_path: Path
) -> None:
    """Keys holding a line feed are entities like any other: each answers by its percent-encoded URL."""
    topic = topics.create(1, prefix="poison-lf")
    items = [
        Item("line feed in key", k.encode(), orjson.dumps({"key": k}), True)
        for k in LINE_BREAK_KEYS
    ]
    produce_items(shared_bootstrap, topic, items)
    config = write_config(tmp_path, [{"name": "lf", "topic": topic}], bootstrap=shared_bootstrap)
    server = Server(config, free_port(), tmp_path, tmp_path / "serve.log")
    try:
        server.wait_ready()
        answers = {
            key: server.http.get(f"/views/lf/entities/{key_path(key)}") for key in LINE_BREAK_KEYS
        }
    finally:
        server.close()
    wrong = {k: (r.status_code, r.text[:200]) for k, r in answers.items() if r.status_code != 200}
    assert wrong == {}
    assert all(r.json()["key"] == k for k, r in answers.items())
