"""The REST API of statestore: an app factory over the embedded StateStore."""

from __future__ import annotations

from .app import create_app
from .auth import check_bind

__all__ = ["check_bind", "create_app"]
