"""What a bulk load has read and what is left: offset ranges of partitions.

The staging family holds one progress entry per range a worker read (written in
the same SST file as the range's records, so progress is durable exactly when its
data is). From them: the ranges still to read (``remaining``), how they are shared
among workers (``plan``), and how far each partition is read without a gap
(``covered``, ``limits_of``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import StaleViewError
from .records import (
    CONTROL_END,
    CONTROL_PREFIX,
    is_progress_key,
    pack_progress,
    progress_key,
    unpack_progress,
)
from .stage import Piece

if TYPE_CHECKING:
    from .slot import Slot

__all__ = [
    "Progress",
    "StaleRangeError",
    "begin",
    "covered",
    "limits_of",
    "plan",
    "read_progress",
    "remaining",
    "shown",
]

# (partition, start) -> (reached, records, bytes, quarantined, misplaced)
Progress = dict[tuple[int, int], tuple[int, int, int, int, int]]


class StaleRangeError(StaleViewError):
    """Records a bulk load still had to read were deleted (retention) before it read them."""

    cause = "below_log_start"


def read_progress(slot: Slot) -> Progress:
    """The progress entries of the slot's staging family."""
    out: Progress = {}
    for key, value in slot.storage.scan(slot.staging_cf, CONTROL_PREFIX, CONTROL_END):
        if is_progress_key(key):
            p, start, reached, records, nbytes, quarantined, misplaced = unpack_progress(key, value)
            out[(p, start)] = (reached, records, nbytes, quarantined, misplaced)
    return out


def covered(progress: Progress, partition: int, base: int) -> int:
    """How far from *base* the ranges read of *partition* reach without a gap."""
    reach = base
    for start, (reached, *_) in sorted((s, v) for (p, s), v in progress.items() if p == partition):
        if start > reach:
            break
        reach = max(reach, reached)
    return reach


def begin(
    slot: Slot, targets: dict[int, int], lows: dict[int, int]
) -> tuple[Progress, list[Piece]]:
    """The progress of the view's bulk load so far and the ranges left to read.

    A partition's first load records where it starts (an empty progress entry), so a
    worker that dies before writing anything leaves a gap from there, never a range
    nobody knows was to be read.
    """
    progress = read_progress(slot)
    started = {p for p, _ in progress}
    fresh = {p: lows.get(p, 0) for p in targets if p not in started}
    if fresh:
        batch = slot.storage.batch()
        for p, start in fresh.items():
            batch.put(slot.staging_cf, progress_key(p, start), pack_progress(start, 0, 0, 0))
            progress[(p, start)] = (start, 0, 0, 0, 0)
        slot.storage.write(batch)
    return progress, remaining(progress, targets, lows, slot.config.topic)


def remaining(
    progress: Progress, targets: dict[int, int], lows: dict[int, int], topic: str
) -> list[Piece]:
    """The ranges below *targets* no ingested file covers; raise when one was deleted."""
    gaps: list[Piece] = []
    for partition, end in sorted(targets.items()):
        spans = sorted((s, v[0]) for (p, s), v in progress.items() if p == partition)
        low = lows.get(partition, 0)
        cur = spans[0][0] if spans else low
        for start, reached in spans:
            if start > cur:
                gaps.append(Piece(partition, cur, start))
            cur = max(cur, reached)
        if cur < end:
            gaps.append(Piece(partition, cur, end))
    for gap in gaps:
        if gap.start < lows.get(gap.partition, 0):
            raise StaleRangeError(
                f"{topic}[{gap.partition}]: offsets from {gap.start} were deleted (log start "
                f"{lows[gap.partition]}) before the bulk load read them"
            )
    return gaps


def plan(gaps: list[Piece], workers: int) -> list[list[Piece]]:
    """Share *gaps* among *workers* by records, cutting a partition where a share ends.

    Each worker gets one contiguous run of the ranges laid end to end, so it reads at
    most one range of a partition per gap.
    """
    total = sum(g.size for g in gaps)
    workers = max(1, min(workers, total)) if total else 1
    share = -(-total // workers)
    groups: list[list[Piece]] = [[] for _ in range(workers)]
    w, room = 0, share
    for gap in gaps:
        start = gap.start
        while start < gap.end:
            take = gap.end - start if w == workers - 1 else min(gap.end - start, room)
            groups[w].append(Piece(gap.partition, start, start + take))
            start += take
            room -= take
            if room <= 0 and w < workers - 1:
                w, room = w + 1, share
    return [g for g in groups if g]


def limits_of(progress: Progress, targets: dict[int, int], lows: dict[int, int]) -> dict[int, int]:
    """Per partition of *targets*, how far the ingested ranges reach without a gap."""
    return {p: covered(progress, p, base_of(progress, p, lows)) for p in targets}


def shown(progress: Progress) -> tuple[dict[int, int], int]:
    """What status shows of a bulk load: how far each partition is read without a gap, and
    the records read that far."""
    positions = {p: covered(progress, p, base_of(progress, p, {})) for p, _ in progress}
    records = sum(v[1] for (p, _), v in progress.items() if v[0] <= positions[p])
    return positions, records


def base_of(progress: Progress, partition: int, lows: dict[int, int]) -> int:
    starts = [s for p, s in progress if p == partition]
    return min(starts) if starts else lows.get(partition, 0)
