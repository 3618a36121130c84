"""A direct path for the hottest routes: ``GET /views/{view}/entities/{key}`` and
``POST /views/{view}/lookup``.

FastAPI's routing, dependency solving and parameter validation cost many times
what the read itself costs. A request without a query string has nothing to parse
or validate, so this layer answers it by calling the route's own dependency and
answer directly (api/deps.py, api/entities.py); every other request goes to FastAPI
unchanged. It sits inside the app's other middleware, so the body limit and the
catch-all treat both paths alike, and errors are rendered by the same handlers.

A lookup is answered here when its body is a JSON object whose ``keys`` is a list
of strings (what the route's model admits from JSON); any other body -- not JSON,
another shape, a content type other than JSON, a body over the limit -- is handed
to FastAPI with the bytes already read replayed, so its validation answers exactly
as before. Up to ``INLINE_LOOKUP_KEYS`` keys are read on the event loop (a few
hundred microseconds, less than the hop to a worker thread costs); larger lookups
run in the thread pool, as the route's own do, so one of them never holds the loop.

While FastAPI's own telemetry observes a request (an OpenTelemetry provider is
configured), the request goes to FastAPI too: its spans and request metrics name
the route and time the endpoint, which only FastAPI's routing records.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statestore import StateStoreError

from .auth import authenticate_request
from .deps import ViewContext, readable_view
from .entities import ENTITY_PATH, LOOKUP_PATH, entity_response, lookup_response
from .errors import ApiError, handled_error
from .metrics import ROUTE_KEY

__all__ = ["INLINE_LOOKUP_KEYS", "EntityFastPath"]

INLINE_LOOKUP_KEYS = 256


class EntityFastPath:
    """Answer plain entity reads and lookups; pass everything else to *app*.

    *authenticated* says whether the app requires bearer tokens on view routes.
    *overrides* is the app's ``dependency_overrides``: while it holds anything,
    every request goes to FastAPI so that the overrides apply.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticated: bool,
        overrides: Mapping[Callable[..., Any], Callable[..., Any]],
    ) -> None:
        self.app = app
        self.authenticated = authenticated
        self.overrides = overrides
        # The routes' own patterns, so both paths agree on which requests they match.
        self._entity = compile_path(ENTITY_PATH)[0]
        self._lookup = compile_path(LOOKUP_PATH)[0]

    def _plain(self, scope: Scope) -> bool:
        """Whether FastAPI would have nothing to add to the answer of a matching request."""
        return not (
            scope["type"] != "http"
            or scope.get("query_string")
            or scope.get("root_path")
            or scope.get("fastapi.telemetry") is not None
            or self.overrides
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._plain(scope):
            if scope["method"] == "GET":
                match = self._entity.match(scope["path"])
                if match is not None:
                    await self._entity_read(match, scope, receive, send)
                    return
            elif scope["method"] == "POST" and _json_body(scope):
                match = self._lookup.match(scope["path"])
                if match is not None:
                    await self._lookup_read(match, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _entity_read(
        self, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def answer(request: Request, ctx: ViewContext) -> Response:
            return entity_response(request, ctx, match["key"])

        await self._answer(ENTITY_PATH, match["view"], answer, scope, receive, send)

    async def _lookup_read(
        self, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            body = await _read_body(receive)
        except StarletteHTTPException as exc:  # over the body limit
            await self.app(scope, _replay(exc, receive), send)
            return
        if body is None:  # the client went away before sending its body
            return
        keys = _lookup_keys(body)
        if keys is None:
            await self.app(scope, _replay(body, receive), send)
            return

        async def answer(request: Request, ctx: ViewContext) -> Response:
            if len(keys) <= INLINE_LOOKUP_KEYS:
                return lookup_response(request, ctx, keys)
            return await run_in_threadpool(lookup_response, request, ctx, keys)

        await self._answer(LOOKUP_PATH, match["view"], answer, scope, receive, send)

    async def _answer(
        self,
        route: str,
        view: str,
        answer: Callable[[Request, ViewContext], Awaitable[Response]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Send *answer*'s response for *view*, checked as the route's dependencies check it;
        errors rendered as the app's handlers render them."""
        scope[ROUTE_KEY] = route
        request = Request(scope, receive, send)
        try:
            if self.authenticated:
                await authenticate_request(request)
            ctx = await readable_view(request, view)
            response = await answer(request, ctx)
        except (ApiError, StateStoreError) as exc:
            response = await handled_error(request, exc)
        await response(scope, receive, send)


def _json_body(scope: Scope) -> bool:
    """Whether the request says its body is JSON (``application/json``, parameters aside)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media_type: bytes = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json"
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnects first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _lookup_keys(body: bytes) -> list[str] | None:
    """The keys of a body the route's model would take as they are; None for any other."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    keys = data.get("keys") if type(data) is dict else None
    if type(keys) is not list or not all(type(k) is str for k in keys):
        return None
    return keys


def _replay(body: bytes | StarletteHTTPException, receive: Receive) -> Receive:
    """A ``receive`` that gives FastAPI what was already read (or raises what reading raised)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            if isinstance(body, StarletteHTTPException):
                raise body
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
