"""``statestore serve``: bootstrap, follow and serve the REST API.

With one worker (the default) this process ingests and serves; with ``--workers N``
(or ``[api] workers``) it ingests and N serving processes answer on the same socket
(statestore/cli/_workers.py).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any

import typer

from .. import StateStore
from ._app import ConfigOption, errors, fail, handled, load
from ._signals import SecondSignalExits

__all__ = ["serve"]

# Every command logs as "statestore.cli": stable names for log filters.
log = logging.getLogger("statestore.cli")


@handled
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default: \\[api] host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default: \\[api] port).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Serving processes over one store (default: \\[api] workers). With more than "
            "one, this process ingests and each worker serves a copy that catches up with it.",
        ),
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
    if workers is not None:
        changes["workers"] = workers
    if changes:
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update=changes)})
    # Imported here: the REST app's dependencies cost every other command its start-up time.
    from statestore import api

    api.check_bind(cfg)
    if cfg.api.workers > 1:
        from ._workers import serve_workers

        level = logging.getLogger().getEffectiveLevel()
        code = serve_workers(cfg, level)
        if code:
            raise fail("the server stopped on a failure; the log above says why", code)
        return
    # Open once before the server does: a store held by another process, or one that
    # cannot be opened, is reported here in one line instead of as a failed lifespan.
    with errors(cfg):
        StateStore(cfg).close()

    level = logging.getLogger().getEffectiveLevel()
    log.info("serve.start host=%s port=%d views=%d", cfg.api.host, cfg.api.port, len(cfg.views))
    server = api.Server(api.create_app(cfg), cfg, level)
    # The first signal is the server's graceful stop: no new connections, requests in
    # flight finish, then the app's lifespan closes the store (followers finish their
    # batch, RocksDB closes). A shutdown stuck behind a long request ends at the second.
    server.on_signal = SecondSignalExits(server.drain)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise fail("the server did not start; the log above says why", 1)
