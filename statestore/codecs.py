"""Key and value codecs: how raw Kafka bytes become stored keys and served values.

Keys are stored in a canonical byte form so that one logical key is one entity
and key order is byte order. Values are stored raw; :meth:`ValueCodec.check`
runs at ingest (only what must be known then) and :meth:`ValueCodec.decode` on
read. Keys of the registry formats (Avro, Protobuf, JSON Schema) are stored as
:func:`canonical_key` JSON and addressed through :class:`JsonAddressedKey`, both
here, below the format modules that share them.
"""

from __future__ import annotations

import base64
import binascii
import decimal
from typing import Any, Protocol

import orjson

from .errors import CodecError, InvalidKeyError

# JSON nested deeper than this parses, but cannot be encoded again when served.
# orjson writes at most 254 levels of nesting, and a read wraps a value in up to three
# more: a page is an object, its "items" a list, each item an entity object.
MAX_SERVED_DEPTH = 254 - 3

# Why a record without a key cannot be applied (follow and bulk paths alike).
NO_KEY = "record has no key (null key); a view needs a key per entity"

__all__ = [
    "MAX_SERVED_DEPTH",
    "NO_KEY",
    "BytesKey",
    "BytesValue",
    "JsonAddressedKey",
    "JsonKey",
    "JsonValue",
    "KeyCodec",
    "StringKey",
    "StringValue",
    "ValueCodec",
    "canonical_key",
    "key_codec",
    "not_utf8",
    "value_codec",
]


class KeyCodec(Protocol):
    """Turns Kafka key bytes into the stored key and back into the text users address."""

    name: str

    def from_kafka(self, raw: bytes) -> bytes:
        """Canonical stored key for a Kafka key; raise CodecError if it is not valid."""
        ...

    def from_text(self, text: str) -> bytes:
        """Stored key for the text form a user types (URL, CLI, embedded API)."""
        ...

    def to_text(self, stored: bytes) -> str:
        """The text form of a stored key."""
        ...


class ValueCodec(Protocol):
    """Checks values at ingest and decodes them on read."""

    name: str

    def check(self, raw: bytes) -> int:
        """Validate at ingest; return the writer schema id (``-1`` when there is none)."""
        ...

    def decode(self, raw: bytes) -> Any:
        """The value served to users."""
        ...


class StringKey:
    """UTF-8 text keys, stored as their UTF-8 bytes."""

    name = "string"

    def from_kafka(self, raw: bytes) -> bytes:
        _check_utf8(raw, "key")
        return raw

    def from_text(self, text: str) -> bytes:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(f"key is not encodable as UTF-8: {exc.reason}") from None

    def to_text(self, stored: bytes) -> str:
        return stored.decode("utf-8")


class BytesKey:
    """Opaque binary keys, addressed by their lowercase hex form."""

    name = "bytes"

    def from_kafka(self, raw: bytes) -> bytes:
        return raw

    def from_text(self, text: str) -> bytes:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise InvalidKeyError(f"bytes keys are addressed in hex; {text!r} is not hex") from None

    def to_text(self, stored: bytes) -> str:
        return stored.hex()


class JsonKey:
    """JSON keys, stored as canonical JSON (sorted object keys, no spaces)."""

    name = "json"

    def _canonical(self, data: bytes | str) -> bytes:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CodecError(f"key is not valid JSON: {exc}") from None
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    def from_kafka(self, raw: bytes) -> bytes:
        return self._canonical(raw)

    def from_text(self, text: str) -> bytes:
        try:
            return self._canonical(text)
        except CodecError as exc:
            raise InvalidKeyError(str(exc)) from None

    def to_text(self, stored: bytes) -> str:
        return stored.decode("utf-8")


