"""The ingest-time Avro body check agrees with fastavro on what decodes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.avro_check import MAX_DECIMAL_BYTES, MalformedAvro, UnservableAvro, compile_check
from statestore.codecs import MAX_SERVED_DEPTH
from tests.support.schemas import field, record

# One field of each primitive type, then every named and complex type.
PRIMITIVES = {
    "s": "string",
    "i": "int",
    "l": "long",
    "f": "float",
    "d": "double",
    "b": "boolean",
    "raw": "bytes",
}
SCHEMA = record(
    "test.Everything",
    [
        *(field(name, type_) for name, type_ in PRIMITIVES.items()),
        field("fx", {"type": "fixed", "name": "Three", "size": 3}),
        field("e", {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}),
        field("u", ["null", "string", record("Pair", [field("x", "int")])]),
        field("pairs", {"type": "array", "items": "Pair"}),
        field("m", {"type": "map", "values": ["null", "long"]}),
        field("next", ["null", "test.Everything"], default=None),
        field("at", {"type": "long", "logicalType": "timestamp-millis"}),
        field("nothing", "null"),
    ],
)
NAMED: dict[str, Any] = {}
PARSED = parse_schema(SCHEMA, named_schemas=NAMED)
CHECK = compile_check(PARSED, NAMED)
MINIMAL: dict[str, Any] = {
    "s": "",
    "i": 0,
    "l": 0,
    "f": 0.0,
    "d": 0.0,
    "b": False,
    "raw": b"",
    "fx": b"xyz",
    "e": "RED",
    "u": None,
    "pairs": [],
    "m": {},
    "next": None,
    "at": 0,
    "nothing": None,
}

ints = st.integers(-(2**31), 2**31 - 1)
longs = st.integers(-(2**63), 2**63 - 1)


def everything(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    nxt = (
        st.none()
        if depth >= 2
        else st.one_of(st.none(), st.deferred(lambda: everything(depth + 1)))
    )
    return st.fixed_dictionaries(
        {
            "s": st.text(max_size=80),
            "i": ints,
            "l": longs,
            "f": st.just(1.5),
            "d": st.floats(allow_nan=False),
            "b": st.booleans(),
            "raw": st.binary(max_size=80),
            "fx": st.binary(min_size=3, max_size=3),
            "e": st.sampled_from(["RED", "GREEN", "BLUE"]),
            "u": st.one_of(st.none(), st.text(max_size=5), st.builds(lambda x: {"x": x}, ints)),
            "pairs": st.lists(st.builds(lambda x: {"x": x}, ints), max_size=70),
            "m": st.dictionaries(st.text(max_size=4), st.one_of(st.none(), longs), max_size=3),
            "next": nxt,
            "at": st.integers(0, 2**41),
            "nothing": st.none(),
        }
    )


def encode(datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, PARSED, datum)
    return buf.getvalue()


def fastavro_reads(raw: bytes) -> bool:
    try:
        schemaless_reader(io.BytesIO(raw), PARSED)
    except Exception:
        return False
    return True


def check_passes(raw: bytes) -> bool:
    try:
        CHECK(raw)
    except (MalformedAvro, IndexError, UnicodeDecodeError):
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(everything())
def test_a_complete_body_passes_and_every_truncation_fails_like_fastavro(
    datum: dict[str, Any],
) -> None:
    """The check accepts a whole body (returning its end) and rejects exactly the prefixes fastavro cannot read."""
    raw = encode(datum)
    assert CHECK(raw) == len(raw)
    for cut in range(len(raw)):
        assert check_passes(raw[:cut]) == fastavro_reads(raw[:cut]), cut


PATIENT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "patient.avsc").read_text()
)
PATIENT_NAMED: dict[str, Any] = {}
PATIENT_CHECK = compile_check(parse_schema(PATIENT, named_schemas=PATIENT_NAMED), PATIENT_NAMED)
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "name": ascii_text,
            "admitted_at": ascii_text,
            "status": st.text(max_size=20),
            "allergies": st.lists(ascii_text, max_size=5),
            "updated_at": ascii_text,
            "ward": ascii_text,
        }
    )
)
def test_ascii_and_non_ascii_bodies_take_the_same_decisions(datum: dict[str, Any]) -> None:
    """All-ASCII bodies (strings not decoded one by one) and others reject exactly the truncations fastavro rejects."""
    parsed = parse_schema(PATIENT)
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, datum)
    raw = buf.getvalue()
    assert PATIENT_CHECK(raw) == len(raw)
    for cut in range(len(raw)):
        try:
            schemaless_reader(io.BytesIO(raw[:cut]), parsed)
            readable = True
        except Exception:
            readable = False
        try:
            PATIENT_CHECK(raw[:cut])
            passes = True
        except (MalformedAvro, IndexError, UnicodeDecodeError):
            passes = False
        assert passes == readable, cut


def test_the_check_starts_after_the_wire_format_header_and_returns_the_schema_id() -> None:
    """Compiled for a 5-byte header and schema id 42, the check walks only the body and returns 42."""
    check = compile_check(PARSED, NAMED, start=5, result=42)
    raw = b"\x00\x00\x00\x00\x2a" + encode(MINIMAL)
    assert check(raw) == 42
    with pytest.raises(IndexError):
        check(raw[:-1])


def test_invalid_utf8_in_a_string_fails() -> None:
    """A string field that is not UTF-8 fails the check, as it would fail to decode."""
    raw = bytearray(encode({**MINIMAL, "s": "abc"}))
    at = raw.index(b"abc")
    raw[at] = 0xFF
    assert not check_passes(bytes(raw))
    assert not fastavro_reads(bytes(raw))


def test_an_out_of_range_union_branch_or_enum_index_fails() -> None:
    """Union and enum indexes outside the schema fail the check (fastavro would misread negative ones)."""
    raw = bytearray(encode({**MINIMAL, "u": None}))
    fixed_end = raw.index(b"xyz") + 3
    raw[fixed_end] = 0x07  # enum index -4
    assert not check_passes(bytes(raw))


NODE: dict[str, Any] = {
    "type": "record",
    "name": "Node",
    "fields": [{"name": "kids", "type": {"type": "array", "items": "Node"}}],
}


@pytest.mark.parametrize(
    ("schema", "datum"),
    [
        ("string", "hé"),
        ({"type": "array", "items": {"type": "map", "values": "bytes"}}, [{"k": b"v"}, {}]),
        (["null", NODE], {"kids": [{"kids": []}, {"kids": [{"kids": []}]}]}),
    ],
)
def test_non_record_and_recursive_schemas_compile(schema: Any, datum: Any) -> None:
    """Top-level primitives, nested containers and recursive named types compile into a working check."""
    named: dict[str, Any] = {}
    parsed = parse_schema(schema, named_schemas=named)
    check = compile_check(parsed, named)
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, datum)
    raw = buf.getvalue()
    assert check(raw) == len(raw)
    with pytest.raises((MalformedAvro, IndexError)):
        check(raw[:-1])


def test_containers_nested_beyond_what_python_compiles_are_still_checked() -> None:
    """Arrays nested fifteen deep (past Python's limit on nested loops) are checked by decoding instead."""
    schema: Any = "int"
    datum: Any = 1
    for _ in range(15):
        schema, datum = {"type": "array", "items": schema}, [datum]
    named: dict[str, Any] = {}
    parsed = parse_schema(schema, named_schemas=named)
    check = compile_check(parsed, named, start=0, result=7)
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, datum)
    raw = buf.getvalue()
    assert check(raw) == 7
    with pytest.raises(EOFError):
        check(raw[:-1])


