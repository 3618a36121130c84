"""Framing detection for Apicurio's wire formats, without a broker or a registry."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from statestore import Config, ConfigError, ViewConfig, load_config
from statestore.avro import AvroValue, avro_key, header_hook
from statestore.errors import CodecError
from statestore.framing import CONFLUENT, Framing, frame_length, framing_of
from statestore.schemas import Schemas, global_ref
from tests.support.schemas import field, optional, record, with_field, without

DOC7: dict[str, Any] = {"schema": '"string"', "refs": []}
DOC8: dict[str, Any] = {"schema": '"long"', "refs": []}
READING = record("Reading", [field("id", "string"), field("n", "int"), optional("note")])
DOC9: dict[str, Any] = {"schema": json.dumps(READING), "refs": []}
BODY = b"\x06abc"


def schemas() -> Schemas:
    """Content ids 7, 8 and 9 cached; global id 7 names content id 8 (the ids collide)."""
    return Schemas(
        None,
        {"url": "http://127.0.0.1:9"},
        known=({7: DOC7, 8: DOC8, 9: DOC9}, {global_ref(7): 8}),
    )


def long_frame(ref: int) -> bytes:
    return b"\x00" + struct.pack(">q", ref)


def confluent_frame(ref: int) -> bytes:
    return b"\x00" + struct.pack(">i", ref)


@pytest.mark.parametrize(
    ("framing", "raw", "expected"),
    [
        (Framing("auto"), confluent_frame(7) + BODY, (7, 5)),
        (Framing("auto"), long_frame(7) + BODY, (7, 9)),
        (Framing("auto", "global"), confluent_frame(7) + BODY, (8, 5)),
        (Framing("auto", "global"), long_frame(7) + BODY, (8, 9)),
        (Framing("apicurio_8byte"), long_frame(7) + BODY, (7, 9)),
        (Framing("apicurio_8byte", "global"), long_frame(7) + BODY, (8, 9)),
        (Framing("confluent", "global"), confluent_frame(7) + BODY, (8, 5)),
        (CONFLUENT, confluent_frame(7) + BODY, (7, 5)),
    ],
)
def test_magic_byte_frames_read_the_configured_id_kind(
    framing: Framing, raw: bytes, expected: tuple[int, int]
) -> None:
    """A magic-byte frame's id is of the view's id_kind; auto tells 8-byte ids by their zero high word."""
    schema_id, offset, _ = schemas().resolve(raw, "value", "AVRO", framing)
    assert (schema_id, offset) == expected
    assert frame_length(raw, framing) == offset


@pytest.mark.parametrize("kind", ["auto", "apicurio_headers"])
@pytest.mark.parametrize(("header", "expected"), [("contentId", 7), ("globalId", 8)])
def test_apicurio_id_headers_name_their_own_kind(kind: str, header: str, expected: int) -> None:
    """An apicurio.value.contentId header reads a content id and a globalId header a global id, whatever id_kind says."""
    framing = Framing(kind, "global" if header == "contentId" else "content")  # type: ignore[arg-type]
    hook = header_hook(False, True, value_framing=framing)
    headers = [
        ("apicurio.value.encoding", b"BINARY"),
        (f"apicurio.value.{header}", struct.pack(">q", 7)),
    ]
    _, folded = hook(headers, b"k", BODY)
    assert folded is not None and folded.endswith(BODY)
    schema_id, offset, _ = schemas().resolve(folded, "value", "AVRO", framing)
    assert (schema_id, offset, folded[offset:]) == (expected, 10, BODY)


def test_key_headers_fold_into_the_key_only() -> None:
    """apicurio.key.* headers frame the key and apicurio.value.* ones the value."""
    framing = Framing("apicurio_headers")
    hook = header_hook(True, True, key_framing=framing, value_framing=framing)
    key, value = hook(
        [
            ("apicurio.key.contentId", struct.pack(">q", 8)),
            ("apicurio.value.contentId", struct.pack(">q", 7)),
        ],
        BODY,
        BODY,
    )
    s = schemas()
    assert key is not None and value is not None
    assert s.resolve(key, "key", "AVRO", framing)[0] == 8
    assert s.resolve(value, "value", "AVRO", framing)[0] == 7


@pytest.mark.parametrize(
    ("framing", "headers", "raw", "reason"),
    [
        (Framing("apicurio_headers"), [("apicurio.value.contentId", b"\x00\x00\x00\x07")], BODY, "header is 4 bytes"),
        (Framing("auto"), [("apicurio.value.globalId", b"7")], BODY, "globalId header is 1 bytes"),
        (Framing("apicurio_headers"), [("other", b"x")], BODY, "no apicurio.value.contentId or"),
        (Framing("apicurio_headers"), None, confluent_frame(7) + BODY, "framing is apicurio_headers"),
        (Framing("auto"), [("apicurio.value.encoding", b"JSON")], b'"abc"', "no apicurio.value.contentId or"),
        (Framing("apicurio_8byte"), None, b"\x00\x00\x00\x07" + BODY[:1], "too short for the 9-byte frame"),
        (Framing("apicurio_8byte"), None, b"\x01" + bytes(16) + BODY, "wrong magic byte 0x01"),
        (Framing("auto"), None, long_frame(0) + BODY, "not a registry id"),
        (Framing("auto"), None, b"\x07" + BODY, "wrong magic byte 0x07"),
    ],
)  # fmt: skip
def test_framing_mismatches_and_bad_headers_are_codec_errors(
    framing: Framing, headers: list[tuple[str, bytes]] | None, raw: bytes, reason: str
) -> None:
    """Malformed id headers, missing ones (a JSON-encoded body included) and a frame the framing does not take raise CodecError saying so."""
    _, folded = header_hook(False, True, value_framing=framing)(headers, b"k", raw)
    assert folded is not None
    with pytest.raises(CodecError, match=reason):
        schemas().resolve(folded, "value", "AVRO", framing)


def test_the_confluent_framing_ignores_apicurio_headers() -> None:
    """Under the default framing Apicurio's headers are not read and 8-byte frames are not guessed."""
    hook = header_hook(False, True)
    _, value = hook([("apicurio.value.contentId", struct.pack(">q", 7))], b"k", BODY)
    assert value == BODY
    assert framing_of("confluent", "content") is CONFLUENT
    with pytest.raises(CodecError, match="not known|unreachable|0x06"):
        schemas().resolve(BODY, "value", "AVRO", CONFLUENT)


