"""The reader-schema compatibility check agrees with fastavro's schema resolution."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from statestore.avro_compat import incompatibility
from tests.support.schemas import field, optional, record

BASE = record(
    "demo.Patient",
    [
        field("name", "string"),
        field("age", "int"),
        field("status", {"type": "enum", "name": "Status", "symbols": ["IN", "OUT"]}),
        optional("ward"),
    ],
)
DATUM = {"name": "Ada", "age": 40, "status": "OUT", "ward": "B2"}


def changed(**fields: Any) -> dict[str, Any]:
    """BASE with fields replaced (a value of None removes the field); extra names are added."""
    out = copy.deepcopy(BASE)
    names = [f["name"] for f in out["fields"]]
    for name, spec in fields.items():
        if name in names:
            out["fields"] = [f for f in out["fields"] if f["name"] != name]
        if spec is not None:
            out["fields"].append({"name": name, **spec})
    return out


def why(writer: Any, reader: Any) -> str | None:
    wn: dict[str, Any] = {}
    rn: dict[str, Any] = {}
    return incompatibility(
        parse_schema(writer, named_schemas=wn), parse_schema(reader, named_schemas=rn), wn, rn
    )


def fastavro_resolves(writer: Any, reader: Any, datum: Any) -> bool:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(writer), datum)
    try:
        schemaless_reader(io.BytesIO(buf.getvalue()), parse_schema(writer), parse_schema(reader))
    except Exception:
        return False
    return True


@pytest.mark.parametrize(
    ("reader", "compatible"),
    [
        (BASE, True),
        (changed(ward=None), True),  # a removed field is skipped
        (changed(floor={"type": "int", "default": 0}), True),  # an added field with a default
        (changed(floor={"type": "int"}), False),  # an added field without one
        (changed(age={"type": "long"}), True),  # int promotes to long
        (changed(age={"type": "string"}), False),
        (changed(status={"type": {"type": "enum", "name": "Status", "symbols": ["IN"]}}), False),
        (
            changed(
                status={
                    "type": {"type": "enum", "name": "Status", "symbols": ["IN"], "default": "IN"}
                }
            ),
            True,
        ),
        (changed(ward={"type": "string"}), False),  # the writer's null branch has nowhere to go
        (changed(ward={"type": ["null", "string", "int"], "default": None}), True),
        ({**BASE, "name": "other.Patient"}, True),  # unqualified names match, as in fastavro
        ({**BASE, "name": "demo.Person"}, False),
        ({**BASE, "name": "demo.Person", "aliases": ["Patient"]}, True),
    ],
)
def test_incompatibility_matches_fastavro_resolution(
    reader: dict[str, Any], compatible: bool
) -> None:
    """A reader is compatible exactly when fastavro resolves every kind of writer datum onto it."""
    assert (why(BASE, reader) is None) is compatible
    outcomes = {fastavro_resolves(BASE, reader, d) for d in (DATUM, {**DATUM, "ward": None})}
    assert outcomes == {True} if compatible else False in outcomes


def test_the_reason_names_the_field() -> None:
    """The reason says which field cannot be resolved and why."""
    reason = why(BASE, changed(age={"type": "string"}))
    assert reason is not None and reason.startswith("age:") and "string" in reason
    reason = why(BASE, changed(floor={"type": "int"}))
    assert reason is not None and "floor" in reason and "no default" in reason


def test_recursive_schemas_terminate() -> None:
    """Recursive named types are checked once per pair of names."""
    node = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "next", "type": ["null", "Node"], "default": None},
            {"name": "v", "type": "int"},
        ],
    }
    assert why(node, node) is None
    wider = copy.deepcopy(node)
    wider["fields"][1]["type"] = "double"
    assert why(node, wider) is None
    assert why(wider, node) is not None
