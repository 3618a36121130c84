"""Waiting for a state with a deadline: tests poll for what they expect, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.1


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until *check()* is true; fail naming *what* when it is not within *timeout* s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:g}s: {what}")
        time.sleep(POLL_S)
