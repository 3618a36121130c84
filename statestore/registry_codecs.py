"""A view's codecs: the key codec, value codec and header hook its config names.

Above every codec module (:mod:`statestore.codecs`, :mod:`statestore.avro`,
:mod:`statestore.protobuf`, :mod:`statestore.json_schema`): the one place that
picks among them, so none of them imports another to dispatch.
"""

from __future__ import annotations

from .avro import AvroValue, avro_key, header_hook
from .codecs import KeyCodec, ValueCodec, key_codec, value_codec
from .config import REGISTRY_CODECS, ViewConfig
from .framing import CONFLUENT, Framing, framing_of
from .json_schema import JsonSchemaKey, JsonSchemaValue
from .protobuf import ProtobufKey, ProtobufValue, load_reader_message
from .records import HeaderHook
from .schemas import Schemas

__all__ = ["registry_codecs"]


def registry_codecs(
    view_config: ViewConfig, schemas: Schemas
) -> tuple[KeyCodec, ValueCodec, HeaderHook | None]:
    """The key codec, value codec and header hook of a view (Avro, Protobuf, JSON Schema
    keys and values included)."""
    if not view_config.uses_registry:
        return key_codec(view_config.key), value_codec(view_config.value), None
    key_framing = framing_of(view_config.key_framing, view_config.key_id_kind)
    value_framing = framing_of(view_config.framing, view_config.id_kind)
    keys = _registry_key(view_config.key, schemas, key_framing)
    values = _registry_value(view_config, schemas, value_framing)
    indexed = "protobuf" in (view_config.key, view_config.value)
    return (
        keys,
        values,
        header_hook(
            keys.name in REGISTRY_CODECS,
            values.name in REGISTRY_CODECS,
            indexed=indexed,
            key_framing=key_framing,
            value_framing=value_framing,
        ),
    )


def _registry_key(name: str, schemas: Schemas, framing: Framing = CONFLUENT) -> KeyCodec:
    if name == "avro":
        return avro_key(schemas, framing)
    if name == "protobuf":
        return ProtobufKey(schemas)
    if name == "json_schema":
        return JsonSchemaKey(schemas)
    return key_codec(name)


def _registry_value(vc: ViewConfig, schemas: Schemas, framing: Framing = CONFLUENT) -> ValueCodec:
    if vc.value == "avro":
        return AvroValue(schemas, vc.reader_schema, framing=framing)
    if vc.value == "protobuf":
        reader = (
            load_reader_message(vc.reader_schema, vc.reader_message)
            if vc.reader_schema is not None
            else None
        )
        return ProtobufValue(schemas, reader)
    if vc.value == "json_schema":
        return JsonSchemaValue(schemas, validate=vc.schema_validation)
    return value_codec(vc.value)
