"""A store seen from a command that does not serve it: who holds it, how far a rebuild
run by that process has got, and a snapshot when nobody holds it.

Commands (statestore/cli) use these instead of the storage layer: the key layout
of the metadata stays in statestore/records.py and RocksDB behind
statestore/storage.py. Reads here are read-only and best effort: the process
holding the store writes while they read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import StateStoreError, StoreLockedError
from .records import counter_key, slot_id
from .slot import meta_int, stored_positions
from .snapshot import SnapshotInfo, create_snapshot
from .storage import RocksOptions, Storage

__all__ = ["CopyProgress", "Holder", "holder", "read_progress", "snapshot_unheld"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Holder:
    """What the server holding a store announced: where it answers, and its process id."""

    url: str
    pid: int | None


def holder(path: Path) -> Holder | None:
    """The server holding the store at *path*, as it announced itself (None: nothing readable)."""
    data = Storage.holder(path)
    if data is None:
        return None
    pid = data.get("pid")
    return Holder(data["url"], pid if isinstance(pid, int) else None)


@dataclass(frozen=True, slots=True)
class CopyProgress:
    """How far one copy (generation) of a view has got: the records applied to it and,
    per partition, the next offset it will read."""

    records: int
    positions: dict[int, int]

    def remaining(self, ends: Mapping[int, int]) -> int:
        """Offsets left to read below *ends* (``{partition: end offset}``)."""
        return sum(max(0, end - self.positions.get(p, 0)) for p, end in ends.items())


def read_progress(config: Config, copies: Mapping[str, int]) -> dict[str, CopyProgress]:
    """``{view: progress}`` of the copies *copies* names (``{view: generation}``), read from
    the store's metadata while another process may hold and write it.

    Best effort: a read-only open can fail while the holder writes; then the answer is
    empty and the next call tries again.
    """
    out: dict[str, CopyProgress] = {}
    try:
        storage = Storage(config.store.path, read_only=True)
    except StateStoreError as exc:
        log.debug("rebuild.progress_unreadable error=%s", exc)
        return out
    try:
        for view, generation in copies.items():
            slot = slot_id(view, generation)
            records = meta_int(storage, counter_key(slot, "records")) or 0
            out[view] = CopyProgress(records, stored_positions(storage, slot))
    finally:
        storage.close()
    return out


def snapshot_unheld(
    config: Config, dest: str | Path, views: list[str] | None = None, *, version: str = ""
) -> SnapshotInfo | None:
    """A snapshot of the store at ``[store] path`` into *dest*, the store opened here (with
    small caches: it is read once); None when another process holds the store."""
    try:
        storage = Storage(config.store.path, RocksOptions(block_cache_mb=8, row_cache_mb=0))
    except StoreLockedError:
        return None
    try:
        return create_snapshot(storage, config, dest, views, version=version)
    finally:
        storage.close()
