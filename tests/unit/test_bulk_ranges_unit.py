"""A bulk load's offset ranges (statestore/ranges.py) as pure functions: how far the ranges
read reach, what is left to read, and how the rest is shared among workers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.ranges import StaleRangeError, covered, limits_of, plan, remaining, shown
from statestore.stage import Piece

# (partition, start) -> (reached, records, bytes, quarantined)
Progress = dict[tuple[int, int], tuple[int, int, int, int]]


def read(*ranges: tuple[int, int, int]) -> Progress:
    """Progress of ranges (partition, start, reached), one record per offset read."""
    return {(p, s): (r, r - s, 0, 0) for p, s, r in ranges}


@pytest.mark.parametrize(
    ("progress", "base", "reach"),
    [
        (read(), 7, 7),
        (read((0, 0, 10)), 0, 10),
        (read((0, 0, 10), (0, 10, 20)), 0, 20),
        (read((0, 0, 10), (0, 15, 20)), 0, 10),
        (read((0, 0, 15), (0, 10, 12)), 0, 15),
        (read((0, 5, 10)), 0, 0),
        (read((0, 0, 10)), 5, 10),
        (read((0, 0, 10), (1, 10, 30)), 0, 10),
    ],
)
def test_how_far_ranges_reach_without_a_gap(progress: Progress, base: int, reach: int) -> None:
    """From the base, ranges of the partition chain while each starts within what is read."""
    assert covered(progress, 0, base) == reach


def test_limits_start_from_the_first_range_or_the_log_start() -> None:
    """A partition's limit counts from its first range; one not started, from its log start."""
    progress = read((0, 3, 10), (0, 10, 12), (1, 0, 4), (1, 6, 9))
    assert limits_of(progress, {0: 20, 1: 20, 2: 20}, {2: 8}) == {0: 12, 1: 4, 2: 8}


def test_status_shows_the_gapless_reach_and_its_records() -> None:
    """What status shows: per partition the reach without a gap, and the records up to it only."""
    progress = read((0, 0, 10), (0, 20, 25), (1, 4, 6))
    assert shown(progress) == ({0: 10, 1: 6}, 12)
    assert shown({}) == ({}, 0)


@pytest.mark.parametrize(
    ("progress", "targets", "lows", "gaps"),
    [
        (read(), {0: 5}, {}, [Piece(0, 0, 5)]),
        (read(), {0: 5}, {0: 2}, [Piece(0, 2, 5)]),
        (read((0, 0, 5)), {0: 5}, {}, []),
        (read((0, 0, 9)), {0: 5}, {}, []),
        (read((0, 0, 2), (0, 3, 5)), {0: 5}, {}, [Piece(0, 2, 3)]),
        (read((0, 4, 6)), {0: 8}, {0: 4}, [Piece(0, 6, 8)]),
        (read((1, 0, 3)), {0: 2, 1: 3}, {}, [Piece(0, 0, 2)]),
        (read(), {0: 0}, {}, []),
    ],
)
def test_what_is_left_to_read(
    progress: Progress, targets: dict[int, int], lows: dict[int, int], gaps: list[Piece]
) -> None:
    """Every offset below the targets that no range covers, as ranges in partition order."""
    assert remaining(progress, targets, lows, "t") == gaps


def test_a_gap_below_the_log_start_means_the_load_is_stale() -> None:
    """Records deleted before the load read them cannot be loaded: StaleRangeError says where."""
    with pytest.raises(
        StaleRangeError, match=r"topic\[1\]: offsets from 3 were deleted \(log start 7\)"
    ):
        remaining(read((1, 0, 3), (1, 9, 12)), {1: 12}, {1: 7}, "topic")
    assert StaleRangeError("x").cause == "below_log_start"


def test_no_work_means_no_groups() -> None:
    """Nothing left to read gives no worker anything."""
    assert plan([], 4) == []


# One gap per partition, in partition order, as remaining() gives them.
GAPS = st.dictionaries(
    st.integers(0, 5), st.tuples(st.integers(0, 1000), st.integers(1, 300)), max_size=6
).map(lambda d: [Piece(p, start, start + size) for p, (start, size) in sorted(d.items())])


@settings(max_examples=50, deadline=None)
@given(gaps=GAPS, workers=st.integers(1, 9))
def test_the_plan_reads_every_offset_once_in_fair_shares(gaps: list[Piece], workers: int) -> None:
    """Shared among workers, the ranges cover each offset exactly once, no worker gets more
    than its share, and a worker reads at most one range of each gap."""
    groups = plan(gaps, workers)
    total = sum(g.size for g in gaps)
    assert len(groups) <= max(1, min(workers, total)) if total else groups == []
    pieces = [piece for group in groups for piece in group]
    offsets = sorted((p.partition, o) for p in pieces for o in range(p.start, p.end))
    assert offsets == sorted((g.partition, o) for g in gaps for o in range(g.start, g.end))
    assert all(piece.size > 0 for piece in pieces)
    if groups:
        share = -(-total // len(groups))
        assert all(sum(p.size for p in group) <= share for group in groups)
    for group in groups:
        for gap in gaps:
            inside = [
                p for p in group if p.partition == gap.partition and gap.start <= p.start < gap.end
            ]
            assert len(inside) <= 1
