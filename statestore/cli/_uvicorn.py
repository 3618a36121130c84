"""The uvicorn settings every serving process of ``statestore serve`` runs with."""

from __future__ import annotations

import logging
from typing import Any

from .. import Config

__all__ = ["HTTP_DRAIN_S", "server_options"]

# Seconds requests in flight (and open change streams) get to finish on SIGTERM; then
# the views finish their batch (StateStore.stop, at most its timeout) and the store closes.
HTTP_DRAIN_S = 5


def server_options(config: Config, level: int) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments (all but the app and where to listen)."""
    from statestore.api.http import bounded_http

    return {
        "log_level": logging.getLevelName(level).lower(),
        "log_config": None,
        "ssl_certfile": config.api.ssl_certfile,
        "ssl_keyfile": config.api.ssl_keyfile,
        "http": bounded_http(config.api.max_header_kb, config.api.header_timeout_s),
        "limit_concurrency": config.api.max_connections,
        # Open change streams never end by themselves: give them a while, then close.
        "timeout_graceful_shutdown": HTTP_DRAIN_S,
    }
