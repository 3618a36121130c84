"""Byte-level formats without a store: cursors, positions, id framings, codecs and the
stored-record layout (round trips and the malformed input each one refuses)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore import (
    CodecError,
    CursorError,
    InvalidKeyError,
    codecs,
    format_position,
    parse_position,
)
from statestore.cursor import CursorSigner
from statestore.framing import (
    APICURIO_FRAME,
    APICURIO_MARK,
    CONFLUENT,
    GUID_FRAME,
    ID_FRAME,
    JSON_BIT,
    LONG_FRAME,
    Framing,
    frame_length,
    framing_of,
    json_encoded,
)
from statestore.records import (
    HEADER_SIZE,
    STORED_KIND,
    pack_header,
    pack_progress,
    pack_samples,
    prefix_end,
    progress_key,
    staged_quarantine_key,
    staged_quarantine_origin,
    supersedes,
    unpack_header,
    unpack_progress,
    unpack_samples,
)

FEW = settings(max_examples=50, deadline=None)
SIGNER = CursorSigner(b"k" * 32)

# -- cursors ------------------------------------------------------------------------------


def test_a_cursor_is_url_safe_text() -> None:
    """A cursor needs no escaping in a query string: URL-safe base64 without padding."""
    cursor = SIGNER.make("scan:v", b"\xff\xfe\xfd key/with?odd&chars")
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert cursor.count(".") == 1


def test_a_cursor_from_another_secret_is_refused() -> None:
    """A cursor signed by another store (another secret) does not open."""
    cursor = CursorSigner(b"o" * 32).make("scan:v", b"k")
    with pytest.raises(CursorError, match="altered or belongs to another view or query"):
        SIGNER.open("scan:v", cursor)


@pytest.mark.parametrize("scope", ["scan:w", "by:v:status:x", "by:v:status:y", "scan:v "])
def test_a_cursor_only_opens_in_its_own_scope(scope: str) -> None:
    """A cursor of one view or query does not open for another, however close."""
    with pytest.raises(CursorError, match="another view or query"):
        SIGNER.open(scope, SIGNER.make("scan:v", b"k"))


@FEW
@given(key=st.binary(min_size=1, max_size=40), flip=st.integers(0, 1000))
def test_changing_any_character_of_a_cursor_is_detected(key: bytes, flip: int) -> None:
    """Changing one character of a cursor makes it refused, never a different key."""
    cursor = SIGNER.make("scan:v", key)
    at = flip % len(cursor)
    if cursor[at] == ".":
        at = (at + 1) % len(cursor)
    replacement = "A" if cursor[at] != "A" else "B"
    forged = cursor[:at] + replacement + cursor[at + 1 :]
    try:
        opened = SIGNER.open("scan:v", forged)
    except CursorError:
        return
    # Base64 padding bits: a change there may decode to the same bytes, never to others.
    assert opened == key


def test_a_cursor_for_another_key_with_the_old_signature_is_refused() -> None:
    """Swapping the key part of a cursor while keeping its signature is detected."""
    good = SIGNER.make("scan:v", b"a")
    other = SIGNER.make("scan:v", b"zzz")
    forged = other.split(".")[0] + "." + good.split(".")[1]
    with pytest.raises(CursorError, match="altered"):
        SIGNER.open("scan:v", forged)


@pytest.mark.parametrize("cursor", [".", "a.", ".a", "a=b.c", "a.b=c", "a\u00e9.b"])
def test_malformed_cursors_ask_for_the_next_value_unchanged(cursor: str) -> None:
    """Cursors that are not two base64 parts are malformed, saying what to send instead."""
    with pytest.raises(CursorError, match="malformed cursor: pass back the `next` value"):
        SIGNER.open("scan:v", cursor)


# -- positions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("0:12", {0: 12}),
        ("0:-1", {0: -1}),
        ("3:1,1:2", {1: 2, 3: 1}),
        (" 0:1 , 1:2 ", {0: 1, 1: 2}),
        ("0:1,,1:2,", {0: 1, 1: 2}),
        ("0:1,0:5", {0: 5}),
        ("0:9223372036854775807", {0: 2**63 - 1}),
    ],
)
def test_positions_parse(text: str, position: dict[int, int]) -> None:
    """Positions are <partition>:<offset> items; spaces and empty items are ignored, the last of a partition wins."""
    assert parse_position(text) == position


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "position is empty; expected <partition>:<offset>"),
        (" , ", "position is empty"),
        ("5", "position item '5' is not <partition>:<offset>"),
        ("0:1:2", "position item '0:1:2' is not <partition>:<offset>"),
        ("0:1.5", "position item '0:1.5' is not"),
        ("p:1", "position item 'p:1' is not"),
        ("-1:0", "position item '-1:0' has a negative partition or offset"),
        ("0:-2", "position item '0:-2' has a negative partition or offset"),
    ],
)
def test_bad_positions_say_which_item(text: str, message: str) -> None:
    """A malformed position names the item that is wrong."""
    with pytest.raises(ValueError, match=message):
        parse_position(text)


@FEW
@given(st.dictionaries(st.integers(0, 1000), st.integers(-1, 2**62), min_size=1, max_size=20))
def test_positions_round_trip_sorted(position: dict[int, int]) -> None:
    """Formatting then parsing gives the position back; the text lists partitions in order."""
    text = format_position(position)
    assert parse_position(text) == position
    assert [int(item.split(":")[0]) for item in text.split(",")] == sorted(position)


def test_an_empty_position_formats_as_empty_text() -> None:
    """Nothing applied renders as empty text (which parse_position refuses)."""
    assert format_position({}) == ""


# -- id framings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "raw", "length"),
    [
        (CONFLUENT, b"\x00\x00\x00\x00\x07body", ID_FRAME),
        (Framing("apicurio_8byte"), b"\x00" + struct.pack(">q", 7) + b"body", LONG_FRAME),
        (
            Framing("apicurio_headers"),
            bytes([APICURIO_MARK]) + b"c" + struct.pack(">q", 7),
            APICURIO_FRAME,
        ),
        (Framing("auto"), b"\x00" + struct.pack(">q", 7) + b"body", LONG_FRAME),
        (Framing("auto"), b"\x00\x00\x00\x01\x07body", ID_FRAME),
        (Framing("auto"), b"\x01" + b"g" * 16 + b"body", GUID_FRAME),
        (Framing("auto"), bytes([APICURIO_MARK]) + b"g" + struct.pack(">q", 7), APICURIO_FRAME),
        (Framing("auto", "global"), b"\x00\x00\x00\x00\x09", ID_FRAME),
    ],
)
def test_the_frame_in_front_of_a_body(framing: Framing, raw: bytes, length: int) -> None:
    """A fixed framing has one frame length; auto tells them apart by the magic byte
    (four zero bytes after magic byte 0 mean an 8-byte id: no registry hands out id 0)."""
    assert frame_length(raw, framing) == length


def test_the_default_framing_is_the_shared_confluent_one() -> None:
    """framing_of the defaults is CONFLUENT itself; any other setting is a new value."""
    assert framing_of() is CONFLUENT
    assert framing_of("confluent", "content") is CONFLUENT
    assert framing_of("confluent", "global") == Framing("confluent", "global")
    assert framing_of("auto") is not CONFLUENT


@pytest.mark.parametrize(
    ("framing", "what", "text"),
    [
        (CONFLUENT, "value", "magic byte 0 + 4-byte content id or magic byte 1 + 16-byte GUID"),
        (
            Framing("confluent", "global"),
            "value",
            "magic byte 0 + 4-byte global id or magic byte 1 + 16-byte GUID",
        ),
        (Framing("apicurio_8byte", "global"), "key", "magic byte 0 + 8-byte global id"),
        (
            Framing("apicurio_headers"),
            "key",
            "apicurio.key.contentId/globalId headers with a bare body",
        ),
    ],
)
def test_framings_describe_themselves_for_errors(framing: Framing, what: str, text: str) -> None:
    """Error messages name the framing the view expected, for keys or values."""
    assert framing.describe(what) == text


@pytest.mark.parametrize(
    ("raw", "json"),
    [
        (bytes([APICURIO_MARK, ord("c") | JSON_BIT]) + bytes(8), True),
        (bytes([APICURIO_MARK, ord("g") | JSON_BIT]) + bytes(8), True),
        (bytes([APICURIO_MARK, ord("c")]) + bytes(8), False),
        (bytes([APICURIO_MARK]), False),
        (b"\x00\x00\x00\x00\x07", False),
        (b"", False),
    ],
)
def test_the_json_encoding_bit(raw: bytes, json: bool) -> None:
    """Only a folded header frame with the JSON bit set says the body is Avro's JSON encoding."""
    assert json_encoded(raw) is json


