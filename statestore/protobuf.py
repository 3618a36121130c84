"""Protobuf keys and values in the Confluent wire format, writer schemas from the registry.

A framed Protobuf value is magic byte 0 and a 4-byte schema id (or magic byte 1
and a 16-byte GUID), then the *message indexes* -- which message of the schema's
file the body is: a zigzag varint count and that many zigzag varint indexes, the
first into the file's top-level messages and each next into the nested ones
(count 0 is the first message, ``[0]``) -- then the Protobuf body.

The registry holds a schema as ``.proto`` text (what Java serializers and most
tools register) or as a base64 ``FileDescriptorProto`` (what confluent-kafka's
Python serializer registers); both are read, with their references (imports)
resolved through the registry, and the well-known types (``google/protobuf/*``)
built in. Text is compiled with protoc, from the ``grpcio-tools`` package.

Ingest checks the framing, that the writer schema resolves, that the indexes
name a message, and that the body parses as that message; in values holding
well-known types whose JSON form can fail (a Timestamp past year 9999, an Any
of an unknown type) those fields are checked too, so every stored value can be
served. Values are served in the canonical
proto3 JSON mapping: lowerCamelCase field names (``json_name``), every field
present with its default when not set, 64-bit integers as strings, enums by
name, bytes as base64. A view's ``reader_schema`` (a ``.proto`` file) and
``reader_message`` decode every writer's bodies onto one message: fields are
matched by number, so fields the writer added are ignored, fields it lacks take
their defaults, and a renamed field keeps its value; a writer whose field has
the same number as a reader field of a type it cannot be read as is refused
(its records quarantined with the reason).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs import JsonAddressedKey, canonical_key
from .errors import CodecError, ConfigError
from .framing import ID_FRAME
from .schemas import Schemas, WriterCache

__all__ = ["ProtobufKey", "ProtobufValue", "ReaderMessage", "load_reader_message", "require"]

log = logging.getLogger(__name__)

# Directories above a reader schema searched for its imports.
_READER_ROOTS = 6
# An id frame and the one-byte message index list of message [0]: the ingest fast path.
_FAST = ID_FRAME + 1
# Nesting of message indexes is bounded by the file's message nesting; more is garbage.
_MAX_INDEXES = 64

_WELL_KNOWN = (
    "any_pb2",
    "api_pb2",
    "descriptor_pb2",
    "duration_pb2",
    "empty_pb2",
    "field_mask_pb2",
    "source_context_pb2",
    "struct_pb2",
    "timestamp_pb2",
    "type_pb2",
    "wrappers_pb2",
)


def require() -> None:
    """Raise ConfigError when the packages Protobuf views need are not installed."""
    for module, what in (
        ("google.protobuf", "protobuf"),
        ("grpc_tools", "grpcio-tools (protoc, to compile .proto schemas)"),
    ):
        # Found, not imported: protoc is loaded only when a .proto text needs compiling.
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"Protobuf views need {what}; install it with: pip install 'statestore[protobuf]'"
            )


# -- schemas -----------------------------------------------------------------------------


def _well_known() -> dict[str, bytes]:
    """Serialized descriptors of google/protobuf/*.proto, by file name."""
    out: dict[str, bytes] = {}
    for name in _WELL_KNOWN:
        module = importlib.import_module(f"google.protobuf.{name}")
        out[module.DESCRIPTOR.name] = module.DESCRIPTOR.serialized_pb
    return out


def _as_descriptor(text: str) -> Any:
    """A FileDescriptorProto when *text* is one in base64, else None (then it is .proto text)."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    stripped = text.strip()
    if not stripped or any(c in stripped for c in " ;{}\n"):
        return None
    try:
        data = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return None
    fdp = descriptor_pb2.FileDescriptorProto()
    try:
        fdp.ParseFromString(data)
    except DecodeError:
        return None
    return fdp


def compile_proto(
    files: dict[str, str],
    roots: list[str],
    what: str,
    include: tuple[Path, ...] = (),
    compiled: list[Any] | None = None,
) -> list[Any]:
    """FileDescriptorProtos of the .proto *files* (name -> text) and all they import.

    *roots* are the files to compile; the rest are there to be imported, as are files
    under the *include* directories and the already *compiled* FileDescriptorProtos.
    protoc runs in a child process (``python -m grpc_tools.protoc``); CodecError with
    its own message when they do not compile.
    """
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory(prefix="statestore-proto-") as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name, text in files.items():
            if ".." in Path(name).parts or Path(name).is_absolute():
                raise CodecError(f"{what}: the import name {name!r} is not a relative path")
            path = src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        out = Path(tmp, "set.pb")
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            *(f"-I{d}" for d in include),
            "--include_imports",
            f"--descriptor_set_out={out}",
        ]
        if compiled:
            given = Path(tmp, "given.pb")
            given.write_bytes(descriptor_pb2.FileDescriptorSet(file=compiled).SerializeToString())
            args.append(f"--descriptor_set_in={given}")
        try:
            done = subprocess.run(
                [*args, *roots], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CodecError(f"{what}: protoc did not run: {exc}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            for d in (src, *include):
                detail = detail.replace(str(d) + os.sep, "")
            raise CodecError(
                f"{what} does not compile: {detail or f'protoc exited {done.returncode}'}"
            )
        return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def _pool(files: list[Any], what: str) -> Any:
    """A descriptor pool holding *files* (in any order) and the well-known types they use."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    known = _well_known()
    by_name = {f.name: f for f in files}
    added: set[str] = set()

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in chain:
            raise CodecError(f"{what}: imports form a cycle through {name}")
        fdp = by_name.get(name)
        if fdp is None:
            if name in known:
                pool.AddSerializedFile(known[name])
                added.add(name)
                return
            raise CodecError(f"{what} imports {name}, which is neither a reference nor built in")
        for dep in fdp.dependency:
            add(dep, (*chain, name))
        try:
            pool.AddSerializedFile(fdp.SerializeToString())
        except Exception as exc:
            raise CodecError(f"{what}: {name} is not a valid Protobuf file: {exc}") from None
        added.add(name)

    for f in files:
        add(f.name, ())
    return pool


def _main_and_files(schema_id: int, doc: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The main FileDescriptorProto of a registry document and every file it needs."""
    what = f"writer schema id {schema_id}"
    refs = list(zip(doc.get("ref_names") or [], doc.get("refs") or [], strict=False))
    main_name = f"statestore_schema_{schema_id & 0xFFFFFFFF}.proto"
    binary: list[Any] = []
    texts: dict[str, str] = {}
    for name, text in refs:
        fdp = _as_descriptor(text)
        if fdp is None:
            texts[name] = text
        else:
            fdp.name = name
            binary.append(fdp)
    main = _as_descriptor(doc["schema"])
    if main is None:
        texts[main_name] = doc["schema"]
        compiled = compile_proto(texts, [main_name], what, compiled=binary)
        main = next(f for f in compiled if f.name == main_name)
    else:
        compiled = compile_proto(texts, list(texts), what, compiled=binary) if texts else []
        compiled.append(main)
    names = {f.name for f in compiled}
    return main, compiled + [b for b in binary if b.name not in names]


@dataclass(slots=True)
class _Message:
    """One message of a writer schema: how its bodies parse and what else ingest checks."""

    cls: Any
    full_name: str
    # What ingest checks for a parsed value to render as JSON (None: nothing can fail).
    check: Check | None


@dataclass(slots=True)
class ProtoWriter:
    """A Protobuf writer schema: its file and the messages frames have named so far."""

    id: int
    offset: int
    main: Any
    pool: Any
    messages: dict[tuple[int, ...], _Message] = field(default_factory=dict)

    def message(self, indexes: tuple[int, ...]) -> _Message:
        known = self.messages.get(indexes)
        if known is not None:
            return known
        from google.protobuf import message_factory

        types = self.main.message_type
        path: list[str] = [self.main.package] if self.main.package else []
        for depth, index in enumerate(indexes):
            if index >= len(types):
                raise CodecError(
                    f"message indexes {list(indexes)} name no message of writer schema id "
                    f"{self.id} (level {depth} has {len(types)} messages)"
                )
            path.append(types[index].name)
            types = types[index].nested_type
        desc = self.pool.FindMessageTypeByName(".".join(path))
        m = _Message(message_factory.GetMessageClass(desc), desc.full_name, serving_check(desc))
        self.messages[indexes] = m
        return m


# The ranges the JSON mapping accepts (what protobuf's own ToJsonString checks).
_TIMESTAMP_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z
_TIMESTAMP_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
_DURATION_MAX = 315_576_000_000  # 10,000 years
_NANOS = 1_000_000_000

Check = Callable[[Any], None]


def _timestamp(v: Any) -> None:
    if not _TIMESTAMP_MIN <= v.seconds <= _TIMESTAMP_MAX or not 0 <= v.nanos < _NANOS:
        raise ValueError(
            f"a Timestamp of {v.seconds} s {v.nanos} ns is outside years 1-9999 "
            "or its nanos outside 0-999999999"
        )


def _duration(v: Any) -> None:
    s, n = v.seconds, v.nanos
    if (
        not -_DURATION_MAX <= s <= _DURATION_MAX
        or not -_NANOS < n < _NANOS
        or n < 0 < s
        or s < 0 < n
    ):
        raise ValueError(
            f"a Duration of {s} s {n} ns is outside +-10,000 years or its signs differ"
        )


def _rendered(v: Any) -> None:
    from google.protobuf import json_format

    try:
        _to_json(v, defaults=False)
    except json_format.Error as exc:
        raise ValueError(str(exc)) from None


# Well-known types whose JSON form can fail on values that parse, and how to check them.
_SPECIAL: dict[str, Check] = {
    "google.protobuf.Timestamp": _timestamp,
    "google.protobuf.Duration": _duration,
    "google.protobuf.Any": _rendered,
    "google.protobuf.FieldMask": _rendered,
    "google.protobuf.Struct": _rendered,
    "google.protobuf.Value": _rendered,
    "google.protobuf.ListValue": _rendered,
}


class _Recursive(Exception):
    """A message type reaches itself: its check walks the whole value instead."""


def serving_check(desc: Any) -> Check | None:
    """What must be checked at ingest for a parsed *desc* message to render as JSON:
    None when nothing can fail (no well-known type with a special JSON form is reachable),
    else a function raising ValueError on a value reads could not serve. It visits only
    the fields that lead to such types."""
    try:
        return _checks(desc, {}, set())
    except _Recursive:
        return _rendered


def _checks(desc: Any, memo: dict[str, Check | None], active: set[str]) -> Check | None:
    name = desc.full_name
    if name in _SPECIAL:
        return _SPECIAL[name]
    if name in memo:
        return memo[name]
    if name in active:
        raise _Recursive(name)
    active.add(name)
    parts: list[Check] = []
    for f in desc.fields:
        if f.message_type is None:
            continue
        if f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"].message_type
            sub = _checks(value, memo, active) if value is not None else None
            if sub is not None:
                parts.append(_each_value(f.name, sub))
            continue
        sub = _checks(f.message_type, memo, active)
        if sub is None:
            continue
        if _repeated(f):
            parts.append(_each(f.name, sub))
        else:
            parts.append(_present(f.name, sub))
    active.discard(name)
    check = _all(parts) if parts else None
    memo[name] = check
    return check


def _repeated(f: Any) -> bool:
    # ``is_repeated`` in protobuf 6+, where ``label`` is gone; ``label`` before.
    return bool(f.is_repeated) if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED


def _each_value(name: str, sub: Check) -> Check:
    def check(msg: Any) -> None:
        for v in getattr(msg, name).values():
            sub(v)

    return check


def _each(name: str, sub: Check) -> Check:
    def check(msg: Any) -> None:
        for v in getattr(msg, name):
            sub(v)

    return check


def _present(name: str, sub: Check) -> Check:
    def check(msg: Any) -> None:
        if msg.HasField(name):
            sub(getattr(msg, name))

    return check


def _all(parts: list[Check]) -> Check:
    if len(parts) == 1:
        return parts[0]

    def check(msg: Any) -> None:
        for part in parts:
            part(msg)

    return check


def _varint(raw: bytes, pos: int, what: str) -> tuple[int, int]:
    """A zigzag varint at *pos*: its value and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(raw):
            raise CodecError(f"the {what}'s message indexes are truncated")
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CodecError(f"the {what}'s message indexes hold a varint over 10 bytes")


def message_indexes(raw: bytes, pos: int, what: str = "value") -> tuple[tuple[int, ...], int]:
    """The message indexes starting at *pos* and where the body starts."""
    count, pos = _varint(raw, pos, what)
    if count == 0:
        return (0,), pos
    if count < 0 or count > _MAX_INDEXES:
        raise CodecError(
            f"the {what}'s message-index count is {count}; "
            f"expected 0 to {_MAX_INDEXES} (truncated or not Protobuf framing)"
        )
    out = []
    for _ in range(count):
        index, pos = _varint(raw, pos, what)
        if index < 0:
            raise CodecError(f"the {what}'s message indexes hold a negative index {index}")
        out.append(index)
    return tuple(out), pos


def _writers(schemas: Schemas) -> WriterCache[ProtoWriter]:
    """Protobuf writer schemas of a view, built once per schema id from the registry."""

    def build(schema_id: int, offset: int, doc: dict[str, Any]) -> ProtoWriter:
        try:
            main, files = _main_and_files(schema_id, doc)
            return ProtoWriter(
                schema_id, offset, main, _pool(files, f"writer schema id {schema_id}")
            )
        except CodecError as exc:
            log.warning("protobuf.bad_schema schema_id=%d reason=%s", schema_id, exc)
            raise

    return WriterCache(schemas, "PROTOBUF", build)


# -- reader messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReaderMessage:
    """The message a view reads every body as (its ``reader_schema`` / ``reader_message``)."""

    path: Path
    cls: Any
    full_name: str
    check: Check | None


def load_reader_message(path: Path, name: str | None) -> ReaderMessage:
    """Compile the ``reader_schema`` .proto file and find *name* in it (its first message
    when None); ConfigError naming the file when either fails."""
    require()
    from google.protobuf import message_factory

    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the reader schema {path}: {exc}") from exc
    try:
        # Imports are looked up beside it and under each directory above it, nearest
        # first: "logistics/v1/address.proto" imported by schemas/logistics/v1/x.proto
        # is found under schemas/.
        compiled = compile_proto(
            {path.name: text},
            [path.name],
            f"the reader schema {path}",
            (path.parent, *list(path.parent.parents)[:_READER_ROOTS]),
        )
        pool = _pool(compiled, f"the reader schema {path}")
    except CodecError as exc:
        raise ConfigError(str(exc)) from None
    main = next(f for f in compiled if f.name == path.name)
    if name is None:
        if not main.message_type:
            raise ConfigError(f"the reader schema {path} defines no message")
        name = ".".join(p for p in (main.package, main.message_type[0].name) if p)
    try:
        desc = pool.FindMessageTypeByName(name)
    except KeyError:
        raise ConfigError(
            f"reader_message {name!r} is not a message of the reader schema {path} "
            "(give the full name, package included)"
        ) from None
    return ReaderMessage(
        path, message_factory.GetMessageClass(desc), desc.full_name, serving_check(desc)
    )


# Wire-compatible groups: a field of one type in a group reads as any other of that group.
_GROUPS = {
    "int32": "varint",
    "int64": "varint",
    "uint32": "varint",
    "uint64": "varint",
    "bool": "varint",
    "enum": "varint",
    "sint32": "zigzag",
    "sint64": "zigzag",
    "fixed32": "fixed32",
    "sfixed32": "fixed32",
    "fixed64": "fixed64",
    "sfixed64": "fixed64",
    "float": "float",
    "double": "double",
    "string": "bytes",
    "bytes": "bytes",
    "message": "message",
    "group": "group",
}


def _type_name(f: Any) -> str:
    from google.protobuf.descriptor import FieldDescriptor

    names = {v: k[5:].lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}
    return names.get(f.type, str(f.type))


def incompatibility(writer: Any, reader: Any) -> str | None:
    """Why bodies of the *writer* message cannot be read as the *reader* message (None: they can)."""
    seen: set[tuple[str, str]] = set()
    todo = [(writer, reader)]
    while todo:
        w, r = todo.pop()
        if (w.full_name, r.full_name) in seen:
            continue
        seen.add((w.full_name, r.full_name))
        for number, rf in r.fields_by_number.items():
            wf = w.fields_by_number.get(number)
            if wf is None:
                continue
            wt, rt = _type_name(wf), _type_name(rf)
            if _GROUPS.get(wt) != _GROUPS.get(rt):
                return (
                    f"field {number} is {wt} {wf.name!r} in {w.full_name} but {rt} "
                    f"{rf.name!r} in {r.full_name}"
                )
            if wt == "message":
                todo.append((wf.message_type, rf.message_type))
    return None


# -- codecs ------------------------------------------------------------------------------


def _to_json(msg: Any, *, defaults: bool) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=defaults)


def _explain(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ProtobufValue:
    """Protobuf values: parsed at ingest, served in the canonical proto3 JSON mapping."""

    name = "protobuf"

    def __init__(
        self, schemas: Schemas, reader: ReaderMessage | None = None, *, validate: bool = True
    ) -> None:
        require()
        from google.protobuf.message import DecodeError

        self._decode_error = DecodeError
        self._writers = _writers(schemas)
        self._reader = reader
        self._validate = validate
        # frame + b"\x00" (message [0]) -> (schema id, parse class, serving check, read class)
        self._fast: dict[bytes, tuple[int, Any, Check | None, Any]] = {}
        self._incompatible: dict[tuple[int, str], str] = {}

    @property
    def reader_path(self) -> Path | None:
        return self._reader.path if self._reader is not None else None

    def _admit(self, raw: bytes) -> tuple[int, Any, Check | None, Any, int]:
        """Slow path: resolve frame and indexes; (id, writer class, check, read class, body)."""
        w = self._writers.get(raw, "value")
        indexes, start = message_indexes(raw, w.offset)
        m = w.message(indexes)
        read_cls, serving = m.cls, m.check
        if self._reader is not None:
            key = (w.id, m.full_name)
            why = self._incompatible.get(key)
            if why is None:
                found = incompatibility(m.cls.DESCRIPTOR, self._reader.cls.DESCRIPTOR)
                why = (
                    f"writer schema id {w.id} ({m.full_name}) cannot be read as the reader "
                    f"message {self._reader.full_name} of {self._reader.path}: {found}"
                    if found
                    else ""
                )
                if found:
                    log.warning("protobuf.incompatible_writer %s", why)
                self._incompatible[key] = why
            if why:
                raise CodecError(why)
            read_cls, serving = self._reader.cls, self._reader.check
        if w.offset == ID_FRAME and start == _FAST:
            self._fast[raw[:_FAST]] = (w.id, m.cls, serving, read_cls)
        return w.id, m.cls, serving, read_cls, start

    def check(self, raw: bytes) -> int:
        fast = self._fast.get(raw[:_FAST])
        if fast is not None:
            schema_id, cls, serving, read_cls = fast
            start = _FAST
        else:
            schema_id, cls, serving, read_cls, start = self._admit(raw)
        if not self._validate:
            return schema_id
        body = raw[start:]
        try:
            msg = cls.FromString(body)
            if read_cls is not cls:
                msg = read_cls.FromString(body)
        except self._decode_error as exc:
            raise CodecError(
                f"value is not valid Protobuf for writer schema id {schema_id} "
                f"({cls.DESCRIPTOR.full_name}): {_explain(exc)}"
            ) from None
        if serving is not None:
            try:
                serving(msg)
            except Exception as exc:
                raise CodecError(
                    f"value is Protobuf for writer schema id {schema_id} that reads cannot "
                    f"serve as JSON: {_explain(exc)}"
                ) from None
        return schema_id

    def decode(self, raw: bytes) -> Any:
        fast = self._fast.get(raw[:_FAST])
        if fast is not None:
            schema_id, read_cls, start = fast[0], fast[3], _FAST
        else:
            schema_id, _cls, _check, read_cls, start = self._admit(raw)
        try:
            return _to_json(read_cls.FromString(raw[start:]), defaults=True)
        except Exception as exc:
            raise CodecError(
                f"cannot decode the Protobuf value (writer schema id {schema_id}): {_explain(exc)}"
            ) from None


class ProtobufKey(JsonAddressedKey):
    """Protobuf keys, stored and addressed as canonical JSON of the decoded key (fields at
    their defaults left out, so a field added to the key schema keeps keys one entity)."""

    name = "protobuf"
    kind = "Protobuf"
    example = """'{"orderId": "o-1"}'"""

    def __init__(self, schemas: Schemas) -> None:
        require()
        self._writers = _writers(schemas)

    def from_kafka(self, raw: bytes) -> bytes:
        w = self._writers.get(raw, "key")
        indexes, start = message_indexes(raw, w.offset, "key")
        m = w.message(indexes)
        try:
            return canonical_key(_to_json(m.cls.FromString(raw[start:]), defaults=False))
        except Exception as exc:
            raise CodecError(
                f"key is not valid Protobuf for key schema id {w.id} ({m.full_name}): "
                f"{_explain(exc)}"
            ) from None
