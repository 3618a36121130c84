"""The base of the app's own ASGI middleware: HTTP requests only.

Every layer of the app (timing, error catch-all, body limit, browser checks)
works on HTTP requests; other scopes (the lifespan) pass through it untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HttpMiddleware"]


class HttpMiddleware:
    """ASGI middleware that hands HTTP requests to ``http`` and any other scope to *app*."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer or pass on one HTTP request (*scope* is of type ``http``)."""
        raise NotImplementedError
