"""Waiting for ``min_position`` without holding a thread, and at most so many at once per client.

A request that waits for a position awaits an event the view sets after each
applied batch (``View.watch``), so waiting requests cost no worker thread and
reads beside them are not held up. In a serving process of ``statestore serve
--workers N`` a wait also asks the process's copy of the store to catch up with
the ingesting process at once (``app.state.catch_up``), and follows the view to
a new copy when the process reopens the store (after a rebuild). Each client
(its token's name, or its address without tokens) may have
``[api] max_waits_per_client`` waits open; one more is answered 429 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from starlette.requests import Request

from statestore import PositionTimeoutError

from .auth import principal_of
from .errors import ApiError

__all__ = ["wait_for_position"]

# How often a wait in a serving copy asks it to catch up again.
_NUDGE_S = 0.01


class Watchable(Protocol):
    """What a wait needs of a view."""

    @property
    def state(self) -> str: ...

    def applied_position(self) -> dict[int, int]: ...

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]: ...


def _reached(applied: dict[int, int], wanted: dict[int, int]) -> bool:
    return all(applied.get(p, -1) >= o for p, o in wanted.items())


def _client(request: Request) -> str:
    principal = principal_of(request)
    if principal is not None:
        return f"token:{principal.name}"
    return f"addr:{request.client.host if request.client else '-'}"


def _current(request: Request, name: str, view: Watchable) -> Watchable:
    """The view as the app serves it now (a serving copy may have been reopened)."""
    store = request.app.state.store
    if store is None:
        return view
    current: Watchable = store.view(name)
    return current


async def wait_for_position(
    request: Request, name: str, view: Watchable, wanted: dict[int, int], timeout: float
) -> None:
    """Return once *view* has applied *wanted*; PositionTimeoutError after *timeout* seconds."""
    if _reached(view.applied_position(), wanted):
        return
    open_waits: dict[str, int] = request.app.state.waits
    client = _client(request)
    limit: int = request.app.state.config.api.max_waits_per_client
    if open_waits.get(client, 0) >= limit:
        raise ApiError(
            429,
            "too_many_waits",
            f"this client already has {limit} requests waiting for a position "
            "([api] max_waits_per_client); retry when one has answered",
            headers={"Retry-After": "1"},
        )
    open_waits[client] = open_waits.get(client, 0) + 1
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    catch_up: Callable[[], None] | None = getattr(request.app.state, "catch_up", None)

    def wake() -> None:  # from the ingest thread
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(woken.set)

    stop = view.watch(wake)
    try:
        deadline = loop.time() + timeout
        while True:
            woken.clear()  # before the check: a batch applied after it sets it again
            current = _current(request, name, view)
            if current is not view:  # the serving copy was reopened
                stop()
                view = current
                stop = view.watch(wake)
            if _reached(view.applied_position(), wanted):
                return
            if catch_up is not None:
                catch_up()
            left = deadline - loop.time()
            if left <= 0 or view.state == "failed":
                raise PositionTimeoutError(name, wanted, view.applied_position())
            if catch_up is not None:
                # A copy wakes waiters only when a catch-up brings something new: ask again
                # soon, until the ingesting process has applied the position too.
                left = min(left, _NUDGE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), left)
    finally:
        stop()
        open_waits[client] -= 1
        if not open_waits[client]:
            del open_waits[client]
