"""``POST /views/{view}/rebuild``: rebuild a view beside the served copy, then swap it in.

The old copy keeps answering reads (state ``rebuilding``) until the new one has
caught up; the swap is one write. One rebuild per view at a time: asking again
while one runs joins it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from statestore import StateStore, format_position

from .auth import principal_of, require_admin
from .deps import POSITION_HEADER, ViewName, get_store
from .errors import ApiError
from .models import ViewInfo, json_response, view_info
from .openapi import error_responses

__all__ = ["admin_router"]

log = logging.getLogger(__name__)

admin_router = APIRouter(tags=["admin"])

# How long the 202 answer waits for the rebuild to begin, so that the status it
# returns (and the next GET) says ``rebuilding`` rather than the state before.
_START_WAIT_S = 10.0
_POLL_S = 0.02


@dataclass
class _Job:
    """A rebuild running in a background thread."""

    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def _run(store: StateStore, name: str, reason: str, job: _Job) -> None:
    try:
        store.rebuild([name], wait=True, reason=reason)
    except Exception as exc:
        log.exception("api.rebuild_failed view=%s", name)
        job.error = str(exc)
    finally:
        job.done.set()


def _jobs(request: Request) -> dict[str, _Job]:
    jobs: dict[str, _Job] | None = getattr(request.app.state, "rebuild_jobs", None)
    if jobs is None:
        jobs = {}
        request.app.state.rebuild_jobs = jobs
    return jobs


def _headers(store: StateStore, view: str) -> dict[str, str]:
    return {POSITION_HEADER: format_position(store.position(view))}


@admin_router.post(
    "/views/{view}/rebuild",
    response_model=None,
    status_code=202,
    summary="Rebuild a view",
    responses={
        202: {"model": ViewInfo, "description": "The rebuild has begun; the view's status."},
        200: {"model": ViewInfo, "description": "With `wait=true`: swapped in; the view's status."},
        **error_responses(403, 404, 409, 422, 503),
    },
)
async def rebuild_view(
    request: Request,
    view: ViewName,
    wait: Annotated[
        bool,
        Query(description="Answer once the new copy is swapped in (200) instead of at once (202)."),
    ] = False,
) -> Response:
    """Re-read the view's topic from offset 0 into a new copy while the old one keeps serving."""
    store = get_store(request)
    require_admin(request, view)
    handle = store.view(view)
    if store.read_only:
        raise ApiError(
            409,
            "read_only",
            "this server process serves a read-only copy of the store (statestore serve "
            "--workers N); it cannot rebuild: send the request to the ingesting process "
            "([api] primary_port; `statestore rebuild` does), or serve with [api] workers = 1",
        )
    jobs = _jobs(request)
    job = jobs.get(view)
    if job is None or job.done.is_set():
        principal = principal_of(request)
        who = f" (token {principal.name!r})" if principal is not None else ""
        job = _Job(handle.status().generation)
        jobs[view] = job
        log.info("api.rebuild view=%s%s", view, who)
        threading.Thread(
            target=_run,
            args=(store, view, f"rebuild requested through the API{who}", job),
            name=f"api-rebuild-{view}",
            daemon=True,
        ).start()
    if wait:
        while not job.done.is_set():
            await anyio.sleep(0.1)
        status = handle.status()
        if job.error is not None or status.state == "failed":
            raise ApiError(
                503,
                "view_failed",
                f"the rebuild of view {view!r} failed: {job.error or status.reason}",
                state=status.state,
                reason=status.reason,
            )
        if status.generation == job.generation:
            raise ApiError(
                503,
                "not_ready",
                f"the rebuild of view {view!r} was interrupted (the server is stopping)",
                state=status.state,
                reason=status.reason,
            )
        return json_response(
            view_info(store, status, schemas=False), 200, headers=_headers(store, view)
        )
    deadline = time.monotonic() + _START_WAIT_S
    while not job.done.is_set() and handle.state != "rebuilding" and time.monotonic() < deadline:
        await anyio.sleep(_POLL_S)
    headers = {**_headers(store, view), "Location": f"/views/{view}"}
    return json_response(view_info(store, handle.status(), schemas=False), 202, headers=headers)


class SnapshotRequest(BaseModel):
    """Where to write the snapshot and which views it holds."""

    model_config = ConfigDict(extra="forbid")

    dest: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A directory on the server's machine or an `s3://bucket/prefix` URL "
        "(credentials from the server's environment); default `[snapshots] dest`.",
    )
    views: list[str] | None = Field(
        default=None,
        max_length=256,
        description="Views to include (default: every view that has caught up once).",
    )


@admin_router.post(
    "/admin/snapshot",
    response_model=None,
    status_code=201,
    summary="Take a snapshot",
    responses={
        201: {"description": "The snapshot: name, URL, size, views with positions and keys."},
        **error_responses(403, 404, 409, 422, 502, 503),
    },
)
async def take_snapshot(request: Request, body: SnapshotRequest | None = None) -> Response:
    """A consistent snapshot of the store, taken while reads and ingest go on (one at a
    time: 409 while another is being taken). Needs an admin token scoped to its views."""
    store = get_store(request)
    spec = body or SnapshotRequest()
    names = spec.views or list(store.views)
    for name in names:
        store.view(name)  # 404 for an unknown view
        require_admin(request, name, "snapshot it")
    if spec.dest is None and store.config.snapshots.dest is None:
        raise ApiError(
            422, "invalid_request", "body.dest: required when [snapshots] dest is not set"
        )
    principal = principal_of(request)
    who = f" token={principal.name!r}" if principal is not None else ""
    log.info("api.snapshot dest=%s views=%s%s", spec.dest, ",".join(names), who)
    info = await anyio.to_thread.run_sync(store.snapshot, spec.dest, spec.views)
    return json_response(info.to_dict(), 201)


@admin_router.get(
    "/admin/snapshots",
    response_model=None,
    summary="Snapshot status",
    responses={200: {"description": "Scheduled snapshots and the last one taken."}},
)
async def snapshot_status(request: Request) -> Response:
    """The schedule (`[snapshots]`), the last snapshot taken (when, how long, how big),
    failures, and the snapshot the store was seeded from. Needs an admin token."""
    store = get_store(request)
    for name in store.views:
        require_admin(request, name, "see its snapshots")
    return json_response(store.snapshots.status.to_dict())
