"""The app factory: one StateStore per app, owned by the lifespan."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Security
from fastapi.openapi.utils import get_openapi

from statestore import Config, StateStore, __version__

from .admin import admin_router
from .auth import Authenticator, authenticate, check_bind
from .browser import BrowserGuard
from .changes import changes_router, json_errors
from .cluster import ClusterRouter, close_forwarding, cluster_router
from .console import console_router
from .entities import register_anytext
from .errors import (
    MAX_BODY_BYTES,
    BodyLimitMiddleware,
    CatchAllMiddleware,
    install_error_handlers,
    single_valued_query,
)
from .fastpath import EntityFastPath
from .metrics import RequestTimer, metrics_router, request_histogram
from .models import JSONBytesResponse
from .openapi import error_responses, with_limits
from .routes import open_router, views_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Compacted Kafka topics served as local, queryable views.

Keys are arbitrary text: percent-encode them in paths (`/` as `%2F`, `%` as `%25`,
`?` as `%3F`, `#` as `%23`, and `.` as `%2E` in the keys `.` and `..`, which clients
would otherwise resolve as path segments). Every view response carries `X-Statestore-Position`;
send it back as `min_position` to read at least what you have seen. Errors are
`{"error": {"code", "message"}}`.
"""


def create_app(
    config: Config,
    *,
    store: StateStore | None = None,
    start: bool = True,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the REST app for *config*.

    Without *store*, the app's lifespan opens a StateStore, starts it when *start*
    is true (bootstrap, then follow, in background threads) and closes it on
    shutdown. A *store* passed in is used as it is: the caller starts and closes
    it. Bearer tokens are read from *environ* (default: ``os.environ``) now, so a
    missing token fails here rather than on the first request.
    """
    check_bind(config)
    auth = Authenticator.from_config(config, os.environ if environ is None else environ)
    owned = store is None
    # Starlette's converters are process-wide: registering the same one again is a no-op.
    register_anytext()
    router = views_router()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not owned:
            yield
            return
        opened = await anyio.to_thread.run_sync(StateStore, config)
        log.info("api.store_open path=%s views=%d", config.store.path, len(config.views))
        opened.storage.announce(config.api.url())
        try:
            if start:
                opened.start()
            app.state.store = opened
            yield
        finally:
            app.state.store = None
            await close_forwarding(app.state)
            await anyio.to_thread.run_sync(opened.close)
            log.info("api.store_closed path=%s", config.store.path)

    app = FastAPI(
        title="statestore",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONBytesResponse,
        dependencies=[Depends(single_valued_query)],
        # No trailing-slash redirects: they ran before authentication and put the
        # client's Host header into Location. `/views/` is a 404 like any unknown path.
        redirect_slashes=False,
    )
    app.state.config = config
    app.state.auth = auth
    app.state.store = store
    app.state.waits = {}  # open min_position waits per client (api/waits.py)
    # A serving copy's "catch up now" (statestore serve --workers N), called by a request
    # that waits for a position the copy does not have yet (api/waits.py).
    app.state.catch_up = None
    install_error_handlers(app)
    # Added last = outermost: the catch-all also covers the body limit, and all of them
    # (the browser checks too) cover the direct path for plain entity reads.
    app.add_middleware(
        EntityFastPath, authenticated=auth.enabled, overrides=app.dependency_overrides
    )
    # Outside the direct path: on a partitioned cluster's instance, key reads go to the
    # key's owner first (api/cluster.py); anywhere else it passes every request on.
    if config.cluster.partitioned:
        app.add_middleware(ClusterRouter, authenticated=auth.enabled)
    app.add_middleware(
        BrowserGuard,
        bind_host=config.api.host,
        allowed_hosts=config.api.allowed_hosts,
        authenticated=auth.enabled,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(CatchAllMiddleware)
    # Outermost: the duration covers every layer, the error handling included.
    app.state.request_seconds = request_histogram()
    app.add_middleware(RequestTimer, histogram=app.state.request_seconds)
    app.include_router(open_router)
    # The console's page and files hold no data: open; its calls send the token.
    if config.api.console:
        app.include_router(console_router)
    if auth.enabled and config.api.metrics_require_token:
        app.include_router(
            metrics_router, dependencies=[Security(authenticate)], responses=error_responses(401)
        )
    else:
        app.include_router(metrics_router)
    if auth.enabled:
        app.include_router(
            router, dependencies=[Security(authenticate)], responses=error_responses(401, 403)
        )
        app.include_router(
            changes_router, dependencies=[Security(authenticate)], responses=json_errors(401, 403)
        )
        app.include_router(
            admin_router, dependencies=[Security(authenticate)], responses=error_responses(401, 403)
        )
        app.include_router(
            cluster_router, dependencies=[Security(authenticate)], responses=error_responses(401)
        )
    else:
        app.include_router(router)
        app.include_router(changes_router)
        app.include_router(admin_router)
        app.include_router(cluster_router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_limits(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                ),
                config,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