# -- every body that passes can be served ----------------------------------------------
# Random schemas (logical types included), random bodies written by following the
# schema with arbitrary numbers, lengths and union branches: the check passes exactly
# when fastavro decodes the body and the value can be rendered inside a page.

LOGICAL_SCHEMAS: list[Any] = [
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "long", "logicalType": "local-timestamp-millis"},
    {"type": "long", "logicalType": "local-timestamp-micros"},
    {"type": "long", "logicalType": "time-micros"},
    {"type": "int", "logicalType": "date"},
    {"type": "int", "logicalType": "time-millis"},
    {"type": "string", "logicalType": "uuid"},
    {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
    {"type": "fixed", "name": "Dec", "size": 5, "logicalType": "decimal", "precision": 9},
]
# Around every edge of the logical readers' ranges, and the extremes of a long.
EDGES = [
    b + d
    for b in (
        -62_135_596_800_000,
        253_402_300_799_999,
        -62_135_596_800_000_000,
        253_402_300_799_999_999,
        -719_162,
        2_932_896,
        -3_600_000,
        86_400_000,
        -3_600_000_000,
        86_400_000_000,
        0,
        -(2**31),
        2**31 - 1,
    )
    for d in (-1, 0, 1)
]


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@st.composite
def schemas(draw: st.DrawFn) -> Any:
    names = iter(range(1000))

    def node(depth: int) -> Any:
        choices = ["prim", "logical"] + (["record", "array", "map", "union"] if depth < 3 else [])
        kind = draw(st.sampled_from(choices))
        if kind == "prim":
            return draw(
                st.sampled_from(["null", "boolean", "int", "long", "float", "string", "bytes"])
            )
        if kind == "logical":
            schema = dict(draw(st.sampled_from(LOGICAL_SCHEMAS)))
            if "name" in schema:
                schema["name"] = f"F{next(names)}"
            return schema
        if kind == "array":
            return {"type": "array", "items": node(depth + 1)}
        if kind == "map":
            return {"type": "map", "values": node(depth + 1)}
        if kind == "union":
            return ["null", node(depth + 1)] if draw(st.booleans()) else ["null", "string", "long"]
        name = f"R{next(names)}"
        fields = [
            {"name": f"f{i}", "type": node(depth + 1)} for i in range(draw(st.integers(0, 3)))
        ]
        if draw(st.booleans()):  # a recursive record
            fields.append({"name": "next", "type": ["null", name]})
        return {"type": "record", "name": name, "fields": fields}

    return node(0)


