"""The REST routes: thin translations of HTTP requests into StateStore reads.

Endpoints only: the view a request names, its position header and waits come
from the dependencies (api/deps.py), the schema's extra documentation from
api/openapi.py. The view routes are built by ``create_app`` once the ``anytext``
converter their key paths use is registered (api/entities.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from statestore import IndexValue, StateStore, parse_index_value

from .auth import may_see, principal_of
from .deps import After, AnyView, Limit, ReadableView, ViewContext, get_store
from .entities import ENTITY_PATH, LOOKUP_PATH, entity_response, exact_tail, lookup_response
from .errors import ApiError
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
    view_info,
)
from .openapi import error_responses, ok_with_position

__all__ = ["open_router", "views_router"]

open_router = APIRouter(tags=["health"])


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


async def list_views(request: Request) -> Response:
    """Every view the caller may read, with its state, keys, lag and position."""
    store = get_store(request)
    principal = principal_of(request)
    views = [
        view_info(store, s)
        for s in store.status()
        if principal is None or principal.may_read(s.name)
    ]
    return json_response({"views": views})


async def view_status(ctx: AnyView) -> Response:
    """The full status of one view, whatever its state."""
    return json_response(view_info(ctx.store, ctx.view.status()), headers=ctx.headers)


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


async def get_entity(request: Request, ctx: ReadableView, key: str) -> Response:
    """The entity under `key`; percent-encode the key (`/` as `%2F`, `%` as `%25`, ...)."""
    return entity_response(request, ctx, key)


def lookup(request: Request, ctx: ReadableView, body: LookupRequest) -> Response:
    """Many keys in one call; absent or deleted keys come back as null, in the order asked."""
    return lookup_response(request, ctx, body.keys)


def _check_index(ctx: ViewContext, field: str) -> None:
    """404 ``unknown_index`` unless the view indexes *field*, naming the fields it does index."""
    if field not in ctx.view.config.indexes:
        indexed = ", ".join(ctx.view.config.indexes) or "none"
        raise ApiError(
            404,
            "unknown_index",
            f"view {ctx.name!r} has no index on {field!r} (indexed fields: {indexed})",
        )


IndexedField = Annotated[
    str, Path(description="An indexed field path, e.g. `status` or `address.city`.")
]


def find_by(
    request: Request,
    ctx: ReadableView,
    limit: Limit,
    field: IndexedField,
    value: Annotated[
        str,
        Path(
            description="The value to match, percent-encoded. A JSON number or boolean (`42`, `1.5`, "
            '`true`) matches that number or boolean; a JSON string in double quotes (`"42"`) matches '
            "that string; anything else matches as plain text."
        ),
    ],
    after: After = None,
    start: Annotated[
        str, Query(description="Only keys from this one on (inclusive); empty: from the first.")
    ] = "",
) -> Response:
    """Entities whose indexed `field` equals `value`, in key order, `limit` at a time."""
    _check_index(ctx, field)
    text = exact_tail(request, f"/views/{ctx.name}/by/{field}/", value)
    page = ctx.store.by(
        ctx.name, field, parse_index_value(text), after=after, limit=limit, start=start or None
    )
    items = [e.to_dict() for e in page.items]
    return json_response({"items": items, "next": page.next}, headers=ctx.headers)


def _index_bound(text: str) -> IndexValue | None:
    """A range bound as typed in the URL; the empty text leaves that side open."""
    return None if text == "" else parse_index_value(text)


_BOUND_DOC = (
    "read like `value` in `/by/{field}/{value}`: a JSON number or boolean is that value, "
    'a JSON string in double quotes (`"42"`) or any other text is a string; empty: open.'
)


def find_by_range(
    ctx: ReadableView,
    limit: Limit,
    field: IndexedField,
    start: Annotated[str, Query(description="The smallest value (inclusive), " + _BOUND_DOC)] = "",
    end: Annotated[str, Query(description="The value the range stops before, " + _BOUND_DOC)] = "",
    after: After = None,
    start_key: Annotated[
        str,
        Query(
            description="With `start`: the entities of the start value only from this key on "
            "(inclusive), then every later value; empty: all of them."
        ),
    ] = "",
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
        start_key=start_key or None,
    )
    items = [e.to_dict() for e in page.items]
    return json_response({"items": items, "next": page.next}, headers=ctx.headers)


def quarantine(ctx: AnyView, limit: Limit, after: After = None) -> Response:
    """Records the view could not apply (malformed values, null keys), oldest first per partition."""
    items, cursor = ctx.view.quarantine(after, limit)
    return json_response({"items": items, "next": cursor}, headers=ctx.headers)


_FIELD_404: dict[int | str, dict[str, Any]] = {
    404: {
        "model": ErrorBody,
        "description": "Unknown view (`unknown_view`) or a field without an index (`unknown_index`).",
    }
}


def views_router() -> APIRouter:
    """The view routes, in matching order; built after ``register_anytext()``."""
    router = APIRouter(tags=["views"])

    def add(
        path: str,
        endpoint: Callable[..., Any],
        summary: str,
        responses: dict[int | str, dict[str, Any]],
        method: str = "GET",
    ) -> None:
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            response_model=None,
            summary=summary,
            responses=responses,
        )

    add(
        "/views",
        list_views,
        "List views",
        {200: {"model": ViewList}, **error_responses(503)},
    )
    add(
        "/views/{view}",
        view_status,
        "View status",
        {
            **ok_with_position(ViewInfo, "The view's status."),
            **error_responses(404, 422, 429, 503, 504),
        },
    )
    add(
        "/views/{view}/entities",
        scan_entities,
        "Scan entities",
        {
            **ok_with_position(EntityPage, "A page of entities in key order."),
            **error_responses(404, 422, 429, 503, 504),
        },
    )
    add(
        ENTITY_PATH,
        get_entity,
        "Get one entity",
        {
            **ok_with_position(EntityBody, "The entity."),
            **error_responses(422, 429, 503, 504),
            404: {
                "model": ErrorBody,
                "description": "Unknown view (`unknown_view`), or no entity under the key (`not_found`).",
            },
        },
    )
    add(
        LOOKUP_PATH,
        lookup,
        "Get many entities",
        {
            **ok_with_position(
                LookupResult, "The entities, in the order asked; null where absent."
            ),
            **error_responses(400, 404, 413, 422, 429, 503, 504),
        },
        method="POST",
    )
    add(
        "/views/{view}/by/{field}/{value:anytext}",
        find_by,
        "Find entities by an indexed field",
        {
            **ok_with_position(EntityPage, "A page of matching entities in key order."),
            **error_responses(422, 429, 503, 504),
            **_FIELD_404,
        },
    )
    add(
        "/views/{view}/by/{field}",
        find_by_range,
        "Find entities by a range of an indexed field",
        {
            **ok_with_position(
                EntityPage, "A page of matching entities in value order, then key order."
            ),
            **error_responses(422, 429, 503, 504),
            **_FIELD_404,
        },
    )
    add(
        "/views/{view}/quarantine",
        quarantine,
        "Quarantined records",
        {
            **ok_with_position(QuarantinePage, "A page of records the view could not apply."),
            **error_responses(404, 422, 429, 503, 504),
        },
    )
    return router
