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
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader

__all__ = ["BodyCheck", "MalformedAvro", "compile_check"]

# buffer -> schema id (or end of the body); raises MalformedAvro, IndexError or UnicodeDecodeError.
BodyCheck = Callable[[bytes], int]

_NAMED = ("record", "error", "enum", "fixed")
_FIXED_WIDTH = {"null": 0, "float": 4, "double": 8}


class MalformedAvro(ValueError):
    """The body does not follow its writer schema."""


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
    """Emits the source of a body check; ``utf8`` chooses whether strings are decoded."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
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
            self.named_body(schema, body, 1)
            self.sources.append("\n".join([f"def {fn}(b, p, n):", *body, "    return p"]))
        return fn

    def emit(self, schema: Any, out: list[str], depth: int) -> None:
        pad = "    " * depth
        if isinstance(schema, list):
            self._union(schema, out, depth)
            return
        if isinstance(schema, str):
            if schema in self.named:
                out.append(f"{pad}p = {self.function_for(self.named[schema])}(b, p, n)")
                return
            kind = schema
        else:
            kind = schema["type"]
            if not isinstance(kind, str):
                self.emit(kind, out, depth)
                return
            if kind in _NAMED:
                out.append(f"{pad}p = {self.function_for(schema)}(b, p, n)")
                return
        if kind in _FIXED_WIDTH:
            if _FIXED_WIDTH[kind]:
                out.append(f"{pad}p += {_FIXED_WIDTH[kind]}")
        elif kind == "boolean":
            # Any byte reads as a boolean (fastavro takes non-zero as true): only its presence matters.
            out.append(f"{pad}p += 1")
        elif kind in ("int", "long"):
            out += [f"{pad}while b[p] & 0x80:", f"{pad}    p += 1", f"{pad}p += 1"]
        elif kind in ("string", "bytes"):
            self._length(out, pad, utf8=self.utf8 and kind == "string")
        elif kind in ("array", "map"):
            self._blocks(schema, kind, out, depth)
        else:
            raise MalformedAvro(f"unsupported Avro type {kind!r}")

    def named_body(self, schema: dict[str, Any], out: list[str], depth: int) -> None:
        """The check of a record, enum or fixed itself (not a call to its function)."""
        pad = "    " * depth
        kind = schema["type"]
        if kind == "fixed":
            out.append(f"{pad}p += {int(schema['size'])}")
        elif kind == "enum":
            v = self._read_long(out, pad)
            out += [
                f"{pad}if not 0 <= {v} < {len(schema['symbols'])}:",
                f"{pad}    raise MalformedAvro('enum index out of range')",
            ]
        else:
            for field in schema["fields"]:
                self.emit(field["type"], out, depth)

    def top(self, schema: Any, out: list[str], depth: int) -> None:
        """The check of the whole body: a top-level named type is inlined, not called."""
        if isinstance(schema, dict) and schema.get("type") in _NAMED:
            self.named_body(schema, out, depth)
        else:
            self.emit(schema, out, depth)

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

    def _union(self, branches: list[Any], out: list[str], depth: int) -> None:
        pad = "    " * depth
        v = self._read_long(out, pad)
        for i, branch in enumerate(branches):
            out.append(f"{pad}{'if' if i == 0 else 'elif'} {v} == {i}:")
            inner: list[str] = []
            self.emit(branch, inner, depth + 1)
            out += inner or [f"{pad}    pass"]
        out += [f"{pad}else:", f"{pad}    raise MalformedAvro('union branch index out of range')"]

    def _blocks(self, schema: dict[str, Any], kind: str, out: list[str], depth: int) -> None:
        pad = "    " * depth
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
        self.emit(schema["items" if kind == "array" else "values"], inner, depth + 2)
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
    compiler = _Compiler(named)
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
            "    if b.isascii():",
            *(ascii_body or ["        pass"]),
            "    else:",
            *(utf8_body or ["        pass"]),
            "    if p > n:",
            "        raise IndexError('body ends before the schema says it should')",
            f"    return {'p' if result is None else int(result)}",
        ]
    )
    namespace: dict[str, Any] = {"MalformedAvro": MalformedAvro, "_varint": _varint, "_span": _span}
    try:
        code = compile("\n\n".join([*compiler.sources, entry]), "<avro-check>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        # Containers nested beyond what Python compiles (20 loops deep): decode instead.
        return _decoding_check(parsed, start, result)
    exec(code, namespace)
    check: BodyCheck = namespace["check"]
    return check


def _decoding_check(parsed: Any, start: int, result: int | None) -> BodyCheck:
    def check(b: bytes) -> int:
        fo = BytesIO(b)
        fo.seek(start)
        schemaless_reader(fo, parsed, None)
        return fo.tell() if result is None else result

    return check
