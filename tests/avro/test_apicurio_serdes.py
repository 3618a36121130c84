"""Views read what Apicurio Registry's Java serializers write, in each of their framings.

The records come from a real Java producer (tests/avro/java) using Apicurio's serde
(3.x: io.apicurio:apicurio-registry-avro-serde-kafka; 2.x:
io.apicurio:apicurio-registry-serdes-avro-serde) against the local registry.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from apicurio_support import LEGACY_8BYTE, LINES, Sent, build, produce
from avro_support import PATIENT_V2, Avro, patient
from confluent_kafka import Consumer, TopicPartition
from formats_support import Kit

from statestore import Config, SchemaRegistryConfig, StateStore, StoreConfig, ViewConfig
from statestore.config import NATIVE_URL_KEY
from statestore.errors import RegistryUnavailableError
from statestore.framing import Framing
from statestore.schemas import Schemas
from tests.support.registry import REGISTRY_URL
from tests.support.schemas import field, record

pytestmark = [pytest.mark.integration, pytest.mark.registry]

# The serdes' setting (3.x and 2.x alike) for Avro's JSON encoding instead of the binary one.
AVRO_ENCODING = "apicurio.registry.avro.encoding"
# Nothing listens here: a registry that is down.
DEAD_REGISTRY = "http://127.0.0.1:9/apis/ccompat/v7"


@pytest.fixture(scope="session")
def producer3() -> list[str]:
    """The producer built against Apicurio's 3.x serde."""
    return build("serde3")


@pytest.fixture(scope="session")
def producer2() -> list[str]:
    """The producer built against Apicurio's 2.x serde."""
    return build("serde2")


def first_record(bootstrap: str, topic: str) -> tuple[bytes, bytes, dict[str, bytes]]:
    """The key, value and headers of the topic's first record, as written."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        msg = c.poll(30)
        assert msg is not None and msg.error() is None, "the topic's first record did not arrive"
        return msg.key(), msg.value(), dict(msg.headers() or [])  # type: ignore[arg-type]
    finally:
        c.close()


def assert_view_equals(store: StateStore, view: str, sent: Sent) -> None:
    """Every key's value in *view* equals, field by field, the last value sent for it."""
    expected = sent.latest()
    status = store.status()
    mine = next(s for s in status if s.name == view)
    assert (mine.keys, mine.quarantined) == (len(expected), 0), (view, mine)
    for key, value in expected.items():
        entity = store.get(view, key)
        assert entity is not None, (view, key)
        assert entity.value == value, (view, key)


