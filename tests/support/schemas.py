"""Avro schemas as the suites write them: record builders and the patient schemas.

A record schema is written once with ``record(name, [field(...), ...])``; a later version
is built from an earlier one (``with_field``, ``without``) so an evolution test shows
exactly what changed between the two. The patient schemas are the repository's own
``schemas/patient*.avsc``, the ones the demo and the docs use.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .processes import REPO

Schema = dict[str, Any]

SCHEMAS = REPO / "schemas"


def field(name: str, type_: Any, **extra: Any) -> Schema:
    """A record field; *extra* adds ``default``, ``doc`` and the like."""
    return {"name": name, "type": type_, **extra}


def optional(name: str, type_: Any = "string") -> Schema:
    """A field that may be null and is null by default."""
    return field(name, ["null", type_], default=None)


def record(name: str, fields: list[Schema], namespace: str | None = None) -> Schema:
    """A record schema named *name* (in *namespace* when given) with *fields*."""
    out: Schema = {"type": "record", "name": name, "fields": fields}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def with_field(schema: Schema, added: Schema) -> Schema:
    """*schema* with the field *added* at the end (a new version of it)."""
    out = copy.deepcopy(schema)
    out["fields"].append(added)
    return out


def without(schema: Schema, name: str) -> Schema:
    """*schema* with the field *name* removed."""
    out = copy.deepcopy(schema)
    out["fields"] = [f for f in out["fields"] if f["name"] != name]
    return out


PATIENT_V1: Schema = json.loads((SCHEMAS / "patient.v1.avsc").read_text(encoding="utf-8"))
# v2 adds "ward", defaulting to "unassigned" for records written with v1.
PATIENT_V2: Schema = json.loads((SCHEMAS / "patient.avsc").read_text(encoding="utf-8"))
# v3 adds an optional field (compatible with v2 readers, which ignore it).
PATIENT_V3: Schema = with_field(PATIENT_V2, optional("attending"))
