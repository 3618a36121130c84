"""Change feeds: what each view applies, numbered, buffered and fanned out to subscribers.

A :class:`ChangeFeed` listens to one view. After every applied batch the ingest
thread numbers the batch's changes, appends them to a bounded ring and wakes the
subscribers that wait: it never waits for a subscriber and never decodes a value.
Each :class:`Subscription` reads the ring from its own cursor and decodes what it
reads in its own thread. A subscriber that falls further behind than it may (or
whose next change the ring had to let go) is dropped: its next read raises
:class:`FellBehindError`.

Every change gets the next number of the view's sequence; its id is
``<stream>-<generation>-<seq>``. Given back as ``last_id``, an id resumes exactly
after that change while the change is still in the ring. Otherwise — the ring
moved on, the process restarted (new stream), the view was rebuilt (new
generation) — the subscriber gets a :class:`Reset` first: its copy must be
resynced from a scan, and the changes that follow are those applied from then on.

A feed owns the cursor of each of its subscriptions (:class:`FeedCursor`: where it
stands, whether it waits, was dropped or has a reset pending) and changes it
through the cursor's methods; a subscription reads its feed through
:meth:`ChangeFeed.take` and leaves it with :meth:`ChangeFeed.release`. Whoever
creates a feed attaches it to its view and closes it (``StateStore``: one feed a
view, made on first use, closed with the store, which ends its subscriptions).
"""

from __future__ import annotations

import binascii
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from .apply import Applied
from .closing import Closing
from .codecs import KeyCodec
from .errors import CodecError, InvalidKeyError, NotReadyError, StateStoreError
from .records import unpack_header
from .view import View

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_BUFFER_BYTES",
    "GATHERED_MARK",
    "IDLE_CHECK_S",
    "Change",
    "ChangeFeed",
    "ChangeId",
    "FeedCursor",
    "FellBehindError",
    "Reset",
    "Subscription",
    "is_gathered_id",
    "key_matcher",
]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
# What one buffered change costs besides its key and value bytes (tuple, ints, slot).
_ENTRY_OVERHEAD = 100
# An idle subscriber looks for a rebuild swap this often (a swap applies no batch).
IDLE_CHECK_S = 1.0
_ID = re.compile(r"([0-9a-f]{8})-([0-9]+)-([0-9]+)")

# (stored key, partition, offset, stored record or None for a delete), as in Applied.changes.
RawChange = tuple[bytes, int, int, bytes | None]
KeyMatch = Callable[[bytes], bool]
# Whether a subscriber is sent a change (its key prefix, its partitions).
Accept = Callable[[RawChange], bool]
_by_position = itemgetter(1, 2)


@dataclass(frozen=True, slots=True)
class ChangeId:
    """Where a subscriber stands: a view's change stream, its generation and a sequence number."""

    stream: str
    generation: int
    seq: int

    def __str__(self) -> str:
        return f"{self.stream}-{self.generation}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> ChangeId:
        """The id in *text*; ValueError when it is not one this module writes."""
        found = _ID.fullmatch(text.strip())
        if found is None:
            raise ValueError(
                f"{text[:80]!r} is not a change id (<stream>-<generation>-<seq>, as sent in `id:`)"
            )
        return cls(found[1], int(found[2]), int(found[3]))


# The mark of an id of a partitioned cluster's gathered stream (api/cluster_changes.py).
GATHERED_MARK = "g1."