class JsonValue:
    """JSON values; parsed at ingest so malformed JSON is quarantined, not served."""

    name = "json"

    def check(self, raw: bytes) -> int:
        self.parse(raw)
        return -1

    def parse(self, raw: bytes) -> Any:
        """The value, checked as ``check`` does: for a caller that needs both."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _not_json(raw, exc) from None
        if len(raw) > MAX_SERVED_DEPTH:
            _check_depth(raw)
        return value

    def decode(self, raw: bytes) -> Any:
        return orjson.loads(raw)


class StringValue:
    """UTF-8 text values."""

    name = "string"

    def check(self, raw: bytes) -> int:
        _check_utf8(raw, "value")
        return -1

    def decode(self, raw: bytes) -> Any:
        return raw.decode("utf-8")


class BytesValue:
    """Opaque values, served as base64 text in JSON responses and as bytes when embedded."""

    name = "bytes"

    def check(self, raw: bytes) -> int:
        return -1

    def decode(self, raw: bytes) -> Any:
        return raw


def not_utf8(what: str, exc: UnicodeDecodeError) -> str:
    """Why *what* (``key``, ``value``) is refused: where its UTF-8 breaks."""
    return f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"


def _check_utf8(raw: bytes, what: str) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(not_utf8(what, exc)) from None


def _not_json(raw: bytes, exc: Exception) -> CodecError:
    if not raw:
        return CodecError(
            "value is empty, which is not JSON (a tombstone is a null value, not an empty one)"
        )
    return CodecError(f"value is not valid JSON: {exc}")


def _check_depth(value: bytes) -> None:
    """Refuse JSON nested deeper than reads can encode (cheap unless it could be)."""
    if value.count(b"[") + value.count(b"{") <= MAX_SERVED_DEPTH:
        return
    depth = deepest = 0
    in_string = escaped = False
    for byte in value:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    if deepest > MAX_SERVED_DEPTH:
        raise CodecError(
            f"value is JSON nested {deepest} levels deep; at most {MAX_SERVED_DEPTH} can be served"
        )


class JsonAddressedKey:
    """Keys stored as canonical JSON of the decoded key and addressed by any JSON spelling
    of it (Avro, Protobuf and JSON Schema keys)."""

    kind = ""
    example = ""

    def from_text(self, text: str) -> bytes:
        try:
            datum = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidKeyError(
                f"{self.kind} keys are addressed by their JSON form, e.g. {self.example}; "
                f"{text!r} is not JSON: {exc}"
            ) from None
        return canonical_key(datum)

    def to_text(self, stored: bytes) -> str:
        return stored.decode("utf-8")


def canonical_key(datum: Any) -> bytes:
    """The stored form of a decoded registry key (Avro, Protobuf, JSON Schema): JSON, object keys sorted, null fields left out.

    Leaving null fields out makes a key written before an optional field was
    added and the same key written after (with the field null) one entity;
    bytes and fixed become base64 text, decimals their text.
    """
    return orjson.dumps(_drop_nulls(datum), option=orjson.OPT_SORT_KEYS, default=_json_default)


def _drop_nulls(datum: Any) -> Any:
    if isinstance(datum, dict):
        return {k: _drop_nulls(v) for k, v in datum.items() if v is not None}
    if isinstance(datum, list):
        return [_drop_nulls(v) for v in datum]
    return datum


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no JSON form")


def key_codec(name: str) -> KeyCodec:
    """The key codec called *name* (registry keys come from :mod:`statestore.registry_codecs`)."""
    codecs: dict[str, KeyCodec] = {"string": StringKey(), "bytes": BytesKey(), "json": JsonKey()}
    try:
        return codecs[name]
    except KeyError:
        raise CodecError(f"unknown key codec {name!r}") from None


def value_codec(name: str) -> ValueCodec:
    """The value codec called *name* (registry values come from :mod:`statestore.registry_codecs`)."""
    codecs: dict[str, ValueCodec] = {
        "json": JsonValue(),
        "string": StringValue(),
        "bytes": BytesValue(),
    }
    try:
        return codecs[name]
    except KeyError:
        raise CodecError(f"unknown value codec {name!r}") from None


def b64(data: bytes | None) -> str | None:
    """Base64 text of *data* (None stays None), for JSON output of raw bytes."""
    return None if data is None else base64.b64encode(data).decode("ascii")
