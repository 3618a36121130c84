"""How typed index lookup values are read (the REST route and the CLI share this)."""

from __future__ import annotations

import pytest

from statestore import parse_index_value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-1.5", -1.5),
        ("true", True),
        ("false", False),
        ('"42"', "42"),
        ('"a b"', "a b"),
        ("null", "null"),
        ("in_transit", "in_transit"),
        ("t", "t"),
        ("-x", "-x"),
        ("NaN", "NaN"),
        ("", ""),
        ('"unterminated', '"unterminated'),
        ("007", "007"),
        ("99999999999999999999999", 1e23),  # beyond 64 bits: a JSON number read as a float
    ],
)
def test_lookup_text_is_read_as_a_json_scalar_or_as_itself(text: str, value: object) -> None:
    """Numbers, booleans and quoted strings are those values; any other text is the string itself."""
    got = parse_index_value(text)
    assert got == value and type(got) is type(value)