# -- codecs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "text", "error", "message"),
    [
        (codecs.StringKey(), "\ud800", InvalidKeyError, "key is not encodable as UTF-8"),
        (
            codecs.BytesKey(),
            "abc",
            InvalidKeyError,
            "bytes keys are addressed in hex; 'abc' is not hex",
        ),
        (codecs.BytesKey(), "0g", InvalidKeyError, "'0g' is not hex"),
        (codecs.BytesKey(), "é1", InvalidKeyError, "is not hex"),
        (codecs.JsonKey(), "{oops", InvalidKeyError, "key is not valid JSON"),
        (codecs.JsonKey(), "", InvalidKeyError, "key is not valid JSON"),
    ],
)
def test_keys_typed_by_callers_are_invalid_key_errors(
    codec: object, text: str, error: type[Exception], message: str
) -> None:
    """A key a caller types that the view cannot address is an InvalidKeyError (422, exit 2)."""
    with pytest.raises(error, match=message):
        codec.from_text(text)  # type: ignore[attr-defined]


def test_kafka_keys_that_do_not_decode_are_plain_codec_errors() -> None:
    """A bad key from Kafka is a CodecError (quarantined), not a caller's InvalidKeyError."""
    for codec, raw in ((codecs.StringKey(), b"ok\xc3"), (codecs.JsonKey(), b"[1,")):
        with pytest.raises(CodecError) as raised:
            codec.from_kafka(raw)
        assert not isinstance(raised.value, InvalidKeyError)
    with pytest.raises(
        CodecError, match=r"key is not valid UTF-8 \(unexpected end of data at byte 2\)"
    ):
        codecs.StringKey().from_kafka(b"ok\xc3")


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        (" 1 ", b"1"),
        ("1.0", b"1.0"),
        ('"a"', b'"a"'),
        ('"\\u00e9"', '"é"'.encode()),
        ("null", b"null"),
        ('{"b":{"d":1,"c":2},"a":[3,{"z":0,"y":1}]}', b'{"a":[3,{"y":1,"z":0}],"b":{"c":2,"d":1}}'),
    ],
)
def test_json_keys_are_stored_canonically(text: str, stored: bytes) -> None:
    """Every spelling of a JSON key, nested objects included, is stored one way."""
    assert codecs.JsonKey().from_text(text) == stored
    assert codecs.JsonKey().from_kafka(text.encode()) == stored


