"""The embedded API for asyncio services: the same reads, none of them blocking the loop.

:class:`AsyncStateStore` wraps an open :class:`~statestore.StateStore` (it does not
own it: open, bootstrap, start and close the store as usual). Where each read runs
was chosen by measurement (a 100,000-key JSON view, values of ~130 bytes, on the
2-core development host, both paths timed in one process):

==========================================  ============  ===================
read                                        on the loop   hop to a thread
==========================================  ============  ===================
point get (block cache warm)                4.6 µs        80-115 µs (the hop)
lookup of 10 / 100 / 1,000 keys             37 / 358 / 6,847 µs
page of 10 / 100 / 1,000 entities (scan)    69 / 904 / 9,653 µs
page of 100 by an index range               1,004 µs
==========================================  ============  ===================

So a point get runs on the loop: the hop would cost 20 times the read. A lookup of
up to ``inline_keys`` (16) keys runs on the loop too, more keys in a thread. Pages
(scans, index reads) run in a thread: a page of 100 holds the loop for a
millisecond. A read that misses RocksDB's caches goes to the disk on the loop for a
get; a service whose working set is far larger than ``[store] block_cache_mb``
may pass ``inline_keys=0`` to move every read off the loop.

Waiting for a position (:meth:`AsyncViewReader.wait_for`) and for changes
(``async for change in store.changes(...)``) hold no thread: the ingest thread
wakes the loop through ``call_soon_threadsafe`` after each applied batch
(``View.watch``, ``Subscription.set_waker``). Cancelling a waiting task ends its
wait; closing a change iterator (``aclose()``, ``async with``, or closing the
:class:`AsyncStateStore`) ends the ``async for`` that reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Concatenate, ParamSpec, TypeVar

from .changes import Change, Reset, Subscription
from .closing import AsyncClosing
from .errors import NotReadyError, PositionTimeoutError
from .position import parse_position
from .reader import ViewReader, per_view
from .records import Entity
from .status import ViewStatus
from .store import StateStore
from .view import View

__all__ = ["AsyncChanges", "AsyncStateStore", "AsyncViewReader"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncChanges(AsyncClosing):
    """An asyncio iterator over one subscription's events (:class:`Change`, :class:`Reset`).

    ``async for event in changes`` waits without a thread and ends once closed; a
    subscriber that fell behind gets ``FellBehindError`` (resume with its ``last_id``).
    """

    def __init__(self, sub: Subscription, on_close: Callable[[AsyncChanges], None]) -> None:
        self.subscription = sub
        self._on_close = on_close
        self._pending: list[Change | Reset] = []
        self._woken = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # from the ingest thread; the loop may have closed (then: gone)
            loop.call_soon_threadsafe(self._woken.set)

        sub.set_waker(wake)

    @property
    def position(self) -> str:
        """The id to resume from (``last_id``): every event up to it was returned."""
        return self.subscription.position

    def __aiter__(self) -> AsyncChanges:
        return self

    async def __anext__(self) -> Change | Reset:
        while not self._pending:
            batch = await self.get()
            if not batch and self.subscription.closed:
                raise StopAsyncIteration
            self._pending = batch
        return self._pending.pop(0)

    async def get(self, timeout: float | None = None, limit: int = 500) -> list[Change | Reset]:
        """The next events, waiting up to *timeout* seconds (None: until some arrive or the
        iterator is closed; then the list is empty)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self._woken.clear()  # before the poll: a batch applied after it sets it again
            got = self.subscription.poll_or_wait(limit, deadline, loop.time)
            if isinstance(got, list):
                return got
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), got)

    async def aclose(self) -> None:
        """Stop receiving; an ``async for`` over this iterator ends. Safe to call twice."""
        self.close()

    def close(self) -> None:
        self.subscription.close()
        self._woken.set()
        self._on_close(self)


async def wait_for_position(
    view: View, wanted: Mapping[int, int], timeout: float
) -> dict[int, int]:
    """Return *view*'s position once it has applied *wanted*; PositionTimeoutError after
    *timeout* seconds, or at once when the view has failed. Holds no thread."""
    target = dict(wanted)

    def reached() -> bool:
        applied = view.applied_position()
        return all(applied.get(p, -1) >= o for p, o in target.items())

    if reached():
        return view.applied_position()
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:  # from the ingest thread, under the view's lock: hand over only
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(woken.set)

    stop = view.watch(wake)
    try:
        deadline = loop.time() + max(0.0, timeout)
        while True:
            woken.clear()
            if reached():
                return view.applied_position()
            left = deadline - loop.time()
            if left <= 0 or view.state == "failed":
                raise PositionTimeoutError(view.name, target, view.applied_position())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), left)
    finally:
        stop()


