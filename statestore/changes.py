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
"""

from __future__ import annotations

import binascii
import logging
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .apply import Applied
from .codecs import KeyCodec
from .errors import CodecError, InvalidKeyError, StateStoreError
from .records import unpack_header

if TYPE_CHECKING:
    from .store import StateStore
    from .view import View

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_BUFFER_BYTES",
    "Change",
    "ChangeFeed",
    "ChangeId",
    "FellBehindError",
    "Reset",
    "Subscription",
    "feed_of",
    "key_matcher",
    "open_changes",
]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
# What one buffered change costs besides its key and value bytes (tuple, ints, slot).
_ENTRY_OVERHEAD = 100
# An idle subscriber looks for a rebuild swap this often (a swap applies no batch).
_IDLE_CHECK_S = 1.0
_ID = re.compile(r"([0-9a-f]{8})-([0-9]+)-([0-9]+)")

# (stored key, partition, offset, stored record or None for a delete), as in Applied.changes.
RawChange = tuple[bytes, int, int, bytes | None]
KeyMatch = Callable[[bytes], bool]
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


class ChangeFeed:
    """The numbered changes of one view, in a bounded ring, and the subscriptions reading them.

    *buffer* bounds the ring in changes and *buffer_bytes* in key and value bytes;
    the oldest changes leave first.
    """

    def __init__(
        self, view: View, *, buffer: int = DEFAULT_BUFFER, buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> None:
        if buffer < 1 or buffer_bytes < 1:
            raise ValueError("a change feed needs room for at least one change")
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
        self._subs: set[Subscription] = set()

    @property
    def head(self) -> ChangeId:
        """The id of the newest change (``seq`` 0 when there is none yet)."""
        with self._lock:
            return ChangeId(self.stream, self.generation, self._head)

    def __len__(self) -> int:
        with self._lock:
            return self._head - self._first + 1

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
            wake = self._check_generation(view)
            if batch:
                wake.extend(self._append(batch))
        _wake_all(wake)

    def _append(self, batch: list[RawChange]) -> list[Subscription]:
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
        for sub in list(self._subs):
            limit = sub.max_pending
            if sub._cursor < first - 1:
                reason = f"the buffer of the last {head - first + 1} changes moved past it"
            elif limit is not None and before - sub._cursor > limit:
                reason = f"more than {limit} changes were waiting for it"
            else:
                if sub._armed:
                    sub._armed = False
                    wake.append(sub)
                continue
            sub._dropped = reason
            self._subs.discard(sub)
            wake.append(sub)
            log.info(
                "changes.dropped view=%s pending=%d reason=%s",
                self.view_name,
                head - sub._cursor,
                reason,
            )
        return wake

    def _check_generation(self, view: View) -> list[Subscription]:
        """On a rebuild swap, empty the ring and queue a reset for every subscriber."""
        generation = view.generation
        if generation == self.generation:
            return []
        log.info(
            "changes.reset view=%s generation=%d subscribers=%d",
            self.view_name,
            generation,
            len(self._subs),
        )
        self.generation = generation
        self._slots = [None] * self.capacity
        self._first = self._head + 1
        self._bytes = 0
        reason = (
            f"view {self.view_name!r} was rebuilt (generation {generation}); resync from a scan"
        )
        for sub in self._subs:
            sub._cursor = self._head
            sub._reset = reason
            sub._armed = False
        return list(self._subs)

    # -- the subscriber side -----------------------------------------------------------

    def subscribe(
        self,
        view: View,
        *,
        after: ChangeId | None = None,
        match: KeyMatch | None = None,
        max_pending: int | None = None,
    ) -> Subscription:
        """A subscription to changes after *after* (default: from now on)."""
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        with self._lock:
            wake = self._check_generation(view)
            head = self._head
            cursor, reset = head, None
            resumed = False
            if after is not None:
                if after.stream != self.stream:
                    reset = (
                        f"{after} is not from the current change stream of view "
                        f"{self.view_name!r} (the server restarted since?); resync from a scan"
                    )
                elif after.generation != self.generation:
                    reset = (
                        f"view {self.view_name!r} was rebuilt since {after} (generation "
                        f"{self.generation}); resync from a scan"
                    )
                elif after.seq > head:
                    reset = f"{after} is ahead of the stream; resync from a scan"
                elif after.seq < self._first - 1:
                    reset = (
                        f"the changes after {after} are no longer buffered (the buffer holds "
                        f"the last {self.capacity}); resync from a scan"
                    )
                else:
                    cursor, resumed = after.seq, True
            sub = Subscription(self, view, cursor, reset, match, max_pending, resumed=resumed)
            self._subs.add(sub)
        _wake_all(wake)
        return sub

    def _take(
        self, sub: Subscription, limit: int
    ) -> tuple[list[RawChange | None], int, str, Reset | None]:
        """Up to *limit* buffered changes after *sub*'s cursor; arm its wake-up when none."""
        view = sub._view
        with self._lock:
            wake = self._check_generation(view)
            prefix = f"{self.stream}-{self.generation}-"
            if sub._closed:
                raw: list[RawChange | None] = []
                start = sub._cursor + 1
                reset = None
            else:
                if sub._dropped is None and sub._cursor < self._first - 1:
                    sub._dropped = "the buffer moved past it"
                    self._subs.discard(sub)
                if sub._dropped is not None:
                    raise FellBehindError(self.view_name, prefix + str(sub._cursor), sub._dropped)
                reset = None
                if sub._reset is not None:
                    reset = Reset(prefix + str(sub._cursor), sub._reset)
                    sub._reset = None
                start = sub._cursor + 1
                end = min(self._head, sub._cursor + limit)
                slots, cap = self._slots, self.capacity
                raw = [slots[seq % cap] for seq in range(start, end + 1)]
                sub._cursor = max(sub._cursor, end)
                if not raw:
                    sub._armed = True
        _wake_all(wake)
        return raw, start, prefix, reset

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)


