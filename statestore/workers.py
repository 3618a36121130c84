"""Worker processes: fresh interpreters that report to the process owning the store.

Workers are started as ``python -m statestore._worker FD``, never forked from the
owner (whose Kafka client threads would not survive a fork) and never re-imports
of its main module (an embedding script without a main guard would run again in
each). A worker reads its spec, pickled, from stdin, runs ``spec.run(conn)`` and
reports through the pipe *conn*; SIGTERM asks it to write what it holds and stop.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Process", "exit_text", "owner_gone"]


class Process:
    """One worker process and the pipe it reports through."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        self.index = index
        self.proc = proc
        self.conn = conn
        self.open = True
        self.halted = False

    @classmethod
    def start(cls, index: int, spec: Any) -> Process:
        """A fresh interpreter running ``spec.run(conn)`` (see ``_worker``)."""
        reader, writer = multiprocessing.Pipe(duplex=False)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "statestore._worker", str(writer.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=(writer.fileno(),),
                start_new_session=False,
            )
        finally:
            writer.close()
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(spec))
        proc.stdin.close()
        return cls(index, proc, reader)

    def halt(self) -> None:
        """Ask the worker to write what it holds and stop (once)."""
        if not self.halted and self.proc.poll() is None:
            self.halted = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        try:
            self.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def owner_gone(owner_pid: int) -> bool:
    """Whether the process that started this worker has died (it was killed)."""
    return os.getppid() != owner_pid
