"""Avro keys: stored and addressed by their decoded canonical form."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from avro_support import PATIENT_V1, patient
from formats_support import Kit

from statestore import InvalidKeyError, StateStore, ViewStatus
from tests.support.schemas import field, optional, record

pytestmark = [pytest.mark.integration, pytest.mark.registry]

KEY_FIELDS = {"hospital": field("hospital", "string"), "mrn": field("mrn", "long")}
KEY_V1 = record("PatientKey", list(KEY_FIELDS.values()), namespace="dev.statestore.demo")
# v2: another namespace, fields in another order, an optional field added (BACKWARD compatible).
KEY_V2 = record(
    "PatientKey",
    [KEY_FIELDS["mrn"], optional("ward"), KEY_FIELDS["hospital"]],
    namespace="dev.statestore.demo.v2",
)


def keyed_patients(
    open_store: Callable[..., StateStore], topic: str
) -> tuple[StateStore, ViewStatus]:
    """The view "patients" of *topic* with Avro keys and values, bootstrapped; its status."""
    store = open_store({"name": "patients", "topic": topic, "key": "avro", "value": "avro"})
    return store, store.bootstrap()["patients"]


@pytest.fixture
def keyed_topic(kit: Kit) -> str:
    """Patients keyed by an Avro record, the same patient written under key schema v1 and then v2."""
    topic, avro = kit.topic(partitions=1), kit.avro
    kit.produce(
        topic,
        [
            (
                avro.key(topic, KEY_V1, {"hospital": "st-marys", "mrn": 42}),
                avro.value(topic, PATIENT_V1, patient("Ada")),
            ),
            (
                avro.key(topic, KEY_V1, {"hospital": "st-marys", "mrn": 7}),
                avro.value(topic, PATIENT_V1, patient("Bilal")),
            ),
            (
                avro.key(topic, KEY_V2, {"mrn": 42, "ward": None, "hospital": "st-marys"}),
                avro.value(topic, PATIENT_V1, patient("Ada", "in_treatment")),
            ),
            (
                avro.key(topic, KEY_V2, {"mrn": 7, "ward": "B2", "hospital": "st-marys"}),
                avro.value(topic, PATIENT_V1, patient("Bilal", "recovering")),
            ),
        ],
    )
    return topic


def test_same_logical_key_under_two_key_schema_versions_is_one_entity(
    keyed_topic: str, open_store: Callable[..., StateStore]
) -> None:
    """A key written under v1 and again under v2 (renamed namespace, reordered fields, new null field) is one entity with the newest value."""
    store, status = keyed_patients(open_store, keyed_topic)

    assert status.quarantined == 0
    ada = store.get("patients", '{"mrn": 42, "hospital": "st-marys"}')
    assert ada is not None and ada.value == patient("Ada", "in_treatment")
    assert ada.key == '{"hospital":"st-marys","mrn":42}'


def test_a_key_with_a_non_null_new_field_is_another_entity(
    keyed_topic: str, open_store: Callable[..., StateStore]
) -> None:
    """Only null fields are left out of the key: a v2 key with ward set names a different entity."""
    store, status = keyed_patients(open_store, keyed_topic)

    assert status.keys == 3
    keys = [e.key for e in store.scan("patients").items]
    assert keys == [  # byte order of the canonical JSON
        '{"hospital":"st-marys","mrn":42}',
        '{"hospital":"st-marys","mrn":7,"ward":"B2"}',
        '{"hospital":"st-marys","mrn":7}',
    ]
    old = store.get("patients", '{"hospital":"st-marys","mrn":7}')
    assert old is not None and old.value == patient("Bilal")


def test_a_truncated_avro_key_is_quarantined(kit: Kit) -> None:
    """An Avro key that does not decode is quarantined; the other records are applied."""
    topic = kit.topic(partitions=1)
    key = kit.avro.key(topic, KEY_V1, {"hospital": "st-marys", "mrn": 42})
    value = kit.avro.value(topic, PATIENT_V1, patient("Ada"))
    kit.produce(topic, [(key[:-3], value), (key, value)])
    store, status = keyed_patients(kit.open_store, topic)

    assert (status.keys, status.quarantined) == (1, 1)
    [item], _ = store.view("patients").quarantine()
    assert "key is not valid Avro" in item["reason"]


def test_avro_keys_are_addressed_by_json_text(
    keyed_topic: str, open_store: Callable[..., StateStore]
) -> None:
    """Keys are looked up by their JSON text in any spelling; text that is not JSON is an invalid key."""
    store, _ = keyed_patients(open_store, keyed_topic)

    [a, b] = store.lookup(
        "patients", ['{ "hospital" : "st-marys", "mrn" : 42 }', '{"mrn": 999, "hospital": "x"}']
    )
    assert a is not None and a.value["status"] == "in_treatment"
    assert b is None
    with pytest.raises(InvalidKeyError, match="not JSON"):
        store.get("patients", "st-marys/42")