class Subscription:
    """One reader of a change feed: poll it, wait on it, or iterate it; close it when done.

    Iterating yields :class:`Change` and :class:`Reset` events, blocks while there
    are none, raises :class:`FellBehindError` once dropped and ends when closed.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        view: View,
        cursor: int,
        reset: str | None,
        match: KeyMatch | None,
        max_pending: int | None,
        *,
        resumed: bool = False,
    ) -> None:
        self.feed = feed
        self.max_pending = max_pending
        # True when the subscription continues right after the id it was given.
        self.resumed = resumed
        self._view = view
        self._match = match
        # Written under the feed's lock only.
        self._cursor = cursor
        self._reset = reset
        self._armed = False
        self._dropped: str | None = None
        self._closed = False
        self._event = threading.Event()
        self._waker: Callable[[], None] = self._event.set
        self.start_id = f"{feed.stream}-{feed.generation}-{cursor}"

    @property
    def position(self) -> str:
        """The id to resume from: every change up to it was returned (or did not match)."""
        return f"{self.feed.stream}-{self.feed.generation}-{self._cursor}"

    def set_waker(self, waker: Callable[[], None]) -> None:
        """Call *waker* (from the ingest thread; it must not block) when changes arrive."""
        self._waker = waker

    def _wake(self) -> None:
        try:
            self._waker()
        except Exception:
            # e.g. the event loop of an async reader has closed; that reader is gone.
            log.debug("changes.wake_failed view=%s", self.feed.view_name, exc_info=True)

    def poll(self, limit: int = 500) -> list[Change | Reset]:
        """The events ready now (never blocks); after an empty poll the waker is armed."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        match = self._match
        while True:
            raw, start, prefix, reset = self.feed._take(self, limit)
            events: list[Change | Reset] = [] if reset is None else [reset]
            for seq, change in enumerate(raw, start):
                if change is not None and (match is None or match(change[0])):
                    events.append(self._decode(prefix + str(seq), change))
            if events or not raw:
                return events

    def _decode(self, cid: str, change: RawChange) -> Change:
        key, partition, offset, data = change
        view = self._view
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
            events = self.poll(limit)
            if events or self._closed:
                return events
            wait = _IDLE_CHECK_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return []
            self._event.wait(wait)

    def __iter__(self) -> Iterator[Change | Reset]:
        while not self._closed:
            yield from self.get()

    def close(self) -> None:
        """Stop receiving; an iteration in another thread ends. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.feed._remove(self)
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _size(change: RawChange) -> int:
    data = change[3]
    return _ENTRY_OVERHEAD + len(change[0]) + (0 if data is None else len(data))


def _wake_all(subs: list[Subscription]) -> None:
    for sub in subs:
        sub._wake()


_FEEDS: weakref.WeakKeyDictionary[View, ChangeFeed] = weakref.WeakKeyDictionary()
_FEEDS_LOCK = threading.Lock()


def feed_of(
    store: StateStore,
    view: str,
    *,
    buffer: int = DEFAULT_BUFFER,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> ChangeFeed:
    """The change feed of *view*, created and attached on first use.

    The sizes apply when the feed is created; the ring holds at least two
    consumed batches, so a reader that keeps up is never dropped by one batch.
    """
    v = store.view(view)
    with _FEEDS_LOCK:
        feed = _FEEDS.get(v)
        if feed is None:
            floor = 2 * store.config.store.batch_size
            feed = ChangeFeed(v, buffer=max(buffer, floor), buffer_bytes=buffer_bytes)
            store.subscribe(view, feed.on_applied)
            _FEEDS[v] = feed
            log.info("changes.feed view=%s buffer=%d", view, feed.capacity)
    return feed


def open_changes(
    store: StateStore,
    view: str,
    *,
    prefix: str = "",
    last_id: str | None = None,
    max_pending: int | None = None,
    buffer: int = DEFAULT_BUFFER,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> Subscription:
    """Subscribe to the changes of *view* whose key text starts with *prefix*.

    With *last_id* (the ``id`` of the last change seen), resume right after it, or
    start with a :class:`Reset` when that is no longer possible. *max_pending*
    bounds how many changes may wait for this subscriber before it is dropped
    (default: as many as the feed buffers).
    """
    v = store.view(view)
    match = key_matcher(v.key_codec, prefix)
    after = ChangeId.parse(last_id) if last_id else None
    feed = feed_of(store, view, buffer=buffer, buffer_bytes=buffer_bytes)
    return feed.subscribe(v, after=after, match=match, max_pending=max_pending)
