"""Key and value codecs."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.api.models import dumps as api_dumps
from statestore.codecs import (
    BytesKey,
    BytesValue,
    JsonKey,
    JsonValue,
    StringKey,
    StringValue,
    key_codec,
    value_codec,
)
from statestore.errors import CodecError


@given(st.text())
def test_string_key_round_trips_any_text(text: str) -> None:
    """Any text key maps to its UTF-8 bytes and back, unchanged."""
    codec = StringKey()
    stored = codec.from_text(text)
    assert codec.from_kafka(stored) == stored
    assert codec.to_text(stored) == text


def test_string_key_rejects_invalid_utf8() -> None:
    """A Kafka key that is not UTF-8 is a codec error naming the byte."""
    with pytest.raises(CodecError, match="not valid UTF-8"):
        StringKey().from_kafka(b"\xff\xfe")


@given(st.binary())
def test_bytes_key_is_addressed_in_hex(raw: bytes) -> None:
    """Binary keys are stored as is and addressed by their hex text."""
    codec = BytesKey()
    assert codec.from_kafka(raw) == raw
    assert codec.from_text(codec.to_text(raw)) == raw


def test_bytes_key_rejects_non_hex() -> None:
    """Addressing a bytes key with non-hex text is a codec error."""
    with pytest.raises(CodecError, match="hex"):
        BytesKey().from_text("zz")


def test_json_key_is_canonical() -> None:
    """Two spellings of the same JSON key are one stored key."""
    codec = JsonKey()
    a = codec.from_kafka(b'{"b": 1, "a": [1, 2]}')
    b = codec.from_text('{"a":[1,2],"b":1}')
    assert a == b == b'{"a":[1,2],"b":1}'
    assert codec.to_text(a) == '{"a":[1,2],"b":1}'


def test_json_key_rejects_garbage() -> None:
    """A key that is not JSON is a codec error."""
    with pytest.raises(CodecError, match="not valid JSON"):
        JsonKey().from_kafka(b"{oops")


def test_json_value_checks_and_decodes() -> None:
    """JSON values are validated at ingest and decoded on read."""
    codec = JsonValue()
    assert codec.check(b'{"a": 1}') == -1
    assert codec.decode(b'{"a": 1}') == {"a": 1}
    with pytest.raises(CodecError, match="not valid JSON"):
        codec.check(b"{nope")


def test_empty_json_value_is_not_a_tombstone() -> None:
    """An empty value in a JSON view is reported as bad data, explicitly not as a delete."""
    with pytest.raises(CodecError, match="tombstone is a null value"):
        JsonValue().check(b"")


def test_string_and_bytes_values() -> None:
    """String values must be UTF-8 (empty is fine); bytes values are anything."""
    assert StringValue().decode(b"") == ""
    with pytest.raises(CodecError):
        StringValue().check(b"\xff")
    assert BytesValue().decode(b"\x00\xff") == b"\x00\xff"
    assert BytesValue().check(b"") == -1


def test_codec_lookup_rejects_unknown_names() -> None:
    """Unknown codec names are errors, known ones resolve."""
    assert key_codec("json").name == "json"
    assert value_codec("string").name == "string"
    with pytest.raises(CodecError):
        key_codec("xml")
    with pytest.raises(CodecError):
        value_codec("xml")


def test_json_nested_deeper_than_reads_can_encode_is_refused_at_ingest() -> None:
    """JSON that parses but is nested deeper than reads can encode is a bad record at
    ingest, not a value that fails every read: orjson writes 254 levels, and a page of
    entities wraps a value in three (the page, its items, the entity). Brackets inside
    strings do not count."""
    codec = JsonValue()
    deepest_served = b"[" * 251 + b"]" * 251
    assert codec.check(deepest_served) == -1
    assert orjson.dumps({"items": [{"key": "k", "value": codec.decode(deepest_served)}]})
    with pytest.raises(CodecError, match="nested 252 levels deep"):
        codec.check(b"[" * 252 + b"]" * 252)
    with pytest.raises(CodecError, match="nested 300 levels deep"):
        codec.parse(b'{"a":' * 300 + b"1" + b"}" * 300)
    in_strings = orjson.dumps({"s": "[" * 400, "t": '\\"{' * 300})
    assert codec.parse(in_strings) == orjson.loads(in_strings)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)


@st.composite
def _json_documents(draw: st.DrawFn) -> bytes:
    """JSON texts: random values, wrapped in up to 300 levels of arrays and objects."""
    value = draw(
        st.recursive(
            _SCALARS,
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
            ),
            max_leaves=8,
        )
    )
    depth = draw(st.integers(0, 300) | st.integers(245, 258))  # around the limit, often
    for kind in draw(st.lists(st.booleans(), min_size=depth, max_size=depth)):
        value = [value] if kind else {"k": value}
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=150, deadline=None)
@given(_json_documents())
def test_every_json_value_ingest_accepts_can_be_served(raw: bytes) -> None:
    """Whatever JSON the ingest check accepts encodes back inside the deepest wrapping a
    read uses (a page of entities), through the encoder the API uses."""
    codec = JsonValue()
    try:
        codec.check(raw)
    except CodecError:
        return
    value = codec.decode(raw)
    page = {"items": [{"key": "k", "value": value, "partition": 0, "offset": 1}], "next": None}
    assert orjson.loads(api_dumps(page))["items"][0]["value"] == orjson.loads(raw)
