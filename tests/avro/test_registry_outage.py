"""Schema registry outages: cached schemas keep views serving; unseen ids wait, then apply.

These tests stop and start a real Apicurio registry with ``scripts/local-registry``.
They run their own instance (free ports, its own state directory, the
installation of the shared one), so stopping it never disturbs other tests
using the shared registry on 8081, and the shared one is needed only to have
been installed once.

The instance keeps its schemas in an H2 *file* instead of memory: a registry
comes back from an outage with the schemas it had, as a production registry
does. An in-memory registry comes back empty; it would answer 404 for ids it
learns again only moments later, and the records would rightly be quarantined.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import httpx
import pytest
from avro_support import (
    PATIENT_V1,
    PATIENT_V2,
    PATIENT_V3,
    SCHEMAS,
    Avro,
    body,
    frame,
    patient,
)
from confluent_kafka.schema_registry import Schema
from formats_support import JsonSchema, Kit, Protobuf, compile_messages, schema_id

from tests.support.processes import REPO, free_port, run_script
from tests.support.waits import eventually

pytestmark = [pytest.mark.integration, pytest.mark.registry]


class PrivateRegistry:
    """A registry instance of this module only, started and stopped with scripts/local-registry."""

    def __init__(self, var: Path) -> None:
        self.var = var
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
        self.env = {
            **os.environ,
            "STATESTORE_VAR": str(var),
            "REGISTRY_PORT": str(port),
            "REGISTRY_MANAGEMENT_PORT": str(free_port()),
            "APICURIO_DATASOURCE_URL": f"jdbc:h2:file:{var / 'registry-h2'}",
        }

    def start(self) -> None:
        run_script("local-registry", "start", self.env)

    def stop(self) -> None:
        run_script("local-registry", "stop", self.env)

    def answering(self) -> bool:
        try:
            return httpx.get(f"{self.url}/subjects", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRegistry]:
    """A running registry of our own, using the installation of the shared one; fails when there is none."""
    shared = Path(os.environ.get("STATESTORE_VAR", REPO / "var")) / "registry"
    installs = sorted(d for d in shared.glob("apicurio-registry-*") if (d / ".complete").exists())
    if not installs:
        pytest.fail(
            f"no Apicurio installation under {shared}: run `scripts/local-registry start` once"
        )
    var = tmp_path_factory.mktemp("registry-var")
    (var / "registry").mkdir()
    for install in installs:
        (var / "registry" / install.name).symlink_to(install, target_is_directory=True)
    registry = PrivateRegistry(var)
    registry.start()
    yield registry
    registry.stop()


@pytest.fixture
def registry(private_registry: PrivateRegistry) -> PrivateRegistry:
    """The private registry, running (a test before may have left it stopped)."""
    if not private_registry.answering():
        private_registry.start()
    return private_registry


def patients_view(topic: str) -> dict[str, object]:
    """The Avro view "patients" of *topic*, read with the reader schema v2."""
    return {
        "name": "patients",
        "topic": topic,
        "value": "avro",
        "reader_schema": SCHEMAS / "patient.avsc",
    }


@pytest.fixture
def kit(kit: Kit, registry: PrivateRegistry) -> Kit:
    """The registry-format kit with its serializers and stores on this module's private registry."""
    return replace(
        kit,
        open_store=partial(kit.open_store, url=registry.url),
        protobuf=Protobuf(registry.url),
        json_schema=JsonSchema(registry.url),
        avro=Avro(registry.url),
    )


def ada_topic(kit: Kit, partitions: int) -> tuple[str, bytes]:
    """A new topic of *partitions* and Ada's value under patient schema v1, framed for it."""
    topic = kit.topic(partitions=partitions)
    return topic, kit.avro.value(topic, PATIENT_V1, patient("Ada"))


def test_registry_down_at_start_with_cached_schemas_bootstraps_and_serves(
    registry: PrivateRegistry, kit: Kit
) -> None:
    """With the registry stopped after the schemas were cached, a restarted store bootstraps new records and serves reads."""
    topic, v1 = ada_topic(kit, partitions=2)
    v2 = kit.avro.value(topic, PATIENT_V2, patient("Bilal", ward="Oncology"))
    kit.produce(topic, [("p-1", v1), ("p-2", v2)])
    view = patients_view(topic)
    first = kit.open_store(view)
    assert first.bootstrap()["patients"].keys == 2
    first.close()

    registry.stop()
    v1_id, v2_id = kit.avro.schema_id(v1), kit.avro.schema_id(v2)
    kit.produce(
        topic,
        [
            ("p-3", frame(v1_id, body(PATIENT_V1, patient("Carmen")))),
            (
                "p-2",
                frame(v2_id, body(PATIENT_V2, patient("Bilal", "recovering", ward="Oncology"))),
            ),
            ("p-1", None),
        ],
    )
    store = kit.open_store(view)
    status = store.bootstrap()["patients"]

    assert (status.state, status.keys, status.quarantined) == ("ready", 2, 0)
    assert not registry.answering()
    p2, p3 = store.get("patients", "p-2"), store.get("patients", "p-3")
    assert p2 is not None and p2.value == patient("Bilal", "recovering", ward="Oncology")
    assert p3 is not None and p3.value == patient("Carmen", ward="unassigned")
    assert store.get("patients", "p-1") is None


