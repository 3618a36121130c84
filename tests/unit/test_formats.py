"""Protobuf and JSON Schema pieces that need no broker: message indexes, header frames,
schema text detection, reader messages, writer/reader compatibility, config rules."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from pydantic import ValidationError

from statestore import ViewConfig
from statestore.avro import VALUE_SCHEMA_HEADER, header_hook
from statestore.errors import CodecError, ConfigError
from statestore.protobuf import (
    _as_descriptor,
    compile_proto,
    incompatibility,
    load_reader_message,
    message_indexes,
    serving_check,
)

ORDER = """
syntax = "proto3";
package shop.v1;
message Order {
  string id = 1;
  int64 amount = 2;
  message Line { string sku = 1; }
  repeated Line lines = 3;
}
message Other { bool flag = 1; }
"""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00body", ((0,), 1)),
        (b"\x02\x02body", ((1,), 2)),
        (b"\x04\x02\x00body", ((1, 0), 3)),
        (b"\x02\x96\x01body", ((75,), 3)),
    ],
)
def test_message_indexes_are_zigzag_varints(
    data: bytes, expected: tuple[tuple[int, ...], int]
) -> None:
    assert message_indexes(data, 0) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "message indexes are truncated"),
        (b"\x04\x02", "message indexes are truncated"),
        (b"\x01", "message-index count is -1"),
        (b"\xfe\x01", "message-index count is 127"),
        (b"\x02\x01", "negative index -1"),
        (b"\x02" + b"\xff" * 11, "varint over 10 bytes"),
    ],
)
def test_malformed_message_indexes_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        message_indexes(data, 0)


def test_header_frames_with_message_indexes_fold_only_for_protobuf() -> None:
    frame = b"\x00\x00\x00\x00\x07\x02\x02"
    headers = [(VALUE_SCHEMA_HEADER, frame)]
    assert header_hook(False, True, indexed=True)(headers, b"k", b"body") == (b"k", frame + b"body")
    # Without indexes a frame longer than the id is malformed.
    _, folded = header_hook(False, True)(headers, b"k", b"body")
    assert folded is not None and folded[:1] == b"\xfe"
    exact = [(VALUE_SCHEMA_HEADER, frame[:5])]
    assert header_hook(False, True)(exact, b"k", b"body") == (b"k", frame[:5] + b"body")


def test_schema_text_is_told_from_a_base64_descriptor() -> None:
    fdp = timestamp_pb2.DESCRIPTOR.serialized_pb
    found = _as_descriptor(base64.b64encode(fdp).decode())
    assert found is not None and found.name == "google/protobuf/timestamp.proto"
    assert _as_descriptor(ORDER) is None
    assert _as_descriptor("not base64 !") is None


def test_proto_text_that_does_not_compile_says_what_protoc_says() -> None:
    with pytest.raises(CodecError) as err:
        compile_proto(
            {"bad.proto": 'syntax = "proto3"; message M { strin id = 1; }'},
            ["bad.proto"],
            "writer schema id 9",
        )
    assert "writer schema id 9 does not compile" in str(err.value)
    assert "strin" in str(err.value) and "bad.proto" in str(err.value)


def test_reader_message_defaults_to_the_first_and_names_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "order.proto"
    path.write_text(ORDER)
    assert load_reader_message(path, None).full_name == "shop.v1.Order"
    assert load_reader_message(path, "shop.v1.Order.Line").full_name == "shop.v1.Order.Line"
    with pytest.raises(ConfigError, match="'Order' is not a message of the reader schema"):
        load_reader_message(path, "Order")
    broken = tmp_path / "broken.proto"
    broken.write_text("message {")
    with pytest.raises(ConfigError, match=f"the reader schema {broken} does not compile"):
        load_reader_message(broken, None)
    with pytest.raises(ConfigError, match="cannot read the reader schema"):
        load_reader_message(tmp_path / "missing.proto", None)


def test_incompatibility_matches_fields_by_number_and_wire_group(tmp_path: Path) -> None:
    path = tmp_path / "order.proto"
    path.write_text(ORDER)
    order = load_reader_message(path, "shop.v1.Order").cls.DESCRIPTOR
    variants = tmp_path / "v"
    variants.mkdir()
    (variants / "renamed.proto").write_text(
        'syntax = "proto3"; package r; message Order { string key = 1; uint64 total = 2; '
        "string extra = 9; }"
    )
    (variants / "changed.proto").write_text(
        'syntax = "proto3"; package c; message Order { string id = 1; double amount = 2; }'
    )
    (variants / "nested.proto").write_text(
        'syntax = "proto3"; package n; message Order { message Line { int32 sku = 1; } '
        "repeated Line lines = 3; }"
    )
    renamed = load_reader_message(variants / "renamed.proto", None).cls.DESCRIPTOR
    changed = load_reader_message(variants / "changed.proto", None).cls.DESCRIPTOR
    nested = load_reader_message(variants / "nested.proto", None).cls.DESCRIPTOR
    assert incompatibility(renamed, order) is None  # renamed, int64 <- uint64, extra ignored
    assert incompatibility(changed, order) == (
        "field 2 is double 'amount' in c.Order but int64 'amount' in shop.v1.Order"
    )
    assert "field 1 is int32 'sku' in n.Order.Line but string 'sku'" in (
        incompatibility(nested, order) or ""
    )


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        ({"value": "json_schema", "reader_schema": "x.proto"}, "reader_schema only applies"),
        ({"value": "protobuf", "reader_message": "a.B"}, "reader_message needs"),
        ({"value": "avro", "validate": False}, "validate = false only applies"),
        ({"value": "string", "indexes": ["a"]}, "indexes need structured values"),
    ],
)
def test_view_config_rules_for_registry_formats(view: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ViewConfig(name="v", topic="t", **view)  # type: ignore[arg-type]


def test_registry_formats_use_the_registry() -> None:
    assert ViewConfig(name="v", topic="t", value="protobuf", indexes=("a.b",)).uses_registry
    assert ViewConfig(name="v", topic="t", key="json_schema").uses_registry
    assert not ViewConfig(name="v", topic="t").uses_registry
    assert not ViewConfig(
        name="v", topic="t", value="json_schema", validate=False
    ).schema_validation


SERVED = """
syntax = "proto3";
package served.v1;
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
message Plain { string id = 1; repeated int64 n = 2; }
message Event {
  google.protobuf.Timestamp at = 1;
  repeated google.protobuf.Duration waits = 2;
  map<string, google.protobuf.Struct> extra = 3;
  Plain plain = 4;
}
message Tree { string name = 1; repeated Tree children = 2; google.protobuf.Timestamp at = 3; }
"""


def _messages(tmp_path: Path) -> dict[str, Any]:
    from google.protobuf import descriptor_pool, message_factory

    path = tmp_path / "served.proto"
    path.write_text(SERVED)
    files = compile_proto({"served.proto": SERVED}, ["served.proto"], "test")
    pool = descriptor_pool.DescriptorPool()
    for f in files:
        pool.Add(f)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"served.v1.{n}"))
        for n in ("Plain", "Event", "Tree")
    }


def test_serving_checks_visit_only_fields_whose_json_form_can_fail(tmp_path: Path) -> None:
    """Values whose JSON rendering would fail (a Timestamp past 9999, a Duration with mixed
    signs, a Struct holding NaN), however deep, fail the check; all else passes, and a
    message reaching no such type needs no check."""
    from google.protobuf import json_format

    m = _messages(tmp_path)
    assert serving_check(m["Plain"].DESCRIPTOR) is None
    check = serving_check(m["Event"].DESCRIPTOR)
    assert check is not None
    ok = m["Event"]()
    ok.at.seconds = 253_402_300_799
    ok.waits.add(seconds=-5, nanos=-1)
    ok.extra["a"].update({"x": 1.5})
    check(ok)
    json_format.MessageToDict(ok)
    bad = []
    for mutate in (
        lambda e: setattr(e.at, "seconds", 253_402_300_800),
        lambda e: setattr(e.at, "nanos", -1),
        lambda e: e.waits.add(seconds=5, nanos=-1),
        lambda e: e.extra["b"].update({"x": float("nan")}),
    ):
        e = m["Event"]()
        e.CopyFrom(ok)
        mutate(e)
        with pytest.raises((ValueError, json_format.Error)):
            json_format.MessageToDict(e)  # what the check stands for fails too
        with pytest.raises(ValueError):
            check(e)
        bad.append(e)
    assert len(bad) == 4


def test_recursive_messages_are_checked_by_rendering(tmp_path: Path) -> None:
    m = _messages(tmp_path)
    check = serving_check(m["Tree"].DESCRIPTOR)
    assert check is not None
    tree = m["Tree"](name="root")
    tree.children.add(name="leaf").children.add(name="deeper").at.seconds = -62_135_596_801
    with pytest.raises(ValueError):
        check(tree)
    tree.children[0].children[0].at.seconds = 0
    check(tree)


def test_text_and_descriptor_schemas_mix_through_references() -> None:
    """A .proto text importing a reference registered as a base64 descriptor compiles, and
    a descriptor importing a text reference builds: either way the message is found."""
    from statestore.protobuf import _main_and_files, _pool

    dep_text = 'syntax = "proto3"; package dep; message Address { string city = 1; }'
    dep_fdp = compile_proto({"dep.proto": dep_text}, ["dep.proto"], "dep")[0]
    dep_b64 = base64.b64encode(dep_fdp.SerializeToString()).decode()
    main_text = (
        'syntax = "proto3"; package m; import "dep.proto"; message Order { dep.Address to = 1; }'
    )
    main_fdp = next(
        f
        for f in compile_proto({"dep.proto": dep_text, "o.proto": main_text}, ["o.proto"], "m")
        if f.name == "o.proto"
    )
    main_b64 = base64.b64encode(main_fdp.SerializeToString()).decode()
    for schema, ref in ((main_text, dep_b64), (main_b64, dep_text)):
        doc = {"schema": schema, "refs": [ref], "ref_names": ["dep.proto"], "type": "PROTOBUF"}
        main, files = _main_and_files(7, doc)
        pool = _pool(files, "test")
        order = pool.FindMessageTypeByName("m.Order")
        assert order.fields_by_name["to"].message_type.full_name == "dep.Address"
        assert main.package == "m"


def test_reader_schema_imports_resolve_from_the_package_root() -> None:
    """The demo's shipment.proto imports logistics/v1/address.proto: found as a reader
    schema from its own location, two directories below the import root."""
    reader = load_reader_message(
        Path(__file__).resolve().parents[2] / "schemas/logistics/v1/shipment.proto", None
    )
    assert reader.full_name == "logistics.v1.Shipment"
    fields = reader.cls.DESCRIPTOR.fields_by_name
    assert fields["destination"].message_type.full_name == "logistics.v1.Address"
