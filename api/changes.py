"""``GET /views/{view}/changes``: the changes a view applies, as server-sent events.

The ingest thread only appends to the view's change feed and, when a stream
waits, schedules a wake-up on the event loop (``call_soon_threadsafe``). Each
stream reads the feed, decodes and writes on the loop, at its own pace. A client
that does not read falls behind; once the feed has more waiting for it than
allowed it is dropped, and when it reads again it gets what was already on its
way, then ``event: dropped``, and the stream ends.

On an instance of a partitioned cluster the route answers an owner's part of a
gathered stream (``partitions``); api/cluster_changes.py merges the parts.

Tests and embedders may tune the streams with ``app.state.change_stream =
ChangeStreamSettings(...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import StreamingResponse

from statestore import InvalidKeyError
from statestore.changes import (
    DEFAULT_BUFFER,
    DEFAULT_BUFFER_BYTES,
    Change,
    FellBehindError,
    Subscription,
)

from .deps import POSITION_HEADER, ReadableView
from .errors import ApiError
from .models import ErrorBody, dumps
from .openapi import error_responses

__all__ = [
    "KEEP_ALIVE",
    "ChangeStreamSettings",
    "EventStreamResponse",
    "changes_router",
    "json_errors",
    "sse_event",
    "stream_settings",
    "wake_event",
]

changes_router = APIRouter(tags=["changes"])

KEEP_ALIVE = b": keep-alive\n\n"
JSON = "application/json"
# The form of event ids: an instance's (`ChangeId`), or a partitioned cluster's gathered
# stream's (api/cluster_changes.py). Ids of other streams are answered with a reset.
ID_PATTERN = r"^([0-9a-f]{8}-[0-9]+-[0-9]+|g1\.[A-Za-z0-9_-]+)?$"
PARTITIONS_PATTERN = r"^([0-9]{1,9}(,[0-9]{1,9})*)?$"


@dataclass(frozen=True, slots=True)
class ChangeStreamSettings:
    """How change streams behave; the buffer sizes apply when a view's feed is created."""

    keepalive_s: float = 15.0
    max_pending: int | None = None
    buffer: int = DEFAULT_BUFFER
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    batch: int = 500


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response."""

    media_type = "text/event-stream"


def json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses documented as JSON: by model they would take the stream's media type."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, doc in error_responses(*statuses).items():
        ref = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
        out[status] = {"description": doc["description"], "content": {JSON: {"schema": ref}}}
    return out


def sse_event(name: str, data: bytes, event_id: str | None = None) -> bytes:
    """One server-sent event: *data* is its JSON text (one line)."""
    head = f"id: {event_id}\nevent: {name}\n" if event_id is not None else f"event: {name}\n"
    return head.encode() + b"data: " + data + b"\n\n"


def _event(name: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    return sse_event(name, dumps(data), event_id)


def stream_settings(request: Request) -> ChangeStreamSettings:
    settings = getattr(request.app.state, "change_stream", None)
    return settings if isinstance(settings, ChangeStreamSettings) else ChangeStreamSettings()


def wake_event(sub: Subscription) -> asyncio.Event:
    """An event of this loop, set whenever *sub* has changes (the ingest thread wakes it)."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def waker() -> None:
        loop.call_soon_threadsafe(wake.set)

    sub.set_waker(waker)
    return wake


async def _stream(sub: Subscription, settings: ChangeStreamSettings) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    wake = wake_event(sub)
    try:
        yield _event("subscribed", {"id": sub.start_id, "resumed": sub.resumed}, sub.start_id)
        last_write = loop.time()
        while True:
            wake.clear()
            try:
                events = sub.poll(settings.batch)
            except FellBehindError as exc:
                yield _event("dropped", {"message": str(exc), "last_id": exc.last_id})
                return
            if events:
                yield b"".join(
                    _event("change" if isinstance(e, Change) else "reset", e.to_dict(), e.id)
                    for e in events
                )
                last_write = loop.time()
                continue
            if sub.closed:  # the store closed (its feeds end their subscriptions)
                return
            # Wake at least every second: a rebuild swap applies no batch, polling notices it.
            idle = loop.time() - last_write
            try:
                async with asyncio.timeout(max(0.0, min(1.0, settings.keepalive_s - idle))):
                    await wake.wait()
            except TimeoutError:
                pass
            if loop.time() - last_write >= settings.keepalive_s:
                yield KEEP_ALIVE
                last_write = loop.time()
    finally:
        sub.close()