def is_gathered_id(text: str) -> bool:
    """Whether *text* is an id of a partitioned cluster's gathered change stream."""
    return text.startswith(GATHERED_MARK)


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change of a key: its new value, or its deletion (``deleted``, value None)."""

    id: str
    key: str
    value: Any
    partition: int
    offset: int
    timestamp: int | None
    deleted: bool
    # Set when the stored value could not be decoded (value is then None, deleted False).
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "key": self.key,
            "value": self.value,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "op": "delete" if self.deleted else "put",
        }
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True, slots=True)
class Reset:
    """The changes cannot continue the subscriber's copy: resync it from a scan.

    The changes after a reset are those applied after ``id``; scan after seeing
    the reset, then apply them, skipping any older than what the scan returned.
    """

    id: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason}


class FellBehindError(StateStoreError):
    """A subscriber read too slowly and was dropped; ``last_id`` is where it stopped."""

    def __init__(self, view: str, last_id: str, reason: str) -> None:
        self.view = view
        self.last_id = last_id
        super().__init__(
            f"view {view!r}: the subscriber fell behind and was dropped ({reason}); "
            f"subscribe again with last_id {last_id!r} (a reset follows if those changes "
            "are no longer buffered), and read faster or filter with a prefix"
        )


def key_matcher(codec: KeyCodec, prefix: str) -> KeyMatch | None:
    """A test of stored keys for "its text starts with *prefix*" (None: no prefix)."""
    if not prefix:
        return None
    if codec.name == "bytes":
        # Bytes keys read as lowercase hex: compare whole bytes, then a trailing nibble.
        text = prefix.lower()
        try:
            whole = binascii.unhexlify(text[: len(text) // 2 * 2])
            nibble = int(text[-1], 16) if len(text) % 2 else None
        except (binascii.Error, ValueError):
            raise InvalidKeyError(
                f"bytes keys are addressed in hex; the prefix {prefix!r} is not hex"
            ) from None
        if nibble is None:
            return lambda key: key.startswith(whole)
        n = len(whole)
        return lambda key: key.startswith(whole) and len(key) > n and key[n] >> 4 == nibble
    if codec.name in ("string", "json", "avro", "protobuf", "json_schema"):
        # These codecs store exactly the UTF-8 of the key text.
        try:
            raw = prefix.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(f"the prefix is not encodable as UTF-8: {exc.reason}") from None
        return lambda key: key.startswith(raw)
    return lambda key: codec.to_text(key).startswith(prefix)


@dataclass(eq=False, slots=True)
class FeedCursor:
    """Where one subscription stands in its feed. The feed changes it, under its lock only,
    through the methods below; the subscription reads ``seq`` and ``closed`` and sets its
    ``waker``.

    ``seq`` is the last change handed out (or passed over by the filter), ``reset`` a
    reset to hand out before the next changes, ``dropped`` why the reader was dropped,
    ``armed`` that it found nothing and waits to be woken, ``closed`` that it stopped.
    """

    seq: int
    max_pending: int | None = None
    reset: str | None = None
    dropped: str | None = None
    armed: bool = False
    closed: bool = False
    waker: Callable[[], None] = lambda: None

    def drop(self, reason: str) -> None:
        """Mark the reader dropped; the first reason stands."""
        if self.dropped is None:
            self.dropped = reason

    def reset_to(self, head: int, reason: str) -> None:
        """Stand at *head* with a reset to hand out first (a rebuild emptied the ring)."""
        self.seq, self.reset, self.armed = head, reason, False

    def advance(self, seq: int) -> None:
        """Everything up to *seq* was handed out."""
        self.seq = max(self.seq, seq)

    def arm(self) -> None:
        """The reader found nothing: wake it when changes arrive."""
        self.armed = True

    def fire(self) -> bool:
        """Disarm; True when the reader was waiting (it is woken once per wait)."""
        armed, self.armed = self.armed, False
        return armed

    def take_reset(self) -> str | None:
        """The pending reset's reason (then no longer pending), or None."""
        reason, self.reset = self.reset, None
        return reason

    def close(self) -> bool:
        """Stop reading; False when it had already stopped."""
        if self.closed:
            return False
        self.closed = True
        return True

    def wake(self, view: str) -> None:
        """Run the waker; it must not block (it runs in the ingest thread)."""
        try:
            self.waker()
        except Exception:
            # e.g. the event loop of an async reader has closed; that reader is gone.
            log.debug("changes.wake_failed view=%s", view, exc_info=True)


