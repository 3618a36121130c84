"""Avro views against the real broker and registry: mixed writer versions, reader schemas, status."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from avro_support import (
    PATIENT_V1,
    PATIENT_V2,
    SCHEMAS,
    Avro,
    patient,
    without,
    write_schema,
)
from confluent_kafka.schema_registry import Schema
from formats_support import Kit

from statestore import StateStore
from statestore.storage import META

pytestmark = [pytest.mark.integration, pytest.mark.registry]

# The reader schema of the patients views: v2, whose added field "ward" has a default.
READER_V2 = SCHEMAS / "patient.avsc"


def patients_view(topic: str, **options: object) -> dict[str, object]:
    """The config of the Avro view "patients" of *topic*, with *options* added."""
    return {"name": "patients", "topic": topic, "value": "avro", **options}


@pytest.fixture
def mixed_topic(kit: Kit) -> str:
    """A topic with patients written under v1 and v2 of the patient schema, one key updated across them."""
    topic, avro = kit.topic(partitions=2), kit.avro
    kit.produce(
        topic,
        [
            ("p-1", avro.value(topic, PATIENT_V1, patient("Ada"))),
            ("p-2", avro.value(topic, PATIENT_V2, patient("Bilal", ward="Oncology"))),
            ("p-3", avro.value(topic, PATIENT_V2, patient("Carmen", ward="Maternity"))),
            ("p-4", avro.value(topic, PATIENT_V2, patient("Dmitri", ward="Cardiology"))),
            ("p-4", avro.value(topic, PATIENT_V1, patient("Dmitri", "in_treatment"))),
            ("p-5", avro.value(topic, PATIENT_V1, patient("Esther"))),
            ("p-5", None),
        ],
    )
    return topic


def test_mixed_versions_come_back_in_their_writer_schema_without_reader_schema(
    mixed_topic: str, open_store: Callable[..., StateStore]
) -> None:
    """Without a reader schema each entity decodes with the writer schema of its latest record, tombstones delete."""
    store = open_store(patients_view(mixed_topic))
    status = store.bootstrap()["patients"]

    assert (status.state, status.keys, status.quarantined) == ("ready", 4, 0)
    p1 = store.get("patients", "p-1")
    assert p1 is not None and p1.value == patient("Ada")
    assert "ward" not in p1.value
    p2 = store.get("patients", "p-2")
    assert p2 is not None and p2.value == patient("Bilal", ward="Oncology")
    p4 = store.get("patients", "p-4")
    assert p4 is not None and p4.value == patient("Dmitri", "in_treatment")
    assert store.get("patients", "p-5") is None


def test_reader_schema_resolves_every_version_and_fills_defaults(
    mixed_topic: str, open_store: Callable[..., StateStore]
) -> None:
    """With reader_schema = v2, v1 entities read with the added field's default and v2 entities keep their value."""
    store = open_store(patients_view(mixed_topic, reader_schema=READER_V2))
    store.bootstrap()

    values = {e.key: e.value for e in store.scan("patients").items}
    assert values == {
        "p-1": patient("Ada", ward="unassigned"),
        "p-2": patient("Bilal", ward="Oncology"),
        "p-3": patient("Carmen", ward="Maternity"),
        "p-4": patient("Dmitri", "in_treatment", ward="unassigned"),
    }


def test_reader_schema_without_a_field_drops_it_from_every_version(
    mixed_topic: str, open_store: Callable[..., StateStore], tmp_path: Path
) -> None:
    """A field the reader schema removed disappears from entities of every writer version."""
    reader = write_schema(tmp_path / "no-allergies.avsc", without(PATIENT_V2, "allergies"))
    store = open_store(patients_view(mixed_topic, reader_schema=reader))
    store.bootstrap()

    for entity in store.scan("patients").items:
        assert "allergies" not in entity.value
        assert "ward" in entity.value
    p1 = store.get("patients", "p-1")
    assert p1 is not None and p1.value["ward"] == "unassigned"


