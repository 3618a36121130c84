"""The REST routes: thin translations of HTTP requests into StateStore reads.

Every view-scoped response carries ``X-Statestore-Position``, the view's applied
position taken *before* the read, so the data served reflects at least that
position and a client can send it back as ``min_position`` for monotonic reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, Path, Query
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from statestore import (
    IndexValue,
    NotReadyError,
    StateStore,
    ViewConfig,
    ViewState,
    ViewStatus,
    format_position,
    parse_index_value,
    parse_position,
)

from .auth import may_see, principal_of, require_view
from .errors import POSITION_HEADER, ApiError, error_responses
from .models import (
    EntityBody,
    EntityPage,
    ErrorBody,
    Health,
    LookupRequest,
    LookupResult,
    QuarantinePage,
    Readiness,
    ViewInfo,
    ViewList,
    json_response,
)
from .waits import wait_for_position

__all__ = [
    "DEFAULT_WAIT_MS",
    "ENTITY_PATH",
    "LOOKUP_PATH",
    "lookup_response",
    "open_router",
    "plain_entity",
    "readable_view",
    "router",
]

DEFAULT_WAIT_MS = 1000
ENTITY_PATH = "/views/{view}/entities/{key:anytext}"
LOOKUP_PATH = "/views/{view}/lookup"
_SERVING: frozenset[ViewState] = frozenset({"ready", "degraded"})


class _AnyText(Convertor[str]):
    """Like Starlette's ``path``, but line breaks too: a key may hold ``\n`` (sent as ``%0A``)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())

open_router = APIRouter(tags=["health"])
router = APIRouter(tags=["views"])


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
    store: StateStore | None = request.app.state.store
    if store is None:
        raise NotReadyError("the store is not open yet; the server is starting or stopping")
    return store


def _max_wait_ms(request: Request) -> int:
    return int(request.app.state.config.api.max_wait_ms)


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


async def _resolve(
    request: Request, name: str, min_position: str | None, wait_ms: int, *, readable: bool
) -> ViewContext:
    store = get_store(request)
    require_view(request, name)
    view: ViewHandle = store.view(name)
    request.state.view = view
    if readable and view.state == "failed":
        _check_servable(name, view)
    if min_position is not None:
        try:
            wanted = parse_position(min_position)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"query.min_position: {exc}") from None
        timeout = min(wait_ms, _max_wait_ms(request)) / 1000
        await wait_for_position(request, name, view, wanted, timeout)
    if readable:
        _check_servable(name, view)
    return ViewContext(store, name, view, {POSITION_HEADER: view.position_text()})


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


async def any_view(
    request: Request,
    view: ViewName,
    min_position: MinPosition = None,
    wait_ms: WaitMs = DEFAULT_WAIT_MS,
) -> ViewContext:
    """A view in any state (status, quarantine)."""
    return await _resolve(request, view, min_position, wait_ms, readable=False)


async def readable_view(
    request: Request,
    view: ViewName,
    min_position: MinPosition = None,
    wait_ms: WaitMs = DEFAULT_WAIT_MS,
) -> ViewContext:
    """A view that can serve entities: 503 while it has never caught up, or has failed."""
    return await _resolve(request, view, min_position, wait_ms, readable=True)


async def page_limit(
    request: Request,
    limit: Annotated[int, Query(ge=1, description="Page size, 1 to `api.max_page_size`.")] = 100,
) -> int:
    """The page size asked for, checked against ``api.max_page_size``."""
    most = int(request.app.state.config.api.max_page_size)
    if limit > most:
        raise ApiError(422, "invalid_request", f"query.limit: must be between 1 and {most}")
    return limit


AnyView = Annotated[ViewContext, Depends(any_view)]
ReadableView = Annotated[ViewContext, Depends(readable_view)]
Limit = Annotated[int, Depends(page_limit)]
After = Annotated[
    str | None, Query(description="The `next` cursor of the previous page, unchanged.")
]


def _exact_tail(request: Request, marker: str, decoded: str) -> str:
    """The path after *marker*, percent-decoded exactly once from the raw request path.

    Servers already decode the path once; decoding the raw bytes ourselves also
    rejects percent-escapes that are not UTF-8 instead of turning them into U+FFFD.
    """
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return decoded
    raw = raw.split(b"?", 1)[0]
    at = raw.find(marker.encode("ascii"))
    if at < 0:
        return decoded
    try:
        return unquote_to_bytes(raw[at + len(marker) :]).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_key", "the path is not UTF-8 once percent-decoded") from None


_POSITION_DOC = {
    POSITION_HEADER: {
        "description": "The view's applied position when the read began (`<partition>:<offset>,...`).",
        "schema": {"type": "string"},
        "required": True,
    }
}