class SubscribedData(BaseModel):
    """``event: subscribed``, first on every stream."""

    id: str = Field(description="Where the stream starts: changes after this id follow.")
    resumed: bool = Field(description="True when the stream continues right after `Last-Event-ID`.")


class ChangeData(BaseModel):
    """``event: change``: a key's new value, or its deletion."""

    key: str
    value: Any = Field(description="The decoded value; null for a delete.")
    partition: int
    offset: int
    timestamp: int | None = Field(description="Record timestamp (ms); null for a delete.")
    op: Literal["put", "delete"]
    error: str | None = Field(
        default=None, description="Present when the stored value could not be decoded."
    )


class ResetData(BaseModel):
    """``event: reset``: the changes cannot continue the client's copy; rescan, then go on."""

    id: str
    reason: str


class DroppedData(BaseModel):
    """``event: dropped``, last on the stream of a client that read too slowly."""

    message: str
    last_id: str = Field(description="Reconnect with this as `Last-Event-ID`.")


def _event_schema(name: str, data: type[BaseModel], *, with_id: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "title": f"{name} event",
        "required": ["event", "data", *(["id"] if with_id else [])],
        "properties": {
            "event": {"const": name},
            "id": {"type": "string", "description": "`<stream>-<generation>-<seq>`"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data.model_json_schema(),
            },
        },
    }


_STREAM_DOC = """\
Server-sent events: `subscribed` first, then one `change` per change the view
applies from now on (or after `Last-Event-ID`), in offset order per partition;
`reset` when the changes cannot continue the client's copy (rescan, then go on);
`dropped`, ending the stream, when the client read too slowly (reconnect with
`Last-Event-ID`); `: keep-alive` comments while idle. On a partitioned cluster any
instance streams every partition, merged from each owner, with ids that resume on
any instance (`g1.<...>`; docs/cluster.md).
"""

# "type" stated here too: FastAPI merges this into its default `{"type": "string"}`.
_EVENT_SCHEMA = {
    "type": "object",
    "oneOf": [
        _event_schema("subscribed", SubscribedData, with_id=True),
        _event_schema("change", ChangeData, with_id=True),
        _event_schema("reset", ResetData, with_id=True),
        _event_schema("dropped", DroppedData, with_id=False),
    ],
}


@changes_router.get(
    "/views/{view}/changes",
    response_class=EventStreamResponse,
    summary="Stream changes",
    responses={
        200: {
            "description": _STREAM_DOC,
            "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
            "headers": {
                POSITION_HEADER: {
                    "description": "The view's applied position when the stream began.",
                    "schema": {"type": "string"},
                }
            },
        },
        **json_errors(404, 409, 422, 429, 503, 504),
    },
)
async def stream_changes(
    request: Request,
    ctx: ReadableView,
    prefix: Annotated[
        str, Query(description="Only changes of keys whose text starts with this.")
    ] = "",
    last_id: Annotated[
        str,
        Query(
            description="Resume after this event id (for clients that cannot set headers).",
            pattern=ID_PATTERN,
        ),
    ] = "",
    last_event_id: Annotated[
        str,
        Header(description="Resume after this event id; wins over `last_id`.", pattern=ID_PATTERN),
    ] = "",
    partitions: Annotated[
        str,
        Query(
            description="Only changes of records from these partitions, comma-separated "
            "(default: every partition).",
            pattern=PARTITIONS_PATTERN,
        ),
    ] = "",
) -> EventStreamResponse:
    """The view's changes as server-sent events; see docs/queries.md."""
    if ctx.store.read_only:
        # Changes are numbered as the ingesting process applies them; a read-only copy
        # (a worker of statestore serve --workers N) never applies any.
        raise ApiError(
            409,
            "read_only",
            "this server process serves a read-only copy of the store (statestore serve "
            "--workers N) and has no change stream: stream from the ingesting process "
            "([api] primary_port), or serve with [api] workers = 1",
        )
    settings = stream_settings(request)
    try:
        feed = ctx.store.change_feed(
            ctx.name, buffer=settings.buffer, buffer_bytes=settings.buffer_bytes
        )
        sub = feed.open(
            prefix=prefix,
            last_id=last_event_id or last_id or None,
            max_pending=settings.max_pending,
            partitions=frozenset(int(p) for p in partitions.split(",")) if partitions else None,
        )
    except InvalidKeyError as exc:
        raise ApiError(422, "invalid_key", f"query.prefix: {exc}") from None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **ctx.headers}
    return EventStreamResponse(_stream(sub, settings), headers=headers)
