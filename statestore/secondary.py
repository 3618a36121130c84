"""A serving copy: the store opened as a RocksDB secondary instance that follows its primary.

``statestore serve --workers N`` runs one process that ingests (the primary, the
only writer) and N serving processes, each holding a :class:`SecondaryCopy`. Every
``[api] catch_up_ms`` a copy catches up with the primary's writes when the
primary's last report names a position (or a generation) it does not serve, or
``FULL_EVERY_S`` has passed since its last catch-up (one costs milliseconds even
when nothing was written); and at once when a request waits for a position it
does not have (:meth:`request`). After each catch-up every view serves the
positions, counters and slot the primary has stored, and waiters on a position
are woken.

What is not stored (each view's state, reason and end offsets; whether the
primary is ready) comes from the primary as a :class:`Report` (:func:`report_of`),
which the copy takes with :meth:`take`.

Readiness: a copy is ready when the last report says the primary is ready (every
view caught up with its topic), its last check ended less than ``STALE_AFTER_S``
ago, and at that check every view held at least the positions the primary had
reported before it began (a check is a catch-up, or, when the report named
nothing new, the comparison alone): a ready copy is behind the primary by at
most what the primary applied during one catch-up interval and one report.

A secondary sees only the column families it opened with, and its catch-up fails
once the primary has created another (a bulk load's staging family, a rebuild's
new generation): the copy then opens a new instance, hands it to ``on_swap`` and
closes the old one after a grace period, so reads that began on it finish.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import SnapshotError, StateStoreError, StorageError
from .slot import Slot, current_generation
from .snapshot import SnapshotInfo
from .status import LoadStatus, ViewState
from .store import StateStore

__all__ = [
    "FULL_EVERY_S",
    "STALE_AFTER_S",
    "Report",
    "SecondaryCopy",
    "SecondaryStore",
    "ViewReport",
    "report_of",
]

log = logging.getLogger(__name__)

# A copy whose last catch-up is older than this is not ready (its catch-ups are failing).
STALE_AFTER_S = 2.0
# Reads that began on a replaced instance finish within this.
SWAP_GRACE_S = 5.0
# A catch-up costs milliseconds of the serving process's time even when nothing was
# written (4-8 ms measured on the benchmark's 1M store): the copy catches up when the
# primary reports positions it does not serve, when a request waits for a position, and
# at least this often.
FULL_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class ViewReport:
    """What the primary knows of one view and does not store."""

    state: ViewState
    reason: str | None
    ends: dict[int, int]  # end offsets, per partition
    applied: dict[int, int]  # the primary's applied position (``View.applied_position``)
    generation: int
    bootstrap: tuple[float, int] | None  # seconds and records of its bootstrap
    load: LoadStatus | None


@dataclass(frozen=True, slots=True)
class Report:
    """The primary's state, sent to every serving process."""

    ready: bool
    views: dict[str, ViewReport]


def report_of(store: StateStore) -> Report:
    """The primary *store*'s state, for its serving copies."""
    views: dict[str, ViewReport] = {}
    for name, view in store.views.items():
        s = view.status()
        ends = {p.partition: p.end_offset for p in s.partitions if p.end_offset is not None}
        boot = None if s.bootstrap_seconds is None else (s.bootstrap_seconds, s.bootstrap_records)
        views[name] = ViewReport(
            s.state, s.reason, ends, view.applied_position(), s.generation, boot, s.load
        )
    return Report(store.ready(), views)


class SecondaryStore(StateStore):
    """A StateStore over a secondary instance: reads only, readiness from its copy."""

    copy: SecondaryCopy | None = None

    def ready(self) -> bool:
        copy = self.copy
        return super().ready() and copy is not None and copy.in_step()

    def snapshot(self, dest: str | None = None, views: list[str] | None = None) -> SnapshotInfo:
        raise SnapshotError(
            "this server process serves a read-only copy of the store (statestore serve "
            "--workers N); snapshots are taken by the process that ingests: send the request "
            "to it ([api] primary_port; `statestore snapshot create` does), or set [snapshots] "
            "every"
        )