def test_bytes_keys_accept_upper_case_hex_and_print_lower_case() -> None:
    """Hex addresses are case-insensitive; the text form is lower case."""
    codec = codecs.BytesKey()
    assert codec.from_text("00FFaB") == b"\x00\xff\xab"
    assert codec.to_text(b"\x00\xff\xab") == "00ffab"
    assert codec.from_text("") == b""


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"0", 0),
        (b'"s"', "s"),
        (b"null", None),
        (b"[]", []),
        (b' {"a" : 1} ', {"a": 1}),
        (b"1e400", None),
    ],
)
def test_json_values_parse_as_check_does(raw: bytes, value: object) -> None:
    """parse() accepts what check() accepts and returns the decoded value."""
    codec = codecs.JsonValue()
    if raw == b"1e400":
        with pytest.raises(CodecError, match="value is not valid JSON"):
            codec.parse(raw)
        with pytest.raises(CodecError):
            codec.check(raw)
        return
    assert codec.check(raw) == -1
    assert codec.parse(raw) == value


def test_string_values_name_the_bad_byte() -> None:
    """A string value that is not UTF-8 names the reason and the byte."""
    with pytest.raises(
        CodecError, match=r"value is not valid UTF-8 \(invalid start byte at byte 3\)"
    ):
        codecs.StringValue().check(b"abc\xff")


@pytest.mark.parametrize("name", ["avro", "protobuf", "json_schema", "JSON", ""])
def test_registry_and_unknown_codecs_are_not_plain_codecs(name: str) -> None:
    """Only string, bytes and json are plain codecs; registry formats come from their modules."""
    with pytest.raises(CodecError, match=f"unknown key codec {name!r}"):
        codecs.key_codec(name)
    with pytest.raises(CodecError, match=f"unknown value codec {name!r}"):
        codecs.value_codec(name)


