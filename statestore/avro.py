"""Avro keys and values in the Confluent wire format, writer schemas from the registry.

Framings accepted (confluent-kafka 2.x writes all of them):

* magic byte 0, a 4-byte big-endian schema id, the Avro binary body;
* magic byte 1, a 16-byte schema GUID, the body;
* the same id or GUID in a ``__value_schema_id`` / ``__key_schema_id`` record
  header with a bare body: the header hook folds the header in front of the
  body, so stored values are always framed and decode the same way;
* with a view's ``framing`` / ``key_framing`` set, Apicurio's: an 8-byte id
  after magic byte 0, or ``apicurio.value.*`` / ``apicurio.key.*`` id headers
  (folded in front of the bare body as well), content or global ids
  (:mod:`statestore.framing`; :func:`header_hook` folds headers in), the body
  in Avro's binary encoding or, with ``apicurio.value.encoding = JSON`` /
  ``apicurio.key.encoding = JSON``, its JSON encoding (the fold records which).

Ingest checks the framing, that the writer schema resolves (a dict hit after
the first record of a schema) and that the body is complete Avro for it; the
value itself is decoded on read, onto the view's ``reader_schema`` when set.
Writer schemas are cached in the store's metadata (:mod:`statestore.schemas`),
so restarts and reads need the registry only for schema ids never seen.

Avro keys are stored as canonical JSON of the decoded key (object keys sorted,
fields whose value is null left out), so the same logical key written under
two key-schema versions is one entity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader

from .avro_check import BodyCheck, UnservableAvro, read_json
from .avro_compat import incompatibility
from .codecs import JsonAddressedKey, canonical_key
from .errors import CodecError, ConfigError
from .framing import (
    APICURIO_MARK,
    BAD_HEADER,
    CONFLUENT,
    GUID_FRAME,
    ID_FRAME,
    JSON_BIT,
    NO_ID_HEADER,
    Framing,
    frame_length,
)
from .records import HeaderHook
from .schemas import Schemas, Writer

__all__ = [
    "KEY_SCHEMA_HEADER",
    "VALUE_SCHEMA_HEADER",
    "AvroKey",
    "AvroValue",
    "avro_key",
    "header_hook",
]

log = logging.getLogger(__name__)

KEY_SCHEMA_HEADER = "__key_schema_id"
VALUE_SCHEMA_HEADER = "__value_schema_id"


class AvroValue:
    """Avro values: checked at ingest, decoded on read (onto the reader schema when set)."""

    name = "avro"

    def __init__(
        self,
        schemas: Schemas,
        reader_schema: Path | None = None,
        *,
        validate: bool = True,
        framing: Framing = CONFLUENT,
    ) -> None:
        self._schemas = schemas
        self._framing = framing
        # The frame's length when fixed (the default framing: 5), else 0: told per record.
        self._frame = framing.fixed
        self._validate = validate
        self._reader: Any = None
        self._reader_named: dict[str, Any] = {}
        self.reader_path = reader_schema
        if reader_schema is not None:
            self._reader, self._reader_named = load_reader_schema(reader_schema)
        # id frame (5 bytes by default) -> the writer's body check (returns the schema id):
        # the ingest fast path.
        self._ok: dict[bytes, BodyCheck] = {}
        self._ok_guid: dict[bytes, Writer] = {}
        self._incompatible: dict[int, str] = {}

    def check(self, raw: bytes) -> int:
        n = self._frame
        if n:
            check = self._ok.get(raw[:n])
        else:
            # No 5-byte key starts an 8-byte frame (id 0) or a folded header frame (0xfd).
            check = self._ok.get(raw[:5]) or self._ok.get(raw[: frame_length(raw, self._framing)])
        if check is None:
            check = self._body_check(self._admit(raw))
        try:
            return check(raw)
        except UnservableAvro as exc:
            w = self._admit(raw)
            raise CodecError(
                f"value is Avro for writer schema id {w.id} that reads cannot serve: {exc}"
            ) from None
        except Exception as exc:
            w = self._admit(raw)
            if w.json:
                raise CodecError(
                    f"value is not Avro's JSON encoding of a value of writer schema id {w.id} "
                    f"(apicurio.value.encoding = JSON): {exc}"
                ) from None
            raise CodecError(
                f"value is not valid Avro for writer schema id {w.id} "
                f"(truncated or corrupt body: {_explain(exc)})"
            ) from None

    def _admit(self, raw: bytes) -> Writer:
        """The slow path: resolve the frame and check the writer against the reader schema."""
        if raw[:1] == b"\x01":
            known = self._ok_guid.get(raw[:GUID_FRAME])
            if known is not None:
                return known
        w = self._schemas.writer(raw, "value", self._framing)
        reason = self._incompatible.get(w.id)
        if reason is None and w.id not in self._incompatible:
            reason = self._compatibility(w)
            self._incompatible[w.id] = reason or ""
        if reason:
            raise CodecError(reason)
        if w.offset == GUID_FRAME:
            self._ok_guid[raw[:GUID_FRAME]] = w
        else:
            self._ok[raw[: w.offset]] = self._body_check(w)
        return w

    def _body_check(self, w: Writer) -> BodyCheck:
        if self._validate:
            return w.check

        def framing_only(raw: bytes, schema_id: int = w.id) -> int:
            return schema_id

        return framing_only

    def _compatibility(self, w: Writer) -> str | None:
        if self._reader is None:
            return None
        why = incompatibility(w.parsed, self._reader, w.named, self._reader_named)
        if why is None:
            return None
        log.warning(
            "avro.incompatible_writer schema_id=%d reader=%s reason=%s", w.id, self.reader_path, why
        )
        return (
            f"writer schema id {w.id} cannot be resolved onto the reader schema "
            f"{self.reader_path}: {why}"
        )

    def decode(self, raw: bytes) -> Any:
        w = self._admit(raw)
        try:
            if w.deep:
                # fastavro's decoder recurses in C: a body nested too deep must not reach it.
                w.check(raw)
            if w.json:
                return read_json(raw[w.offset :], w.parsed, self._reader)
            return schemaless_reader(BytesIO(raw[w.offset :]), w.parsed, self._reader)
        except Exception as exc:
            raise CodecError(
                f"cannot decode the Avro value (writer schema id {w.id}): {_explain(exc)}"
            ) from None


class AvroKey(JsonAddressedKey):
    """Avro keys, stored and addressed as canonical JSON of the decoded key."""

    name = "avro"
    kind = "Avro"
    example = """'{"id": "p-1"}' or '"p-1"'"""

    def __init__(self, schemas: Schemas, framing: Framing = CONFLUENT) -> None:
        self._schemas = schemas
        self._framing = framing

    def from_kafka(self, raw: bytes) -> bytes:
        return _binary_key(self._schemas.writer(raw, "key", self._framing), raw)


class _HeaderFramedAvroKey(AvroKey):
    """Avro keys under a framing that takes Apicurio headers, whose bodies may be in
    Avro's JSON encoding (kept apart so the default framing's keys test nothing more)."""

    def from_kafka(self, raw: bytes) -> bytes:
        w = self._schemas.writer(raw, "key", self._framing)
        if not w.json:
            return _binary_key(w, raw)
        try:
            w.check(raw)
            datum = read_json(raw[w.offset :], w.parsed)
        except Exception as exc:
            raise CodecError(
                f"key is not Avro's JSON encoding of a key of key schema id {w.id} "
                f"(apicurio.key.encoding = JSON): {exc}"
            ) from None
        return canonical_key(datum)


def _binary_key(w: Writer, raw: bytes) -> bytes:
    """The stored form of a key in Avro's binary encoding, framed for writer *w*."""
    try:
        datum = schemaless_reader(BytesIO(raw[w.offset :]), w.parsed, None)
    except Exception as exc:
        raise CodecError(
            f"key is not valid Avro for key schema id {w.id} (truncated or corrupt: {_explain(exc)})"
        ) from None
    return canonical_key(datum)


