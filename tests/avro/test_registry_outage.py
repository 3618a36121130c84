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
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from avro_support import (
    PATIENT_V1,
    PATIENT_V2,
    PATIENT_V3,
    REPO,
    SCHEMAS,
    Avro,
    body,
    frame,
    patient,
    wait_until,
)
from confluent_kafka.schema_registry import Schema
from formats_support import JsonSchema, Protobuf, compile_messages, schema_id

from statestore import StateStore

pytestmark = [pytest.mark.integration, pytest.mark.registry]

SCRIPT = REPO / "scripts" / "local-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRegistry:
    """A registry instance of this module only, started and stopped with scripts/local-registry."""

    def __init__(self, var: Path) -> None:
        self.var = var
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
        self.env = {
            **os.environ,
            "STATESTORE_VAR": str(var),
            "REGISTRY_PORT": str(port),
            "REGISTRY_MANAGEMENT_PORT": str(_free_port()),
            "APICURIO_DATASOURCE_URL": f"jdbc:h2:file:{var / 'registry-h2'}",
        }

    def _run(self, command: str) -> None:
        done = subprocess.run(
            [str(SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/local-registry {command} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

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


def test_registry_down_at_start_with_cached_schemas_bootstraps_and_serves(
    registry: PrivateRegistry,
    topic_factory: Callable[..., str],
    produce: Callable[..., object],
    open_store: Callable[..., StateStore],
) -> None:
    """With the registry stopped after the schemas were cached, a restarted store bootstraps new records and serves reads."""
    avro = Avro(registry.url)
    topic = topic_factory(partitions=2)
    v1 = avro.value(topic, PATIENT_V1, patient("Ada"))
    v2 = avro.value(topic, PATIENT_V2, patient("Bilal", ward="Oncology"))
    produce(topic, [("p-1", v1), ("p-2", v2)])
    view = {
        "name": "patients",
        "topic": topic,
        "value": "avro",
        "reader_schema": SCHEMAS / "patient.avsc",
    }
    first = open_store(view, url=registry.url)
    assert first.bootstrap()["patients"].keys == 2
    first.close()

    registry.stop()
    v1_id, v2_id = avro.schema_id(v1), avro.schema_id(v2)
    produce(
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
    store = open_store(view, url=registry.url)
    status = store.bootstrap()["patients"]

    assert (status.state, status.keys, status.quarantined) == ("ready", 2, 0)
    assert not registry.answering()
    p2, p3 = store.get("patients", "p-2"), store.get("patients", "p-3")
    assert p2 is not None and p2.value == patient("Bilal", "recovering", ward="Oncology")
    assert p3 is not None and p3.value == patient("Carmen", ward="unassigned")
    assert store.get("patients", "p-1") is None


def test_unseen_schema_id_while_registry_down_degrades_then_recovers(
    registry: PrivateRegistry,
    topic_factory: Callable[..., str],
    produce: Callable[..., object],
    open_store: Callable[..., StateStore],
) -> None:
    """A record with a schema id never seen while the registry is down holds the view degraded, loses and quarantines nothing, and is applied once the registry is back."""
    avro = Avro(registry.url)
    topic = topic_factory(partitions=1)
    v1 = avro.value(topic, PATIENT_V1, patient("Ada"))
    v1_id = avro.schema_id(v1)
    v3_id = avro.client.register_schema(f"{topic}-value", Schema(json.dumps(PATIENT_V3), "AVRO"))
    produce(topic, [("a", v1)])
    store = open_store(
        {
            "name": "patients",
            "topic": topic,
            "value": "avro",
            "reader_schema": SCHEMAS / "patient.avsc",
        },
        url=registry.url,
    )
    store.bootstrap()
    store.start()
    view = store.view("patients")

    registry.stop()
    produce(
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
    wait_until(lambda: view.state == "degraded", 60, "the view to report the registry outage")

    status = view.status()
    assert "schema registry" in (status.reason or "")
    assert f"schema id {v3_id}" in (status.reason or "")
    assert status.quarantined == 0
    a = store.get("patients", "a")
    assert a is not None and a.value == patient("Ada", ward="unassigned")
    assert store.get("patients", "b") is None and store.get("patients", "c") is None

    registry.start()
    wait_until(
        lambda: view.state == "ready" and store.get("patients", "a") != a,
        120,
        "the view to apply the waiting records and report ready",
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
    registry: PrivateRegistry,
    tmp_path: Path,
    topic_factory: Callable[..., str],
    produce: Callable[..., object],
    open_store: Callable[..., StateStore],
) -> None:
    """Protobuf and JSON Schema views restart with the registry down from their cached
    schemas; an unseen schema id holds each view degraded without quarantining anything,
    and is applied once the registry is back."""
    protobuf, json_schema = Protobuf(registry.url), JsonSchema(registry.url)
    item = compile_messages(tmp_path / "v1", {"item.proto": ITEM_V1})["outage.v1.Item"]
    item2 = compile_messages(tmp_path / "v2", {"item.proto": ITEM_V2})["outage.v2.Item"]
    pt, jt = topic_factory(partitions=1), topic_factory(partitions=1)
    for topic in (pt, jt):
        protobuf.client.set_compatibility(f"{topic}-value", "NONE")
    produce(pt, [("a", protobuf.value(pt, item(id="a", n=1)))])
    produce(jt, [("a", json_schema.value(jt, ROW, {"id": "a", "n": 1}))])
    # Registered now, first seen by the view while the registry is down.
    unseen_p = protobuf.value(pt, item2(id="b", n=2, note="new"))
    unseen_j = json_schema.value(jt, ROW_V2, {"id": "b", "n": 2, "note": "new"})
    known_p = frame(schema_id(protobuf.value(pt, item(id="a", n=1))), b"\x00")
    known_j = frame(schema_id(json_schema.value(jt, ROW, {"id": "a", "n": 1})), b"")
    views = (
        {"name": "p", "topic": pt, "value": "protobuf"},
        {"name": "j", "topic": jt, "value": "json_schema"},
    )
    first = open_store(*views, url=registry.url)
    assert {v: s.keys for v, s in first.bootstrap().items()} == {"p": 1, "j": 1}
    first.close()

    registry.stop()
    produce(pt, [("a", known_p + item(id="a", n=5).SerializeToString())])
    produce(jt, [("a", known_j + json.dumps({"id": "a", "n": 5}).encode())])
    store = open_store(*views, url=registry.url)
    status = store.bootstrap()

    assert not registry.answering()
    assert {v: (s.state, s.quarantined) for v, s in status.items()} == {
        "p": ("ready", 0),
        "j": ("ready", 0),
    }
    assert (store.get("p", "a") or pytest.fail("p")).value == {"id": "a", "n": 5}
    assert (store.get("j", "a") or pytest.fail("j")).value == {"id": "a", "n": 5}

    store.start()
    produce(pt, [("b", unseen_p)])
    produce(jt, [("b", unseen_j)])
    for name in ("p", "j"):
        view = store.view(name)
        wait_until(lambda v=view: v.state == "degraded", 60, f"view {name} to report the outage")
        assert "schema registry" in (view.status().reason or "")
        assert view.status().quarantined == 0
        assert store.get(name, "b") is None

    registry.start()
    for name in ("p", "j"):
        view = store.view(name)
        wait_until(
            lambda v=view, n=name: v.state == "ready" and store.get(n, "b") is not None,
            120,
            f"view {name} to apply the waiting record",
        )
        assert view.status().quarantined == 0
    assert (store.get("p", "b") or pytest.fail("p")).value == {"id": "b", "n": 2, "note": "new"}
    assert (store.get("j", "b") or pytest.fail("j")).value == {"id": "b", "n": 2, "note": "new"}