def _offloaded(
    read: Callable[Concatenate[ViewReader, P], T],
) -> Callable[Concatenate[AsyncViewReader, P], Coroutine[Any, Any, T]]:
    """An AsyncViewReader method that runs ViewReader's *read* in the store's executor."""

    async def run(self: AsyncViewReader, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._store.offload(read, self._reader, *args, **kwargs)

    return functools.update_wrapper(run, read, assigned=("__name__", "__doc__"), updated=())


class AsyncViewReader:
    """The reads of one view, awaitable (:class:`~statestore.ViewReader`'s, off the loop
    where they cost more than a thread hop)."""

    __slots__ = ("_reader", "_store", "_view", "name")

    def __init__(self, store: AsyncStateStore, reader: ViewReader, view: View) -> None:
        self._store = store
        self._reader = reader
        self._view = view
        self.name = reader.name

    def __repr__(self) -> str:
        return f"AsyncViewReader({self.name!r})"

    @property
    def sync(self) -> ViewReader:
        """The blocking handle on the same view (for code that runs in a thread anyway)."""
        return self._reader

    async def get(self, key: str) -> Entity | None:
        """The entity under *key*, or None (read on the loop: cheaper than a thread hop)."""
        if self._store.inline_keys:
            return self._reader.get(key)
        return await self._store.offload(self._reader.get, key)

    async def lookup(self, keys: Sequence[str]) -> list[Entity | None]:
        """The entities under *keys*, in that order; None where absent."""
        if len(keys) <= self._store.inline_keys:
            return self._reader.lookup(keys)
        return await self._store.offload(self._reader.lookup, list(keys))

    # Pages: ViewReader's, with its signatures, run in the executor.
    scan = _offloaded(ViewReader.scan)
    by = _offloaded(ViewReader.by)
    by_range = _offloaded(ViewReader.by_range)

    def position(self) -> dict[int, int]:
        """``{partition: offset of the last applied record}`` (-1: none yet)."""
        return self._reader.position()

    async def wait_for(
        self, position: Mapping[int, int] | str, timeout: float = 5.0
    ) -> dict[int, int]:
        """Until every ``partition: offset`` of *position* (a mapping, or the text of
        ``X-Statestore-Position``) is applied; PositionTimeoutError after *timeout* s."""
        wanted = parse_position(position) if isinstance(position, str) else position
        return await wait_for_position(self._view, wanted, timeout)

    def changes(
        self, *, prefix: str = "", last_id: str | None = None, max_pending: int | None = None
    ) -> AsyncChanges:
        """``async for event in reader.changes()``: the view's changes from now on (or after
        *last_id*), of keys starting with *prefix*. Close it (``async with``) when done."""
        sub = self._reader.changes(prefix=prefix, last_id=last_id, max_pending=max_pending)
        return self._store.adopt(sub)

    def status(self) -> ViewStatus:
        """The view's state, keys, lag and partitions now."""
        return self._reader.status()


class AsyncStateStore(AsyncClosing):
    """An asyncio face on an open :class:`~statestore.StateStore`.

    *executor* runs the reads moved off the loop (default: the loop's default
    executor). *inline_keys* is the most keys a lookup reads on the loop (0: every
    read, point gets included, goes to the executor). Closing it ends the change
    iterators it opened; the store stays open.
    """

    def __init__(
        self, store: StateStore, *, executor: Executor | None = None, inline_keys: int = 16
    ) -> None:
        if inline_keys < 0:
            raise ValueError("inline_keys must be 0 or more")
        self.store = store
        self.inline_keys = inline_keys
        self._executor = executor
        self._readers: dict[str, AsyncViewReader] = {}
        self._changes: set[AsyncChanges] = set()
        self._closed = False

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the executor and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def reader(self, view: str) -> AsyncViewReader:
        """The awaitable reads of *view* (UnknownViewError at once for an unknown name)."""
        found = self._readers.get(view)
        if found is None:
            found = AsyncViewReader(self, self.store.reader(view), self.store.view(view))
            self._readers[view] = found
        return found

    def adopt(self, sub: Subscription) -> AsyncChanges:
        """An async iterator over *sub*, closed with this store (call from the loop)."""
        if self._closed:
            sub.close()
            raise NotReadyError("the async store is closed; open change streams on a new one")
        changes = AsyncChanges(sub, self._changes.discard)
        self._changes.add(changes)
        return changes

    # The reads of the view named first: AsyncViewReader's, with its signatures after the name.
    get = per_view(AsyncViewReader.get)
    lookup = per_view(AsyncViewReader.lookup)
    scan = per_view(AsyncViewReader.scan)
    by = per_view(AsyncViewReader.by)
    by_range = per_view(AsyncViewReader.by_range)
    wait_for = per_view(AsyncViewReader.wait_for)
    changes = per_view(AsyncViewReader.changes)

    async def aclose(self) -> None:
        """End every change iterator opened here. Safe to call twice; the store stays open."""
        self._closed = True
        for changes in list(self._changes):
            changes.close()
