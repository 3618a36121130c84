"""Key and value codecs."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    """JSON that parses but is nested deeper than the encoder reads use (254) is a bad record
    at ingest, not a value that fails every read; brackets inside strings do not count."""
    codec = JsonValue()
    deepest_served = b"[" * 254 + b"]" * 254
    assert codec.check(deepest_served) == -1
    assert orjson.dumps(codec.decode(deepest_served))
    with pytest.raises(CodecError, match="nested 255 levels deep"):
        codec.check(b"[" * 255 + b"]" * 255)
    with pytest.raises(CodecError, match="nested 300 levels deep"):
        codec.parse(b'{"a":' * 300 + b"1" + b"}" * 300)
    in_strings = orjson.dumps({"s": "[" * 400, "t": '\\"{' * 300})
    assert codec.parse(in_strings) == orjson.loads(in_strings)
