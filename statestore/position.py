"""Positions: which offsets of which partitions a view has applied.

A position maps a partition to the offset of the last record the view has
applied there (``-1``: nothing yet). It is what ``X-Statestore-Position``
carries and what ``min_position`` / :meth:`StateStore.wait_for` accept, so a
value read from one response can be sent back to get monotonic reads.
"""

from __future__ import annotations

__all__ = ["format_position", "parse_position"]


def format_position(position: dict[int, int]) -> str:
    """Render ``{partition: applied_offset}`` as ``"0:12,1:7"`` (sorted by partition)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(position.items()))


def parse_position(text: str) -> dict[int, int]:
    """Parse ``"0:12,1:7"`` into ``{0: 12, 1: 7}``; raise ValueError with a clear message."""
    result: dict[int, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        p, sep, o = part.partition(":")
        if not sep:
            raise ValueError(f"position item {part!r} is not <partition>:<offset>")
        try:
            partition, offset = int(p), int(o)
        except ValueError:
            raise ValueError(f"position item {part!r} is not <partition>:<offset>") from None
        if partition < 0 or offset < -1:
            raise ValueError(f"position item {part!r} has a negative partition or offset")
        result[partition] = offset
    if not result:
        raise ValueError("position is empty; expected <partition>:<offset>[,...]")
    return result
