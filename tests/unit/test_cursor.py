"""Opaque cursors and positions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore import CursorError, format_position, parse_position
from statestore.cursor import CursorSigner


@given(st.binary(max_size=400))
def test_cursor_round_trips(key: bytes) -> None:
    """A cursor made for a key opens to that key in the same scope."""
    signer = CursorSigner(b"s" * 32)
    assert signer.open("scan:v", signer.make("scan:v", key)) == key


@pytest.mark.parametrize("cursor", ["", "abc", "abc.", "!!!.###", "a2V5.AAAAAAAAAAAAAAAA"])
def test_malformed_or_tampered_cursors_are_rejected(cursor: str) -> None:
    """Garbage and forged cursors raise CursorError."""
    with pytest.raises(CursorError):
        CursorSigner(b"s" * 32).open("scan:v", cursor)


def test_cursor_from_another_scope_is_rejected() -> None:
    """A cursor issued for one view does not open in another."""
    signer = CursorSigner(b"s" * 32)
    with pytest.raises(CursorError, match="another view"):
        signer.open("scan:w", signer.make("scan:v", b"k"))


def test_position_text_round_trips() -> None:
    """Positions render and parse as <partition>:<offset> lists."""
    assert format_position({2: 7, 0: 12}) == "0:12,2:7"
    assert parse_position("0:12, 2:7") == {0: 12, 2: 7}


@pytest.mark.parametrize("text", ["", "0", "a:1", "0:x", "-1:3", "0:-5"])
def test_bad_positions_are_rejected(text: str) -> None:
    """Malformed positions raise ValueError."""
    with pytest.raises(ValueError):
        parse_position(text)