def avro_key(schemas: Schemas, framing: Framing = CONFLUENT) -> AvroKey:
    """The Avro key codec of a key framing."""
    if framing.kind in ("auto", "apicurio_headers"):
        return _HeaderFramedAvroKey(schemas, framing)
    return AvroKey(schemas, framing)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, EOFError | IndexError):
        return "the body ends before the schema says it should"
    return f"{type(exc).__name__}: {exc}"


def load_reader_schema(path: Path) -> tuple[Any, dict[str, Any]]:
    """Parse the ``reader_schema`` file; raise ConfigError naming the file when it cannot be."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the reader schema {path}: {exc}") from exc
    named: dict[str, Any] = {}
    try:
        parsed = parse_schema(json.loads(text), named_schemas=named)
    except Exception as exc:
        raise ConfigError(f"the reader schema {path} is not a valid Avro schema: {exc}") from exc
    return parsed, named


def header_hook(
    key_framed: bool,
    value_framed: bool,
    *,
    indexed: bool = False,
    key_framing: Framing = CONFLUENT,
    value_framing: Framing = CONFLUENT,
) -> HeaderHook:
    """Fold schema ids carried in record headers in front of the key/value body.

    *indexed*: the frames may carry Protobuf message indexes after the id or GUID.
    Under the Confluent framing only ``__key_schema_id`` / ``__value_schema_id`` are
    looked at; under ``auto`` and ``apicurio_headers`` Apicurio's id headers too (they
    win: a body written with them is bare), under ``apicurio_8byte`` none.
    """
    if key_framing.kind != "confluent" or value_framing.kind != "confluent":
        return _apicurio_hook(
            _side("key", key_framing, indexed) if key_framed else None,
            _side("value", value_framing, indexed) if value_framed else None,
        )

    def hook(
        headers: list[tuple[str, bytes]] | None, key: bytes | None, value: bytes | None
    ) -> tuple[bytes | None, bytes | None]:
        if not headers:
            return key, value
        value_done = not value_framed or value is None
        key_done = not key_framed or key is None
        for name, frame in headers:
            if not value_done and name == VALUE_SCHEMA_HEADER:
                value = _fold(frame, value, indexed)
                value_done = True
            elif not key_done and name == KEY_SCHEMA_HEADER:
                key = _fold(frame, key, indexed)
                key_done = True
        return key, value

    return hook


_Side = Callable[[list[tuple[str, bytes]], bytes], bytes]


def _apicurio_hook(key_side: _Side | None, value_side: _Side | None) -> HeaderHook:
    def hook(
        headers: list[tuple[str, bytes]] | None, key: bytes | None, value: bytes | None
    ) -> tuple[bytes | None, bytes | None]:
        if not headers:
            return key, value
        if value_side is not None and value is not None:
            value = value_side(headers, value)
        if key_side is not None and key is not None:
            key = key_side(headers, key)
        return key, value

    return hook


_MARK = bytes([APICURIO_MARK])
_NO_ID = bytes(8)


def _side(what: str, framing: Framing, indexed: bool) -> _Side | None:
    """The fold of one side's headers under *framing* (None: nothing to fold)."""
    if framing.kind == "apicurio_8byte":
        return None
    confluent_name = f"__{what}_schema_id"
    if framing.kind == "confluent":

        def confluent(headers: list[tuple[str, bytes]], body: bytes) -> bytes:
            for name, frame in headers:
                if name == confluent_name:
                    return _fold(frame, body, indexed) or body
            return body

        return confluent
    content_name = f"apicurio.{what}.contentId"
    global_name = f"apicurio.{what}.globalId"
    encoding_name = f"apicurio.{what}.encoding"
    required = framing.kind == "apicurio_headers"

    def apicurio(headers: list[tuple[str, bytes]], body: bytes) -> bytes:
        content = global_ = confluent = None
        json_encoded = False
        for name, frame in headers:
            if not name.startswith("apicurio.") and name != confluent_name:
                continue
            # Apicurio's deserializer reads the last header of a name.
            if name == content_name:
                content = frame
            elif name == global_name:
                global_ = frame
            elif name == encoding_name:
                json_encoded = frame == b"JSON"
            elif name == confluent_name and confluent is None and not required:
                confluent = frame
        # Both ids name the same schema when both are there: the content id needs no lookup.
        tag, named = (b"c", content) if content is not None else (b"g", global_)
        if named is not None:
            if isinstance(named, bytes) and len(named) == 8:
                if json_encoded:
                    return _MARK + bytes([tag[0] | JSON_BIT]) + named + body
                return _MARK + tag + named + body
            size = len(named) if isinstance(named, bytes | str) else 0
            return _MARK + tag.upper() + size.to_bytes(8, "big") + body
        if confluent is not None:
            return _fold(confluent, body, indexed) or body
        if required or json_encoded:
            return _MARK + NO_ID_HEADER + _NO_ID + body
        return body

    return apicurio


def _fold(frame: bytes | str | None, body: bytes | None, indexed: bool = False) -> bytes | None:
    if body is None:
        return None
    if isinstance(frame, bytes) and frame:
        size = ID_FRAME if frame[0] == 0 else GUID_FRAME if frame[0] == 1 else 0
        if size and (len(frame) == size or (indexed and len(frame) > size)):
            return frame + body
    return BAD_HEADER + body