def test_unseen_schema_id_while_registry_down_degrades_then_recovers(
    registry: PrivateRegistry, kit: Kit
) -> None:
    """A record with a schema id never seen while the registry is down holds the view degraded, loses and quarantines nothing, and is applied once the registry is back."""
    topic, v1 = ada_topic(kit, partitions=1)
    v1_id = kit.avro.schema_id(v1)
    v3_id = kit.avro.client.register_schema(
        f"{topic}-value", Schema(json.dumps(PATIENT_V3), "AVRO")
    )
    kit.produce(topic, [("a", v1)])
    store = kit.open_store(patients_view(topic))
    store.bootstrap()
    store.start()
    view = store.view("patients")

    registry.stop()
    kit.produce(
        topic,
        [
            (
                "b",
                frame(
                    v3_id,
                    body(PATIENT_V3, patient("Farah", ward="Maternity", attending="Dr Okafor")),
                ),
            ),
            ("c", frame(v1_id, body(PATIENT_V1, patient("Gustav")))),
            ("a", frame(v1_id, body(PATIENT_V1, patient("Ada", "recovering")))),
        ],
    )
    eventually(
        lambda: view.state == "degraded", "the view to report the registry outage", timeout=60
    )

    status = view.status()
    assert "schema registry" in (status.reason or "")
    assert f"schema id {v3_id}" in (status.reason or "")
    assert status.quarantined == 0
    a = store.get("patients", "a")
    assert a is not None and a.value == patient("Ada", ward="unassigned")
    assert store.get("patients", "b") is None and store.get("patients", "c") is None

    registry.start()
    eventually(
        lambda: view.state == "ready" and store.get("patients", "a") != a,
        "the view to apply the waiting records and report ready",
        timeout=120,
    )

    status = view.status()
    assert (status.state, status.reason, status.quarantined, status.keys) == ("ready", None, 0, 3)
    b, c, a2 = (store.get("patients", k) for k in "bca")
    assert b is not None and b.value == patient("Farah", ward="Maternity")
    assert c is not None and c.value == patient("Gustav", ward="unassigned")
    assert a2 is not None and a2.value == patient("Ada", "recovering", ward="unassigned")
    assert {s["id"] for s in store.schemas("patients")} == {v1_id, v3_id}


ITEM_V1 = 'syntax = "proto3"; package outage.v1; message Item { string id = 1; int32 n = 2; }'
ITEM_V2 = (
    'syntax = "proto3"; package outage.v2; message Item { string id = 1; int32 n = 2; '
    "string note = 3; }"
)
ROW = {"type": "object", "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}}
ROW_V2 = {**ROW, "properties": {**ROW["properties"], "note": {"type": "string"}}}


def test_protobuf_and_json_schema_views_restart_and_recover_without_the_registry(
    registry: PrivateRegistry, kit: Kit
) -> None:
    """Protobuf and JSON Schema views restart with the registry down from their cached
    schemas; an unseen schema id holds each view degraded without quarantining anything,
    and is applied once the registry is back."""
    protobuf, json_schema = kit.protobuf, kit.json_schema
    item = compile_messages({"item.proto": ITEM_V1})["outage.v1.Item"]
    item2 = compile_messages({"item.proto": ITEM_V2})["outage.v2.Item"]
    pt, jt = kit.topic(partitions=1), kit.topic(partitions=1)
    for topic in (pt, jt):
        protobuf.client.set_compatibility(f"{topic}-value", "NONE")
    kit.produce(pt, [("a", protobuf.value(pt, item(id="a", n=1)))])
    kit.produce(jt, [("a", json_schema.value(jt, ROW, {"id": "a", "n": 1}))])
    # Registered now, first seen by the view while the registry is down.
    unseen_p = protobuf.value(pt, item2(id="b", n=2, note="new"))
    unseen_j = json_schema.value(jt, ROW_V2, {"id": "b", "n": 2, "note": "new"})
    known_p = frame(schema_id(protobuf.value(pt, item(id="a", n=1))), b"\x00")
    known_j = frame(schema_id(json_schema.value(jt, ROW, {"id": "a", "n": 1})), b"")
    views = (
        {"name": "p", "topic": pt, "value": "protobuf"},
        {"name": "j", "topic": jt, "value": "json_schema"},
    )
    first = kit.open_store(*views)
    assert {v: s.keys for v, s in first.bootstrap().items()} == {"p": 1, "j": 1}
    first.close()

    registry.stop()
    kit.produce(pt, [("a", known_p + item(id="a", n=5).SerializeToString())])
    kit.produce(jt, [("a", known_j + json.dumps({"id": "a", "n": 5}).encode())])
    store = kit.open_store(*views)
    status = store.bootstrap()

    assert not registry.answering()
    assert {v: (s.state, s.quarantined) for v, s in status.items()} == {
        "p": ("ready", 0),
        "j": ("ready", 0),
    }
    assert (store.get("p", "a") or pytest.fail("p")).value == {"id": "a", "n": 5}
    assert (store.get("j", "a") or pytest.fail("j")).value == {"id": "a", "n": 5}

    store.start()
    kit.produce(pt, [("b", unseen_p)])
    kit.produce(jt, [("b", unseen_j)])
    for name in ("p", "j"):
        view = store.view(name)
        eventually(
            lambda v=view: v.state == "degraded", f"view {name} to report the outage", timeout=60
        )
        assert "schema registry" in (view.status().reason or "")
        assert view.status().quarantined == 0
        assert store.get(name, "b") is None

    registry.start()
    for name in ("p", "j"):
        view = store.view(name)
        eventually(
            lambda v=view, n=name: v.state == "ready" and store.get(n, "b") is not None,
            f"view {name} to apply the waiting record",
            timeout=120,
        )
        assert view.status().quarantined == 0
    assert (store.get("p", "b") or pytest.fail("p")).value == {"id": "b", "n": 2, "note": "new"}
    assert (store.get("j", "b") or pytest.fail("j")).value == {"id": "b", "n": 2, "note": "new"}
