"""Key -> partition, as the producers compute it: the check that records sit where a
partitioner says.

A view may declare the partitioner its topic's producers use (``partitioner`` in its
config). Every keyed record ingested is then checked: its partition must be the one the
partitioner gives its key for the topic's partition count. A record elsewhere is counted
as misplaced (never dropped: the view still holds it): a reader that routes a key to the
partition the partitioner names would not find it there.

The names are librdkafka's (``partitioner`` in its producer config), with its arithmetic:

- ``murmur2``, ``murmur2_random``: ``(murmur2(key) & 0x7fffffff) % n``, murmur2 with
  seed 0x9747b28c: the Java client's default partitioner for keyed records.
- ``consistent``, ``consistent_random``: ``crc32(key) % n`` (librdkafka's default is
  ``consistent_random``).
- ``fnv1a``, ``fnv1a_random``: ``|int32(fnv1a_32(key))| % n``, the absolute value
  taken as Sarama's default hash partitioner does.

The ``_random`` forms place records without a key at random; a view never holds such a
record (it is quarantined), so keyed records are checked the same way under both forms.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Literal, get_args

import murmurhash2
from fnv_hash_fast import fnv1a_32

__all__ = ["PARTITIONERS", "PartitionerName", "partitioner"]

PartitionerName = Literal[
    "murmur2",
    "murmur2_random",
    "consistent",
    "consistent_random",
    "fnv1a",
    "fnv1a_random",
]
PARTITIONERS: tuple[str, ...] = get_args(PartitionerName)

# partition(key, partition count)
Partitioner = Callable[[bytes, int], int]

_MURMUR2_SEED = 0x9747B28C
_murmur2 = murmurhash2.murmurhash2


def _by_murmur2(key: bytes, count: int) -> int:
    return (_murmur2(key, _MURMUR2_SEED) & 0x7FFFFFFF) % count


def _by_crc32(key: bytes, count: int) -> int:
    return zlib.crc32(key) % count


def _by_fnv1a(key: bytes, count: int) -> int:
    h = fnv1a_32(key)
    if h & 0x80000000:  # negative as an int32: its absolute value, wrapping at INT32_MIN
        h = -(h - 0x100000000) & 0xFFFFFFFF
    return h % count


_BY_NAME: dict[str, Partitioner] = {
    "murmur2": _by_murmur2,
    "murmur2_random": _by_murmur2,
    "consistent": _by_crc32,
    "consistent_random": _by_crc32,
    "fnv1a": _by_fnv1a,
    "fnv1a_random": _by_fnv1a,
}


def partitioner(name: str) -> Partitioner:
    """The function ``partition(key, partition count)`` of the partitioner *name*."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown partitioner {name!r}; known: {', '.join(PARTITIONERS)}"
        ) from None
