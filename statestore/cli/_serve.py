"""``statestore serve``: bootstrap, follow and serve the REST API."""

from __future__ import annotations

import contextlib
import logging
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import StateStore
from ._app import ConfigOption, errors, fail, handled, load
from ._signals import SecondSignalExits

if TYPE_CHECKING:
    import uvicorn

__all__ = ["serve"]

# Every command logs as "statestore.cli": stable names for log filters.
# Seconds requests in flight (and open change streams) get to finish on SIGTERM; then
# the views finish their batch (StateStore.stop, at most its timeout) and the store closes.
HTTP_DRAIN_S = 5

log = logging.getLogger("statestore.cli")


def _server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, but a second SIGINT/SIGTERM during the shutdown exits at once.

    The first signal is uvicorn's graceful stop: no new connections, requests in
    flight finish, then the app's lifespan closes the store (followers finish their
    batch, RocksDB closes). A shutdown stuck behind a long request ends at the second.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self._signals = SecondSignalExits(self._graceful)
            self._frame: FrameType | None = None

        def _graceful(self, signum: int) -> None:
            super().handle_exit(signum, self._frame)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self._frame = frame
            self._signals(sig, frame)

    return Server(config)


@handled
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default: \\[api] host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default: \\[api] port).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Bootstrap, follow and serve the REST API (ready once every view has caught up).

    SIGTERM or Ctrl-C stops gracefully (requests in flight finish, followers finish
    their batch, the store is closed); a second signal exits at once.
    """
    cfg = load(ctx, config)
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if changes:
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update=changes)})
    from statestore.api.auth import check_bind

    check_bind(cfg)
    # Open once before the server does: a store held by another process, or one that
    # cannot be opened, is reported here in one line instead of as a failed lifespan.
    with errors(cfg):
        StateStore(cfg).close()

    import uvicorn

    from statestore.api.app import create_app
    from statestore.api.http import bounded_http

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    log.info("serve.start host=%s port=%d views=%d", cfg.api.host, cfg.api.port, len(cfg.views))
    server = _server(
        uvicorn.Config(
            create_app(cfg),
            host=cfg.api.host,
            port=cfg.api.port,
            log_level=level,
            log_config=None,
            ssl_certfile=cfg.api.ssl_certfile,
            ssl_keyfile=cfg.api.ssl_keyfile,
            http=bounded_http(cfg.api.max_header_kb, cfg.api.header_timeout_s),
            limit_concurrency=cfg.api.max_connections,
            # Open change streams never end by themselves: give them a while, then close.
            timeout_graceful_shutdown=HTTP_DRAIN_S,
        )
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise fail("the server did not start; the log above says why", 1)
