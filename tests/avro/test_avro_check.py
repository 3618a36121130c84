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

from statestore.avro_check import MalformedAvro, compile_check

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "test.Everything",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Three", "size": 3}},
        {
            "name": "e",
            "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]},
        },
        {
            "name": "u",
            "type": [
                "null",
                "string",
                {"type": "record", "name": "Pair", "fields": [{"name": "x", "type": "int"}]},
            ],
        },
        {"name": "pairs", "type": {"type": "array", "items": "Pair"}},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "next", "type": ["null", "test.Everything"], "default": None},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "nothing", "type": "null"},
    ],
}
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
