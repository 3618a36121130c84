"""Serving the app: uvicorn's server with the protocol, limits and drain of ``[api]``.

What ``statestore serve`` runs in each serving process (statestore/cli/_serve.py
and _workers.py): the app from ``create_app``, listening where ``[api]`` says or
on sockets handed over, over the bounded HTTP protocol (api/http.py). The first
stop signal drains: no new connections, requests in flight (and open change
streams) get ``HTTP_DRAIN_S`` seconds, then the app's lifespan closes the store.
A caller that wants another signal policy passes *on_signal*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from statestore import Config

from .http import bounded_http

__all__ = ["HTTP_DRAIN_S", "Server"]

# Seconds requests in flight (and open change streams) get to finish on SIGTERM; then
# the views finish their batch (StateStore.stop, at most its timeout) and the store closes.
HTTP_DRAIN_S = 5


class Server(uvicorn.Server):
    """uvicorn's server for *app*, configured from *config* (``[api]``) and the log *level*.

    It listens on ``[api] host`` and *port* (default ``[api] port``), unless ``run``
    is handed sockets. *on_signal*, when set, is called with each SIGINT/SIGTERM
    instead of uvicorn's graceful stop; it may call ``drain`` for that stop.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: Config,
        level: int,
        *,
        port: int | None = None,
        on_signal: Callable[[int], None] | None = None,
    ) -> None:
        api = config.api
        super().__init__(
            uvicorn.Config(
                app,
                host=api.host,
                port=api.port if port is None else port,
                log_level=logging.getLevelName(level).lower(),
                log_config=None,
                ssl_certfile=api.ssl_certfile,
                ssl_keyfile=api.ssl_keyfile,
                http=bounded_http(api.max_header_kb, api.header_timeout_s),
                limit_concurrency=api.max_connections,
                # Open change streams never end by themselves: give them a while, then close.
                timeout_graceful_shutdown=HTTP_DRAIN_S,
            )
        )
        self.on_signal = on_signal
        self._frame: FrameType | None = None

    def drain(self, signum: int) -> None:
        """uvicorn's graceful stop, as on the signal *signum*."""
        super().handle_exit(signum, self._frame)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._frame = frame
        if self.on_signal is None:
            self.drain(sig)
        else:
            self.on_signal(sig)
