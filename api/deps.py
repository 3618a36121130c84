"""The request dependencies of the REST app: the store, the view a request names, the page size.

A view-scoped request resolves its view once, here: the store from the app's
state, the token's scope, the ``min_position`` wait and whether the view can
serve reads. The result carries ``X-Statestore-Position``, the view's applied
position taken *before* the read, so the data served reflects at least that
position and a client can send it back as ``min_position`` for monotonic reads.
The fast path (api/fastpath.py) calls the same dependencies directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Path, Query
from starlette.requests import Request

from statestore import (
    NotReadyError,
    StateStore,
    ViewConfig,
    ViewState,
    ViewStatus,
    parse_position,
)

from .auth import require_view
from .errors import ApiError
from .models import POSITION_HEADER
from .waits import wait_for_position

__all__ = [
    "DEFAULT_WAIT_MS",
    "POSITION_HEADER",
    "After",
    "AnyView",
    "Limit",
    "ReadableView",
    "ViewContext",
    "ViewHandle",
    "ViewName",
    "any_view",
    "get_store",
    "page_limit",
    "readable_view",
    "resolve_view",
]

DEFAULT_WAIT_MS = 1000
_SERVING: frozenset[ViewState] = frozenset({"ready", "degraded"})


class ViewHandle(Protocol):
    """What the routes use of a view returned by ``StateStore.view``."""

    config: ViewConfig
    state: ViewState

    @property
    def servable(self) -> bool: ...

    def status(self) -> ViewStatus: ...

    def applied_position(self) -> dict[int, int]: ...

    def position_text(self) -> str: ...

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]: ...

    def quarantine(
        self, after: str | None = ..., limit: int = ...
    ) -> tuple[list[dict[str, Any]], str | None]: ...


@dataclass(frozen=True, slots=True)
class ViewContext:
    """A resolved, authorised view and the position header for its response."""

    store: StateStore
    name: str
    view: ViewHandle
    headers: dict[str, str]


def get_store(request: Request) -> StateStore:
    """The app's store; 503 ``not_ready`` while the lifespan has not opened it (or has closed it)."""
    store: StateStore | None = request.app.state.store
    if store is None:
        raise NotReadyError("the store is not open yet; the server is starting or stopping")
    return store


def _check_servable(name: str, view: ViewHandle) -> None:
    """503 unless the view can answer reads: caught up, or caught up before and catching up again."""
    if view.state in _SERVING or (view.state != "failed" and view.servable):
        # Decided without view.status(), which costs more than the read it guards.
        return
    status = view.status()
    if status.state == "failed":
        raise ApiError(
            503,
            "view_failed",
            f"view {name!r} has failed: {status.reason or 'no reason recorded'}; see the server log",
            state=status.state,
            reason=status.reason,
        )
    if status.servable:
        # Caught up before (persisted): serve the stored copy while it catches up or rebuilds.
        return
    raise ApiError(
        503,
        "not_ready",
        f"view {name!r} has not caught up with its topic yet (state {status.state}); retry shortly",
        headers={"Retry-After": "1"},
        state=status.state,
        reason=status.reason,
    )


def _position_header(view: ViewHandle) -> dict[str, str]:
    return {POSITION_HEADER: view.position_text()}


async def _wait(request: Request, name: str, view: ViewHandle, text: str, wait_ms: int) -> None:
    """Wait for ``min_position`` *text*; PositionTimeoutError (504) when it is not reached."""
    try:
        wanted = parse_position(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"query.min_position: {exc}") from None
    timeout = min(wait_ms, int(request.app.state.config.api.max_wait_ms)) / 1000
    await wait_for_position(request, name, view, wanted, timeout)


async def resolve_view(
    request: Request,
    name: str,
    min_position: str | None = None,
    wait_ms: int = DEFAULT_WAIT_MS,
    *,
    readable: bool,
) -> ViewContext:
    """The view *name* for this request, resolved once: store, scope, wait, servability."""
    store = get_store(request)
    require_view(request, name)
    view: ViewHandle = store.view(name)
    request.state.view = view  # errors about the request carry its position (api/errors.py)
    if min_position is not None:
        if readable and view.state == "failed":
            # A failed view is not waited for: it would never reach the position.
            _check_servable(name, view)
        await _wait(request, name, view, min_position, wait_ms)
        # The serving copy may have been reopened while the request waited (a worker of
        # `serve --workers N`): the wait watched the current one, and the read goes there.
        store = get_store(request)
        view = store.view(name)
        request.state.view = view
    if readable:
        _check_servable(name, view)
    return ViewContext(store, name, view, _position_header(view))


ViewName = Annotated[str, Path(description="The view's name, as configured.")]
MinPosition = Annotated[
    str | None,
    Query(
        description="Wait until the view has applied these offsets (`<partition>:<offset>,...`, "
        "as returned in `X-Statestore-Position`) before answering; 504 if it does not within `wait_ms`.",
        pattern=r"^[0-9]+:(-1|[0-9]+)(,[0-9]+:(-1|[0-9]+))*$",
        examples=["0:41,1:17"],
    ),
]
WaitMs = Annotated[
    int,
    Query(
        ge=0,
        description="How long to wait for `min_position`, in milliseconds; capped at `api.max_wait_ms`.",
    ),
]


def _view_dependency(*, readable: bool, doc: str) -> Callable[..., Awaitable[ViewContext]]:
    """A dependency resolving the path's view with ``min_position`` and ``wait_ms``."""

    async def dependency(
        request: Request,
        view: ViewName,
        min_position: MinPosition = None,
        wait_ms: WaitMs = DEFAULT_WAIT_MS,
    ) -> ViewContext:
        return await resolve_view(request, view, min_position, wait_ms, readable=readable)

    dependency.__name__ = dependency.__qualname__ = "readable_view" if readable else "any_view"
    dependency.__doc__ = doc
    return dependency


any_view = _view_dependency(readable=False, doc="A view in any state (status, quarantine).")
readable_view = _view_dependency(
    readable=True,
    doc="A view that can serve entities: 503 while it has never caught up, or has failed.",
)


# A page's size when the request names none.
DEFAULT_PAGE_SIZE = 100


async def page_limit(
    request: Request,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description=f"Page size, 1 to `api.max_page_size`; {DEFAULT_PAGE_SIZE} when absent "
            "(or `api.max_page_size` when that is smaller).",
        ),
    ] = None,
) -> int:
    """The page size asked for, checked against ``api.max_page_size``; without one, the
    default page size, never more than ``api.max_page_size``."""
    most = int(request.app.state.config.api.max_page_size)
    if limit is None:
        return min(DEFAULT_PAGE_SIZE, most)
    if limit > most:
        raise ApiError(422, "invalid_request", f"query.limit: must be between 1 and {most}")
    return limit


AnyView = Annotated[ViewContext, Depends(any_view)]
ReadableView = Annotated[ViewContext, Depends(readable_view)]
Limit = Annotated[int, Depends(page_limit)]
After = Annotated[
    str | None, Query(description="The `next` cursor of the previous page, unchanged.")
]
