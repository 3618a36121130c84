"""A store's history (starts, staleness events, rebuilds) outlives the process that wrote it."""

from __future__ import annotations

from pathlib import Path

from statestore.history import ViewHistory, count_start, read_history, read_starts, write_history
from statestore.status import ViewEvent
from statestore.storage import Storage


def test_starts_and_view_events_are_read_back_after_the_store_is_reopened(tmp_path: Path) -> None:
    """Counted starts and the last staleness event and rebuild of a view survive a close and reopen."""
    storage = Storage(tmp_path / "store")
    assert read_starts(storage) == 0
    assert read_history(storage, "v") == ViewHistory()
    count_start(storage)
    assert count_start(storage) == 2
    history = ViewHistory().stale("away_too_long", "away 93600s", at_ms=5)
    history = history.rebuilt("away_too_long", "stale: away 93600s", at_ms=7)
    history = history.rebuilt("requested", "rebuild requested by ops", at_ms=9)
    write_history(storage, "v", history)
    storage.close()

    again = Storage(tmp_path / "store")
    try:
        assert read_starts(again) == 2
        back = read_history(again, "v")
        assert back == history
        assert (back.stale_events, back.rebuilds) == (1, 2)
        assert back.last_stale == ViewEvent(5, "away_too_long", "away 93600s")
        assert back.last_rebuild == ViewEvent(9, "requested", "rebuild requested by ops")
        assert read_history(again, "other") == ViewHistory()
    finally:
        again.close()
