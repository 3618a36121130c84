"""Ingest-time check that an Avro body is complete and well formed for its writer schema.

Decoding every value at ingest (fastavro builds the dicts, strings and
datetimes) costs more than the rest of the ingest path together. The check
instead walks the body the way a decoder would, building nothing: it reads
varints, length prefixes, union branches and enum indexes, checks each against
the schema and the end of the buffer, and verifies that strings are UTF-8.
What passes decodes with fastavro; what fails (truncated, corrupt, wrong
schema id) would fail to decode on read.

Each writer schema is compiled once into a small Python function, with one
function per named type (so recursive schemas work); only structure goes into
the generated code, never names or other text from the schema.

Passing the check also means the value can be served: logical values are
checked against what the reader turns into Python objects (timestamps and
dates within years 1-9999, times of day, UUID text, decimals of a sane length), and
a schema whose values can nest deeper than reads encode (a recursive one, in
practice) has the nesting of each body counted. fastavro's decoder recurses in
C, so such a body must pass this check before it is decoded at all: a value
nested some thousands of levels deep crashes the process.

Bodies in Avro's JSON encoding (Apicurio's ``apicurio.registry.avro.encoding =
JSON``) have no such walk: :func:`compile_json_check` decodes them with fastavro's
JSON reader (pure Python: nesting ends in a RecursionError, not a crash) and, as
that reader takes any JSON value for a primitive, validates the value against
the writer schema. :func:`read_json` decodes them on read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from io import BytesIO
from typing import IO, Any, cast

from fastavro import json_reader, schemaless_reader
from fastavro._read_py import schemaless_reader as python_reader
from fastavro.validation import ValidationError, validate

from .codecs import MAX_SERVED_DEPTH

__all__ = [
    "MAX_DECIMAL_BYTES",
    "BodyCheck",
    "MalformedAvro",
    "UnservableAvro",
    "compile_check",
    "compile_json_check",
    "nests_deep",
    "read_json",
]

# buffer -> schema id (or end of the body); raises MalformedAvro, IndexError or UnicodeDecodeError.
BodyCheck = Callable[[bytes], int]

_NAMED = ("record", "error", "enum", "fixed")
_FIXED_WIDTH = {"null": 0, "float": 4, "double": 8}


class MalformedAvro(ValueError):
    """The body does not follow its writer schema."""


class UnservableAvro(MalformedAvro):
    """The body follows its schema, but reads could not decode or encode the value."""


# The values fastavro's logical readers turn into Python objects (found by probing
# them: datetimes within years 1-9999; a time of day from its hour, which Python
# truncates towards zero). Outside these the decoder raises.
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999
_LONG_RANGES = {
    "timestamp-millis": (_MIN_MS, _MAX_MS),
    "local-timestamp-millis": (_MIN_MS, _MAX_MS),
    "timestamp-micros": (_MIN_MS * 1000, _MAX_MS * 1000 + 999),
    "local-timestamp-micros": (_MIN_MS * 1000, _MAX_MS * 1000 + 999),
    "time-micros": (-3_599_999_999, 86_399_999_999),
}
_INT_RANGES = {
    "date": (-719_162, 2_932_896),
    "time-millis": (-3_599_999, 86_399_999),
}
# Longer unscaled decimals are refused: far beyond any declared precision, and decoding
# one costs time that grows with the square of its length (half a megabyte: 20 s).
MAX_DECIMAL_BYTES = 4096


def _out_of_range(what: str, value: int) -> UnservableAvro:
    return UnservableAvro(f"{what} value {value} is outside what can be read")


def _uuid(text: str) -> None:
    try:
        uuid.UUID(text)
    except ValueError:
        raise UnservableAvro(f"uuid value {text[:64]!r} is not a UUID") from None


def _long_decimal(size: int) -> UnservableAvro:
    return UnservableAvro(
        f"decimal value of {size} bytes; at most {MAX_DECIMAL_BYTES} bytes of decimal are read"
    )


def _too_deep() -> UnservableAvro:
    return UnservableAvro(
        f"value nests records, arrays or maps more than {MAX_SERVED_DEPTH} levels deep; "
        f"at most {MAX_SERVED_DEPTH} can be served"
    )


def nesting(schema: Any, named: dict[str, Any], within: frozenset[str] = frozenset()) -> float:
    """How deep values of *schema* can nest records, arrays and maps (inf when recursive)."""
    if isinstance(schema, list):
        return max((nesting(branch, named, within) for branch in schema), default=0)
    if isinstance(schema, str):
        if schema not in named:
            return 0
        schema = named[schema]
    kind = schema["type"]
    if not isinstance(kind, str):
        return nesting(kind, named, within)
    if kind in ("array", "map"):
        return 1 + nesting(schema["items" if kind == "array" else "values"], named, within)
    if kind not in ("record", "error"):
        return 0
    name = str(schema["name"])
    if name in within:
        return float("inf")
    inner = within | {name}
    return 1 + max((nesting(f["type"], named, inner) for f in schema["fields"]), default=0)


def nests_deep(schema: Any, named: dict[str, Any]) -> bool:
    """Whether values of *schema* can nest deeper than reads encode (their bodies are counted)."""
    return nesting(schema, named) > MAX_SERVED_DEPTH


def _varint(b: bytes, p: int, x: int) -> tuple[int, int]:
    """The rest of a varint whose first byte *x* had the continuation bit set."""
    value = x & 0x7F
    shift = 7
    while True:
        x = b[p]
        p += 1
        value |= (x & 0x7F) << shift
        if not x & 0x80:
            return value, p
        shift += 7
        if shift > 63:
            raise MalformedAvro("a varint is longer than 10 bytes")


def _span(b: bytes, p: int) -> tuple[int, int]:
    """(start, end) of a string or bytes value whose length prefix starts at *p*."""
    x = b[p]
    p += 1
    if x & 0x80:
        x, p = _varint(b, p, x)
    length = (x >> 1) ^ -(x & 1)
    if length < 0:
        raise MalformedAvro("negative length")
    return p, p + length


class _Compiler:
    """Emits the source of a body check.

    ``utf8`` chooses whether strings are decoded; ``track`` whether nesting is
    counted. Generated functions take ``d``, the levels of records, arrays and
    maps around the value they check; ``level`` below is how many more the
    code being emitted is inside of.
    """

    def __init__(self, named: dict[str, Any], *, track: bool) -> None:
        self.named = named
        self.track = track
        self.utf8 = True
        self.functions: dict[tuple[str, bool], str] = {}  # (type name, utf8) -> function
        self.sources: list[str] = []
        self.tmp = 0

    def var(self) -> str:
        self.tmp += 1
        return f"v{self.tmp}"

    def function_for(self, schema: dict[str, Any]) -> str:
        key = (str(schema["name"]), self.utf8)
        fn = self.functions.get(key)
        if fn is None:
            fn = f"_{'u' if self.utf8 else 'a'}{len(self.functions)}"
            self.functions[key] = fn
            body: list[str] = []
            self.named_body(schema, body, 1, 0)
            self.sources.append("\n".join([f"def {fn}(b, p, n, d):", *body, "    return p"]))
        return fn

    def call(self, schema: dict[str, Any], out: list[str], pad: str, level: int) -> None:
        d = f"d + {level}" if level else "d"
        out.append(f"{pad}p = {self.function_for(schema)}(b, p, n, {d})")

    def deeper(self, out: list[str], pad: str, level: int) -> None:
        """A record, array or map starts here: refuse it past the depth reads encode."""
        if self.track:
            out += [
                f"{pad}if d + {level} >= {MAX_SERVED_DEPTH}:",
                f"{pad}    raise _too_deep()",
            ]

    def emit(self, schema: Any, out: list[str], depth: int, level: int) -> None:
        pad = "    " * depth
        if isinstance(schema, list):
            self._union(schema, out, depth, level)
            return
        logical = None
        if isinstance(schema, str):
            if schema in self.named:
                self.call(self.named[schema], out, pad, level)
                return
            kind = schema
        else:
            kind = schema["type"]
            if not isinstance(kind, str):
                self.emit(kind, out, depth, level)
                return
            if kind in _NAMED:
                self.call(schema, out, pad, level)
                return
            logical = schema.get("logicalType")
        if kind in _FIXED_WIDTH:
            if _FIXED_WIDTH[kind]:
                out.append(f"{pad}p += {_FIXED_WIDTH[kind]}")
        elif kind == "boolean":
            # Any byte reads as a boolean (fastavro takes non-zero as true): only its presence matters.
            out.append(f"{pad}p += 1")
        elif kind in ("int", "long"):
            bounds = (_INT_RANGES if kind == "int" else _LONG_RANGES).get(str(logical))
            start = self.var() if bounds else ""
            if bounds:
                out.append(f"{pad}{start} = p")
            out += [f"{pad}while b[p] & 0x80:", f"{pad}    p += 1", f"{pad}p += 1"]
            if bounds:
                self._range(out, pad, start, str(logical), *bounds)
        elif kind == "string" and logical == "uuid":
            self._whole_span(out, pad, uuid=True)
        elif kind == "bytes" and logical == "decimal":
            self._whole_span(out, pad, uuid=False)
        elif kind in ("string", "bytes"):
            self._length(out, pad, utf8=self.utf8 and kind == "string")
        elif kind in ("array", "map"):
            self._blocks(schema, kind, out, depth, level)
        else:
            raise MalformedAvro(f"unsupported Avro type {kind!r}")

    def named_body(self, schema: dict[str, Any], out: list[str], depth: int, level: int) -> None:
        """The check of a record, enum or fixed itself (not a call to its function)."""
        pad = "    " * depth
        kind = schema["type"]
        if kind == "fixed":
            size = int(schema["size"])
            if schema.get("logicalType") == "decimal" and size > MAX_DECIMAL_BYTES:
                out.append(f"{pad}raise _long_decimal({size})")
            out.append(f"{pad}p += {size}")
        elif kind == "enum":
            v = self._read_long(out, pad)
            out += [
                f"{pad}if not 0 <= {v} < {len(schema['symbols'])}:",
                f"{pad}    raise MalformedAvro('enum index out of range')",
            ]
        else:
            self.deeper(out, pad, level)
            for field in schema["fields"]:
                self.emit(field["type"], out, depth, level + 1)

    def top(self, schema: Any, out: list[str], depth: int) -> None:
        """The check of the whole body: a top-level named type is inlined, not called."""
        if isinstance(schema, dict) and schema.get("type") in _NAMED:
            self.named_body(schema, out, depth, 0)
        else:
            self.emit(schema, out, depth, 0)

    def _read_long(self, out: list[str], pad: str) -> str:
        v = self.var()
        out += [
            f"{pad}{v} = b[p]",
            f"{pad}p += 1",
            f"{pad}if {v} & 0x80:",
            f"{pad}    {v}, p = _varint(b, p, {v})",
            f"{pad}{v} = ({v} >> 1) ^ -({v} & 1)",
        ]
        return v

    def _range(self, out: list[str], pad: str, start: str, what: str, lo: int, hi: int) -> None:
        # Every varint of up to `short` bytes is within [lo, hi]: only longer ones are decoded.
        short = 1
        while -(2 ** (7 * (short + 1) - 1)) >= lo and 2 ** (7 * (short + 1) - 1) - 1 <= hi:
            short += 1
        v = self.var()
        out += [
            f"{pad}if p - {start} > {short}:",
            f"{pad}    {v} = _varint(b, {start} + 1, b[{start}])[0]",
            f"{pad}    {v} = ({v} >> 1) ^ -({v} & 1)",
            f"{pad}    if not {lo} <= {v} <= {hi}:",
            f"{pad}        raise _out_of_range({what!r}, {v})",
        ]

    def _length(self, out: list[str], pad: str, *, utf8: bool) -> None:
        # A length below 64 is one even byte: the common case is two lines. Without
        # decoding, an end past the buffer shows in the next read or the final check.
        v = self.var()
        if not utf8:
            out += [
                f"{pad}{v} = b[p]",
                f"{pad}if {v} & 0x81:",
                f"{pad}    p = _span(b, p)[1]",
                f"{pad}else:",
                f"{pad}    p += 1 + ({v} >> 1)",
            ]
            return
        out += [
            f"{pad}{v} = b[p]",
            f"{pad}if {v} & 0x81:",
            f"{pad}    p, {v} = _span(b, p)",
            f"{pad}else:",
            f"{pad}    p += 1",
            f"{pad}    {v} = p + ({v} >> 1)",
            f"{pad}if {v} > n:",
            f"{pad}    raise IndexError('body ends inside a string')",
            f"{pad}b[p:{v}].decode()",
            f"{pad}p = {v}",
        ]

    def _whole_span(self, out: list[str], pad: str, *, uuid: bool) -> None:
        # A UUID string or a decimal's bytes: the span is read whole, then checked.
        start, end = self.var(), self.var()
        out.append(f"{pad}{start}, {end} = _span(b, p)")
        if uuid:
            out += [
                f"{pad}if {end} > n:",
                f"{pad}    raise IndexError('body ends inside a string')",
                f"{pad}_uuid(b[{start}:{end}].decode())",
            ]
        else:
            out += [
                f"{pad}if {end} - {start} > {MAX_DECIMAL_BYTES}:",
                f"{pad}    raise _long_decimal({end} - {start})",
            ]
        out.append(f"{pad}p = {end}")

    def _union(self, branches: list[Any], out: list[str], depth: int, level: int) -> None:
        pad = "    " * depth
        v = self._read_long(out, pad)
        for i, branch in enumerate(branches):
            out.append(f"{pad}{'if' if i == 0 else 'elif'} {v} == {i}:")
            inner: list[str] = []
            self.emit(branch, inner, depth + 1, level)
            out += inner or [f"{pad}    pass"]
        out += [f"{pad}else:", f"{pad}    raise MalformedAvro('union branch index out of range')"]

    def _blocks(
        self, schema: dict[str, Any], kind: str, out: list[str], depth: int, level: int
    ) -> None:
        pad = "    " * depth
        self.deeper(out, pad, level)
        out.append(f"{pad}while True:")
        count = self._read_long(out, pad + "    ")
        out += [
            f"{pad}    if {count} == 0:",
            f"{pad}        break",
            f"{pad}    if {count} < 0:",
            f"{pad}        {count} = -{count}",
        ]
        self._read_long(out, pad + "        ")
        out.append(f"{pad}    for _ in range({count}):")
        inner: list[str] = []
        if kind == "map":
            self._length(inner, pad + "        ", utf8=self.utf8)
        self.emit(schema["items" if kind == "array" else "values"], inner, depth + 2, level + 1)
        out += inner or [f"{pad}        pass"]


def compile_check(
    parsed: Any, named: dict[str, Any], *, start: int = 0, result: int | None = None
) -> BodyCheck:
    """A function ``check(buf)`` for bodies written with the *parsed* schema.

    It walks the body from offset *start* (past the wire-format header) and
    returns *result* (the writer schema id, baked in so the ingest path does no
    lookups), or the body's end offset when *result* is None. A buffer that is
    all ASCII holds only valid UTF-8, so its strings are not decoded one by one:
    that variant of the walk skips them.
    """
    track = nests_deep(parsed, named)
    compiler = _Compiler(named, track=track)
    compiler.utf8 = False
    ascii_body: list[str] = []
    compiler.top(parsed, ascii_body, 2)
    compiler.utf8 = True
    utf8_body: list[str] = []
    compiler.top(parsed, utf8_body, 2)
    entry = "\n".join(
        [
            "def check(b):",
            f"    p = {int(start)}",
            "    n = len(b)",
            "    d = 0",
            "    if b.isascii():",
            *(ascii_body or ["        pass"]),
            "    else:",
            *(utf8_body or ["        pass"]),
            "    if p > n:",
            "        raise IndexError('body ends before the schema says it should')",
            f"    return {'p' if result is None else int(result)}",
        ]
    )
    namespace: dict[str, Any] = {
        "MalformedAvro": MalformedAvro,
        "_long_decimal": _long_decimal,
        "_out_of_range": _out_of_range,
        "_span": _span,
        "_too_deep": _too_deep,
        "_uuid": _uuid,
        "_varint": _varint,
    }
    try:
        code = compile("\n\n".join([*compiler.sources, entry]), "<avro-check>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        # Containers nested beyond what Python compiles (20 loops deep): decode instead.
        return _decoding_check(parsed, start, result, track=track)
    exec(code, namespace)
    check: BodyCheck = namespace["check"]
    return check


def _decoding_check(parsed: Any, start: int, result: int | None, *, track: bool) -> BodyCheck:
    # A value that may nest deep is decoded by fastavro's Python reader (which stops at
    # Python's recursion limit, not the C stack's) and its depth measured.
    reader = python_reader if track else schemaless_reader

    def check(b: bytes) -> int:
        fo = BytesIO(b)
        fo.seek(start)
        try:
            value = reader(fo, parsed, None)
        except RecursionError:
            raise _too_deep() from None
        except (ValueError, OverflowError, ArithmeticError) as exc:
            if isinstance(exc, MalformedAvro):
                raise
            raise UnservableAvro(f"the value cannot be read: {exc}") from None
        if track and _depth(value) > MAX_SERVED_DEPTH:
            raise _too_deep()
        return fo.tell() if result is None else result

    return check


def _depth(value: Any) -> int:
    """How deep *value* nests dicts and lists (without recursing)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_json(body: bytes, writer: Any, reader: Any = None) -> Any:
    """The value of *body*, Avro's JSON encoding of a *writer* value, resolved onto the
    parsed *reader* schema when given (fastavro's JSON reader applies the same rules as
    its binary one). MalformedAvro when it is not; the value is not validated."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedAvro(f"the body is not UTF-8 text: {exc}") from None
    try:
        # The decoder takes one JSON document per item: the whole body is one.
        return next(json_reader(cast(IO[str], [text]), writer, reader))
    except RecursionError:
        raise UnservableAvro(
            "decoding the JSON encoding ran past Python's recursion limit: the value nests "
            f"more than {MAX_SERVED_DEPTH} levels deep, or the schema is recursive through an "
            "array or map, which fastavro's JSON decoder cannot read"
        ) from None
    except Exception as exc:
        raise MalformedAvro(f"{type(exc).__name__}: {exc}") from None


def compile_json_check(
    parsed: Any, named: dict[str, Any], *, start: int = 0, result: int = 0
) -> BodyCheck:
    """A function ``check(buf)`` for bodies in Avro's JSON encoding of the *parsed*
    schema from offset *start*: they decode, their value is valid for the schema and
    nests no deeper than reads serve. Returns *result* (the writer schema id)."""
    track = nests_deep(parsed, named)

    def check(b: bytes) -> int:
        value = read_json(b[start:], parsed)
        try:
            validate(value, parsed, raise_errors=True)
        except ValidationError as exc:
            raise MalformedAvro("; ".join(str(e) for e in exc.errors)) from None
        except RecursionError:
            raise _too_deep() from None
        if track and _depth(value) > MAX_SERVED_DEPTH:
            raise _too_deep()
        return result

    return check