# serde line, serde properties, the view's framing and id kind, what the frame looks like
SCENARIOS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "3x-default": ("serde3", (), "confluent", "content"),
    "3x-headers": ("serde3", ("apicurio.registry.headers.enabled=true",), "apicurio_headers", "content"),
    "3x-globalId": ("serde3", ("apicurio.registry.use-id=globalId",), "confluent", "global"),
    "3x-8byte": ("serde3", (f"apicurio.registry.id-handler={LEGACY_8BYTE}",), "apicurio_8byte", "content"),
    "2x-default": ("serde2", (), "apicurio_headers", "content"),
    "2x-no-headers": ("serde2", ("apicurio.registry.headers.enabled=false",), "apicurio_8byte", "global"),
    # Avro's JSON encoding: named only by an apicurio.*.encoding header, which the serde
    # writes only with headers enabled (3.x's default is off, 2.x's on).
    "3x-json": ("serde3", ("apicurio.registry.headers.enabled=true", f"{AVRO_ENCODING}=JSON"), "apicurio_headers", "content"),
    "2x-json": ("serde2", (f"{AVRO_ENCODING}=JSON",), "apicurio_headers", "content"),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_records_of_each_apicurio_serde_setting_read_field_by_field(
    scenario: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    bootstrap_servers: str,
    topic_factory: Callable[..., str],
    open_store: Callable[..., StateStore],
) -> None:
    """Keys and values written by Apicurio's serde in this setting, across a schema evolution, read as sent through the explicit framing and through auto."""
    line, props, framing, id_kind = SCENARIOS[scenario]
    command = request.getfixturevalue("producer3" if line == "serde3" else "producer2")
    topic = topic_factory(partitions=1, prefix="apicurio")
    sent = produce(command, line, bootstrap_servers, topic, tmp_path / "sent.jsonl", *props)
    assert len(sent.records) == 9 and {len(v) for _, v in sent.records} == {7, 8}

    key, value, headers = first_record(bootstrap_servers, topic)
    encoding = b"JSON" if f"{AVRO_ENCODING}=JSON" in props else b"BINARY"
    if encoding == b"JSON":
        assert headers["apicurio.value.encoding"] == headers["apicurio.key.encoding"] == b"JSON"
        assert json.loads(key) == {"id": "k-0"} and json.loads(value)["id"] == "k-0"
    if framing == "apicurio_headers":
        kind = "globalId" if line == "serde2" else "contentId"
        assert len(headers[f"apicurio.value.{kind}"]) == 8
        assert len(headers[f"apicurio.key.{kind}"]) == 8
        assert value[:1] != b"\x00" or len(value) < 9  # a bare body
        if line == "serde2":
            # The v2 native API resolves a global id to the content id v3 does.
            frame = b"\x00" + headers["apicurio.value.globalId"] + value
            by = {
                api: Schemas(None, {"url": REGISTRY_URL, NATIVE_URL_KEY: LINES[api]}).resolve(
                    frame, "value", "AVRO", Framing("apicurio_8byte", "global")
                )[0]
                for api in LINES
            }
            assert by["serde2"] == by["serde3"] > 0
    else:
        assert value[:1] == b"\x00" and key[:1] == b"\x00"
        assert (value[1:5] == bytes(4)) == (framing == "apicurio_8byte")

    views: list[dict[str, Any]] = [
        {"framing": framing, "id_kind": id_kind, "key_framing": framing, "key_id_kind": id_kind},
        {"framing": "auto", "id_kind": id_kind, "key_framing": "auto", "key_id_kind": id_kind},
    ]
    store = open_store(
        *(
            {"name": f"v{i}", "topic": topic, "key": "avro", "value": "avro", **v}
            for i, v in enumerate(views)
        )
    )
    store.bootstrap()
    for i in range(len(views)):
        assert_view_equals(store, f"v{i}", sent)

    # Schemas and global ids were cached in the store: reads need no registry after a restart.
    store.close()
    again = open_store(
        *(
            {"name": f"v{i}", "topic": topic, "key": "avro", "value": "avro", **v}
            for i, v in enumerate(views)
        ),
        url=DEAD_REGISTRY,
    )
    for key, datum in sent.latest().items():
        entity = again.get("v1", key)
        assert entity is not None and entity.value == datum


