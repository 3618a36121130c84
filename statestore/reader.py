"""A handle on one view's reads: what a service keeps for the view it serves.

``StateStore.reader("deliveries")`` resolves the name once (``UnknownViewError``
then, not at the first read) and answers every read of that view: points, pages
of keys or key ranges, index values or ranges of them, positions, and changes.
It holds the view, whose data a rebuild swaps underneath, so a handle stays
valid for as long as the store is open; it is as cheap to call as the store.

The store's reads that name the view first (``store.scan("deliveries", ...)``)
are these handles' reads, made methods of the store by :func:`per_view`
(``AsyncStateStore`` does the same with ``AsyncViewReader``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from .changes import Subscription
from .indexes import IndexValue
from .position import parse_position
from .records import Entity
from .status import ViewStatus
from .view import Page, View

__all__ = ["ChangesOpener", "Readers", "ViewReader", "per_view"]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Readers(Protocol[R_co]):
    """What hands out a one-view read handle by view name (``StateStore.reader``)."""

    def reader(self, view: str) -> R_co: ...


def per_view(
    read: Callable[Concatenate[R, P], T],
) -> Callable[Concatenate[Readers[R], str, P], T]:
    """The one-view handle's method *read* as a method of its owner that takes the view's
    name first: ``owner.scan(view, *args)`` is ``owner.reader(view).scan(*args)``."""

    def run(owner: Readers[R], view: str, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return read(owner.reader(view), *args, **kwargs)

    return functools.update_wrapper(run, read, assigned=("__name__", "__doc__"), updated=())


class ChangesOpener(Protocol):
    """Subscribes to one view's changes (``StateStore.changes`` bound to the view)."""

    def __call__(
        self, *, prefix: str = "", last_id: str | None = None, max_pending: int | None = None
    ) -> Subscription: ...


class ViewReader:
    """The reads of one view. Every page is in order and resumes from its ``next`` cursor
    (pass it back as *after*); keys are key text, as the REST API takes them."""

    __slots__ = ("_changes", "_view", "name")

    def __init__(self, view: View, changes: ChangesOpener) -> None:
        self._view = view
        self._changes = changes
        self.name = view.name

    def __repr__(self) -> str:
        return f"ViewReader({self.name!r})"

    def get(self, key: str) -> Entity | None:
        """The entity under *key*, or None when absent or deleted."""
        return self._view.get(key)

    def lookup(self, keys: Sequence[str]) -> list[Entity | None]:
        """The entities under *keys*, in that order; None where absent."""
        return self._view.lookup(list(keys))

    def scan(
        self,
        prefix: str = "",
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page:
        """Entities in key order whose key starts with *prefix* and lies from *start*
        (inclusive) to *end* (exclusive); ``InvalidRangeError`` when start is after end."""
        return self._view.scan(prefix, after, limit, start=start, end=end)

    def by(
        self,
        field: str,
        value: IndexValue,
        *,
        limit: int = 100,
        after: str | None = None,
        start: str | None = None,
    ) -> Page:
        """Entities whose indexed *field* equals *value*, in key order (from the key
        *start* on, inclusive, when given)."""
        return self._view.by(field, value, after, limit, start=start)

    def by_range(
        self,
        field: str,
        *,
        start: IndexValue | None = None,
        end: IndexValue | None = None,
        limit: int = 100,
        after: str | None = None,
        start_key: str | None = None,
    ) -> Page:
        """Entities whose indexed *field* lies from *start* (inclusive) to *end*
        (exclusive), in value order then key order (with *start_key*, those of the *start*
        value from that key on). A range covers one type: numbers by value, strings by
        code point, booleans false before true."""
        return self._view.by_range(field, start, end, after, limit, start_key=start_key)

    def position(self) -> dict[int, int]:
        """``{partition: offset of the last applied record}`` (-1: none yet)."""
        return self._view.applied_position()

    def wait_for(self, position: Mapping[int, int] | str, timeout: float = 5.0) -> dict[int, int]:
        """Block until every ``partition: offset`` of *position* (a mapping, or the text of
        ``X-Statestore-Position``) is applied; ``PositionTimeoutError`` after *timeout* s."""
        wanted = parse_position(position) if isinstance(position, str) else dict(position)
        return self._view.wait_for(wanted, timeout)

    def changes(
        self, *, prefix: str = "", last_id: str | None = None, max_pending: int | None = None
    ) -> Subscription:
        """Follow the view's changes (keys starting with *prefix*); close() when done."""
        return self._changes(prefix=prefix, last_id=last_id, max_pending=max_pending)

    def status(self) -> ViewStatus:
        """The view's state, keys, lag and partitions now."""
        return self._view.status()