def _ok(model: type[Any], description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description, "headers": _POSITION_DOC}}


# -- health ---------------------------------------------------------------------------


@open_router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    """200 while the process serves requests."""
    return json_response({"status": "ok"})


@open_router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={
        503: {"model": Readiness, "description": "A view has not caught up, or has failed."}
    },
)
async def readyz(request: Request) -> Response:
    """200 when every view has caught up with its topic (and none has failed), else 503."""
    store: StateStore | None = request.app.state.store
    if store is None:
        return json_response({"status": "not_ready", "views": []}, 503)
    visible = may_see(request)
    views = [
        {"name": s.name, "state": s.state, "reason": s.reason}
        for s in store.status()
        if visible(s.name)
    ]
    ready = store.ready()
    return json_response(
        {"status": "ready" if ready else "not_ready", "views": views}, 200 if ready else 503
    )


# -- views ----------------------------------------------------------------------------


def _view_info(store: StateStore, status: ViewStatus) -> dict[str, Any]:
    data = status.to_dict()
    data["position"] = format_position(store.position(status.name))
    data["schemas"] = store.schemas(status.name)
    return data


@router.get(
    "/views",
    response_model=None,
    summary="List views",
    responses={200: {"model": ViewList}, **error_responses(503)},
)
async def list_views(request: Request) -> Response:
    """Every view the caller may read, with its state, keys, lag and position."""
    store = get_store(request)
    principal = principal_of(request)
    views = [
        _view_info(store, s)
        for s in store.status()
        if principal is None or principal.may_read(s.name)
    ]
    return json_response({"views": views})


@router.get(
    "/views/{view}",
    response_model=None,
    summary="View status",
    responses={**_ok(ViewInfo, "The view's status."), **error_responses(404, 422, 429, 503, 504)},
)
async def view_status(ctx: AnyView) -> Response:
    """The full status of one view, whatever its state."""
    return json_response(_view_info(ctx.store, ctx.view.status()), headers=ctx.headers)


@router.get(
    "/views/{view}/entities",
    response_model=None,
    summary="Scan entities",
    responses={
        **_ok(EntityPage, "A page of entities in key order."),
        **error_responses(404, 422, 429, 503, 504),
    },
)
def scan_entities(
    ctx: ReadableView,
    limit: Limit,
    prefix: Annotated[str, Query(description="Only keys starting with this text.")] = "",
    start: Annotated[
        str,
        Query(
            description="Only keys from this one on (inclusive), in key order; empty: no start. "
            "Combines with `prefix` (keys both admit)."
        ),
    ] = "",
    end: Annotated[
        str,
        Query(
            description="Only keys before this one (exclusive); empty: no end. A `start` after "
            "`end` is 422 `invalid_range`."
        ),
    ] = "",
    after: After = None,
) -> Response:
    """Entities whose key starts with `prefix` and lies in [`start`, `end`), in key order,
    `limit` at a time."""
    page = ctx.store.scan(ctx.name, prefix, after=after, limit=limit, start=start, end=end)
    items = [e.to_dict() for e in page.items]
    return json_response({"items": items, "next": page.next}, headers=ctx.headers)


@router.get(
    ENTITY_PATH,
    response_model=None,
    summary="Get one entity",
    responses={
        **_ok(EntityBody, "The entity."),
        **error_responses(422, 429, 503, 504),
        404: {
            "model": ErrorBody,
            "description": "Unknown view (`unknown_view`), or no entity under the key (`not_found`).",
        },
    },
)
async def get_entity(request: Request, ctx: ReadableView, key: str) -> Response:
    """The entity under `key`; percent-encode the key (`/` as `%2F`, `%` as `%25`, ...)."""
    exact = _exact_tail(request, f"/views/{ctx.name}/entities/", key)
    entity = ctx.store.get(ctx.name, exact)
    if entity is None:
        raise ApiError(404, "not_found", f"no entity under key {exact!r} in view {ctx.name!r}")
    return json_response(entity.to_dict(), headers=ctx.headers)


async def plain_entity(request: Request, view: str, key: str) -> Response:
    """``get_entity`` for a request without query parameters, its dependency called directly.

    With no query string there is nothing for FastAPI to parse or validate, so the
    same checks and the same endpoint give the same answer at a fraction of the cost.
    """
    ctx = await readable_view(request, view)
    return await get_entity(request, ctx, key)


@router.post(
    LOOKUP_PATH,
    response_model=None,
    summary="Get many entities",
    responses={
        **_ok(LookupResult, "The entities, in the order asked; null where absent."),
        **error_responses(400, 404, 413, 422, 429, 503, 504),
    },
)
def lookup(request: Request, ctx: ReadableView, body: LookupRequest) -> Response:
    """Many keys in one call; absent or deleted keys come back as null, in the order asked."""
    return lookup_response(request, ctx, body.keys)


