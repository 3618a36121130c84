"""``/console``: the operator console, a page of hand-written HTML, CSS and JavaScript.

The page holds no data, so it is served without a token; every figure it shows
comes from the REST routes, called by its script with the bearer token the
operator typed. Only the files of ``api/console/`` named in ``_FILES`` are served,
read from the package once, never a path taken from the request. Every answer
carries a Content-Security-Policy that allows scripts, styles and requests to
this origin only and no inline script: the page needs nothing from elsewhere.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.responses import Response

from .errors import ApiError

__all__ = ["CONTENT_SECURITY_POLICY", "console_router"]

console_router = APIRouter(tags=["console"])

_DIR = Path(__file__).resolve().parent / "console"
# name -> media type: the only files served.
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, read once per process: revalidating costs little and an
    # upgraded server's page is never mixed with a cached script of the old one.
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return (_DIR / name).read_bytes()


def _file(name: str) -> Response:
    media_type = _FILES.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", "no such console file; the console is at /console")
    return Response(_read(name), 200, _HEADERS, media_type=media_type)


@console_router.get("/console", include_in_schema=False)
async def console_page() -> Response:
    """The console's page (no data: it loads its script, which asks the API)."""
    return _file("index.html")


@console_router.get("/console/{name}", include_in_schema=False)
async def console_asset(
    name: Annotated[str, PathParam(max_length=64)],
) -> Response:
    """One of the console's static files, by name."""
    if name == "index.html":
        # One address for the page, so relative links resolve one way.
        raise ApiError(404, "not_found", "no such console file; the console is at /console")
    return _file(name)
