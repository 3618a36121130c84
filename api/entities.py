"""Entity reads shared by the routes and the fast path: the key in the path, and the answers.

A key is arbitrary text, line breaks included: its path segment is matched by the
``anytext`` converter and decoded exactly once from the raw request path.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from .deps import ViewContext
from .errors import ApiError
from .models import json_response

__all__ = [
    "ENTITY_PATH",
    "LOOKUP_PATH",
    "entity_response",
    "exact_tail",
    "lookup_response",
    "register_anytext",
]

ENTITY_PATH = "/views/{view}/entities/{key:anytext}"
LOOKUP_PATH = "/views/{view}/lookup"


class _AnyText(Convertor[str]):
    """Like Starlette's ``path``, but line breaks too: a key may hold ``\n`` (sent as ``%0A``)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


_ANYTEXT = _AnyText()


def register_anytext() -> None:
    """Make ``{name:anytext}`` usable in route paths; call before such routes are built.

    Starlette keeps converters in one process-wide table, so this is global: it sets
    the same converter under the same name each time, and calling it again (one call
    per app built) changes nothing.
    """
    register_url_convertor("anytext", _ANYTEXT)


def exact_tail(request: Request, marker: str, decoded: str) -> str:
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


def entity_response(request: Request, ctx: ViewContext, key: str) -> Response:
    """The entity under *key* (as the path matched it), or 404 ``not_found``."""
    exact = exact_tail(request, f"/views/{ctx.name}/entities/", key)
    entity = ctx.store.get(ctx.name, exact)
    if entity is None:
        raise ApiError(404, "not_found", f"no entity under key {exact!r} in view {ctx.name!r}")
    return json_response(entity.to_dict(), headers=ctx.headers)


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
