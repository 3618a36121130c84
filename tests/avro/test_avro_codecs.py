"""Avro codecs and writer-schema lookup, caching and error mapping, with a stand-in registry client.

The real registry (Apicurio) hands out no schema GUIDs, so the GUID framings
are exercised here against a client that does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from avro_support import PATIENT_V1, PATIENT_V2, body, frame, patient
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from statestore import CodecError, RegistryUnavailableError
from statestore.avro import AvroKey, AvroValue, header_hook
from statestore.codecs import canonical_key
from statestore.schemas import Schemas, schema_info
from statestore.storage import Storage

GUID = uuid.UUID("6a1f3c2e-8d0b-4f5e-9a7c-1b2d3e4f5a6b")


class FakeRegistry:
    """Answers like SchemaRegistryClient from a dict; ``down`` makes every call fail like a refused connection."""

    def __init__(
        self, schemas: dict[int, dict[str, Any]], guids: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.schemas = schemas
        self.guids = guids or {}
        self.calls: list[tuple[str, Any]] = []
        self.down = False
        self.status: int | None = None

    def _answer(self, what: str, ref: Any, table: dict[Any, dict[str, Any]]) -> Schema:
        self.calls.append((what, ref))
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        if self.status is not None:
            raise SchemaRegistryError(self.status, self.status * 100, "registry trouble")
        if ref not in table:
            raise SchemaRegistryError(404, 40403, f"Schema {ref} not found.")
        return Schema(json.dumps(table[ref]), "AVRO")

    def get_schema(self, schema_id: int) -> Schema:
        return self._answer("id", schema_id, self.schemas)

    def get_schema_by_guid(self, guid: str) -> Schema:
        return self._answer("guid", guid, self.guids)

    def get_schema_versions(self, schema_id: int) -> list[Any]:
        from confluent_kafka.schema_registry.common.schema_registry_client import SchemaVersion

        return [SchemaVersion("patients-value", schema_id)]


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = Storage(tmp_path / "store")
    yield st
    st.close()


def schemas_with(storage: Storage, client: FakeRegistry) -> Schemas:
    return Schemas(storage, {"url": "http://127.0.0.1:9/apis/ccompat/v7"}, client=client)


def test_a_schema_is_fetched_once_then_served_from_memory_and_the_store(
    storage: Storage, tmp_path: Path
) -> None:
    """The first lookup of an id asks the registry; later ones and a reopened store do not."""
    client = FakeRegistry({7: PATIENT_V1})
    values = AvroValue(schemas_with(storage, client))
    raw = frame(7, body(PATIENT_V1, patient("Ada")))

    assert values.check(raw) == 7
    assert values.check(raw) == 7
    assert values.decode(raw) == patient("Ada")
    assert client.calls == [("id", 7)]
    assert schema_info(storage, [7])[7]["subject"] == "patients-value"

    client.down = True
    again = AvroValue(schemas_with(storage, client))
    assert again.decode(raw) == patient("Ada")
    assert client.calls == [("id", 7)]


def test_guid_framed_values_resolve_by_guid_and_get_a_local_id(storage: Storage) -> None:
    """Magic byte 1 + GUID values decode with the schema the registry has for the GUID, under a stable local id below -1."""
    client = FakeRegistry({}, {str(GUID): PATIENT_V2})
    values = AvroValue(schemas_with(storage, client))
    raw = b"\x01" + GUID.bytes + body(PATIENT_V2, patient("Ada", ward="B2"))

    local_id = values.check(raw)
    assert local_id < -1
    assert values.decode(raw) == patient("Ada", ward="B2")
    assert schema_info(storage, [local_id])[local_id]["guid"] == str(GUID)
    assert AvroValue(schemas_with(storage, client)).check(raw) == local_id
    assert client.calls == [("guid", str(GUID))]


def test_header_hook_folds_id_and_guid_headers_in_front_of_the_body() -> None:
    """Schema ids in __value_schema_id / __key_schema_id headers become the value's or key's frame; records without them pass through."""
    hook = header_hook(key_framed=True, value_framed=True)
    id_frame = b"\x00\x00\x00\x00\x07"
    guid_frame = b"\x01" + GUID.bytes

    assert hook(None, b"k", b"v") == (b"k", b"v")
    assert hook([("trace", b"x")], b"k", b"v") == (b"k", b"v")
    assert hook([("__value_schema_id", id_frame)], b"k", b"v") == (b"k", id_frame + b"v")
    assert hook([("__key_schema_id", guid_frame), ("__value_schema_id", id_frame)], b"k", b"v") == (
        guid_frame + b"k",
        id_frame + b"v",
    )
    assert hook([("__value_schema_id", id_frame)], b"k", None) == (b"k", None)
    assert header_hook(key_framed=False, value_framed=True)(
        [("__key_schema_id", id_frame)], b"k", b"v"
    ) == (b"k", b"v")


def test_a_malformed_schema_id_header_is_a_codec_error(storage: Storage) -> None:
    """A schema-id header that is neither an id nor a GUID frame makes the value a codec error that says so."""
    hook = header_hook(key_framed=False, value_framed=True)
    _, value = hook([("__value_schema_id", b"\x00\x01")], b"k", b"body")
    assert value is not None
    with pytest.raises(CodecError, match="schema-id record header"):
        AvroValue(schemas_with(storage, FakeRegistry({}))).check(value)


def test_registry_answers_map_to_bad_records_or_outages(storage: Storage) -> None:
    """404 is a bad record (and not asked again soon); refused connections and 5xx/401 are outages to retry."""
    client = FakeRegistry({})
    values = AvroValue(schemas_with(storage, client))
    raw = frame(99, b"")

    with pytest.raises(CodecError, match="schema id 99 is not known"):
        values.check(raw)
    with pytest.raises(CodecError, match="schema id 99 is not known"):
        values.check(raw)
    assert client.calls == [("id", 99)]

    other = frame(100, b"")
    client.down = True
    with pytest.raises(RegistryUnavailableError, match="unreachable"):
        values.check(other)
    client.down = False
    for status in (500, 503, 401):
        client.status = status
        with pytest.raises(RegistryUnavailableError, match=f"HTTP {status}"):
            values.check(other)


def test_framing_errors_are_named(storage: Storage) -> None:
    """Empty, short, wrong-magic and negative-id values are codec errors naming the problem."""
    values = AvroValue(schemas_with(storage, FakeRegistry({})))
    for raw, message in [
        (b"", "value is empty"),
        (b"\x00\x00\x01", "too short"),
        (b"\x01\x02", "too short for a 17-byte schema GUID"),
        (b"{}", "wrong magic byte 0x7b"),
        (b"\x00\xff\xff\xff\xfe", "negative"),
    ]:
        with pytest.raises(CodecError, match=message):
            values.check(raw)


def test_canonical_keys_sort_fields_drop_nulls_and_encode_bytes(storage: Storage) -> None:
    """Canonical key JSON has sorted object keys, no null fields, and base64 text for bytes."""
    assert (
        canonical_key({"b": 1, "a": None, "c": {"z": b"\x00\xff", "y": None}})
        == b'{"b":1,"c":{"z":"AP8="}}'
    )
    assert canonical_key("p-1") == b'"p-1"'
    keys = AvroKey(schemas_with(storage, FakeRegistry({})))
    assert keys.from_text('{"c": {"z": "AP8="}, "b": 1}') == b'{"b":1,"c":{"z":"AP8="}}'
    assert keys.to_text(b'"p-1"') == '"p-1"'


LOGICAL: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "blob", "type": "bytes"},
    ],
}


def test_values_decode_to_python_types_that_the_rest_layer_renders(storage: Storage) -> None:
    """Logical types decode as fastavro gives them (UUID, aware datetime, Decimal, bytes) and render as JSON text."""
    from statestore.api.models import dumps

    payment = {
        "id": uuid.UUID(int=1),
        "at": datetime(2025, 3, 3, 7, 0, tzinfo=UTC),
        "amount": Decimal("12.50"),
        "blob": b"\x00\xff",
    }
    values = AvroValue(schemas_with(storage, FakeRegistry({5: LOGICAL})))
    decoded = values.decode(frame(5, body(LOGICAL, payment)))

    assert decoded == payment
    assert json.loads(dumps(decoded)) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "at": "2025-03-03T07:00:00+00:00",
        "amount": "12.50",
        "blob": "AP8=",
    }


LINK: dict[str, Any] = {
    "type": "record",
    "name": "Link",
    "fields": [{"name": "next", "type": ["null", "Link"]}],
}


def test_values_that_reads_cannot_serve_are_refused_at_ingest_with_their_reason(
    storage: Storage,
) -> None:
    """A timestamp past year 9999, a UUID that is not one and a recursive value nested past what reads encode are codec errors naming why."""
    payment = {
        "id": uuid.UUID(int=1),
        "at": datetime(2025, 3, 3, tzinfo=UTC),
        "amount": Decimal("1.00"),
        "blob": b"",
    }
    good = body(LOGICAL, payment)
    values = AvroValue(schemas_with(storage, FakeRegistry({5: LOGICAL, 9: LINK})))
    assert values.check(frame(5, good)) == 5

    late = frame(5, body(LOGICAL, {**payment, "at": 2**60}))  # the writer takes a long as it is
    with pytest.raises(
        CodecError, match="reads cannot serve: timestamp-millis value 1152921504606846976"
    ):
        values.check(late)
    bad_uuid = frame(5, body(LOGICAL, {**payment, "id": "abc"}))
    with pytest.raises(CodecError, match="uuid value 'abc' is not a UUID"):
        values.check(bad_uuid)
    with pytest.raises(CodecError, match="nests records, arrays or maps more than 251 levels"):
        values.check(frame(9, b"\x02" * 251 + b"\x00"))
    assert values.check(frame(9, b"\x02" * 250 + b"\x00")) == 9


def test_a_body_nested_too_deep_never_reaches_the_decoder(storage: Storage) -> None:
    """Unchecked at ingest, a value nested 100,000 levels deep is still refused on read: fastavro's decoder would crash the process on it."""
    values = AvroValue(schemas_with(storage, FakeRegistry({9: LINK})), validate=False)
    raw = frame(9, b"\x02" * 99_999 + b"\x00")
    assert values.check(raw) == 9
    with pytest.raises(CodecError, match="cannot decode the Avro value.*levels deep"):
        values.decode(raw)