# -- the stored-record layout --------------------------------------------------------------

_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)


@FEW
@given(
    kind=st.integers(0, 255),
    partition=_INT32,
    offset=_INT64,
    ts=_INT64,
    schema=_INT32,
    body=st.binary(max_size=32),
)
def test_the_record_header_round_trips(
    kind: int, partition: int, offset: int, ts: int, schema: int, body: bytes
) -> None:
    """A stored record's header unpacks to what was packed, and the value follows it unchanged."""
    stored = pack_header(kind, partition, offset, ts, schema) + body
    assert unpack_header(stored) == (kind, partition, offset, ts, schema)
    assert stored[HEADER_SIZE:] == body


def test_the_record_header_is_fixed_size_big_endian() -> None:
    """The header is 25 bytes: kind, partition, offset, timestamp, schema id, big-endian."""
    assert HEADER_SIZE == 25
    assert pack_header(STORED_KIND, 1, 2, 3, -1) == (
        b"\x01" + b"\x00\x00\x00\x01" + b"\x00" * 7 + b"\x02" + b"\x00" * 7 + b"\x03" + b"\xff" * 4
    )


@FEW
@given(
    partition=st.integers(0, 2**31 - 1),
    start=st.integers(0, 2**62),
    values=st.tuples(*[st.integers(0, 2**62)] * 5),
)
def test_progress_entries_round_trip(
    partition: int, start: int, values: tuple[int, int, int, int, int]
) -> None:
    """A bulk load's progress entry reads back as (partition, start, reached, records,
    bytes, quarantined, misplaced)."""
    assert unpack_progress(progress_key(partition, start), pack_progress(*values)) == (
        partition,
        start,
        *values,
    )


def test_progress_entries_written_before_misplaced_records_were_counted_read_as_none() -> None:
    """An entry of the earlier four-field form (a bulk load begun by an earlier version)
    reads with no misplaced record."""
    old = struct.pack(">qqqq", 120, 100, 5000, 3)
    assert unpack_progress(progress_key(2, 20), old) == (2, 20, 120, 100, 5000, 3, 0)


@FEW
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_key_samples_round_trip(keys: list[bytes]) -> None:
    """Sampled keys pack into one value and unpack in order."""
    assert unpack_samples(pack_samples(keys)) == keys


def test_samples_of_overlong_keys_are_cut() -> None:
    """A key longer than a sample can hold is cut to 65535 bytes, not corrupting the rest."""
    long = b"x" * 70_000
    assert unpack_samples(pack_samples([long, b"next"])) == [long[:65535], b"next"]


@pytest.mark.parametrize(("partition", "offset"), [(0, 0), (7, 2**40), (2**31 - 1, 2**63 - 1)])
def test_staged_quarantine_keys_give_back_their_record(partition: int, offset: int) -> None:
    """A record quarantined by a bulk load is found again by its partition and offset."""
    assert staged_quarantine_origin(staged_quarantine_key(partition, offset)) == (partition, offset)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"a", b"b"), (b"a\xff", b"b"), (b"\xff\xff", None), (b"", None), (b"ab\x00", b"ab\x01")],
)
def test_prefix_end_bounds_every_key_with_the_prefix(prefix: bytes, end: bytes | None) -> None:
    """The end of a prefix scan is the next prefix up; all 0xFF bytes have no bound."""
    assert prefix_end(prefix) == end


@pytest.mark.parametrize(
    ("record", "other", "wins"),
    [
        ((0, 5, 100), (0, 4, 900), True),
        ((0, 4, 900), (0, 5, 100), False),
        ((1, 0, 200), (0, 9, 100), True),
        ((0, 9, 100), (1, 0, 200), False),
        ((1, 0, 100), (0, 9, 100), True),
        ((0, 9, 100), (1, 0, 100), False),
        ((0, 3, 1), (0, 3, 1), False),
    ],
)
def test_the_newest_record_rule(
    record: tuple[int, int, int], other: tuple[int, int, int], wins: bool
) -> None:
    """Within a partition the later offset wins; across partitions the newer timestamp, ties to the higher partition."""
    assert supersedes(*record, *other) is wins
