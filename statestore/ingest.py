"""Bootstrap, follow and rebuild: one thread and one consumer per view.

Bootstrap reads every partition from the stored position until the consumer
*position* reaches the end offset captured when bootstrap started (compaction
holes and transaction markers mean the last offset may never arrive as a
record). Follow keeps reading, picks up new partitions from offset 0 and keeps
the end offsets current for lag. A rebuild builds a new copy of the view beside
the served one and swaps it in once caught up.

The loop speaks to its topic through the protocols of :mod:`statestore.source`
(the Kafka client in production, :mod:`statestore.testing`'s in-process log in
tests). A first bootstrap is a bulk load only over a client other processes can
reach (non-empty ``settings()``); over any other it is applied batch by batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .bulk import BulkSettings, bulk_load
from .errors import (
    BulkWorkerError,
    ConfigError,
    KafkaError,
    OffsetOutOfRangeError,
    RegistryUnavailableError,
    StaleViewError,
    StateStoreError,
    TopicMissingError,
)
from .records import Record
from .slot import discard_slot
from .source import Source, TopicClient
from .status import ViewState
from .view import View

__all__ = ["Ingestor", "Progress", "ProgressCallback", "StaleViewError"]

log = logging.getLogger(__name__)

# An empty poll while a partition sits below its high watermark for this long, with the
# watermark unchanged, means there is nothing left to read there (a compaction hole or
# transaction markers at the tail): the position moves to the watermark.
HOLE_SETTLE_S = 3.0
# How often a caught-up follower records that it is in sync (for the tombstone guard).
SYNC_INTERVAL_S = 10.0
# A bulk load whose workers keep dying fails the view after this many tries in a row.
BULK_TRIES = 3


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one view's bootstrap (or rebuild) has come."""

    view: str
    records: int
    expected: int
    remaining: int
    elapsed: float
    done: bool

    @property
    def rate(self) -> float:
        return self.records / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


