"""The REST API of statestore: an app factory over the embedded StateStore, and its server.

``create_app`` builds the app; ``check_bind`` refuses a bind beyond loopback without
tokens; ``Server`` runs an app with uvicorn as ``statestore serve`` does.
"""

from __future__ import annotations

from .app import create_app
from .auth import check_bind
from .server import HTTP_DRAIN_S, Server

__all__ = ["HTTP_DRAIN_S", "Server", "check_bind", "create_app"]