def test_global_ids_need_a_native_api(tmp_path: Path) -> None:
    """id_kind = "global" without an Apicurio URL to derive the native API from is a config error; a ccompat URL derives it."""
    toml = tmp_path / "s.toml"
    view = '[[views]]\nname = "v"\ntopic = "t"\nvalue = "avro"\nid_kind = "global"\n'
    toml.write_text('[schema_registry]\nurl = "http://127.0.0.1:8081"\n' + view)
    with pytest.raises(ConfigError, match="apicurio_url"):
        load_config(toml, environ={})
    toml.write_text('[schema_registry]\nurl = "http://127.0.0.1:8081/apis/ccompat/v7"\n' + view)
    config: Config = load_config(toml, environ={})
    assert config.schema_registry.native_url() == "http://127.0.0.1:8081/apis/registry/v3"
    with pytest.raises(ValueError, match="apply to value = 'avro'"):
        ViewConfig(name="v", topic="t", value="json", framing="auto")


def test_framing_settings_change_the_view_fingerprint_only_when_set() -> None:
    """A view at the default framing keeps its fingerprint; another framing asks for a rebuild."""
    base = ViewConfig(name="v", topic="t", value="avro")
    assert (
        base.fingerprint()
        == ViewConfig(name="v", topic="t", value="avro", framing="confluent").fingerprint()
    )
    assert (
        base.fingerprint()
        != ViewConfig(name="v", topic="t", value="avro", framing="auto").fingerprint()
    )


@pytest.mark.parametrize("kind", ["auto", "apicurio_headers"])
def test_the_json_encoding_is_folded_into_the_kind_byte_and_read_back(kind: str) -> None:
    """apicurio.*.encoding = JSON sets the kind byte's high bit in the fold; binary folds keep their bytes; both decode."""
    framing = Framing(kind)  # type: ignore[arg-type]
    hook = header_hook(True, True, key_framing=framing, value_framing=framing)
    ref = struct.pack(">q", 7)
    _, binary = hook(
        [("apicurio.value.contentId", ref), ("apicurio.value.encoding", b"BINARY")], None, BODY
    )
    # The bytes stored for binary bodies since header frames were first folded.
    assert binary == b"\xfdc" + ref + BODY
    key, value = hook(
        [
            ("apicurio.key.contentId", ref),
            ("apicurio.key.encoding", b"JSON"),
            ("apicurio.value.globalId", ref),
            ("apicurio.value.encoding", b"JSON"),
        ],
        b'"k-1"',
        b"5000000000",
    )
    assert key == b"\xfd\xe3" + ref + b'"k-1"'
    assert value == b"\xfd\xe7" + ref + b"5000000000"
    s = schemas()
    # Global id 7 names content id 8 ("long"); the frame is as long as a binary one.
    assert s.resolve(value, "value", "AVRO", framing)[:2] == (8, 10)
    assert s.writer(value, "value", framing).json and not s.writer(binary, "value", framing).json
    values = AvroValue(s, framing=framing)
    assert (values.check(value), values.decode(value)) == (8, 5_000_000_000)
    assert (values.check(binary), values.decode(binary)) == (7, "abc")
    assert avro_key(s, framing).from_kafka(key) == b'"k-1"'


