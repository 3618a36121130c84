"""Secondary indexes: one column family per indexed field, maintained with the entities.

An index entry's key is the field's value in an order-preserving encoding, a NUL
byte, then the entity's stored key; its value is empty. The encoding never
contains a NUL where the separator could be mistaken for it, so an equality
lookup is a prefix scan, in entity-key order, however many entities share the
value, and a range of values is one scan between two encoded bounds.

The encoding (``encode_index_value``) orders values by type, then by value:

- booleans (tag ``0x02``): ``false`` before ``true``;
- numbers (tag ``0x03``): by numeric value, integers and floats alike (``1`` and
  ``1.0`` are one value): the IEEE 754 double with its sign flipped so bytes
  compare as numbers, then the integer's distance from that double, so integers
  beyond 2**53 keep their exact order;
- strings (tag ``0x04``): by code point (UTF-8 byte order), NUL and 0x01 escaped.

Values of other scalar types index as the text of their JSON form (datetimes,
UUIDs), bytes as lowercase hex, decimals as their text. NaN and integers beyond
64 bits are not indexed. The index-done marker names this encoding
(``records.index_done_key``): an index written in an earlier one is rebuilt from
the stored view when the store opens.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import TYPE_CHECKING, Any

import orjson

from .errors import InvalidRangeError
from .records import HEADER_SIZE, index_done_key, pack_int, prefix_end
from .storage import META, Batch

if TYPE_CHECKING:
    from .slot import Slot

__all__ = [
    "IndexValue",
    "encode_index_value",
    "entry_value_length",
    "index_changes",
    "index_range",
    "index_value",
    "index_value_key",
    "move_index_entries",
    "parse_index_value",
    "sync_indexes",
]

log = logging.getLogger(__name__)

_BACKFILL_BATCH = 10_000


# What an index holds and a lookup or range names: JSON scalars.
IndexValue = str | int | float | bool

_BOOL = 0x02
_NUMBER = 0x03
_STRING = 0x04
_TYPE_NAMES = {_BOOL: "boolean", _NUMBER: "number", _STRING: "string"}
_FALSE = bytes((_BOOL, 0))
_TRUE = bytes((_BOOL, 1))
_NUMBER_TAG = bytes((_NUMBER,))
_STRING_TAG = bytes((_STRING,))
_NUMBER_BYTES = struct.Struct(">QQ")
_DOUBLE = struct.Struct(">d")
_SIGN = 1 << 63
_EXACT = 1 << 53  # every integer up to this is a double exactly
_INT_LIMIT = 1 << 64


def index_value(value: Any, path: tuple[str, ...]) -> bytes | None:
    """The encoded scalar at *path* in *value*; None when absent, not a scalar or unindexable."""
    node = value
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None or isinstance(node, (dict, list)):
        return None
    return encode_index_value(node)


def encode_index_value(value: Any) -> bytes | None:
    """*value* in the order-preserving index encoding (module docstring); None: not indexable."""
    # Exact types first: this runs for every indexed field of every record applied.
    kind = type(value)
    if kind is str:
        return _encode_text(value)
    if kind is int:
        return _encode_int(value)
    if kind is float:
        return _encode_float(value)
    if kind is bool:
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return _encode_text(str(value))
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, int):
        return _encode_int(int(value))
    if isinstance(value, float):
        return _encode_float(float(value))
    # Other scalars (datetimes, UUIDs, bytes, decimals) by the text of their JSON form.
    text = orjson.loads(orjson.dumps(value, default=_scalar_text))
    return _encode_text(text) if isinstance(text, str) else None


def _encode_text(text: str) -> bytes:
    if "\x00" in text or "\x01" in text:
        # No raw NUL may remain (it separates value and key); 0x01 0x01 < 0x01 0x02 < 0x02 keeps order.
        text = text.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")
    try:
        return _STRING_TAG + text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return _STRING_TAG + text.encode("utf-8", "surrogatepass")


def _double_bits(value: float) -> int:
    bits = int.from_bytes(_DOUBLE.pack(value))
    return bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits & _SIGN else bits | _SIGN


def _encode_float(value: float) -> bytes | None:
    if value != value:  # NaN
        return None
    return _NUMBER_TAG + _NUMBER_BYTES.pack(_double_bits(value + 0.0), _SIGN)  # -0.0 is 0.0


def _encode_int(value: int) -> bytes | None:
    if -_EXACT <= value <= _EXACT:
        return _NUMBER_TAG + _NUMBER_BYTES.pack(_double_bits(float(value)), _SIGN)
    if not -_INT_LIMIT < value < _INT_LIMIT:
        return None
    nearest = float(value)
    # Rounding is monotonic: the double orders first, the exact rest breaks its ties.
    rest = value - int(nearest)
    return _NUMBER_TAG + _NUMBER_BYTES.pack(_double_bits(nearest), rest + _SIGN)


def _scalar_text(value: Any) -> str:
    """Avro scalars orjson has no JSON form for (bytes, Decimal) index by their text."""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def index_value_key(value: Any) -> bytes:
    """The prefix under which entities whose field equals *value* are indexed.

    A value that cannot be indexed (NaN) gets a prefix no entry has.
    """
    encoded = encode_index_value(value)
    return (b"\xff" if encoded is None else encoded) + b"\x00"


def _bound(view: str, field: str, which: str, value: IndexValue) -> bytes:
    encoded = encode_index_value(value)
    if encoded is None:
        raise InvalidRangeError(
            f"view {view!r}, index {field!r}: the range {which} {value!r} is not an indexable "
            "value (a string, a finite number or a boolean)"
        )
    return encoded


def index_range(
    view: str, field: str, start: IndexValue | None, end: IndexValue | None
) -> tuple[bytes, bytes | None]:
    """The entry keys ``[low, high)`` of the values from *start* (inclusive) to *end*
    (exclusive); a range covers values of one type, the type of its bounds.

    Without bounds: the whole index (booleans, then numbers, then strings).
    """
    low = None if start is None else _bound(view, field, "start", start)
    high = None if end is None else _bound(view, field, "end", end)
    if low is not None and high is not None:
        if low[0] != high[0]:
            raise InvalidRangeError(
                f"view {view!r}, index {field!r}: the range starts at a {_TYPE_NAMES[low[0]]} "
                f"({start!r}) and ends at a {_TYPE_NAMES[high[0]]} ({end!r}); a range covers "
                "values of one type"
            )
        if low > high:
            raise InvalidRangeError(
                f"view {view!r}, index {field!r}: the range start {start!r} is after its end "
                f"{end!r}"
            )
        return low, high
    if low is not None:
        return low, prefix_end(low[:1])
    if high is not None:
        return high[:1], high
    return b"", None


def entry_value_length(entry: bytes) -> int:
    """The length of the encoded value an index entry starts with (its key follows a NUL)."""
    tag = entry[0] if entry else 0
    if tag == _BOOL:
        return 2
    if tag == _NUMBER:
        return 1 + _NUMBER_BYTES.size
    return entry.find(b"\x00")


def parse_index_value(text: str) -> str | int | float | bool:
    """The value a user typed for an index lookup (URL, CLI).

    A JSON number, boolean or quoted string is that value — ``42`` matches the number
    42, ``"42"`` (quotes included) the string "42" — and any other text is itself a
    string: ``in_transit``.
    """
    if text[:1] in ('"', "-", "t", "f") or text[:1].isdigit():
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, float) and not math.isfinite(value):
            return text
        if isinstance(value, bool | int | float | str):
            return value
    return text


def index_changes(
    slot: Slot,
    batch: Batch,
    key: bytes,
    old: bytes | None,
    new_raw: bytes | None,
    new_value: Any = None,
) -> None:
    """Move index entries of *key* from its stored record *old* to its new value (same batch).

    *new_value* is the new value already decoded, when the caller has it.
    """
    old_value = slot.decode_quietly(old[HEADER_SIZE:]) if old is not None else None
    if new_value is None and new_raw is not None:
        new_value = slot.decode_quietly(new_raw)
    move_index_entries(slot, batch, key, old_value, new_value)


def move_index_entries(
    slot: Slot, batch: Batch, key: bytes, old_value: Any, new_value: Any
) -> None:
    """Put in *batch* the index changes for *key* going from *old_value* to *new_value*."""
    for field, path in slot.index_paths.items():
        before = index_value(old_value, path) if old_value is not None else None
        after = index_value(new_value, path) if new_value is not None else None
        if before == after:
            continue
        cf = slot.index_cfs[field]
        if before is not None:
            batch.delete(cf, before + b"\x00" + key)
        if after is not None:
            batch.put(cf, after + b"\x00" + key, b"")


def sync_indexes(slot: Slot) -> None:
    """Make the slot's index families match the config: backfill new ones, drop removed ones.

    A backfill reads the stored view, not Kafka. It is marked done in the metadata
    only when complete, so one interrupted by a crash is redone from scratch.
    """
    storage = slot.storage
    prefix = slot.index_prefix
    wanted = set(slot.index_cfs.values())
    for family in storage.families():
        if family.startswith(prefix) and family not in wanted:
            log.info("index.drop view=%s family=%s", slot.config.name, family)
            storage.drop_family(family)
    for field, cf in slot.index_cfs.items():
        done = storage.get(META, index_done_key(slot.id, field)) is not None
        if done and storage.has_family(cf):
            continue
        storage.drop_family(cf)
        storage.create_family(cf)
        count = _backfill(slot, field, cf)
        batch = storage.batch()
        batch.put(META, index_done_key(slot.id, field), pack_int(count))
        storage.write(batch)
        log.info("index.backfilled view=%s field=%s entries=%d", slot.config.name, field, count)


def _backfill(slot: Slot, field: str, cf: str) -> int:
    storage = slot.storage
    path = slot.index_paths[field]
    batch = storage.batch()
    count = 0
    for key, data in storage.scan(slot.entity_cf):
        value = index_value(slot.decode_quietly(data[HEADER_SIZE:]), path)
        if value is None:
            continue
        batch.put(cf, value + b"\x00" + key, b"")
        count += 1
        if len(batch) >= _BACKFILL_BATCH:
            storage.write(batch)
            batch = storage.batch()
    storage.write(batch)
    return count
