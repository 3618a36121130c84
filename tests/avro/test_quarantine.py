"""Bad records never stop a view: they are quarantined, counted and listed; the rest is applied."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from avro_support import PATIENT_V1, PATIENT_V2, frame, patient
from fastapi.testclient import TestClient
from formats_support import Kit

from statestore import StateStore, ViewStatus
from statestore.api import create_app
from tests.support.processes import run
from tests.support.waits import eventually

pytestmark = [pytest.mark.integration, pytest.mark.registry]

# An id no registry run of these tests reaches.
UNKNOWN_ID = 2_000_000_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def bad_topic(kit: Kit) -> tuple[str, dict[str, bytes]]:
    """One partition: a good value for each key, then one bad record of every kind, then good updates."""
    topic, avro = kit.topic(partitions=1), kit.avro
    good = avro.value(topic, PATIENT_V2, patient("Ada", ward="Oncology"))
    bad = {
        "magic": b"\x07" + good[1:],
        "unknown": frame(UNKNOWN_ID, good[5:]),
        "truncated": good[:-4],
        "short": good[:3],
        "empty": b"",
    }
    records: list[tuple[str, bytes | None]] = [(f"k-{kind}", good) for kind in bad]
    records += [(f"k-{kind}", raw) for kind, raw in bad.items()]
    records += [("k-after", avro.value(topic, PATIENT_V1, patient("Bilal")))]
    kit.produce(topic, records)
    # A malformed schema-id header (3 bytes): the body alone is fine, the framing is not.
    kit.produce(topic, [("k-header", good[5:])], headers=[("__value_schema_id", b"\x00\x00\x01")])
    return topic, bad


@pytest.fixture
def ada_view(kit: Kit) -> Callable[..., tuple[StateStore, ViewStatus]]:
    """Bootstraps an Avro view "patients" of a new one-partition topic holding *records(good)*,
    *good* being Ada's value under schema v1; *options* go to the view's config."""

    def make(
        records: Callable[[bytes], list[tuple[str | bytes, bytes]]],
        raise_on_failure: bool = True,
        **options: object,
    ) -> tuple[StateStore, ViewStatus]:
        topic = kit.topic(partitions=1)
        good = kit.avro.value(topic, PATIENT_V1, patient("Ada"))
        kit.produce(topic, records(good))
        store = kit.open_store({"name": "patients", "topic": topic, "value": "avro", **options})
        return store, store.bootstrap(raise_on_failure=raise_on_failure)["patients"]

    return make


def test_each_bad_avro_record_is_quarantined_and_the_last_good_value_stays(
    bad_topic: tuple[str, dict[str, bytes]], open_store: Callable[..., StateStore]
) -> None:
    """Wrong magic byte, unknown id, truncated or short body, empty value and a bad header are quarantined with topic, partition, offset, key, reason and raw bytes."""
    topic, bad = bad_topic
    store = open_store({"name": "patients", "topic": topic, "value": "avro"})
    status = store.bootstrap()["patients"]

    assert status.state == "ready"
    assert status.quarantined == len(bad) + 1
    for kind in bad:
        entity = store.get("patients", f"k-{kind}")
        assert entity is not None and entity.value == patient("Ada", ward="Oncology"), kind
    after = store.get("patients", "k-after")
    assert after is not None and after.value == patient("Bilal")
    assert store.get("patients", "k-header") is None

    items, cursor = store.view("patients").quarantine(limit=100)
    assert cursor is None
    by_key = {base64.b64decode(i["key"]).decode(): i for i in items}
    expected_reason = {
        "k-magic": "wrong magic byte 0x07",
        "k-unknown": f"schema id {UNKNOWN_ID} is not known to the schema registry",
        "k-truncated": "truncated or corrupt body",
        "k-short": "too short for the 5-byte Confluent header",
        "k-empty": "value is empty",
        "k-header": "schema-id record header",
    }
    assert set(by_key) == set(expected_reason)
    for key, reason in expected_reason.items():
        item = by_key[key]
        assert reason in item["reason"], (key, item["reason"])
        assert (item["topic"], item["partition"]) == (topic, 0)
        assert isinstance(item["offset"], int)
    for kind, raw in bad.items():
        assert by_key[f"k-{kind}"]["value"] == _b64(raw)


def test_json_that_does_not_parse_is_quarantined(kit: Kit) -> None:
    """In a JSON view a value that is not JSON is quarantined and the key keeps its last good value."""
    topic = kit.topic(partitions=1)
    kit.produce(
        topic,
        [("d-1", b'{"status": "created"}'), ("d-1", b'{"status": '), ("d-2", b'{"status": "new"}')],
    )
    store = kit.open_store({"name": "deliveries", "topic": topic})
    status = store.bootstrap()["deliveries"]

    assert (status.keys, status.quarantined) == (2, 1)
    d1 = store.get("deliveries", "d-1")
    assert d1 is not None and d1.value == {"status": "created"}
    [item], _ = store.view("deliveries").quarantine()
    assert "not valid JSON" in item["reason"]
    assert (item["offset"], item["value"]) == (1, _b64(b'{"status": '))


def test_string_key_that_is_not_utf8_is_quarantined(
    ada_view: Callable[..., tuple[StateStore, ViewStatus]],
) -> None:
    """In an Avro view with string keys, a key that is not UTF-8 is quarantined with its raw bytes."""
    store, status = ada_view(lambda good: [(b"\xff\xfe-bad", good), ("ok", good)])

    assert (status.keys, status.quarantined) == (1, 1)
    [item], _ = store.view("patients").quarantine()
    assert "not valid UTF-8" in item["reason"]
    assert item["key"] == _b64(b"\xff\xfe-bad")


STOP: dict[str, object] = {
    "type": "record",
    "name": "Stop",
    "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "next", "type": ["null", "Stop"], "default": None},
    ],
}


def _route(stops: int, at: int = 1_740_960_000_000) -> dict[str, object]:
    """A chain of *stops* nested records (built without recursion)."""
    route: dict[str, object] = {"at": at, "next": None}
    for _ in range(stops - 1):
        route = {"at": at, "next": route}
    return route


def test_avro_values_reads_could_not_serve_are_quarantined_and_every_read_carries_on(
    kit: Kit,
) -> None:
    """A recursive value nested 600 deep and a timestamp past year 9999 are quarantined with their reasons; the keys keep their last good values and GET, scans and lookups serve the view."""
    topic, avro = kit.topic(partitions=1), kit.avro
    good = avro.value(topic, STOP, _route(3))
    kit.produce(
        topic,
        [
            ("r-deep", good),
            ("r-late", good),
            ("r-deep", avro.value(topic, STOP, _route(600))),
            ("r-late", avro.value(topic, STOP, _route(1, at=2**60))),
            ("r-ok", avro.value(topic, STOP, _route(251))),
        ],
    )
    store = kit.open_store({"name": "routes", "topic": topic, "value": "avro"})
    status = store.bootstrap()["routes"]

    assert (status.keys, status.quarantined) == (3, 2)
    items, _ = store.view("routes").quarantine()
    reasons = {base64.b64decode(i["key"]).decode(): i["reason"] for i in items}
    assert "more than 251 levels deep" in reasons["r-deep"], reasons
    assert f"timestamp-millis value {2**60} is outside what can be read" in reasons["r-late"]
    with TestClient(create_app(store.config, store=store), base_url="http://localhost") as client:
        for key in ("r-deep", "r-late"):
            got = client.get(f"/views/routes/entities/{key}")
            assert got.status_code == 200 and got.json()["offset"] < 2, got.text
        scan = client.get("/views/routes/entities", params={"limit": 10})
        assert scan.status_code == 200, scan.text
        assert [i["key"] for i in scan.json()["items"]] == ["r-deep", "r-late", "r-ok"]
        lookup = client.post("/views/routes/lookup", json={"keys": ["r-ok", "r-deep"]})
        assert lookup.status_code == 200, lookup.text
        assert [i["key"] for i in lookup.json()["items"]] == ["r-ok", "r-deep"], lookup.text
    store.close()


def test_quarantine_is_paged_over_rest_and_listed_by_the_cli(
    bad_topic: tuple[str, dict[str, bytes]],
    open_store: Callable[..., StateStore],
    bootstrap_servers: str,
    registry_url: str,
    tmp_path: Path,
) -> None:
    """GET /views/{view}/quarantine pages the quarantined records and `statestore quarantine VIEW` prints them."""
    topic, bad = bad_topic
    store = open_store({"name": "patients", "topic": topic, "value": "avro"})
    store.bootstrap()
    with TestClient(create_app(store.config, store=store), base_url="http://localhost") as client:
        first = client.get("/views/patients/quarantine", params={"limit": 4})
        assert first.status_code == 200, first.text
        page = first.json()
        assert len(page["items"]) == 4 and page["next"]
        rest = client.get(
            "/views/patients/quarantine", params={"limit": 100, "after": page["next"]}
        ).json()
        offsets = [i["offset"] for i in page["items"] + rest["items"]]
        assert len(offsets) == len(bad) + 1 and offsets == sorted(offsets)
    store.close()

    config = tmp_path / "statestore.toml"
    config.write_text(
        f'[kafka]\n"bootstrap.servers" = "{bootstrap_servers}"\n'
        f'[schema_registry]\nurl = "{registry_url}"\n'
        f'[store]\npath = "{tmp_path / "store"}"\n'
        f'[[views]]\nname = "patients"\ntopic = "{topic}"\nvalue = "avro"\n'
    )
    done = run(["-c", config, "quarantine", "patients"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["offset"] for line in lines) == offsets
    assert all(line["topic"] == topic and line["reason"] for line in lines)


def test_on_error_fail_stops_the_view_at_the_bad_record(
    ada_view: Callable[..., tuple[StateStore, ViewStatus]],
) -> None:
    """With on_error = "fail" the view fails at the first bad record, keeps what came before it and quarantines nothing."""
    store, status = ada_view(
        lambda good: [("a", good), ("b", good[:-2]), ("c", good)],
        raise_on_failure=False,
        on_error="fail",
    )

    assert status.state == "failed"
    assert "offset 1" in (status.reason or "")
    assert status.quarantined == 0
    assert store.get("patients", "a") is not None
    assert store.get("patients", "c") is None
    eventually(
        lambda: store.position("patients") == {0: 0},
        "the position to stay before the bad record",
        timeout=10,
    )