def test_json_bodies_resolve_onto_the_reader_schema(tmp_path: Path) -> None:
    """A JSON-encoded record decodes as written, and onto a reader schema that drops a field and adds one with a default."""
    reader = with_field(
        without(without(READING, "n"), "note"), field("region", "string", default="eu")
    )
    path = tmp_path / "reader.avsc"
    path.write_text(json.dumps(reader), encoding="utf-8")
    framing = Framing("apicurio_headers")
    headers = [
        ("apicurio.value.contentId", struct.pack(">q", 9)),
        ("apicurio.value.encoding", b"JSON"),
    ]
    body = json.dumps({"id": "k-1", "n": 3, "note": {"string": 'a "b"\n é'}}).encode()
    _, value = header_hook(False, True, value_framing=framing)(headers, None, body)
    assert value is not None
    written = AvroValue(schemas(), framing=framing)
    assert written.check(value) == 9
    assert written.decode(value) == {"id": "k-1", "n": 3, "note": 'a "b"\n é'}
    projected = AvroValue(schemas(), path, framing=framing)
    assert projected.check(value) == 9
    assert projected.decode(value) == {"id": "k-1", "region": "eu"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"id": "k-1", "n": "three"}', "Reading.n is <three> of type <class 'str'> expected int"),
        (b'{"id": "k-1", "n": 2147483648}', "expected int"),
        (b'{"id": "k-1"', "JSONDecodeError"),
        (b'{"id": "k-1", "n": 1} {"id": "k-2", "n": 2}', "Extra data"),
        (b'{"id": "k-1"}', "no value and no default"),
        (b'{"id": "k-1", "n": 1, "note": {"int": 3}}', "'int' is not in list"),
        (b"\x06k-1\x02", "JSONDecodeError"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_body_that_is_not_avro_json_for_its_writer_is_a_codec_error(
    body: bytes, reason: str
) -> None:
    """A JSON-encoded value that does not parse, has a wrong type or misses a field fails the ingest check saying why; so does such a key."""
    framing = Framing("auto")
    headers = [
        ("apicurio.key.contentId", struct.pack(">q", 9)),
        ("apicurio.key.encoding", b"JSON"),
        ("apicurio.value.contentId", struct.pack(">q", 9)),
        ("apicurio.value.encoding", b"JSON"),
    ]
    key, value = header_hook(True, True, key_framing=framing, value_framing=framing)(
        headers, body, body
    )
    assert key is not None and value is not None
    with pytest.raises(CodecError, match="value is not Avro's JSON encoding") as raised:
        AvroValue(schemas(), framing=framing).check(value)
    assert reason in str(raised.value)
    with pytest.raises(CodecError, match="key is not Avro's JSON encoding") as raised:
        avro_key(schemas(), framing).from_kafka(key)
    assert reason in str(raised.value)


def test_a_json_body_of_a_schema_recursive_through_a_map_is_refused_saying_why() -> None:
    """fastavro's JSON decoder cannot read a schema recursive through a map: the ingest check says so rather than crash or pass."""
    tree = {"type": "record", "name": "Tree", "fields": [{"name": "kids", "type": {"type": "map", "values": "Tree"}}]}  # fmt: skip
    s = Schemas(
        None,
        {"url": "http://127.0.0.1:9"},
        known=({11: {"schema": json.dumps(tree), "refs": []}}, {}),
    )
    framing = Framing("apicurio_headers")
    headers = [
        ("apicurio.value.contentId", struct.pack(">q", 11)),
        ("apicurio.value.encoding", b"JSON"),
    ]
    _, value = header_hook(False, True, value_framing=framing)(headers, None, b'{"kids": {}}')
    assert value is not None
    with pytest.raises(CodecError, match="cannot serve: .*recursive through an array or map"):
        AvroValue(s, framing=framing).check(value)