class _Body:
    """Writes a body that follows *schema*, with hypothesis choosing every number in it."""

    def __init__(self, draw: st.DrawFn, named: dict[str, Any]) -> None:
        self.draw = draw
        self.named = named
        self.out = bytearray()
        self.records = 0

    def number(self) -> int:
        return self.draw(
            st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**63 - 1), st.integers(-9, 9))
        )

    def length(self, most: int) -> int:
        n = self.draw(st.integers(0, most))
        self.out += _zigzag(n)
        return n

    def write(self, schema: Any) -> None:
        if isinstance(schema, list):
            branch = self.draw(st.integers(0, len(schema) - 1))
            self.out += _zigzag(branch)
            self.write(schema[branch])
            return
        if isinstance(schema, str):
            if schema in self.named:
                self.write(self.named[schema])
                return
            schema = {"type": schema}
        kind = schema["type"]
        logical = schema.get("logicalType")
        if kind in ("int", "long"):
            n = self.number()
            if kind == "int":
                n = max(-(2**31), min(2**31 - 1, n))
            self.out += _zigzag(n)
        elif kind == "boolean":
            self.out.append(self.draw(st.integers(0, 1)))
        elif kind == "float":
            self.out += b"\x00\x00\xc0\x7f"  # NaN: served as null, never an error
        elif kind == "string":
            text = self.draw(
                st.one_of(st.uuids().map(str), st.text(max_size=40))
                if logical == "uuid"
                else st.text(max_size=8)
            ).encode()
            self.out += _zigzag(len(text)) + text
        elif kind == "bytes":
            data = self.draw(st.binary(max_size=12))
            self.out += _zigzag(len(data)) + data
        elif kind == "fixed":
            self.out += self.draw(st.binary(min_size=schema["size"], max_size=schema["size"]))
        elif kind == "array":
            if self.length(2):
                for _ in range(self.out[-1] >> 1):
                    self.write(schema["items"])
                self.out += b"\x00"
        elif kind == "map":
            if self.length(2):
                for i in range(self.out[-1] >> 1):
                    self.out += _zigzag(1) + bytes([0x61 + i])
                    self.write(schema["values"])
                self.out += b"\x00"
        elif kind == "record":
            self.records += 1
            for field in schema["fields"]:
                if field["name"] == "next" and self.records > 4:
                    self.out += _zigzag(0)  # end a recursive chain
                    continue
                self.write(field["type"])
        elif kind != "null":
            raise AssertionError(kind)


