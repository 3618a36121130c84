"""A direct path for the hottest route, ``GET /views/{view}/entities/{key}``.

FastAPI's routing, dependency solving and parameter validation cost many times
what the read itself costs. A request without a query string has nothing to parse
or validate, so this layer answers it by calling the route's own checks and
endpoint directly (``plain_entity``); every other request goes to FastAPI
unchanged. It sits inside the app's other middleware, so the body limit and the
catch-all treat both paths alike, and errors are rendered by the same handlers.

While FastAPI's own telemetry observes a request (an OpenTelemetry provider is
configured), the request goes to FastAPI too: its spans and request metrics name
the route and time the endpoint, which only FastAPI's routing records.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from statestore import StateStoreError

from .auth import authenticate_request
from .errors import ApiError, handled_error
from .metrics import ROUTE_KEY
from .routes import ENTITY_PATH, plain_entity

__all__ = ["EntityFastPath"]


class EntityFastPath:
    """Answer plain ``GET`` requests for one entity; pass everything else to *app*.

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
        # The route's own pattern, so both paths agree on which requests it matches.
        self._pattern = compile_path(ENTITY_PATH)[0]

    def _plain(self, scope: Scope) -> re.Match[str] | None:
        """The route's path match when FastAPI would have nothing to add to the answer."""
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope.get("query_string")
            or scope.get("root_path")
            or scope.get("fastapi.telemetry") is not None
            or self.overrides
        ):
            return None
        return self._pattern.match(scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self._plain(scope)
        if match is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE_KEY] = ENTITY_PATH
        request = Request(scope, receive, send)
        try:
            if self.authenticated:
                await authenticate_request(request)
            response = await plain_entity(request, match["view"], match["key"])
        except (ApiError, StateStoreError) as exc:
            response = await handled_error(request, exc)
        await response(scope, receive, send)
