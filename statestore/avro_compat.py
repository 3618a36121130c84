"""Can a reader schema read everything a writer schema wrote? (Avro schema resolution.)

The check follows the resolution rules of the Avro specification the way
fastavro applies them on read, so a writer version this accepts decodes onto
the reader schema and one it rejects would fail on some record. It is strict
about unions: a writer union branch the reader cannot take makes the whole
writer version incompatible, as a registry's BACKWARD check would.

Schemas are fastavro-parsed (named types fully qualified, later uses of a
named type written as its name).
"""

from __future__ import annotations

from typing import Any

__all__ = ["incompatibility"]

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_NAMED = ("record", "enum", "fixed", "error")
_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _at(path: str) -> str:
    return path or "the top-level type"


def _describe(schema: Any) -> str:
    if isinstance(schema, dict) and "name" in schema:
        return f"{schema['type']} {schema['name']}"
    if isinstance(schema, list):
        return "union [" + ", ".join(_describe(s) for s in schema) + "]"
    return _type_name(schema)


class _Resolver:
    def __init__(self, writer_named: dict[str, Any], reader_named: dict[str, Any]) -> None:
        self.writer_named = writer_named
        self.reader_named = reader_named
        self.seen: set[tuple[str, str]] = set()

    def _deref(self, schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return named.get(schema, schema)
        if isinstance(schema, dict) and not isinstance(schema.get("type"), str):
            return schema["type"]
        return schema

    def _names_match(self, w: dict[str, Any], r: dict[str, Any]) -> bool:
        w_short = str(w["name"]).rsplit(".", 1)[-1]
        r_short = str(r["name"]).rsplit(".", 1)[-1]
        aliases = r.get("aliases") or []
        return w_short == r_short or w["name"] in aliases or w_short in aliases

    def shallow(self, w: Any, r: Any) -> bool:
        """fastavro's branch choice: does *w* match *r* without looking inside records?"""
        w = self._deref(w, self.writer_named)
        r = self._deref(r, self.reader_named)
        wt, rt = _type_name(w), _type_name(r)
        if wt == "union" or rt == "union":
            return True
        if wt == rt and wt in ("array", "map"):
            key = "items" if wt == "array" else "values"
            return self.shallow(w[key], r[key])
        if wt in _NAMED and rt in _NAMED:
            if wt == rt == "fixed" and w["size"] != r["size"]:
                return False
            return self._names_match(w, r)
        return wt == rt or (wt, rt) in _PROMOTIONS

    def check(self, w: Any, r: Any, path: str) -> str | None:
        w = self._deref(w, self.writer_named)
        r = self._deref(r, self.reader_named)
        wt, rt = _type_name(w), _type_name(r)
        if wt == "union":
            for branch in w:
                reason = self.check(branch, r, path)
                if reason is not None:
                    return reason
            return None
        if rt == "union":
            for branch in r:
                if self.shallow(w, branch):
                    return self.check(w, branch, path)
            return f"{_at(path)}: writer type {_describe(w)} matches no branch of the reader's {_describe(r)}"
        if wt in _NAMED or rt in _NAMED:
            if wt != rt or not (wt in _NAMED and self._names_match(w, r)):
                return f"{_at(path)}: writer {_describe(w)} cannot be read as {_describe(r)}"
            pair = (str(w["name"]), str(r["name"]))
            if pair in self.seen:
                return None
            self.seen.add(pair)
            if wt == "fixed":
                if w["size"] != r["size"]:
                    return f"{_at(path)}: fixed {w['name']} has size {w['size']}, the reader expects {r['size']}"
                return None
            if wt == "enum":
                missing = [s for s in w["symbols"] if s not in r["symbols"]]
                if missing and not r.get("default"):
                    return (
                        f"{_at(path)}: enum {w['name']} symbols {missing} are not in the reader's "
                        "symbols and the reader enum has no default"
                    )
                return None
            return self._record(w, r, path)
        if wt == rt:
            if wt == "array":
                return self.check(w["items"], r["items"], f"{path}[]")
            if wt == "map":
                return self.check(w["values"], r["values"], f"{path}{{}}")
            return None
        if (wt, rt) in _PROMOTIONS:
            return None
        return f"{_at(path)}: writer type {_describe(w)} cannot be read as {_describe(r)}"

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str) -> str | None:
        writer_fields = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            name = field["name"]
            source = writer_fields.get(name)
            if source is None:
                for alias in field.get("aliases") or []:
                    source = writer_fields.get(alias)
                    if source is not None:
                        break
            where = f"{path}.{name}" if path else name
            if source is None:
                if "default" not in field:
                    return f"{where}: the reader's field has no default and the writer does not write it"
                continue
            reason = self.check(source["type"], field["type"], where)
            if reason is not None:
                return reason
        return None


def incompatibility(
    writer: Any, reader: Any, writer_named: dict[str, Any], reader_named: dict[str, Any]
) -> str | None:
    """Why data written with *writer* cannot be read as *reader*, or None when it can."""
    return _Resolver(writer_named, reader_named).check(writer, reader, "")
