"""Browser safety: the Host check and the refusal of cross-site writes.

Any web page can make its visitor's browser send requests to a server on
127.0.0.1. Two things keep such a page out of a server that has no tokens:

* DNS rebinding: the page's own host name made to resolve to 127.0.0.1, so the
  browser treats the server as the page's origin and lets it read the answers. Its
  requests name the page's host in ``Host``: only loopback names, the bind address
  and ``[api] allowed_hosts`` are answered (400 ``invalid_host`` otherwise).
* Cross-site writes: a form or ``fetch()`` with a simple content type is sent
  without asking the server first. A request other than GET, HEAD or OPTIONS whose
  ``Origin`` is not one of those hosts, or that the browser marks
  ``Sec-Fetch-Site: cross-site``, is refused (403 ``cross_site``).

With tokens the page has none to send, so any host is answered unless
``allowed_hosts`` is set; then both checks apply as above.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from .asgi import HttpMiddleware
from .errors import error_response

__all__ = ["BrowserGuard", "host_name"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def host_name(value: str) -> str:
    """The name in a Host header or an origin's netloc, without port or brackets, lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True  # browsers resolve these to loopback themselves (RFC 6761)
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BrowserGuard(HttpMiddleware):
    """ASGI middleware applying the two checks of this module's docstring."""

    def __init__(
        self, app: ASGIApp, *, bind_host: str, allowed_hosts: Iterable[str], authenticated: bool
    ) -> None:
        super().__init__(app)
        allowed = {host_name(h) for h in allowed_hosts}
        self._any = "*" in allowed
        bind = host_name(bind_host)
        if bind not in _WILDCARD_BINDS:
            allowed.add(bind)
        self._allowed = frozenset(allowed)
        self._on = not self._any and (not authenticated or bool(allowed_hosts))

    def allows(self, name: str) -> bool:
        return self._any or name in self._allowed or _loopback(name)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._on:
            await self.app(scope, receive, send)
            return
        host = origin = fetch_site = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"sec-fetch-site":
                fetch_site = value.decode("latin-1").strip().lower()
        if host is None or not self.allows(host_name(host)):
            response = error_response(
                400,
                "invalid_host",
                "this server answers requests for loopback names and [api] allowed_hosts only",
            )
            await response(scope, receive, send)
            return
        if scope["method"] not in _SAFE_METHODS and (
            fetch_site == "cross-site"
            or (origin is not None and not self.allows(host_name(urlsplit(origin).netloc)))
        ):
            response = error_response(
                403,
                "cross_site",
                "a request from another site may not change this server's state",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
