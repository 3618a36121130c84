"""Every error the API answers with, mapped to HTTP in one place.

All errors are ``{"error": {"code", "message", ...}}``. Library errors keep their
message (it names the view and what to do) except for internal failures, which
are logged with their traceback and answered with a generic message.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import statestore as ss

from .asgi import HttpMiddleware
from .models import POSITION_HEADER, dumps

__all__ = [
    "MAX_BODY_BYTES",
    "ApiError",
    "BodyLimitMiddleware",
    "CatchAllMiddleware",
    "error_response",
    "handled_error",
    "install_error_handlers",
    "single_valued_query",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
_INTERNAL_MESSAGE = "internal server error; the server log has the details"

# Most specific first: the first isinstance match wins.
_LIBRARY_ERRORS: tuple[tuple[type[ss.StateStoreError], int, str], ...] = (
    (ss.UnknownViewError, 404, "unknown_view"),
    (ss.CursorError, 422, "invalid_cursor"),
    (ss.PositionTimeoutError, 504, "position_not_reached"),
    (ss.NotReadyError, 503, "not_ready"),
    (ss.ViewFailedError, 503, "view_failed"),
    (ss.InvalidKeyError, 422, "invalid_key"),
    (ss.InvalidRangeError, 422, "invalid_range"),
    (ss.UnknownIndexError, 404, "unknown_index"),
    (ss.RegistryUnavailableError, 503, "registry_unavailable"),
    (ss.CodecError, 500, "undecodable_value"),
    (ss.StoreLockedError, 503, "store_locked"),
    (ss.SnapshotSourceError, 502, "snapshot_place_unavailable"),
    (ss.SnapshotError, 409, "snapshot_refused"),
    (ss.KafkaError, 503, "kafka_unavailable"),
    (ss.StorageError, 500, "storage_error"),
    (ss.ConfigError, 500, "config_error"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with *status* (raised by routes and auth)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: str | None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


async def single_valued_query(request: Request) -> None:
    """Every query parameter of the API takes one value: one given twice is ambiguous (422)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise ApiError(422, "invalid_request", f"query.{name}: given more than once")
        seen.add(name)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(dumps({"error": body}), status, headers, media_type="application/json")


def _position_headers(request: Request) -> dict[str, str]:
    # Set by the view dependency once the view is known (api/deps.py): errors about a
    # known view still say how far it had got.
    view = getattr(request.state, "view", None)
    if view is None:
        return {}
    return {POSITION_HEADER: view.position_text()}


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # registered for this type only
        raise exc
    headers = {**_position_headers(request), **exc.headers}
    return error_response(exc.status, exc.code, exc.message, headers, **exc.extra)


async def _library_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ss.StateStoreError):  # registered for this type only
        raise exc
    status, code = 500, "internal_error"
    for cls, cls_status, cls_code in _LIBRARY_ERRORS:
        if isinstance(exc, cls):
            status, code = cls_status, cls_code
            break
    headers = _position_headers(request)
    if status >= 500 and status not in (503, 504):
        log.error("api.error code=%s path=%s", code, request.url.path, exc_info=exc)
        return error_response(status, code, _INTERNAL_MESSAGE, headers)
    extra: dict[str, str] = {}
    if isinstance(exc, ss.PositionTimeoutError):
        reached = ss.format_position(exc.reached)
        headers[POSITION_HEADER] = reached
        extra["position"] = reached
    return error_response(status, code, str(exc), headers, **extra)


async def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for this type only
        raise exc
    # Locations and messages only: never echo input values back.
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(
            f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))
        )
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for this type only
        raise exc
    status = exc.status_code
    code = _HTTP_CODES.get(status, f"http_{status}")
    if status == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif isinstance(exc.detail, str) and exc.detail:
        message = exc.detail
    else:
        message = http.HTTPStatus(status).phrase
    return error_response(status, code, message, exc.headers)


async def handled_error(request: Request, exc: ApiError | ss.StateStoreError) -> Response:
    """The response the installed handlers give *exc*, for code that runs outside them."""
    if isinstance(exc, ApiError):
        return await _api_error(request, exc)
    return await _library_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into error bodies."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ss.StateStoreError, _library_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class CatchAllMiddleware(HttpMiddleware):
    """Answer any unhandled exception with a generic 500 and log its traceback.

    It sits outside the exception handlers so nothing escapes to the server's
    default error page, and it does not re-raise: the traceback is logged once.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("api.unhandled method=%s path=%s", scope.get("method"), scope.get("path"))
            if not started:
                response = error_response(500, "internal_error", _INTERNAL_MESSAGE)
                await response(scope, receive, send)


class BodyLimitMiddleware(HttpMiddleware):
    """Refuse request bodies over *max_bytes* with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {self.max_bytes} bytes; send fewer keys per request"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await error_response(413, "body_too_large", message)(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise StarletteHTTPException(413, message)
            return msg

        await self.app(scope, limited_receive, send)