class Ingestor:
    """Moves records from one topic into one view."""

    def __init__(
        self,
        view: View,
        client: TopicClient,
        *,
        batch_size: int = 5000,
        poll_timeout: float = 0.2,
        metadata_interval: float = 5.0,
        wait_interval: float = 2.0,
        bulk: BulkSettings | None = None,
        hole_settle: float = HOLE_SETTLE_S,
    ) -> None:
        self.view = view
        self.client = client
        self.bulk = bulk or BulkSettings(kafka=client.settings(), registry={}, workers=1)
        self._bulk_failures = 0
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.metadata_interval = metadata_interval
        self.wait_interval = wait_interval
        self.hole_settle = hole_settle
        self.source: Source | None = None
        self.caught_up = False
        self.kafka_trouble: str | None = None
        self.rebuild_requested: str | None = None
        self.rebuilt = threading.Event()
        # Set when a partitioned cluster's group moved partitions (View.owned changed).
        self.reassigned = threading.Event()
        self._stalled: dict[int, tuple[int, int, float]] = {}
        self._registry_wait = 0.0
        self._state_before_outage: ViewState = "bootstrapping"
        # Why a ready view deserves a look (a stale copy kept, a stale copy rebuilt): kept as
        # its reason until the next rebuild, so status and readiness keep saying it.
        self.note: str | None = None

    # -- phases ------------------------------------------------------------------------

    def catch_up(self, stop: threading.Event, progress: ProgressCallback | None = None) -> bool:
        """Read to the end offsets captured now; True when caught up, False when stopped/failed."""
        view = self.view
        while not stop.is_set():
            try:
                return self._catch_up_once(stop, progress)
            except StaleViewError as exc:
                return self._stale(stop, exc, progress)
            except TopicMissingError as exc:
                if view.config.missing_topic == "wait":
                    view.set_state("bootstrapping", f"waiting for the topic: {exc}")
                    stop.wait(self.wait_interval)
                    continue
                view.set_state("failed", str(exc))
                return False
            except KafkaError as exc:
                self._trouble(str(exc))
                stop.wait(self.wait_interval)
            except BulkWorkerError as exc:
                # The load resumes from what the ingested files made durable.
                self._bulk_failures += 1
                if self._bulk_failures >= BULK_TRIES:
                    view.set_state("failed", f"{exc} ({BULK_TRIES} tries in a row)")
                    log.error("view.failed view=%s reason=%s", view.name, exc)
                    return False
                log.warning(
                    "bulk.retry view=%s try=%d reason=%s", view.name, self._bulk_failures, exc
                )
                self._trouble(str(exc))
                stop.wait(self.wait_interval)
            except StateStoreError as exc:
                view.set_state("failed", str(exc))
                log.error("view.failed view=%s reason=%s", view.name, exc)
                return False
            except Exception as exc:
                log.exception("view.crashed view=%s", view.name)
                view.set_state("failed", f"internal error: {exc!r}")
                return False
        return False

    def follow(self, stop: threading.Event) -> None:
        """Apply new records until *stop* is set (or the view fails)."""
        view = self.view
        next_meta = time.monotonic() + self.metadata_interval
        next_marks = 0.0
        next_sync = 0.0
        while not stop.is_set():
            try:
                if self.rebuild_requested is not None:
                    reason, self.rebuild_requested = self.rebuild_requested, None
                    self.rebuild(stop, reason)
                    continue
                if self.reassigned.is_set():
                    self.reassigned.clear()
                    self.take_assignment()
                    continue
                if self.source is None or not self.caught_up:
                    if not self.catch_up(stop) and not self.reassigned.is_set():
                        return
                    continue
                records = self.source.poll(self.batch_size, self.poll_timeout)
                now = time.monotonic()
                if records:
                    if self._apply(records, stop) < 0:
                        return
                    self._recovered()
                    oldest = min(r[2] for r in records)
                    if oldest > 0:
                        age = time.time() - oldest / 1000
                        view.freshness.labels(view.name).observe(max(0.0, age))
                else:
                    self._settle_holes(view.end_offsets)
                if now >= next_marks:
                    view.set_targets(self.source.cached_high())
                    next_marks = now + 1.0
                if now >= next_sync and not view.behind_fetched():
                    view.touch_synced()
                    next_sync = now + SYNC_INTERVAL_S
                if now >= next_meta:
                    self._new_partitions()
                    # The metadata answered: Kafka is back even if no record has arrived.
                    self._recovered()
                    next_meta = now + self.metadata_interval
            except (OffsetOutOfRangeError, StaleViewError) as exc:
                if not self._stale(stop, exc, None):
                    return
            except TopicMissingError as exc:
                view.set_state("failed", str(exc))
                return
            except KafkaError as exc:
                self._trouble(str(exc))
                stop.wait(self.wait_interval)
            except StateStoreError as exc:
                view.set_state("failed", str(exc))
                log.error("view.failed view=%s reason=%s", view.name, exc)
                return
            except Exception as exc:
                log.exception("view.crashed view=%s", view.name)
                view.set_state("failed", f"internal error: {exc!r}")
                return

    def rebuild(
        self,
        stop: threading.Event,
        reason: str,
        progress: ProgressCallback | None = None,
        *,
        cause: str = "requested",
    ) -> bool:
        """Build a new copy from offset 0 beside the served one; swap it in once caught up."""
        live = self.view
        self.rebuilt.clear()
        log.warning("view.rebuild view=%s reason=%s", live.name, reason)
        before = live.state
        live.set_state("rebuilding", reason)
        shadow = live.shadow()
        builder = Ingestor(
            shadow,
            self.client,
            batch_size=self.batch_size,
            poll_timeout=self.poll_timeout,
            metadata_interval=self.metadata_interval,
            wait_interval=self.wait_interval,
            bulk=self.bulk,
            hole_settle=self.hole_settle,
        )
        try:
            done = builder.catch_up(stop, progress)
            if not done or shadow.state == "failed":
                live.set_state(
                    "failed" if shadow.state == "failed" else before,
                    f"rebuild failed: {shadow.reason}" if shadow.state == "failed" else None,
                )
                builder.close()
                discard_slot(live.storage, shadow.slot.id)
                return False
            self.close()
            live.adopt(shadow, cause=cause, reason=reason)
            self.source, builder.source = builder.source, None
            self.caught_up = True
            self._stalled.clear()
            self.note = None
            live.set_state("ready", None)
            return True
        finally:
            self.rebuilt.set()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        self.caught_up = False

    # -- internals ---------------------------------------------------------------------

    def _catch_up_once(self, stop: threading.Event, progress: ProgressCallback | None) -> bool:
        view = self.view
        topic = view.config.topic
        if view.slot.dropping:
            # A drop cut short (a store seeded from a partitioned instance's snapshot taken
            # during one): its remains are not the partition; it is read from the start.
            deleted = view.drop_partitions(set(view.slot.dropping))
            log.info("ingest.drop_finished view=%s keys=%d", view.name, deleted)
        if view.state != "rebuilding":
            view.set_state("bootstrapping", view.reason if view.servable else self.kafka_trouble)
        partitions = self.client.partitions(topic)
        view.partition_count = len(partitions)
        reads = view.reads
        if reads is not None:
            partitions = [p for p in partitions if p in reads]
        self._check_topic_identity()
        self._check_tombstone_horizon()
        targets: dict[int, int] = {}
        starts: dict[int, int] = {}
        lows: dict[int, int] = {}
        for p in partitions:
            low, high = self.client.watermarks(topic, p)
            lows[p] = low
            stored = view.slot.positions.get(p, 0)
            if stored > high:
                raise StaleViewError(
                    f"{topic}[{p}]: stored position {stored} is past the end offset {high} "
                    "(was the topic deleted and recreated?)",
                    cause="past_end_offset",
                )
            if 0 < stored < low:
                raise StaleViewError(
                    f"{topic}[{p}]: stored position {stored} is below the log start offset {low} "
                    "(records were deleted before the view read them)",
                    cause="below_log_start",
                )
            targets[p] = high
            starts[p] = max(stored, low)
        view.set_targets(targets, replace=True)
        started = time.monotonic()
        records = 0
        expected = sum(max(0, targets[p] - starts[p]) for p in targets)
        log.info(
            "bootstrap.start view=%s topic=%s partitions=%d expected=%d",
            view.name,
            topic,
            len(partitions),
            expected,
        )
        if self._bulk_possible() and view.begin_bulk():
            read = self._bulk_load(stop, progress, targets, lows, started)
            if read is None:
                return False
            records = read
        have = view.slot.positions
        starts = {p: max(s, have.get(p, 0)) for p, s in starts.items()}
        moved = {p: s for p, s in starts.items() if p not in have or s > have[p]}
        if moved:
            view.apply([], moved)
        if self.source is None:
            self.source = self.client.source(f"statestore.{view.name}", topic, view.header_hook)
        self.source.assign(starts)
        expected = max(expected, sum(max(0, targets[p] - starts[p]) for p in targets) + records)
        last_report = 0.0
        while True:
            if stop.is_set() or self.reassigned.is_set():
                return False
            remaining = sum(
                max(0, end - view.slot.positions.get(p, 0)) for p, end in targets.items()
            )
            now = time.monotonic()
            if remaining == 0:
                break
            if progress is not None and now - last_report >= 0.2:
                progress(Progress(view.name, records, expected, remaining, now - started, False))
                last_report = now
            batch = self.source.poll(self.batch_size, self.poll_timeout)
            if batch:
                applied = self._apply(batch, stop)
                if applied < 0:
                    return False
                records += applied
                self._recovered()
            else:
                self._settle_holes(targets)
        elapsed = time.monotonic() - started
        self.caught_up = True
        view.bootstrapped(elapsed, records)
        view.mark_caught_up()
        view.touch_synced()
        view.mark_serving(frozenset(targets))
        if view.state != "rebuilding":
            view.set_state("ready", self.note)
        log.info(
            "bootstrap.done view=%s records=%d keys=%d seconds=%.3f",
            view.name,
            records,
            view.slot.counters["keys"],
            elapsed,
        )
        if progress is not None:
            progress(Progress(view.name, records, expected, 0, elapsed, True))
        return True

    def _bulk_load(
        self,
        stop: threading.Event,
        progress: ProgressCallback | None,
        targets: dict[int, int],
        lows: dict[int, int],
        started: float,
    ) -> int | None:
        """Load the view's slot in bulk to *targets*; records read, or None (stopped, failed)."""
        view = self.view
        expected = sum(max(0, end - lows.get(p, 0)) for p, end in targets.items())
        last = [0.0]

        def report(records: int, remaining: int) -> None:
            self._recovered()
            now = time.monotonic()
            if progress is not None and now - last[0] >= 0.2:
                last[0] = now
                progress(Progress(view.name, records, expected, remaining, now - started, False))

        records, failure = bulk_load(
            view, self.bulk, targets, lows, stop, report=report, trouble=self._trouble
        )
        self._bulk_failures = 0
        if failure is not None:
            view.set_state(
                "failed",
                f'bad record at {failure} (on_error = "fail"); fix or skip it, '
                'or set on_error = "quarantine"',
            )
            log.error("view.failed view=%s reason=%s", view.name, failure)
            return None
        return None if view.bulk else records

    def _bulk_possible(self) -> bool:
        """Whether a bulk load can run: its workers connect with the client's settings."""
        if self.client.settings():
            return True
        if self.view.bulk:
            raise ConfigError(
                f"view {self.view.name!r} is in the middle of a bulk load, which only a "
                "Kafka client can finish; open the store with one"
            )
        return False

    def _check_topic_identity(self) -> None:
        """A topic deleted and created again under the view's topic name is another topic:
        what the view holds came from the old one, whatever the new one's offsets are."""
        view = self.view
        current = self.client.topic_id(view.config.topic)
        if current is None:
            return
        stored = view.slot.topic_id
        if stored is None:
            view.note_topic_id(current)
        elif stored != current:
            raise StaleViewError(
                f"topic {view.config.topic!r} was deleted and created again (topic id {stored} "
                f"-> {current}): the view holds records of the old topic",
                cause="topic_recreated",
            )

    def _check_tombstone_horizon(self) -> None:
        """A view not in sync for longer than delete.retention.ms may have missed tombstones."""
        view = self.view
        slot = view.slot
        since = slot.synced_at_ms or slot.last_applied_at_ms
        if not slot.positions or since is None:
            return
        config = self.client.topic_config(view.config.topic)
        if "compact" not in config.get("cleanup.policy", ""):
            return
        retention = int(config.get("delete.retention.ms", "86400000"))
        away = int(time.time() * 1000) - since
        if away > retention:
            raise StaleViewError(
                f"the view was last in sync {away / 1000:.0f}s ago, longer than the topic's "
                f"delete.retention.ms ({retention / 1000:.0f}s): tombstones it never saw may be gone",
                cause="away_too_long",
            )

    def _apply(self, records: list[Record], stop: threading.Event) -> int:
        """Apply one batch; -1 when the view failed. A registry outage rewinds and waits."""
        view = self.view
        try:
            applied = view.apply(records)
        except RegistryUnavailableError as exc:
            # Nothing of the batch was written: read it again once the registry is back.
            if self.source is not None:
                for p in {r[0] for r in records}:
                    self.source.seek(p, view.slot.positions.get(p, 0))
            if not self._registry_wait:
                # Degraded by Kafka trouble (not by this outage) means ready underneath.
                state = view.state
                self._state_before_outage = "ready" if state == "degraded" else state
            self._registry_wait = min(30.0, max(0.5, self._registry_wait * 2))
            view.set_state(
                "degraded",
                f"schema registry unavailable, retrying in {self._registry_wait:.1f}s: {exc}",
            )
            stop.wait(self._registry_wait)
            return 0
        if self._registry_wait:
            self._registry_wait = 0.0
            before = self._state_before_outage
            view.set_state(before, self.note if before == "ready" else None)
        if applied.failure is not None:
            view.set_state(
                "failed",
                f'bad record at {applied.failure} (on_error = "fail"); fix or skip it, '
                'or set on_error = "quarantine"',
            )
            log.error("view.failed view=%s reason=%s", view.name, applied.failure)
            return -1
        return applied.records

    def _settle_holes(self, targets: dict[int, int]) -> None:
        """Move positions past offsets that hold no record (compaction, transaction markers)."""
        if self.source is None:
            return
        view = self.view
        now = time.monotonic()
        moved: dict[int, int] = {}
        consumer_pos = self.source.positions()
        for p, end in targets.items():
            pos = view.slot.positions.get(p, 0)
            cpos = consumer_pos.get(p, -1)
            if cpos > pos:
                moved[p] = cpos
                self._stalled.pop(p, None)
                continue
            if pos >= end:
                self._stalled.pop(p, None)
                continue
            seen = self._stalled.get(p)
            if seen is None or seen[0] != pos or seen[1] != end:
                self._stalled[p] = (pos, end, now)
            elif now - seen[2] >= self.hole_settle:
                _, high = self.client.watermarks(view.config.topic, p)
                probe = self.client.next_record_offset(view.config.topic, p, pos)
                if high == end and (probe is None or probe >= end):
                    log.warning(
                        "ingest.hole view=%s partition=%d from=%d to=%d "
                        "(no records left below the end offset)",
                        view.name,
                        p,
                        pos,
                        end,
                    )
                    moved[p] = end
                    self.source.seek(p, end)
                del self._stalled[p]
        if moved:
            view.apply([], moved)

    def _new_partitions(self) -> None:
        if self.source is None:
            return
        self._check_topic_identity()
        partitions = self.client.partitions(self.view.config.topic)
        self.view.partition_count = len(partitions)
        reads = self.view.reads
        new = [
            p for p in partitions if p not in self.source.assigned and (reads is None or p in reads)
        ]
        if new:
            log.info("ingest.new_partitions view=%s partitions=%s", self.view.name, new)
            self.view.set_targets({p: 0 for p in new if p not in self.view.end_offsets})
            self.source.assign(dict.fromkeys(new, 0))

    def take_assignment(self) -> None:
        """The group moved partitions (or standby copies changed): drop those given up,
        then read what is owned (or kept as a standby copy) now."""
        view = self.view
        self.close()
        reads = view.reads or frozenset()
        # What it holds and no longer reads, and what a drop cut short left (read again,
        # from the log start, when it is read at all).
        gone = {p for p in view.slot.positions if p not in reads} | view.slot.dropping
        if gone:
            deleted = view.drop_partitions(gone)
            log.info(
                "cluster.dropped view=%s partitions=%s keys=%d", view.name, sorted(gone), deleted
            )
        log.info(
            "cluster.owned view=%s partitions=%s standby=%s",
            view.name,
            sorted(view.owned or ()),
            sorted(view.standby),
        )

    def _stale(
        self,
        stop: threading.Event,
        exc: StaleViewError | OffsetOutOfRangeError,
        progress: ProgressCallback | None,
    ) -> bool:
        """Handle an untrustworthy view per its ``on_stale`` policy; True when it may go on."""
        view = self.view
        policy = view.config.on_stale
        reason = str(exc)
        log.warning(
            "view.stale view=%s policy=%s cause=%s reason=%s", view.name, policy, exc.cause, reason
        )
        view.went_stale(exc.cause, reason)
        if policy == "fail":
            view.set_state(
                "failed",
                f"{reason}; the view cannot be trusted: run `statestore rebuild --view {view.name}`",
            )
            return False
        if policy == "rebuild":
            if not self.rebuild(stop, f"stale: {reason}", progress, cause=exc.cause):
                return False
            self.note = f"rebuilt: {reason}"
            view.set_state("ready", self.note)
            return True
        # ignore: carry on from the log start, keeping what is stored (and taking the
        # topic as it is now for the one the view reads).
        self.close()
        view.forget_positions()
        current = self.client.topic_id(view.config.topic)
        if current is not None:
            view.note_topic_id(current, replace=True)
        self.note = f"stale, ignored: {reason}"
        view.set_reason(self.note)
        return self.catch_up(stop, progress) if not stop.is_set() else False

    def _trouble(self, reason: str) -> None:
        self.kafka_trouble = reason
        state = self.view.state
        if state == "ready":
            self.view.set_state("degraded", reason)
        elif state in ("bootstrapping", "rebuilding") and self.view.reason != reason:
            # Not ready either way; the reason says why it is not progressing.
            self.view.set_state(state, reason)

    def _recovered(self) -> None:
        trouble = self.kafka_trouble
        if trouble is not None:
            self.kafka_trouble = None
            state = self.view.state
            if state == "degraded" and not self._registry_wait:
                self.view.set_state("ready", self.note)
            elif state in ("bootstrapping", "rebuilding") and self.view.reason == trouble:
                self.view.set_state(state, None)

    def note_client_error(self, text: str) -> None:
        """Called from the Kafka client's error callback (broker down, auth failures)."""
        self._trouble(text)
