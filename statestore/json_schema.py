"""JSON Schema keys and values in the Confluent wire format, writer schemas from the registry.

A framed value is magic byte 0 and a 4-byte schema id (or magic byte 1 and a
16-byte GUID), then the JSON text -- what confluent-kafka's ``JSONSerializer``
writes. Ingest checks the framing, that the writer schema resolves and is a
JSON schema, that the body is JSON reads can serve, and, with ``validate = true``
(the default), that it is valid against the writer schema: references to other
registered schemas resolve through the registry, and a ``$ref`` to anything
else is never fetched (validation runs offline). Values are served as written.

JSON keys are stored as canonical JSON (object keys sorted, null fields left
out), as Avro keys are.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import orjson

from .codecs import JsonAddressedKey, JsonValue, canonical_key
from .errors import CodecError, ConfigError
from .schemas import Schemas, WriterCache

__all__ = ["JsonSchemaKey", "JsonSchemaValue", "require"]

log = logging.getLogger(__name__)

_json = JsonValue()


def require() -> None:
    """Raise ConfigError when the validator JSON Schema views use is not installed."""
    try:
        importlib.import_module("jsonschema_rs")
    except ImportError:
        raise ConfigError(
            "JSON Schema views need jsonschema-rs; install it with: "
            "pip install 'statestore[json-schema]'"
        ) from None


def _validators(schemas: Schemas, validate: bool) -> WriterCache[tuple[int, int, Any]]:
    """(schema id, body offset, validator or None) per writer schema of a view."""

    def build(schema_id: int, offset: int, doc: dict[str, Any]) -> tuple[int, int, Any]:
        return schema_id, offset, _validator(schema_id, doc) if validate else None

    return WriterCache(schemas, "JSON", build)


def _validator(schema_id: int, doc: dict[str, Any]) -> Any:
    import jsonschema_rs

    what = f"writer schema id {schema_id}"
    try:
        schema = orjson.loads(doc["schema"])
        resources = [
            (name, orjson.loads(text))
            for name, text in zip(doc.get("ref_names") or [], doc.get("refs") or [], strict=False)
        ]
        registry = jsonschema_rs.Registry(resources) if resources else None
        return jsonschema_rs.validator_for(schema, registry=registry, offline=True)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"{what} is not JSON: {exc}") from None
    except Exception as exc:
        raise CodecError(f"{what} is not a JSON Schema validators can use: {exc}") from None


def _invalid(validator: Any, value: Any) -> str | None:
    """The first reason *value* is not valid, with where in it (None when it is valid)."""
    if validator.is_valid(value):
        return None
    for error in validator.iter_errors(value):
        where = "/".join(str(p) for p in error.instance_path)
        return f"{error.message} (at /{where})"
    return "not valid"


class JsonSchemaValue:
    """JSON Schema values: framing and JSON checked at ingest, validated when asked."""

    name = "json_schema"

    def __init__(self, schemas: Schemas, *, validate: bool = True) -> None:
        require()
        self._validators = _validators(schemas, validate)

    def check(self, raw: bytes) -> int:
        schema_id, offset, validator = self._validators.get(raw, "value")
        body = raw[offset:]
        try:
            value = _json.parse(body)
        except CodecError as exc:
            raise CodecError(f"{exc} (writer schema id {schema_id})") from None
        if validator is not None:
            why = _invalid(validator, value)
            if why is not None:
                raise CodecError(f"value does not match its writer schema id {schema_id}: {why}")
        return schema_id

    def decode(self, raw: bytes) -> Any:
        _schema_id, offset, _validator = self._validators.get(raw, "value")
        return orjson.loads(raw[offset:])


class JsonSchemaKey(JsonAddressedKey):
    """JSON Schema keys, stored and addressed as canonical JSON of the key."""

    name = "json_schema"
    kind = "JSON Schema"
    example = """'{"id": "d-1"}'"""

    def __init__(self, schemas: Schemas) -> None:
        require()
        self._validators = _validators(schemas, validate=False)

    def from_kafka(self, raw: bytes) -> bytes:
        schema_id, offset, _validator = self._validators.get(raw, "key")
        try:
            return canonical_key(orjson.loads(raw[offset:]))
        except orjson.JSONDecodeError as exc:
            raise CodecError(f"key is not JSON (key schema id {schema_id}): {exc}") from None