class SecondaryCopy:
    """A serving process's copy of the store: catches up with the primary, in a thread."""

    def __init__(self, config: Config, directory: Path, *, interval: float) -> None:
        self.config = config
        self.directory = Path(directory)
        self.interval = interval
        self.on_swap: Callable[[StateStore], None] | None = None
        self._opened = 0
        self.store = self._open()
        self._report: Report | None = None
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._caught_at: float | None = None
        self._full_at = 0.0
        self._in_step = False
        self._failing: str | None = None

    def _open(self) -> SecondaryStore:
        self._opened += 1
        place = self.directory / f"instance-{self._opened}"
        place.mkdir(parents=True, exist_ok=True)
        store = SecondaryStore(self.config, secondary=place)
        store.copy = self
        for view in store.views.values():
            view.set_state("starting", "waiting for the ingesting process")
        return store

    # -- the primary's reports -----------------------------------------------------------

    def take(self, report: Report) -> None:
        """The primary's latest state: view states, reasons, end offsets."""
        self._report = report
        self._show(self.store, report)

    @staticmethod
    def _show(store: StateStore, report: Report) -> None:
        for name, seen in report.views.items():
            try:
                view = store.view(name)
            except StateStoreError:
                continue
            view.set_targets(seen.ends, replace=True)
            view.observe_ends(seen.ends)
            if seen.bootstrap is not None:
                view.bootstrapped(*seen.bootstrap)
            view.show_load(seen.load)
            if (view.state, view.reason) != (seen.state, seen.reason):
                view.set_state(seen.state, seen.reason)

    # -- catching up ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="catch-up", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Catch up now (a request waits for a position this copy does not have yet)."""
        self._wanted.set()

    def in_step(self) -> bool:
        """Whether the copy is ready (see the module's docstring)."""
        caught = self._caught_at
        return (
            self._in_step
            and caught is not None
            and time.monotonic() - caught < max(STALE_AFTER_S, 20 * self.interval)
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = self._wanted.wait(self.interval)
            self._wanted.clear()
            if self._stop.is_set():
                return
            try:
                if asked or self._behind() or time.monotonic() - self._full_at >= FULL_EVERY_S:
                    self.catch_up()
                else:
                    self._check()
            except Exception as exc:  # the next round tries again; readiness says it failed
                if self._failing != str(exc):
                    log.error("secondary.catch_up_failed error=%s", exc)
                self._failing = str(exc)
                self._in_step = False
            else:
                if self._failing is not None:
                    log.info("secondary.catch_up_recovered")
                self._failing = None

    def _behind(self) -> bool:
        """Whether the primary reports a position or generation this copy does not serve."""
        report = self._report
        if report is None:
            return True
        store = self.store
        for name, seen in report.views.items():
            view = store.view(name)
            if view.generation != seen.generation or view.applied_position() != seen.applied:
                return True
        return False

    def _check(self) -> None:
        """Nothing new was reported: the copy is as ready as it holds what was reported."""
        report = self._report
        self._caught_at = time.monotonic()
        self._in_step = report is not None and report.ready and self._holds(self.store, report)

    def catch_up(self) -> None:
        """Replay the primary's new writes and serve them (from the catch-up thread)."""
        self._full_at = time.monotonic()
        report = self._report  # taken first: the catch-up holds all it reported
        store = self.store
        try:
            store.storage.catch_up()
        except StorageError as exc:
            # A family the primary created since this instance opened (a bulk load's
            # staging family) stops its catch-ups: a new instance opens them all.
            self._swap(f"catch-up failed: {exc}")
        else:
            if not self._refresh(store):
                self._swap("a view moved to a new generation")
        store = self.store
        self._caught_at = time.monotonic()
        self._in_step = report is not None and report.ready and self._holds(store, report)

    @staticmethod
    def _holds(store: StateStore, report: Report) -> bool:
        for name, seen in report.views.items():
            have = store.view(name).applied_position()
            if any(have.get(p, -1) < o for p, o in seen.applied.items()):
                return False
        return True

    @staticmethod
    def _refresh(store: StateStore) -> bool:
        """Serve what the primary stored; False when a view moved to unseen families."""
        storage = store.storage
        for view in store.views.values():
            generation = current_generation(storage, view.name)
            old = view.slot
            fresh = Slot(view.config, storage, generation, view.key_codec, view.value_codec)
            if generation != old.generation and not storage.has_family(fresh.entity_cf):
                return False
            if (
                fresh.generation != old.generation
                or fresh.positions != old.positions
                or fresh.counters != old.counters
                or fresh.bulk != old.bulk
                or fresh.servable != old.servable
                or fresh.schema_counts != old.schema_counts
            ):
                view.follow_slot(fresh)
        return True

    def _swap(self, reason: str) -> None:
        """Open a new instance (with the families the primary has now), serve it, close
        the old one."""
        old = self.store
        new = self._open()
        if self._report is not None:
            self._show(new, self._report)
        self._refresh(new)
        self.store = new
        if self.on_swap is not None:
            self.on_swap(new)
        log.info("secondary.reopened instance=%d reason=%s", self._opened, reason)
        for view in old.views.values():
            view.set_state(view.state, view.reason)  # wakes waiters: they look again
        timer = threading.Timer(SWAP_GRACE_S, self._retire, args=(old,))
        timer.daemon = True
        timer.start()

    @staticmethod
    def _retire(store: StateStore, *, last: bool = False) -> None:
        place = store.storage.secondary
        if last:
            store.close()
        else:
            store.storage.close()  # its views are no longer served: they keep their state
        if place is not None:
            shutil.rmtree(place, ignore_errors=True)

    def close(self) -> None:
        """Stop catching up and close the instance (its directory is removed)."""
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(Exception):
            self._retire(self.store, last=True)