def served(value: Any) -> bool:
    """Whether *value* renders inside a page of entities, as REST and the CLI render it."""
    from statestore.api.models import dumps
    from statestore.cli._app import dumps as cli_dumps

    page = {"items": [{"key": "k", "value": value, "partition": 0, "offset": 0}], "next": None}
    try:
        dumps(page)
        cli_dumps(page)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def decodes_and_serves(parsed: Any, raw: bytes) -> bool:
    try:
        value = schemaless_reader(io.BytesIO(raw), parsed, None)
    except Exception:
        return False
    return served(value)


@settings(max_examples=1000, deadline=None)
@given(schemas(), st.data())
def test_a_body_passes_exactly_when_it_decodes_and_can_be_served(
    schema: Any, data: st.DataObject
) -> None:
    """The check agrees with the read path on any body: a value that passes is served, one that would not is refused."""
    named: dict[str, Any] = {}
    parsed = parse_schema(schema, named_schemas=named)
    writer = _Body(data.draw, named)
    writer.write(parsed)
    raw = bytes(writer.out)
    check = compile_check(parsed, named)
    try:
        check(raw)
        passed = True
    except (MalformedAvro, IndexError, UnicodeDecodeError):
        passed = False
    assert passed == decodes_and_serves(parsed, raw)


def linked(depth: int) -> tuple[Any, dict[str, Any], bytes]:
    """A recursive list schema and a body nesting *depth* records (each a JSON object)."""
    named: dict[str, Any] = {}
    parsed = parse_schema(
        {"type": "record", "name": "Link", "fields": [{"name": "next", "type": ["null", "Link"]}]},
        named_schemas=named,
    )
    return parsed, named, b"\x02" * (depth - 1) + b"\x00"


@pytest.mark.parametrize("depth", [1, 250, 251, 252, 300, 5_000])
def test_a_recursive_value_passes_exactly_when_its_nesting_can_be_served(depth: int) -> None:
    """Records nested up to the served depth pass; deeper ones are refused by name, never by a crash."""
    parsed, named, raw = linked(depth)
    check = compile_check(parsed, named)
    if depth <= MAX_SERVED_DEPTH:
        assert check(raw) == len(raw)
        assert served(schemaless_reader(io.BytesIO(raw), parsed, None))
    else:
        with pytest.raises(UnservableAvro, match="levels deep"):
            check(raw)
        if depth < 1_000:  # fastavro itself decodes these, but they cannot be rendered
            assert not served(schemaless_reader(io.BytesIO(raw), parsed, None))


def test_arrays_and_maps_count_towards_the_nesting_of_a_recursive_value() -> None:
    """A tree whose levels are a record and an array is refused at the same served depth."""
    named: dict[str, Any] = {}
    parsed = parse_schema(NODE, named_schemas=named)
    check = compile_check(parsed, named)
    for records in (125, 126):  # 2 levels per record (the record, its array): 250 and 252
        datum: dict[str, Any] = {"kids": []}
        for _ in range(records - 1):
            datum = {"kids": [datum]}
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, datum)
        if 2 * records <= MAX_SERVED_DEPTH:
            check(buf.getvalue())
            assert served(datum)
        else:
            with pytest.raises(UnservableAvro):
                check(buf.getvalue())
            assert not served(schemaless_reader(io.BytesIO(buf.getvalue()), parsed, None))


def test_a_decimal_longer_than_any_precision_needs_is_refused() -> None:
    """Unscaled decimals over 4 KiB are refused (decoding half a megabyte takes 20 s, and overflows)."""
    named: dict[str, Any] = {}
    parsed = parse_schema(
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        named_schemas=named,
    )
    check = compile_check(parsed, named)
    fits = _zigzag(MAX_DECIMAL_BYTES) + b"\x7f" * MAX_DECIMAL_BYTES
    check(fits)
    assert decodes_and_serves(parsed, fits)
    with pytest.raises(UnservableAvro, match="4097 bytes"):
        check(_zigzag(MAX_DECIMAL_BYTES + 1) + b"\x7f" * (MAX_DECIMAL_BYTES + 1))
    fixed = parse_schema(
        {"type": "fixed", "name": "Huge", "size": 5000, "logicalType": "decimal", "precision": 4},
        named_schemas={},
    )
    with pytest.raises(UnservableAvro, match="5000 bytes"):
        compile_check(fixed, {})(b"\x01" * 5000)