def test_incompatible_writer_version_is_reported_and_the_last_good_value_stays(kit: Kit) -> None:
    """A writer version the reader schema cannot resolve is quarantined with the reason; the view carries on."""
    topic, avro = kit.topic(partitions=1), kit.avro
    incompatible = without(PATIENT_V1, "name")  # v2 readers need "name", which has no default
    avro.client.set_compatibility(subject_name=f"{topic}-value", level="NONE")
    kit.produce(
        topic,
        [
            ("p-1", avro.value(topic, PATIENT_V2, patient("Ada", ward="Oncology"))),
            (
                "p-1",
                avro.value(
                    topic, incompatible, {k: v for k, v in patient("Ada").items() if k != "name"}
                ),
            ),
            ("p-2", avro.value(topic, PATIENT_V1, patient("Bilal"))),
        ],
    )
    store = kit.open_store(patients_view(topic, reader_schema=READER_V2))
    status = store.bootstrap()["patients"]

    assert (status.state, status.keys, status.quarantined) == ("ready", 2, 1)
    p1 = store.get("patients", "p-1")
    assert p1 is not None and p1.value == patient("Ada", ward="Oncology")
    [item], _ = store.view("patients").quarantine()
    assert item["offset"] == 1
    assert "cannot be resolved onto the reader schema" in item["reason"]
    assert "name" in item["reason"]


def test_status_reports_schema_ids_versions_and_entities_per_schema(
    mixed_topic: str, open_store: Callable[..., StateStore], avro: Avro
) -> None:
    """The view lists each writer schema id with its subject, version and how many entities use it."""
    v1_id = avro.client.lookup_schema(
        f"{mixed_topic}-value", Schema(json.dumps(PATIENT_V1), "AVRO")
    ).schema_id
    v2_id = avro.client.lookup_schema(
        f"{mixed_topic}-value", Schema(json.dumps(PATIENT_V2), "AVRO")
    ).schema_id
    store = open_store(patients_view(mixed_topic))
    status = store.bootstrap()["patients"]

    assert status.schema_entities == {v1_id: 2, v2_id: 2}
    by_id = {s["id"]: s for s in store.schemas("patients")}
    assert by_id[v1_id]["subject"] == f"{mixed_topic}-value"
    assert (by_id[v1_id]["version"], by_id[v1_id]["entities"]) == (1, 2)
    assert (by_id[v2_id]["version"], by_id[v2_id]["entities"]) == (2, 2)


def test_header_schema_id_reads_like_the_prefixed_wire_format(kit: Kit) -> None:
    """A value whose schema id is in the __value_schema_id header decodes like one framed in the payload."""
    topic = kit.topic(partitions=1)
    framed = kit.avro.value(topic, PATIENT_V2, patient("Ada", ward="Oncology"))
    kit.produce(topic, [("p-h", framed[5:])], headers=[("__value_schema_id", framed[:5])])
    kit.produce(topic, [("p-f", framed)])
    store = kit.open_store(patients_view(topic))
    status = store.bootstrap()["patients"]

    assert (status.keys, status.quarantined) == (2, 0)
    headed, prefixed = store.get("patients", "p-h"), store.get("patients", "p-f")
    assert headed is not None and prefixed is not None
    assert headed.value == prefixed.value == patient("Ada", ward="Oncology")
    assert headed.schema_id == prefixed.schema_id == kit.avro.schema_id(framed)


def test_writer_schemas_are_cached_in_the_store_for_restarts_without_the_registry(
    mixed_topic: str,
    produce: Callable[..., object],
    avro: Avro,
    open_store: Callable[..., StateStore],
) -> None:
    """Writer schemas fetched once are kept in the store: reopened against no registry, it bootstraps and reads."""
    view = patients_view(mixed_topic, reader_schema=READER_V2)
    first = open_store(view)
    first.bootstrap()
    assert any(k.startswith(b"schema/id/") for k, _ in first.storage.scan(META, b"schema/"))
    first.close()
    produce(mixed_topic, [("p-6", avro.value(mixed_topic, PATIENT_V1, patient("Farah")))])

    # Nothing listens on port 9 of 127.0.0.1: every registry call would be refused.
    again = open_store(view, url="http://127.0.0.1:9/apis/ccompat/v7")
    status = again.bootstrap()["patients"]

    assert (status.state, status.quarantined, status.keys) == ("ready", 0, 5)
    p6 = again.get("patients", "p-6")
    assert p6 is not None and p6.value == patient("Farah", ward="unassigned")


def test_an_index_on_an_avro_field_sees_the_reader_schema_defaults(
    mixed_topic: str, open_store: Callable[..., StateStore]
) -> None:
    """Indexed Avro views decode at ingest with the reader schema, so v1 entities are found under the default."""
    store = open_store(patients_view(mixed_topic, reader_schema=READER_V2, indexes=["ward"]))
    store.bootstrap()

    assert [e.key for e in store.by("patients", "ward", "unassigned").items] == ["p-1", "p-4"]
    assert [e.key for e in store.by("patients", "ward", "Oncology").items] == ["p-2"]
