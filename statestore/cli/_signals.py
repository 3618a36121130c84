"""Stopping on SIGINT/SIGTERM: the first signal stops cleanly, a second one exits at once.

A job runner stops a bootstrap or a rebuild with SIGTERM and an operator with
Ctrl-C; both finish the batch in flight, keep what was applied and close RocksDB.
An operator who cannot wait for that sends the signal again: the process then
exits at once with ``128 + signal`` (RocksDB's write-ahead log keeps every
applied batch, so nothing is lost but the batch in flight).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["HANDLED", "SecondSignalExits", "exit_at_once", "interrupts"]

# Every command logs as "statestore.cli": stable names for log filters.
log = logging.getLogger("statestore.cli")

HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_at_once(signum: int) -> None:
    """End the process now, skipping every cleanup (the second signal)."""
    name = signal.Signals(signum).name
    os.write(2, f"error: {name} again: exiting at once\n".encode())
    os._exit(128 + signum)


class SecondSignalExits:
    """A signal handler: the first signal calls *first*, any later one exits at once."""

    def __init__(
        self,
        first: Callable[[int], None],
        *,
        exit_now: Callable[[int], None] = exit_at_once,
    ) -> None:
        self.first = first
        self.exit_now = exit_now
        self.received = 0

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        self.received += 1
        if self.received > 1:
            self.exit_now(signum)
            return
        log.warning(
            "cli.stopping signal=%s: finishing the batch in flight and closing the store; "
            "send it again to exit at once",
            signal.Signals(signum).name,
        )
        self.first(signum)


def _interrupt(signum: int) -> None:
    raise KeyboardInterrupt


@contextmanager
def interrupts() -> Iterator[SecondSignalExits | None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt once; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    handler = SecondSignalExits(_interrupt)
    previous = {sig: signal.signal(sig, handler) for sig in HANDLED}
    try:
        yield handler
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
