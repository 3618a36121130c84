"""Protobuf views against the real broker and registry: the view equals confluent-kafka's own
decoding of the topic; references, message indexes, keys, bad records, reader messages."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pytest
from avro_support import PATIENT_V1, SCHEMAS, Avro, patient
from confluent_kafka.schema_registry import Schema, SchemaReference
from fastapi.testclient import TestClient
from formats_support import (
    Kit,
    compile_messages,
    frame,
    latest_by_key,
    protobuf_decoder,
    schema_id,
)

from statestore import StateStore, StoreConfig, ViewConfig
from statestore.api import create_app
from tests.support.config import store_config

pytestmark = [pytest.mark.integration, pytest.mark.registry]

SHIPMENT_FILES = {
    "logistics/v1/address.proto": (SCHEMAS / "logistics/v1/address.proto").read_text(),
    "logistics/v1/shipment.proto": (SCHEMAS / "logistics/v1/shipment.proto").read_text(),
}

# Two top-level messages and a nested one: frames carry message indexes [0], [1], [1, 0].
EVENTS = """
syntax = "proto3";
package fleet.v1;
message Truck {
  string plate = 1;
  int32 axles = 2;
}
message Depot {
  message Bay {
    int32 number = 1;
    bool loading = 2;
  }
  string name = 1;
  repeated Bay bays = 2;
  map<string, int64> stock = 3;
}
"""

# Evolution of one message, by field number.
ORDER_V1 = """
syntax = "proto3";
package evo.v1;
message Order {
  string id = 1;
  string state = 2;
  int64 amount_cents = 3;
  string customer = 4;
}
"""
# v2 (in a package of its own) renames field 2, removes 3, adds 5.
ORDER_V2 = (
    ORDER_V1.replace("package evo.v1;", "package evo.v2;")
    .replace("string state = 2;", "string status = 2;")
    .replace("  int64 amount_cents = 3;\n", "")
    .replace("  string customer = 4;\n", "  string customer = 4;\n  repeated string tags = 5;\n")
)
# Field 4 reused with a type a string reader cannot read.
ORDER_BAD = """
syntax = "proto3";
package evo.bad;
message Order {
  string id = 1;
  double customer = 4;
}
"""


@pytest.fixture
def shipment() -> Any:
    """The Shipment message class, compiled with the files it imports."""
    return compile_messages(SHIPMENT_FILES)["logistics.v1.Shipment"]


def _shipment(cls: Any, sid: str, status: int, city: str, seconds: int = 1_700_000_000) -> Any:
    msg = cls(shipment_id=sid, status=status, carrier="Parcelnet", weight_grams=1200)
    msg.destination.city = city
    msg.updated_at.seconds = seconds
    msg.scans.extend(["hub-1", "hub-2"][: status % 3])
    return msg


def test_protobuf_view_equals_confluent_decoding_of_the_topic(
    kit: Kit, shipment: Any, bootstrap_servers: str
) -> None:
    """Values with a schema reference and a well-known type, updated and deleted across two
    partitions, are served exactly as confluent-kafka's deserializer reads them; the index
    on an enum and on a referenced message's field answer."""
    topic = kit.topic(partitions=2)
    records: list[tuple[str, bytes | None]] = []
    for i in range(40):
        records.append(
            (f"s-{i}", kit.protobuf.value(topic, _shipment(shipment, f"s-{i}", 1, "Leeds")))
        )
    for i in range(0, 40, 3):
        msg = _shipment(shipment, f"s-{i}", 2 + (i // 3) % 3, "York", 1_700_000_000 + i)
        records.append((f"s-{i}", kit.protobuf.value(topic, msg)))
    records += [("s-5", None), ("s-7", None)]
    kit.produce(topic, records)

    store = kit.open_store(
        {
            "name": "shipments",
            "topic": topic,
            "value": "protobuf",
            "indexes": ["status", "destination.city"],
        }
    )
    status = store.bootstrap()["shipments"]

    expected = latest_by_key(bootstrap_servers, topic, protobuf_decoder(shipment))
    assert (status.state, status.keys, status.quarantined) == ("ready", len(expected), 0)
    served = {e.key: e.value for e in store.scan("shipments", limit=1000).items}
    assert served == expected
    s6 = served["s-6"]
    assert s6["status"] == "DELIVERED" and s6["destination"]["city"] == "York"
    assert s6["weightGrams"] == "1200" and s6["updatedAt"] == "2023-11-14T22:13:26Z"
    assert served["s-1"]["scans"] == ["hub-1"] and served["s-1"]["destination"]["postcode"] == ""
    in_york = {e.key for e in store.by("shipments", "destination.city", "York").items}
    assert in_york == {k for k, v in expected.items() if v["destination"]["city"] == "York"}
    delivered = {e.key for e in store.by("shipments", "status", "DELIVERED").items}
    assert delivered == {k for k, v in expected.items() if v["status"] == "DELIVERED"}
    schemas = store.schemas("shipments")
    assert [s["id"] for s in schemas] == [schema_id(records[0][1] or b"")]


def test_message_indexes_name_top_level_and_nested_messages(
    kit: Kit,
) -> None:
    """Frames whose message indexes are [0], [1] and [1, 0] decode as Truck, Depot and Depot.Bay."""
    classes = compile_messages({"fleet.proto": EVENTS})
    truck, depot, bay = (classes[f"fleet.v1.{n}"] for n in ("Truck", "Depot", "Depot.Bay"))
    topic = kit.topic(partitions=1)
    d = depot(name="North")
    d.bays.add(number=3, loading=True)
    d.stock["pallets"] = 12
    values = {
        "t": kit.protobuf.value(topic, truck(plate="YX12 ABC", axles=3)),
        "d": kit.protobuf.value(topic, d),
        "b": kit.protobuf.value(topic, bay(number=7)),
    }
    assert (values["d"][5:7], values["b"][5:8]) == (b"\x02\x02", b"\x04\x02\x00")
    kit.produce(topic, list(values.items()))

    store = kit.open_store({"name": "fleet", "topic": topic, "value": "protobuf"})
    status = store.bootstrap()["fleet"]

    assert (status.keys, status.quarantined) == (3, 0)
    got = {k: (store.get("fleet", k) or pytest.fail(k)).value for k in values}
    assert got["t"] == {"plate": "YX12 ABC", "axles": 3}
    assert got["d"] == {
        "name": "North",
        "bays": [{"number": 3, "loading": True}],
        "stock": {"pallets": "12"},
    }
    assert got["b"] == {"number": 7, "loading": False}


def test_protobuf_keys_are_one_entity_per_logical_key(
    kit: Kit,
    shipment: Any,
) -> None:
    """Protobuf keys are stored as canonical JSON of the key message and addressed by it."""
    key_cls = compile_messages(
        {
            "key.proto": 'syntax = "proto3"; package keys.v1; message ShipmentKey { string id = 1; int32 region = 2; }'
        },
    )["keys.v1.ShipmentKey"]
    topic = kit.topic(partitions=1)
    k1 = kit.protobuf.key(topic, key_cls(id="s-1", region=4))
    k2 = kit.protobuf.key(topic, key_cls(id="s-2"))
    kit.produce(
        topic,
        [
            (k1, kit.protobuf.value(topic, _shipment(shipment, "s-1", 1, "Leeds"))),
            (k2, kit.protobuf.value(topic, _shipment(shipment, "s-2", 1, "Hull"))),
            (k1, kit.protobuf.value(topic, _shipment(shipment, "s-1", 3, "Leeds"))),
        ],
    )
    store = kit.open_store({"name": "s", "topic": topic, "key": "protobuf", "value": "protobuf"})
    assert store.bootstrap()["s"].keys == 2

    one = store.get("s", '{"region": 4, "id": "s-1"}')
    assert one is not None and one.key == '{"id":"s-1","region":4}'
    assert one.value["status"] == "OUT_FOR_DELIVERY"
    two = store.get("s", '{"id": "s-2"}')
    assert two is not None and two.value["destination"]["city"] == "Hull"


def test_bad_protobuf_records_are_quarantined_with_reasons(
    kit: Kit,
    avro: Avro,
    shipment: Any,
) -> None:
    """Truncated message indexes, indexes naming no message, a body that does not parse, an
    Avro schema id, an unknown id and a bare body are each quarantined with their reason;
    every entity keeps its last good value."""
    topic = kit.topic(partitions=1)
    good = kit.protobuf.value(topic, _shipment(shipment, "s", 2, "Leeds"))
    sid = schema_id(good)
    avro_id = schema_id(avro.value(f"{topic}-avro", PATIENT_V1, patient("Ada")))
    bad = {
        "truncated-indexes": frame(sid, b"\x04\x02"),  # two indexes announced, one given
        "no-such-message": frame(sid, b"\x02\x0a") + good[6:],  # [5]: the file has one
        "body": frame(sid, b"\x00\x0a\xff\xff\xff\xff"),
        "avro-id": frame(avro_id, b"\x00" + good[6:]),
        "unknown-id": frame(2_000_000_001, good[5:]),
        "bare": good[6:],
        "year-10000": frame(
            sid, b"\x00" + _shipment(shipment, "s", 2, "Leeds", 253_402_300_800).SerializeToString()
        ),
    }
    records: list[tuple[str, bytes | None]] = [(k, good) for k in bad]
    records += list(bad.items())
    kit.produce(topic, records)

    store = kit.open_store({"name": "s", "topic": topic, "value": "protobuf"})
    status = store.bootstrap()["s"]

    assert (status.state, status.keys, status.quarantined) == ("ready", len(bad), len(bad))
    for k in bad:
        entity = store.get("s", k)
        assert entity is not None and entity.value["destination"]["city"] == "Leeds", k
    items, _ = store.view("s").quarantine(limit=100)
    reasons = {base64.b64decode(i["key"]).decode(): i["reason"] for i in items}
    expected = {
        "truncated-indexes": "message indexes are truncated",
        "no-such-message": "message indexes [5] name no message",
        "body": f"not valid Protobuf for writer schema id {sid}",
        "avro-id": f"writer schema id {avro_id} is an Avro schema; a Protobuf view needs Protobuf schemas",
        "unknown-id": "schema id 2000000001 is not known to the schema registry",
        "bare": "wrong magic byte",
        "year-10000": "that reads cannot serve as JSON: ValueError: a Timestamp of 253402300800 s",
    }
    assert set(reasons) == set(expected)
    for k, reason in expected.items():
        assert reason in reasons[k], (k, reasons[k])


def test_reader_message_reads_every_writer_by_field_number(
    kit: Kit,
) -> None:
    """With a reader message, v1 and v2 writers are read by field number: a renamed field
    keeps its value, a removed field is gone, an added field defaults; a writer reusing a
    number with an unreadable type is refused and its record quarantined."""
    v1 = compile_messages({"order.proto": ORDER_V1})["evo.v1.Order"]
    v2 = compile_messages({"order.proto": ORDER_V2})["evo.v2.Order"]
    bad = compile_messages({"order.proto": ORDER_BAD})["evo.bad.Order"]
    reader = kit.tmp / "reader" / "order.proto"
    reader.parent.mkdir()
    reader.write_text(ORDER_V2)
    topic = kit.topic(partitions=1)
    # The registry's compatibility rule refuses renames and reused numbers: this test
    # writes exactly what a rule would stop, as a producer registering elsewhere could.
    kit.protobuf.client.set_compatibility(f"{topic}-value", "NONE")
    kit.produce(
        topic,
        [
            (
                "o-1",
                kit.protobuf.value(
                    topic, v1(id="o-1", state="paid", amount_cents=990, customer="c-9")
                ),
            ),
            (
                "o-2",
                kit.protobuf.value(
                    topic, v2(id="o-2", status="new", customer="c-3", tags=["gift"])
                ),
            ),
            ("o-3", kit.protobuf.value(topic, v1(id="o-3", state="paid"))),
            ("o-3", kit.protobuf.value(topic, bad(id="o-3", customer=2.5))),
        ],
    )

    plain = kit.open_store({"name": "o", "topic": topic, "value": "protobuf"}, store="plain")
    plain.bootstrap()
    o1 = plain.get("o", "o-1")
    assert o1 is not None
    assert o1.value == {"id": "o-1", "state": "paid", "amountCents": "990", "customer": "c-9"}

    store = kit.open_store(
        {
            "name": "o",
            "topic": topic,
            "value": "protobuf",
            "reader_schema": reader,
            "reader_message": "evo.v2.Order",
            "indexes": ["status"],
        }
    )
    status = store.bootstrap()["o"]

    assert (status.keys, status.quarantined) == (3, 1)
    got = {k: (store.get("o", k) or pytest.fail(k)).value for k in ("o-1", "o-2", "o-3")}
    assert got["o-1"] == {"id": "o-1", "status": "paid", "customer": "c-9", "tags": []}
    assert got["o-2"] == {"id": "o-2", "status": "new", "customer": "c-3", "tags": ["gift"]}
    assert got["o-3"] == {"id": "o-3", "status": "paid", "customer": "", "tags": []}
    assert {e.key for e in store.by("o", "status", "paid").items} == {"o-1", "o-3"}
    items, _ = store.view("o").quarantine(limit=10)
    assert len(items) == 1
    assert (
        "field 4 is double 'customer' in evo.bad.Order but string 'customer'" in items[0]["reason"]
    )


def test_proto_text_schemas_with_text_references_are_compiled(
    kit: Kit,
    shipment: Any,
) -> None:
    """Schemas registered as .proto text, with a reference registered as text too (what Java
    serializers register), are compiled and read like descriptors."""
    topic = kit.topic(partitions=1)
    client = kit.protobuf.client
    address_subject = f"{topic}-address"
    client.register_schema(
        address_subject, Schema(SHIPMENT_FILES["logistics/v1/address.proto"], "PROTOBUF")
    )
    version = client.get_latest_version(address_subject).version
    sid = client.register_schema(
        f"{topic}-value",
        Schema(
            SHIPMENT_FILES["logistics/v1/shipment.proto"],
            "PROTOBUF",
            [SchemaReference("logistics/v1/address.proto", address_subject, version)],
        ),
    )
    text = client.get_schema(sid).schema_str
    assert "message Shipment" in text  # the registry hands back text, not a descriptor
    msg = _shipment(shipment, "s-1", 4, "Hull")
    kit.produce(topic, [("s-1", frame(sid, b"\x00" + msg.SerializeToString()))])

    store = kit.open_store({"name": "s", "topic": topic, "value": "protobuf"})
    status = store.bootstrap()["s"]

    assert (status.keys, status.quarantined) == (1, 0)
    got = store.get("s", "s-1")
    assert got is not None
    assert got.value == protobuf_decoder(shipment)(
        frame(sid, b"\x00" + msg.SerializeToString()), topic
    )
    assert got.value["destination"]["city"] == "Hull" and got.value["status"] == "DELIVERED"


def test_bulk_load_in_worker_processes_reads_protobuf_and_json_schema(
    kit: Kit,
    shipment: Any,
    bootstrap_servers: str,
    registry_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bulk load spread over worker processes (which fetch schemas apart from the store)
    builds the same Protobuf and JSON Schema views, indexes and schema counts included."""
    pt, jt = kit.topic(partitions=4), kit.topic(partitions=4)
    row = {"type": "object", "properties": {"id": {"type": "string"}, "city": {"type": "string"}}}
    shipments = [
        (f"s-{i}", _shipment(shipment, f"s-{i}", 1 + i % 4, f"c-{i % 5}")) for i in range(400)
    ]
    kit.produce(pt, [(k, kit.protobuf.value(pt, m)) for k, m in shipments] + [("s-0", None)])
    kit.produce(
        jt,
        [
            (f"r-{i}", kit.json_schema.value(jt, row, {"id": f"r-{i}", "city": f"c-{i % 5}"}))
            for i in range(400)
        ],
    )
    config = store_config(
        kit.tmp / "bulk",
        [
            ViewConfig(name="p", topic=pt, value="protobuf", indexes=("destination.city",)),
            ViewConfig(name="j", topic=jt, value="json_schema", indexes=("city",)),
        ],
        bootstrap=bootstrap_servers,
        registry=registry_url,
    )
    config = config.model_copy(
        update={
            "store": StoreConfig(path=kit.tmp / "bulk", bootstrap_workers=2, bulk_min_records=50)
        }
    )
    caplog.set_level(logging.INFO, logger="statestore.bulk")
    with StateStore(config) as store:
        status = store.bootstrap()
        loads = [r.getMessage() for r in caplog.records if "ranges=4" in r.getMessage()]
        assert len(loads) == 2 and all("processes=2" in m for m in loads), loads
        assert {v: (s.keys, s.quarantined) for v, s in status.items()} == {
            "p": (399, 0),
            "j": (400, 0),
        }
        hull = {e.key for e in store.by("p", "destination.city", "c-3", limit=1000).items}
        assert hull == {k for k, m in shipments[1:] if m.destination.city == "c-3"}
        assert len(store.by("j", "city", "c-2", limit=1000).items) == 80
        s9 = store.get("p", "s-9")
        assert s9 is not None and s9.value["status"] == "IN_TRANSIT"
        assert [s["entities"] for s in store.schemas("p")] == [399]


def test_protobuf_values_over_rest_and_the_change_stream(
    kit: Kit,
    shipment: Any,
) -> None:
    """REST GET, lookup, scan and index reads, and the change stream of a following view,
    carry Protobuf values in their JSON mapping."""
    topic = kit.topic(partitions=1)
    kit.produce(
        topic,
        [
            (f"s-{i}", kit.protobuf.value(topic, _shipment(shipment, f"s-{i}", 1, "Leeds")))
            for i in range(3)
        ],
    )
    store = kit.open_store(
        {"name": "s", "topic": topic, "value": "protobuf", "indexes": ["status"]}
    )
    store.bootstrap()
    store.start()
    changes = store.changes("s")
    kit.produce(topic, [("s-1", kit.protobuf.value(topic, _shipment(shipment, "s-1", 4, "Hull")))])
    seen: list[Any] = []
    deadline = time.monotonic() + 60
    while not any(getattr(e, "key", None) == "s-1" for e in seen):
        assert time.monotonic() < deadline, f"no change of s-1 within a minute: {seen}"
        seen += changes.get(timeout=1.0)
    change = next(e for e in seen if getattr(e, "key", None) == "s-1")
    assert change.value["status"] == "DELIVERED" and change.value["destination"]["city"] == "Hull"
    changes.close()

    with TestClient(create_app(store.config, store=store), base_url="http://localhost") as client:
        got = client.get("/views/s/entities/s-1")
        assert got.status_code == 200, got.text
        assert got.json()["value"] == change.value
        lookup = client.post("/views/s/lookup", json={"keys": ["s-2", "s-1"]})
        assert lookup.status_code == 200, lookup.text
        assert [i["value"]["shipmentId"] for i in lookup.json()["items"]] == ["s-2", "s-1"]
        scan = client.get("/views/s/entities", params={"limit": 10}).json()
        assert [i["value"]["status"] for i in scan["items"]] == [
            "PICKED_UP",
            "DELIVERED",
            "PICKED_UP",
        ]
        by = client.get("/views/s/by/status/DELIVERED")
        assert by.status_code == 200, by.text
        assert [i["key"] for i in by.json()["items"]] == ["s-1"]
