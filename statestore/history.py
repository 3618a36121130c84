"""What happened to a store and its views, kept in the store across restarts.

Counters that live in one process cannot serve alerts: a server that crash-loops
restarts them at every start, and a view found stale when the server starts has
counted its event before the first scrape. So the store keeps, in its metadata,
how many times a server started following, and per view the number, time, cause
and reason of the last staleness event and of the last rebuild. The metrics
export them as totals and timestamps (:mod:`statestore.metrics`).

``cause`` is one word from a small set, fit for a metric label:
``requested`` (a rebuild asked for), ``config_changed`` (the view's topic or
codecs changed), ``below_log_start``, ``past_end_offset``, ``topic_recreated``,
``away_too_long`` (not in sync for longer than ``delete.retention.ms``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from .records import STARTS_KEY, history_key, pack_int, unpack_int
from .status import ViewEvent
from .storage import META, Storage

__all__ = ["ViewHistory", "count_start", "read_history", "read_starts", "write_history"]


@dataclass(frozen=True, slots=True)
class ViewHistory:
    """A view's staleness events and rebuilds, over every process that served it."""

    stale_events: int = 0
    last_stale: ViewEvent | None = None
    rebuilds: int = 0
    last_rebuild: ViewEvent | None = None

    def stale(self, cause: str, reason: str, at_ms: int | None = None) -> ViewHistory:
        event = ViewEvent(_now_ms() if at_ms is None else at_ms, cause, reason)
        return replace(self, stale_events=self.stale_events + 1, last_stale=event)

    def rebuilt(self, cause: str, reason: str, at_ms: int | None = None) -> ViewHistory:
        event = ViewEvent(_now_ms() if at_ms is None else at_ms, cause, reason)
        return replace(self, rebuilds=self.rebuilds + 1, last_rebuild=event)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _event(data: Any) -> ViewEvent | None:
    if not isinstance(data, dict):
        return None
    return ViewEvent(int(data["at_ms"]), str(data["cause"]), str(data["reason"]))


def read_history(storage: Storage, view: str) -> ViewHistory:
    """The view's history as stored (empty for a view that has none yet)."""
    raw = storage.get(META, history_key(view))
    if raw is None:
        return ViewHistory()
    data = orjson.loads(raw)
    return ViewHistory(
        stale_events=int(data.get("stale_events", 0)),
        last_stale=_event(data.get("last_stale")),
        rebuilds=int(data.get("rebuilds", 0)),
        last_rebuild=_event(data.get("last_rebuild")),
    )


def write_history(storage: Storage, view: str, history: ViewHistory) -> None:
    batch = storage.batch()
    batch.put(META, history_key(view), orjson.dumps(asdict(history)))
    storage.write(batch)


def read_starts(storage: Storage) -> int:
    """How many times a server started following on this store."""
    raw = storage.get(META, STARTS_KEY)
    return 0 if raw is None else unpack_int(raw)


def count_start(storage: Storage) -> int:
    """Count one more start of a server on this store; return the new total."""
    starts = read_starts(storage) + 1
    batch = storage.batch()
    batch.put(META, STARTS_KEY, pack_int(starts))
    storage.write(batch)
    return starts