class ChangeFeed:
    """The numbered changes of one view, in a bounded ring, and the cursors reading them.

    *buffer* bounds the ring in changes and *buffer_bytes* in key and value bytes;
    the oldest changes leave first. Whoever creates a feed attaches :meth:`on_applied`
    to the view and calls :meth:`close` when done with it (``StateStore`` does both).
    """

    def __init__(
        self, view: View, *, buffer: int = DEFAULT_BUFFER, buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> None:
        if buffer < 1 or buffer_bytes < 1:
            raise ValueError("a change feed needs room for at least one change")
        self.view = view
        self.view_name = view.name
        self.stream = secrets.token_hex(4)
        self.capacity = buffer
        self.max_bytes = buffer_bytes
        self.generation = view.generation
        self._lock = threading.Lock()
        self._slots: list[RawChange | None] = [None] * buffer
        self._head = 0  # seq of the newest change; 0 before the first
        self._first = 1  # seq of the oldest change still buffered
        self._bytes = 0
        self._cursors: set[FeedCursor] = set()
        self._closed = False

    @property
    def head(self) -> ChangeId:
        """The id of the newest change (``seq`` 0 when there is none yet)."""
        with self._lock:
            return ChangeId(self.stream, self.generation, self._head)

    def id_at(self, seq: int) -> str:
        """The id of change *seq* of the current generation."""
        return f"{self.stream}-{self.generation}-{seq}"

    def __len__(self) -> int:
        with self._lock:
            return self._head - self._first + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every subscription (their iterations end) and take no new ones."""
        with self._lock:
            self._closed = True
            cursors = [c for c in self._cursors if c.close()]
            self._cursors.clear()
        self._wake_all(cursors)

    # -- the ingest side ---------------------------------------------------------------

    def on_applied(self, view: View, applied: Applied) -> None:
        """The view listener: number and buffer one batch's changes, then wake waiting readers.

        Runs in the ingest thread, so it only appends references and flips flags.
        """
        changes = applied.changes
        if not changes and view.generation == self.generation:
            return
        # Per partition in offset order (a batch lists keys in first-seen order).
        batch = sorted(changes, key=_by_position)
        with self._lock:
            if self._closed:
                return
            wake = self._check_generation()
            if batch:
                wake.extend(self._append(batch))
        self._wake_all(wake)

    def _append(self, batch: list[RawChange]) -> list[FeedCursor]:
        slots = self._slots
        cap = self.capacity
        before = head = self._head
        nbytes = self._bytes
        for change in batch:
            head += 1
            at = head % cap
            old = slots[at]
            if old is not None:
                nbytes -= _size(old)
            slots[at] = change
            nbytes += _size(change)
        first = max(self._first, head - cap + 1)
        while nbytes > self.max_bytes and first < head:
            at = first % cap
            old = slots[at]
            if old is not None:
                nbytes -= _size(old)
                slots[at] = None
            first += 1
        self._head, self._first, self._bytes = head, first, nbytes
        wake = []
        for cursor in list(self._cursors):
            limit = cursor.max_pending
            if cursor.seq < first - 1:
                reason = f"the buffer of the last {head - first + 1} changes moved past it"
            elif limit is not None and before - cursor.seq > limit:
                reason = f"more than {limit} changes were waiting for it"
            else:
                if cursor.fire():
                    wake.append(cursor)
                continue
            cursor.drop(reason)
            self._cursors.discard(cursor)
            wake.append(cursor)
            log.info(
                "changes.dropped view=%s pending=%d reason=%s",
                self.view_name,
                head - cursor.seq,
                reason,
            )
        return wake

    def _check_generation(self) -> list[FeedCursor]:
        """On a rebuild swap, empty the ring and queue a reset for every reader."""
        generation = self.view.generation
        if generation == self.generation:
            return []
        log.info(
            "changes.reset view=%s generation=%d subscribers=%d",
            self.view_name,
            generation,
            len(self._cursors),
        )
        self.generation = generation
        self._slots = [None] * self.capacity
        self._first = self._head + 1
        self._bytes = 0
        reason = (
            f"view {self.view_name!r} was rebuilt (generation {generation}); resync from a scan"
        )
        for cursor in self._cursors:
            cursor.reset_to(self._head, reason)
        return list(self._cursors)

    def _wake_all(self, cursors: list[FeedCursor]) -> None:
        for cursor in cursors:
            cursor.wake(self.view_name)

    # -- the subscriber side -----------------------------------------------------------

    def open(
        self,
        *,
        prefix: str = "",
        last_id: str | None = None,
        max_pending: int | None = None,
        partitions: frozenset[int] | None = None,
    ) -> Subscription:
        """Subscribe to the changes whose key text starts with *prefix* (and, given
        *partitions*, whose record came from one of them).

        With *last_id* (the ``id`` of the last change seen), resume right after it, or
        start with a :class:`Reset` when that is no longer possible. *max_pending*
        bounds how many changes may wait for this subscriber before it is dropped
        (default: as many as the feed buffers).
        """
        match = key_matcher(self.view.key_codec, prefix)
        reset = None
        after = None
        if last_id and is_gathered_id(last_id):
            reset = (
                f"{last_id[:40]}... is an id of a partitioned cluster's gathered stream, "
                f"not of this instance's stream of view {self.view_name!r}; resync from a scan"
            )
        elif last_id:
            after = ChangeId.parse(last_id)
        return self.subscribe(
            after=after, match=match, max_pending=max_pending, partitions=partitions, reset=reset
        )

    def subscribe(
        self,
        *,
        after: ChangeId | None = None,
        match: KeyMatch | None = None,
        max_pending: int | None = None,
        partitions: frozenset[int] | None = None,
        reset: str | None = None,
    ) -> Subscription:
        """A subscription to changes after *after* (default: from now on); with *reset*,
        one that starts with a reset for that reason."""
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        with self._lock:
            if self._closed:
                raise NotReadyError(
                    f"the change feed of view {self.view_name!r} is closed (its store closed)"
                )
            wake = self._check_generation()
            seq = self._head
            if after is not None:
                reset = self._why_not_after(after)
                if reset is None:
                    seq = after.seq
            cursor = FeedCursor(seq, max_pending, reset)
            accept = _accepting(match, partitions)
            sub = Subscription(self, cursor, accept, resumed=after is not None and reset is None)
            self._cursors.add(cursor)
        self._wake_all(wake)
        return sub

    def _why_not_after(self, after: ChangeId) -> str | None:
        """Why a reader cannot resume right after *after* (None: it can)."""
        if after.stream != self.stream:
            return (
                f"{after} is not from the current change stream of view "
                f"{self.view_name!r} (the server restarted since?); resync from a scan"
            )
        if after.generation != self.generation:
            return (
                f"view {self.view_name!r} was rebuilt since {after} (generation "
                f"{self.generation}); resync from a scan"
            )
        if after.seq > self._head:
            return f"{after} is ahead of the stream; resync from a scan"
        if after.seq < self._first - 1:
            return (
                f"the changes after {after} are no longer buffered (the buffer holds "
                f"the last {self.capacity}); resync from a scan"
            )
        return None

    def take(
        self, cursor: FeedCursor, limit: int
    ) -> tuple[list[RawChange | None], int, str, Reset | None]:
        """Up to *limit* buffered changes after *cursor*; arm its wake-up when none.

        Returns the changes (None where the byte budget let one go), the seq of the
        first, the id prefix of this generation and a reset to hand out first.
        """
        with self._lock:
            wake = self._check_generation()
            prefix = f"{self.stream}-{self.generation}-"
            if cursor.closed:
                raw: list[RawChange | None] = []
                start = cursor.seq + 1
                reset = None
            else:
                if cursor.dropped is None and cursor.seq < self._first - 1:
                    cursor.drop("the buffer moved past it")
                    self._cursors.discard(cursor)
                if cursor.dropped is not None:
                    raise FellBehindError(self.view_name, prefix + str(cursor.seq), cursor.dropped)
                reason = cursor.take_reset()
                reset = None if reason is None else Reset(prefix + str(cursor.seq), reason)
                start = cursor.seq + 1
                end = min(self._head, cursor.seq + limit)
                slots, cap = self._slots, self.capacity
                raw = [slots[seq % cap] for seq in range(start, end + 1)]
                cursor.advance(end)
                if not raw:
                    cursor.arm()
        self._wake_all(wake)
        return raw, start, prefix, reset

    def release(self, cursor: FeedCursor) -> None:
        """Stop *cursor* (its reader closed) and wake whoever waits on it."""
        with self._lock:
            stopped = cursor.close()
            self._cursors.discard(cursor)
        if stopped:
            cursor.wake(self.view_name)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._cursors)


class Subscription(Closing):
    """One reader of a change feed: poll it, wait on it, or iterate it; close it when done.

    Iterating yields :class:`Change` and :class:`Reset` events, blocks while there
    are none, raises :class:`FellBehindError` once dropped and ends when closed (by
    :meth:`close`, or by its feed closing with its store).
    """

    def __init__(
        self, feed: ChangeFeed, cursor: FeedCursor, accept: Accept | None, *, resumed: bool
    ) -> None:
        self.feed = feed
        # True when the subscription continues right after the id it was given.
        self.resumed = resumed
        self._cursor = cursor
        self._accept = accept
        self._event = threading.Event()
        cursor.waker = self._event.set
        self.start_id = feed.id_at(cursor.seq)

    @property
    def max_pending(self) -> int | None:
        return self._cursor.max_pending

    @property
    def position(self) -> str:
        """The id to resume from: every change up to it was returned (or did not match)."""
        return self.feed.id_at(self._cursor.seq)

    def set_waker(self, waker: Callable[[], None]) -> None:
        """Call *waker* (from the ingest thread; it must not block) when changes arrive."""
        self._cursor.waker = waker

    def poll(self, limit: int = 500) -> list[Change | Reset]:
        """The events ready now (never blocks); after an empty poll the waker is armed."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        accept = self._accept
        while True:
            raw, start, prefix, reset = self.feed.take(self._cursor, limit)
            events: list[Change | Reset] = [] if reset is None else [reset]
            for seq, change in enumerate(raw, start):
                if change is not None and (accept is None or accept(change)):
                    events.append(self._decode(prefix + str(seq), change))
            if events or not raw:
                return events

    def poll_or_wait(
        self, limit: int, deadline: float | None, clock: Callable[[], float]
    ) -> list[Change | Reset] | float:
        """:meth:`poll`, for a reader that waits: the events, or how long to wait before
        polling again (events are then empty: closed, or *deadline* by *clock* passed)."""
        events = self.poll(limit)
        if events or self._cursor.closed:
            return events
        wait = IDLE_CHECK_S if deadline is None else min(IDLE_CHECK_S, deadline - clock())
        return wait if wait > 0 else []

    def _decode(self, cid: str, change: RawChange) -> Change:
        key, partition, offset, data = change
        view = self.feed.view
        if data is None:
            return Change(cid, view.key_codec.to_text(key), None, partition, offset, None, True)
        try:
            entity = view.entity(key, data)
        except CodecError as exc:
            ts = unpack_header(data)[3]
            text = view.key_codec.to_text(key)
            return Change(
                cid, text, None, partition, offset, ts if ts >= 0 else None, False, str(exc)
            )
        return Change(
            cid, entity.key, entity.value, partition, offset, entity.timestamp, deleted=False
        )

    def get(self, timeout: float | None = None, limit: int = 500) -> list[Change | Reset]:
        """The next events, waiting up to *timeout* seconds (None: until there are some)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._event.clear()
            got = self.poll_or_wait(limit, deadline, time.monotonic)
            if isinstance(got, list):
                return got
            self._event.wait(got)

    def __iter__(self) -> Iterator[Change | Reset]:
        while not self._cursor.closed:
            yield from self.get()

    def close(self) -> None:
        """Stop receiving; an iteration in another thread ends. Safe to call twice."""
        self.feed.release(self._cursor)

    @property
    def closed(self) -> bool:
        return self._cursor.closed


def _accepting(match: KeyMatch | None, partitions: frozenset[int] | None) -> Accept | None:
    """The test of changes for a key test and a set of partitions (None: every change)."""
    if partitions is None:
        return None if match is None else (lambda change: match(change[0]))
    if match is None:
        return lambda change: change[1] in partitions
    return lambda change: change[1] in partitions and match(change[0])


def _size(change: RawChange) -> int:
    data = change[3]
    return _ENTRY_OVERHEAD + len(change[0]) + (0 if data is None else len(data))
