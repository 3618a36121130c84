"""Writer schemas (Avro, Protobuf, JSON Schema): memory first, then the store's metadata, then the registry.

The only module that talks to the schema registry (confluent-kafka's
``SchemaRegistryClient``). Every schema fetched is written to the ``meta``
column family under ``schema/id/<id>``, with the subjects and versions that
use it, so a restart, or a read, needs the registry only for ids never seen.

Registry answers map to two outcomes: an id the registry does not know (404)
is a bad record (:class:`CodecError`, quarantined); anything else that keeps
the schema from us (connection refused, timeout, 5xx, 401/403) is an outage
(:class:`RegistryUnavailableError`): the ingestor retries the batch with
backoff and marks the view degraded, and no record is lost or quarantined.

Schemas named by GUID (magic byte 1) have no integer id in the registry's
answer; they get a local id below ``-1`` (stored with the GUID), so the record
header and the per-schema counts stay integers.

Frames are read by the view's framing (:mod:`statestore.framing`). A global id
(Apicurio) resolves through the native API to its content id, cached in ``meta``
under ``schema/global/<id>`` apart from the content ids, so the two never
collide; the record then carries the content id. A folded header frame marked
JSON-encoded gets a writer of its own (``Writer.json``), checked and decoded as
Avro's JSON encoding.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from fastavro import parse_schema

from .avro_check import BodyCheck, compile_check, compile_json_check, nests_deep
from .config import NATIVE_URL_KEY
from .errors import CodecError, ConfigError, RegistryUnavailableError
from .framing import (
    APICURIO_FRAME,
    APICURIO_MARK,
    BAD_HEADER,
    CONFLUENT,
    GUID_FRAME,
    ID_FRAME,
    JSON_BIT,
    Framing,
    content_id_of_global,
    frame_length,
    json_encoded,
)
from .storage import META, Storage

__all__ = ["Schemas", "Writer", "WriterCache", "global_ref", "schema_info"]

log = logging.getLogger(__name__)

# A global id's content id in ``meta``, apart from the content ids themselves.
_GLOBAL_PREFIX = b"schema/global/"
# A global id's entry among the GUIDs handed to bulk-load workers (GUIDs are 16 bytes).
_GLOBAL_MARK = b"global:"
_LONG = struct.Struct(">q")
_INT32_MAX = 2**31 - 1

_ID_PREFIX = b"schema/id/"
_GUID_PREFIX = b"schema/guid/"
_INT = struct.Struct(">i")
# An id the registry said it does not know is not asked for again for this long.
_UNKNOWN_TTL_S = 30.0
_MAX_REFERENCE_DEPTH = 16
# The registry's schema types, as a sentence names them.
_A_KIND = {"AVRO": "an Avro", "PROTOBUF": "a Protobuf", "JSON": "a JSON Schema"}

# Short retries inside one lookup: the ingestor owns the backoff between attempts.
_CLIENT_DEFAULTS: dict[str, Any] = {
    "max.retries": 1,
    "retries.wait.ms": 200,
    "retries.max.wait.ms": 1000,
}


def global_ref(global_id: int) -> bytes:
    """Where a global id's content id sits among the GUIDs of ``Schemas.cached()``
    (GUIDs are 16 bytes; this is 15)."""
    return _GLOBAL_MARK + _LONG.pack(global_id)


@dataclass(frozen=True, slots=True)
class Writer:
    """A writer schema, parsed: what decodes a framed body."""

    id: int
    offset: int  # where the Avro body starts in a framed value
    parsed: Any
    named: dict[str, Any]
    # check(framed value) -> id; raises when the body is not complete, well-formed Avro for it.
    check: BodyCheck
    # Values can nest deeper than reads encode: bodies are checked before they are decoded.
    deep: bool = False
    # The body is Avro's JSON encoding (an Apicurio header said so), not the binary one.
    json: bool = False


def _id_key(schema_id: int) -> bytes:
    return _ID_PREFIX + _INT.pack(schema_id)


_T = TypeVar("_T")
_K = TypeVar("_K", int, bytes)
_V = TypeVar("_V")


class WriterCache(Generic[_T]):
    """What a view builds once per writer schema of a Confluent-framed record (a JSON
    Schema validator, a Protobuf message pool), found by the record's frame.

    *build(schema id, body offset, document)* runs once per schema, under a lock; a
    CodecError it raises is remembered, so a bad schema is not rebuilt per record.
    """

    def __init__(
        self, schemas: Schemas, kind: str, build: Callable[[int, int, dict[str, Any]], _T]
    ) -> None:
        self._schemas = schemas
        self._kind = kind
        self._build = build
        self._by_frame: dict[bytes, _T] = {}
        self._failed: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def get(self, raw: bytes, what: str) -> _T:
        """The built thing of the writer schema framing *raw* (its *what*: key or value)."""
        frame = raw[:GUID_FRAME] if raw[:1] == b"\x01" else raw[:ID_FRAME]
        known = self._by_frame.get(frame)
        if known is not None:
            return known
        schema_id, offset, doc = self._schemas.resolve(raw, what, self._kind)
        with self._lock:
            known = self._by_frame.get(frame)
            if known is not None:
                return known
            failed = self._failed.get(frame)
            if failed is not None:
                raise CodecError(failed)
            try:
                known = self._build(schema_id, offset, doc)
            except CodecError as exc:
                self._failed[frame] = str(exc)
                raise
            self._by_frame[frame] = known
            return known


class Schemas:
    """Writer schemas of one store, by framing prefix; fetched once, cached in ``meta``."""

    def __init__(
        self,
        storage: Storage | None,
        registry_conf: dict[str, Any],
        *,
        client: Any = None,
        known: tuple[dict[int, dict[str, Any]], dict[bytes, int]] | None = None,
    ) -> None:
        """Schemas cached in *storage*'s ``meta``; without a store (a bulk-load worker),
        those in *known* (``cached()`` of the store's), and new ones kept for ``take_new``."""
        self._storage = storage
        self._conf = {**_CLIENT_DEFAULTS, **registry_conf}
        self._native: str | None = self._conf.pop(NATIVE_URL_KEY, None)
        # A SchemaRegistryClient, made on the first fetch (a restart may never need one).
        self._client: Any = client
        self._lock = threading.Lock()
        self._docs: dict[int, dict[str, Any]] = {}
        self._guids: dict[bytes, int] = {}
        self._writers: dict[int, Writer] = {}
        # (schema id, body offset, JSON-encoded) -> writer, for frames other than the 5-byte one.
        self._framed_writers: dict[tuple[int, int, bool], Writer] = {}
        self._guid_writers: dict[bytes, Writer] = {}
        self._unknown: dict[int | bytes, tuple[float, str]] = {}
        self._new: list[tuple[int, dict[str, Any], bytes | None]] = []
        if known is not None:
            self._docs.update(known[0])
            self._guids.update(known[1])
        if storage is None:
            return
        for key, value in storage.scan(META, _ID_PREFIX, _ID_PREFIX[:-1] + b"0"):
            self._docs[_INT.unpack(key[len(_ID_PREFIX) :])[0]] = orjson.loads(value)
        for key, value in storage.scan(META, _GUID_PREFIX, _GUID_PREFIX[:-1] + b"0"):
            self._guids[key[len(_GUID_PREFIX) :]] = _INT.unpack(value)[0]
        for key, value in storage.scan(META, _GLOBAL_PREFIX, _GLOBAL_PREFIX[:-1] + b"0"):
            self._guids[_GLOBAL_MARK + key[len(_GLOBAL_PREFIX) :]] = _INT.unpack(value)[0]

    def cached(self) -> tuple[dict[int, dict[str, Any]], dict[bytes, int]]:
        """Every schema known here, by id, and the local ids of GUIDs and the content ids
        of global ids (for a worker)."""
        with self._lock:
            return dict(self._docs), dict(self._guids)

    def take_new(self) -> list[tuple[int, dict[str, Any], bytes | None]]:
        """Schemas fetched since the last call, by a store-less instance (a worker)."""
        with self._lock:
            new, self._new = self._new, []
            return new

    def adopt(self, schema_id: int, doc: dict[str, Any], guid: bytes | None = None) -> None:
        """Cache a schema a worker fetched, as if fetched here."""
        with self._lock:
            known = self._docs.get(schema_id)
            if known is not None and guid is not None and guid.startswith(_GLOBAL_MARK):
                if self._guids.get(guid) != schema_id:
                    self._remember(schema_id, known, guid)
                return
            if known is not None:
                if guid is not None and self._guids.get(guid) != schema_id:
                    raise CodecError(
                        f"local schema id {schema_id} names two schema GUIDs; "
                        "rebuild the view to assign them again"
                    )
                return
            self._remember(schema_id, doc, guid)

    # -- framing -------------------------------------------------------------------------

    def writer(self, raw: bytes, what: str = "value", framing: Framing = CONFLUENT) -> Writer:
        """The Avro writer schema named by the frame of *raw* (a *what*); CodecError when there is none."""
        if framing is CONFLUENT:
            if raw[:1] == b"\x00" and len(raw) >= ID_FRAME:
                w = self._writers.get(_INT.unpack_from(raw, 1)[0])
                if w is not None:
                    return w
            elif raw[:1] == b"\x01":
                w = self._guid_writers.get(raw[1:GUID_FRAME])
                if w is not None:
                    return w
        schema_id, offset, doc = self.resolve(raw, what, "AVRO", framing)
        json = offset == APICURIO_FRAME and json_encoded(raw)
        with self._lock:
            w = self._parse(schema_id, doc, offset, json)
            if offset == GUID_FRAME:
                self._guid_writers[raw[1:GUID_FRAME]] = w
            return w

    def resolve(
        self, raw: bytes, what: str = "value", kind: str = "AVRO", framing: Framing = CONFLUENT
    ) -> tuple[int, int, dict[str, Any]]:
        """The schema id, body offset and cached document of the schema framing *raw*.

        CodecError when the frame is malformed or not of *framing*, the registry does not
        know the schema, or it is not a *kind* schema (e.g. an Avro id on a Protobuf view).
        The id returned is a content id (a global id is resolved to its content id).
        """
        a_view = _A_KIND[kind]
        if not raw:
            raise CodecError(
                f"{what} is empty; {a_view} {what} starts with "
                + (
                    framing.describe(what)
                    if framing is not CONFLUENT
                    else "magic byte 0 and a 4-byte schema id"
                )
                + (" (a tombstone is a null value, not an empty one)" if what == "value" else "")
            )
        magic = raw[0]
        if framing is not CONFLUENT:
            schema_id, offset = self._apicurio_frame(raw, what, framing)
            doc = self._by_id(schema_id)
        elif magic == 0:
            if len(raw) < ID_FRAME:
                raise CodecError(
                    f"{what} is {len(raw)} bytes, too short for the 5-byte Confluent header"
                )
            schema_id = _INT.unpack_from(raw, 1)[0]
            if schema_id < 0:
                raise CodecError(
                    f"schema id {schema_id} in the {what} header is negative; not a registry id"
                )
            doc = self._by_id(schema_id)
            offset = ID_FRAME
        elif magic == 1:
            if len(raw) < GUID_FRAME:
                raise CodecError(
                    f"{what} is {len(raw)} bytes, too short for a 17-byte schema GUID header"
                )
            schema_id, doc = self._by_guid(raw[1:GUID_FRAME])
            offset = GUID_FRAME
        elif raw[:1] == BAD_HEADER:
            raise CodecError(
                f"the {what}'s schema-id record header (__{what}_schema_id) is malformed: "
                "expected magic byte 0 + 4-byte id or magic byte 1 + 16-byte GUID"
            )
        else:
            raise CodecError(
                f"wrong magic byte 0x{magic:02x} in the {what}: not the Confluent wire format "
                "(magic byte 0 + 4-byte schema id, or magic byte 1 + 16-byte GUID)"
            )
        found = doc.get("type", "AVRO")
        if found != kind:
            raise CodecError(
                f"writer schema id {schema_id} is {_A_KIND.get(found, found)} schema; "
                f"{a_view} view needs {_A_KIND[kind].split(' ', 1)[1].split()[0]} schemas"
            )
        return schema_id, offset, doc

    def _cached(self, table: dict[_K, _V], key: _K, fetch: Callable[[], object]) -> _V:
        """``table[key]``; on a miss, *fetch* (which remembers it) runs under the lock, so
        threads missing the same key fetch it once."""
        found = table.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in table:
                self._fail_if_unknown(key)
                fetch()
            return table[key]

    def _by_id(self, schema_id: int) -> dict[str, Any]:
        return self._cached(
            self._docs, schema_id, lambda: self._remember(schema_id, self._fetch_id(schema_id))
        )

    def _by_guid(self, guid: bytes) -> tuple[int, dict[str, Any]]:
        def fetch() -> None:
            doc = self._fetch_guid(guid)
            self._remember(_guid_id(guid, self._docs), doc, guid)

        schema_id = self._cached(self._guids, guid, fetch)
        return schema_id, self._docs[schema_id]

    def _apicurio_frame(self, raw: bytes, what: str, framing: Framing) -> tuple[int, int]:
        """The content id and body offset of a frame read under a framing other than
        the default one (a non-empty *raw*)."""
        magic = raw[0]
        takes_headers = framing.kind in ("auto", "apicurio_headers")
        if magic == APICURIO_MARK and takes_headers:
            return self._header_frame(raw, what), APICURIO_FRAME
        if framing.kind == "apicurio_headers":
            seen = (
                "a Confluent or 8-byte id frame (magic byte 0)"
                if magic == 0
                else f"a body starting 0x{magic:02x}"
            )
            raise CodecError(
                f"the {what} has no apicurio.{what}.contentId or apicurio.{what}.globalId "
                f"header, but {seen}: the view's framing is apicurio_headers; set framing "
                'to "auto" or to the framing the producer writes'
            )
        if magic == 0:
            size = framing.fixed or frame_length(raw, framing)
            if len(raw) < size:
                raise CodecError(
                    f"{what} is {len(raw)} bytes, too short for the {size}-byte frame "
                    f"({framing.describe(what)})"
                )
            ref = _INT.unpack_from(raw, 1)[0] if size == ID_FRAME else _LONG.unpack_from(raw, 1)[0]
            return self._content_id(ref, framing.ids, what), size
        if magic == 1 and framing.kind in ("auto", "confluent"):
            if len(raw) < GUID_FRAME:
                raise CodecError(
                    f"{what} is {len(raw)} bytes, too short for a 17-byte schema GUID header"
                )
            return self._by_guid(raw[1:GUID_FRAME])[0], GUID_FRAME
        if raw[:1] == BAD_HEADER and framing.kind in ("auto", "confluent"):
            raise CodecError(
                f"the {what}'s schema-id record header (__{what}_schema_id) is malformed: "
                "expected magic byte 0 + 4-byte id or magic byte 1 + 16-byte GUID"
            )
        raise CodecError(
            f"wrong magic byte 0x{magic:02x} in the {what}: the view's framing is "
            f"{framing.kind} ({framing.describe(what)})"
        )

    def _header_frame(self, raw: bytes, what: str) -> int:
        tag = raw[1:2]
        if json_encoded(raw):
            tag = bytes([raw[1] & ~JSON_BIT])
        if tag in (b"c", b"g") and len(raw) >= APICURIO_FRAME:
            ref = _LONG.unpack_from(raw, 2)[0]
            return self._content_id(ref, "content" if tag == b"c" else "global", what)
        if tag in (b"C", b"G") and len(raw) >= APICURIO_FRAME:
            name = "contentId" if tag == b"C" else "globalId"
            raise CodecError(
                f"the apicurio.{what}.{name} header is {_LONG.unpack_from(raw, 2)[0]} bytes; "
                "Apicurio writes ids as 8-byte big-endian longs"
            )
        raise CodecError(
            f"the {what} has record headers but no apicurio.{what}.contentId or "
            f"apicurio.{what}.globalId header (artifact coordinates alone are not read)"
        )

    def _content_id(self, ref: int, ids: str, what: str) -> int:
        if ref <= 0:
            raise CodecError(f"{ids} id {ref} in the {what} is not a registry id")
        if ids == "global":
            return self._by_global(ref)
        if ref > _INT32_MAX:
            raise CodecError(f"content id {ref} in the {what} is beyond what views store (2^31-1)")
        return ref

    def _by_global(self, global_id: int) -> int:
        key = global_ref(global_id)

        def fetch() -> None:
            content_id = self._fetch_global(global_id, key)
            doc = self._docs.get(content_id)
            if doc is None:
                self._fail_if_unknown(content_id)
                doc = self._fetch_id(content_id)
            self._remember(content_id, doc, key)

        return self._cached(self._guids, key, fetch)

    def _parse(
        self, schema_id: int, doc: dict[str, Any], offset: int, json: bool = False
    ) -> Writer:
        if offset == ID_FRAME:
            known = self._writers.get(schema_id)
            if known is not None:
                return known
        elif offset != GUID_FRAME:
            known = self._framed_writers.get((schema_id, offset, json))
            if known is not None:
                return known
        named: dict[str, Any] = {}
        try:
            for ref in doc.get("refs", ()):
                parse_schema(orjson.loads(ref), named_schemas=named)
            parsed = parse_schema(orjson.loads(doc["schema"]), named_schemas=named)
            if json:
                check = compile_json_check(parsed, named, start=offset, result=schema_id)
            else:
                check = compile_check(parsed, named, start=offset, result=schema_id)
            # Only the binary decoder recurses in C (see avro_check).
            deep = not json and nests_deep(parsed, named)
        except Exception as exc:
            raise CodecError(
                f"writer schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from None
        w = Writer(schema_id, offset, parsed, named, check, deep, json)
        if offset == ID_FRAME:
            self._writers[schema_id] = w
        elif offset != GUID_FRAME:
            self._framed_writers[(schema_id, offset, json)] = w
        return w

    # -- registry --------------------------------------------------------------------------

    def _fail_if_unknown(self, ref: int | bytes) -> None:
        seen = self._unknown.get(ref)
        if seen is not None and time.monotonic() < seen[0]:
            raise CodecError(seen[1])

    def _registry(self) -> Any:
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            try:
                self._client = SchemaRegistryClient(self._conf)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"[schema_registry] settings are not valid: {exc}") from exc
        return self._client

    def _call(self, what: str, ref: int | bytes, fn: Any, *args: Any) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        url = self._conf.get("url")
        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                reason = (
                    f"{what} is not known to the schema registry at {url} ({exc.error_message})"
                )
                self._unknown[ref] = (time.monotonic() + _UNKNOWN_TTL_S, reason)
                raise CodecError(reason) from None
            raise RegistryUnavailableError(
                f"schema registry at {url} answered HTTP {exc.http_status_code} for {what}: "
                f"{exc.error_message}"
            ) from None
        except Exception as exc:
            raise RegistryUnavailableError(
                f"schema registry at {url} is unreachable while fetching {what}: {type(exc).__name__}: {exc}"
            ) from None

    def _fetch_id(self, schema_id: int) -> dict[str, Any]:
        client = self._registry()
        what = f"schema id {schema_id}"
        schema = self._call(what, schema_id, client.get_schema, schema_id)
        doc = self._document(what, schema_id, schema)
        try:
            versions = client.get_schema_versions(schema_id)
            doc["versions"] = [{"subject": v.subject, "version": v.version} for v in versions]
        except Exception as exc:
            # Subjects and versions only label the status; the schema itself is enough to decode.
            log.info("schema.versions_unavailable schema_id=%d error=%s", schema_id, exc)
        log.info("schema.fetched schema_id=%d versions=%s", schema_id, doc.get("versions"))
        return doc

    def _fetch_guid(self, guid: bytes) -> dict[str, Any]:
        client = self._registry()
        text = str(uuid.UUID(bytes=guid))
        schema = self._call(f"schema GUID {text}", guid, client.get_schema_by_guid, text)
        doc = self._document(f"schema GUID {text}", guid, schema)
        doc["guid"] = text
        log.info("schema.fetched guid=%s", text)
        return doc

    def _fetch_global(self, global_id: int, key: bytes) -> int:
        """The content id of an Apicurio global id, from the registry's native API."""
        base = self._native
        what = f"global id {global_id}"
        if not base:
            raise RegistryUnavailableError(
                f"a record names its schema by {what}, which resolves through Apicurio's "
                f"native API; the schema registry at {self._conf.get('url')} has none "
                "configured: set [schema_registry] apicurio_url"
            )
        content_id = content_id_of_global(base, global_id, self._conf, what)
        if content_id is None or content_id <= 0:
            reason = f"{what} is not known to the schema registry at {base}"
            self._unknown[key] = (time.monotonic() + _UNKNOWN_TTL_S, reason)
            raise CodecError(reason)
        if content_id > _INT32_MAX:
            raise CodecError(f"{what} has content id {content_id}, beyond 2^31-1")
        log.info("schema.global_id global_id=%d content_id=%d", global_id, content_id)
        return content_id

    def _document(self, what: str, ref: int | bytes, schema: Any) -> dict[str, Any]:
        refs: list[str] = []
        names: list[str] = []
        self._references(what, ref, schema.references or (), refs, names, 0)
        doc: dict[str, Any] = {"schema": schema.schema_str, "refs": refs}
        kind = schema.schema_type or "AVRO"
        if kind != "AVRO":
            # Documents cached before other formats were read carry neither: both Avro.
            doc["type"] = kind
            doc["ref_names"] = names
        return doc

    def _references(
        self,
        what: str,
        ref: int | bytes,
        references: Any,
        out: list[str],
        names: list[str],
        depth: int,
    ) -> None:
        if depth > _MAX_REFERENCE_DEPTH:
            raise CodecError(f"{what}: schema references nest deeper than {_MAX_REFERENCE_DEPTH}")
        client = self._registry()
        for r in references:
            registered = self._call(
                f"{what} (reference {r.subject} version {r.version})",
                ref,
                client.get_version,
                r.subject,
                r.version,
            )
            self._references(what, ref, registered.schema.references or (), out, names, depth + 1)
            if registered.schema.schema_str not in out:
                out.append(registered.schema.schema_str)
                names.append(r.name)

    def _remember(self, schema_id: int, doc: dict[str, Any], guid: bytes | None = None) -> None:
        """Cache *doc* under *schema_id*; *guid*: a GUID, or a global id's key, naming it."""
        self._docs[schema_id] = doc
        if guid is not None:
            self._guids[guid] = schema_id
        if self._storage is None:
            self._new.append((schema_id, doc, guid))
            return
        if self._storage.read_only:
            return
        batch = self._storage.batch()
        batch.put(META, _id_key(schema_id), orjson.dumps(doc))
        if guid is not None and guid.startswith(_GLOBAL_MARK):
            batch.put(META, _GLOBAL_PREFIX + guid[len(_GLOBAL_MARK) :], _INT.pack(schema_id))
        elif guid is not None:
            batch.put(META, _GUID_PREFIX + guid, _INT.pack(schema_id))
        self._storage.write(batch)


def _guid_id(guid: bytes, taken: dict[int, Any]) -> int:
    """The local id of a GUID: derived from the GUID, so that bulk-load workers fetching
    schemas apart from each other agree on it; the next free one below on a clash."""
    schema_id = -2 - (int.from_bytes(guid[:4], "big") & 0x3FFFFFFF)
    while schema_id in taken:
        schema_id -= 1
    return schema_id


def schema_info(
    storage: Storage, ids: list[int] | tuple[int, ...] | set[int], subject: str | None = None
) -> dict[int, dict[str, Any]]:
    """What the store knows of each writer schema id: subject, version, all versions, GUID.

    One schema id can be registered under many subjects (same content, same
    id); ``subject``/``version`` are those of *subject* (e.g. ``<topic>-value``)
    when the registry listed it for the id, else the first listed (None when
    none was). ``versions`` are as listed when the id was first fetched. Ids
    never cached are left out.
    """
    out: dict[int, dict[str, Any]] = {}
    for schema_id in ids:
        raw = storage.get(META, _id_key(schema_id))
        if raw is None:
            continue
        doc = orjson.loads(raw)
        versions = doc.get("versions") or []
        mine = [v for v in versions if v.get("subject") == subject]
        first = mine[-1] if mine else versions[0] if versions else {}
        out[schema_id] = {
            "subject": first.get("subject"),
            "version": first.get("version"),
            "versions": versions,
            "guid": doc.get("guid"),
        }
    return out