def lookup_response(request: Request, ctx: ViewContext, keys: list[str]) -> Response:
    """The lookup's answer once the keys are read from the body (the route and the fast path)."""
    most = int(request.app.state.config.api.max_lookup_keys)
    if len(keys) > most:
        raise ApiError(
            422,
            "too_many_keys",
            f"{len(keys)} keys asked; at most {most} per lookup, split the request",
        )
    found = ctx.store.lookup(ctx.name, keys)
    items = [None if e is None else e.to_dict() for e in found]
    return json_response({"items": items}, headers=ctx.headers)


def _check_index(ctx: ViewContext, field: str) -> None:
    """404 ``unknown_index`` unless the view indexes *field*, naming the fields it does index."""
    if field not in ctx.view.config.indexes:
        indexed = ", ".join(ctx.view.config.indexes) or "none"
        raise ApiError(
            404,
            "unknown_index",
            f"view {ctx.name!r} has no index on {field!r} (indexed fields: {indexed})",
        )


@router.get(
    "/views/{view}/by/{field}/{value:anytext}",
    response_model=None,
    summary="Find entities by an indexed field",
    responses={
        **_ok(EntityPage, "A page of matching entities in key order."),
        **error_responses(422, 429, 503, 504),
        404: {
            "model": ErrorBody,
            "description": "Unknown view (`unknown_view`) or a field without an index (`unknown_index`).",
        },
    },
)
def find_by(
    request: Request,
    ctx: ReadableView,
    limit: Limit,
    field: Annotated[
        str, Path(description="An indexed field path, e.g. `status` or `address.city`.")
    ],
    value: Annotated[
        str,
        Path(
            description="The value to match, percent-encoded. A JSON number or boolean (`42`, `1.5`, "
            '`true`) matches that number or boolean; a JSON string in double quotes (`"42"`) matches '
            "that string; anything else matches as plain text."
        ),
    ],
    after: After = None,
) -> Response:
    """Entities whose indexed `field` equals `value`, in key order, `limit` at a time."""
    _check_index(ctx, field)
    text = _exact_tail(request, f"/views/{ctx.name}/by/{field}/", value)
    page = ctx.store.by(ctx.name, field, parse_index_value(text), after=after, limit=limit)
    items = [e.to_dict() for e in page.items]
    return json_response({"items": items, "next": page.next}, headers=ctx.headers)


def _index_bound(text: str) -> IndexValue | None:
    """A range bound as typed in the URL; the empty text leaves that side open."""
    return None if text == "" else parse_index_value(text)


_BOUND_DOC = (
    "read like `value` in `/by/{field}/{value}`: a JSON number or boolean is that value, "
    'a JSON string in double quotes (`"42"`) or any other text is a string; empty: open.'
)


@router.get(
    "/views/{view}/by/{field}",
    response_model=None,
    summary="Find entities by a range of an indexed field",
    responses={
        **_ok(EntityPage, "A page of matching entities in value order, then key order."),
        **error_responses(422, 429, 503, 504),
        404: {
            "model": ErrorBody,
            "description": "Unknown view (`unknown_view`) or a field without an index (`unknown_index`).",
        },
    },
)
def find_by_range(
    ctx: ReadableView,
    limit: Limit,
    field: Annotated[
        str, Path(description="An indexed field path, e.g. `status` or `address.city`.")
    ],
    start: Annotated[str, Query(description="The smallest value (inclusive), " + _BOUND_DOC)] = "",
    end: Annotated[str, Query(description="The value the range stops before, " + _BOUND_DOC)] = "",
    after: After = None,
) -> Response:
    """Entities whose indexed `field` lies in [`start`, `end`), ordered by the field's value
    (numbers numerically, strings by code point), then by key; `limit` at a time. Both
    bounds of one type; 422 `invalid_range` for bounds of two types or a start after the end."""
    _check_index(ctx, field)
    page = ctx.store.by_range(
        ctx.name,
        field,
        start=_index_bound(start),
        end=_index_bound(end),
        after=after,
        limit=limit,
    )
    items = [e.to_dict() for e in page.items]
    return json_response({"items": items, "next": page.next}, headers=ctx.headers)


@router.get(
    "/views/{view}/quarantine",
    response_model=None,
    summary="Quarantined records",
    responses={
        **_ok(QuarantinePage, "A page of records the view could not apply."),
        **error_responses(404, 422, 429, 503, 504),
    },
)
def quarantine(ctx: AnyView, limit: Limit, after: After = None) -> Response:
    """Records the view could not apply (malformed values, null keys), oldest first per partition."""
    items, cursor = ctx.view.quarantine(after, limit)
    return json_response({"items": items, "next": cursor}, headers=ctx.headers)