def _register(subject: str, schema: dict[str, Any]) -> int:
    response = httpx.post(
        f"{REGISTRY_URL}/subjects/{subject}/versions",
        json={"schema": json.dumps(schema)},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def _newest_global_id() -> int:
    response = httpx.get(
        f"{LINES['serde3']}/search/versions",
        params={"orderby": "globalId", "order": "desc", "limit": 1},
        timeout=30,
    )
    return int(response.json()["versions"][0]["globalId"])


def _unique(tag: str) -> dict[str, Any]:
    return {"type": "record", "name": f"Filler_{tag}", "fields": [{"name": "x", "type": "string"}]}


def test_a_global_id_equal_to_another_schemas_content_id_reads_its_own_schema(
    producer3: list[str],
    tmp_path: Path,
    bootstrap_servers: str,
    topic_factory: Callable[..., str],
    open_store: Callable[..., StateStore],
) -> None:
    """Records framed with global id G read with their own schema while content id G names another schema (which a content-id view would wrongly use)."""
    # Content ids and global ids come from two counters: every registration takes one of
    # each (a content already known leaves its new content id unused), so content ids run
    # ahead. Register a new content (content id C), then versions until the next global
    # id is C, and let the serde's registration take it. Another client registering in
    # between moves it on: then try again.
    for _ in range(5):
        topic = topic_factory(partitions=1, prefix="apicurio")
        target = _register(f"{topic}-other", _unique(uuid.uuid4().hex))
        gap = _unique(uuid.uuid4().hex)
        for i in range(target - _newest_global_id() - 1):
            _register(f"{topic}-gap-{i}", gap)
        sent = produce(
            producer3, "serde3", bootstrap_servers, topic, tmp_path / "sent.jsonl",
            "apicurio.registry.use-id=globalId", count=3, evolve=False, key="string",
        )  # fmt: skip
        _, value, _ = first_record(bootstrap_servers, topic)
        global_id = struct.unpack(">I", value[1:5])[0]
        if global_id == target:
            break
    assert global_id == target, "other registrations kept taking the global id"
    other = httpx.get(f"{REGISTRY_URL}/schemas/ids/{global_id}", timeout=30)
    assert other.status_code == 200 and "Filler_" in other.json()["schema"]

    store = open_store(
        {"name": "by_global", "topic": topic, "value": "avro", "id_kind": "global"},
        {"name": "by_content", "topic": topic, "value": "avro"},
    )
    status = {s.name: s for s in store.bootstrap().values()}
    for key, datum in sent.records:
        entity = store.get("by_global", key)
        assert entity is not None and entity.value == datum
    # Read as a content id, the same frame names the other schema: never these values.
    assert status["by_content"].keys + status["by_content"].quarantined == 3
    for key, datum in sent.records:
        wrong = store.get("by_content", key)
        assert wrong is None or wrong.value != datum


def test_bad_apicurio_framing_is_quarantined_with_its_reason(
    topic_factory: Callable[..., str],
    produce: Callable[..., object],
    open_store: Callable[..., StateStore],
    avro: Avro,
) -> None:
    """A header id that is not 8 bytes, an unknown global id, a record with no id header and a Confluent frame in a headers view are quarantined with their reason; each key keeps its last good value."""
    topic = topic_factory(partitions=1)
    framed = avro.value(topic, PATIENT_V2, patient("Ada", ward="Oncology"))
    content_id, body = avro.schema_id(framed), framed[5:]
    good = [("apicurio.value.contentId", struct.pack(">q", content_id))]
    produce(topic, [("k-a", body), ("k-b", body)], headers=good)
    produce(
        topic,
        [("k-a", body)],
        headers=[("apicurio.value.contentId", struct.pack(">i", content_id))],
    )
    produce(topic, [("k-b", body)], headers=[("apicurio.value.globalId", struct.pack(">q", 2**40))])
    produce(topic, [("k-c", body)], headers=[("apicurio.value.encoding", b"BINARY")])
    produce(topic, [("k-d", framed)])
    store = open_store(
        {"name": "headers", "topic": topic, "value": "avro", "framing": "apicurio_headers"},
        {"name": "confluent", "topic": topic, "value": "avro"},
    )
    status = {s.name: s for s in store.bootstrap().values()}

    assert (status["headers"].keys, status["headers"].quarantined) == (2, 4)
    for key in ("k-a", "k-b"):
        entity = store.get("headers", key)
        assert entity is not None and entity.value == patient("Ada", ward="Oncology")
    items, _ = store.view("headers").quarantine(limit=100)
    reasons = {base64.b64decode(i["key"]).decode(): i["reason"] for i in items}
    assert "apicurio.value.contentId header is 4 bytes" in reasons["k-a"]
    assert "global id 1099511627776 is not known" in reasons["k-b"]
    assert "no apicurio.value.contentId or apicurio.value.globalId header" in reasons["k-c"]
    assert "framing is apicurio_headers" in reasons["k-d"]
    # The default framing reads only the Confluent-framed record; the bare bodies are not framed.
    assert (status["confluent"].keys, status["confluent"].quarantined) == (1, 5)


def test_a_registry_without_the_native_api_is_an_outage_not_a_bad_record() -> None:
    """A global id against a URL without Apicurio's native API raises RegistryUnavailableError naming apicurio_url, and quarantines nothing."""
    # A long deadline: the point is the registry's 404, not how fast a busy host answers.
    schemas = Schemas(None, {"url": REGISTRY_URL, NATIVE_URL_KEY: REGISTRY_URL, "timeout": 60.0})
    with pytest.raises(RegistryUnavailableError, match="apicurio_url"):
        schemas.resolve(
            b"\x00\x00\x00\x00\x07body", "value", "AVRO", Framing("confluent", "global")
        )


def test_a_bulk_load_in_worker_processes_keeps_the_global_ids_its_workers_resolved(
    producer2: list[str], tmp_path: Path, bootstrap_servers: str, topic_factory: Callable[..., str]
) -> None:
    """Worker processes of a bulk load resolve 2.x global-id headers; the store keeps those ids and reads them back with the registry down."""
    topic = topic_factory(partitions=2, prefix="apicurio")
    sent = produce(producer2, "serde2", bootstrap_servers, topic, tmp_path / "sent.jsonl", count=40)
    view = ViewConfig(
        name="bulk", topic=topic, key="avro", value="avro",
        framing="apicurio_headers", key_framing="apicurio_headers",
    )  # fmt: skip

    def config(url: str) -> Config:
        return Config(
            kafka={"bootstrap.servers": bootstrap_servers},
            schema_registry=SchemaRegistryConfig(url=url, timeout_s=5.0),
            store=StoreConfig(path=tmp_path / "store", bootstrap_workers=2, bulk_min_records=1),
            views=(view,),
        )

    with StateStore(config(REGISTRY_URL)) as store:
        status = store.bootstrap()["bulk"]
        assert (status.keys, status.quarantined) == (40, 0)
    with StateStore(config(DEAD_REGISTRY)) as store:
        for key, datum in sent.latest().items():
            entity = store.get("bulk", key)
            assert entity is not None and entity.value == datum


def test_a_bad_avro_json_body_is_quarantined_with_its_reason(kit: Kit) -> None:
    """A JSON-encoded value with a wrong type, one cut short and a binary body under a JSON header are quarantined with their reason; good ones read."""
    topic = kit.topic(partitions=1)
    schema = record("Reading", [field("id", "string"), field("n", "int")])
    content_id = _register(f"{topic}-value", schema)
    json_headers = [
        ("apicurio.value.contentId", struct.pack(">q", content_id)),
        ("apicurio.value.encoding", b"JSON"),
    ]
    kit.produce(
        topic,
        [("k-a", b'{"id": "a", "n": 1}'), ("k-b", b'{"id": "b", "n": 2}')],
        headers=json_headers,
    )
    kit.produce(
        topic,
        [("k-a", b'{"id": "a", "n": "one"}'), ("k-b", b'{"id": "b", "n": 2'), ("k-c", b"\x02c\x04")],
        headers=json_headers,
    )  # fmt: skip
    store = kit.open_store(
        {"name": "headers", "topic": topic, "value": "avro", "framing": "apicurio_headers"},
        {"name": "auto", "topic": topic, "value": "avro", "framing": "auto"},
    )
    status = {s.name: s for s in store.bootstrap().values()}
    for view in ("headers", "auto"):
        assert (status[view].keys, status[view].quarantined) == (2, 3)
        assert [store.get(view, k).value for k in ("k-a", "k-b")] == [  # type: ignore[union-attr]
            {"id": "a", "n": 1},
            {"id": "b", "n": 2},
        ]
        items, _ = store.view(view).quarantine(limit=100)
        reasons = {base64.b64decode(i["key"]).decode(): i["reason"] for i in items}
        for reason in reasons.values():
            assert f"not Avro's JSON encoding of a value of writer schema id {content_id}" in reason
        assert "Reading.n is <one>" in reasons["k-a"] and "expected int" in reasons["k-a"]
        assert "JSONDecodeError" in reasons["k-b"]
        assert "JSONDecodeError" in reasons["k-c"]
