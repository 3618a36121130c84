"""``statestore serve --workers N``: this process ingests, N worker processes serve.

This process is the store's primary (its only writer): it bootstraps and follows
every view; it serves HTTP only on ``[api] primary_port`` when that is set (the app
over its own store: its metrics, rebuilds, snapshots, change streams; announced
to commands that find the store held). It binds one listening socket per worker on
``[api] port`` (SO_REUSEPORT: the kernel spreads connections over them) and starts
N worker processes (spawned), each serving one; each opens the store as a RocksDB
secondary instance in a directory of its own (statestore/secondary.py) and runs
the REST app over it. Every ``REPORT_S`` (when something changed, and at least
every ``HEARTBEAT_S``) this process sends each worker, through a pipe, the views'
states and end offsets and whether it is ready.

- Shutdown: SIGTERM or SIGINT stops the workers with SIGTERM (each drains its
  requests for up to ``HTTP_DRAIN_S``), then the views finish their batch and the
  store closes: the primary closes last. A second signal kills the workers and
  exits at once.
- A worker that dies is started again (a new secondary directory) and logged
  (``serve.worker_died``, ``serve.worker_restarted``); more than ``MAX_RESTARTS``
  deaths within ``RESTART_WINDOW_S`` stop the whole server, exit status 1
  (``serve.workers_failing``).
- A worker whose pipe closes (this process died) stops serving and exits 1.
- Logs: workers log in this process's format (``STATESTORE_LOG_FORMAT``), naming
  themselves ``worker-<i>``; every answer of a worker carries ``X-Statestore-Worker``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from .. import Config, StateStore, StateStoreError, api
from ..logs import configure_child
from ..secondary import Report, SecondaryCopy, report_of
from ._app import errors
from ._signals import HANDLED, SecondSignalExits, exit_at_once

__all__ = ["WORKER_HEADER", "serve_workers"]

log = logging.getLogger("statestore.cli")

WORKER_HEADER = "X-Statestore-Worker"
# As often as a worker may catch up by default: a worker catches up when a report says
# there is something new (statestore/secondary.py).
REPORT_S = 0.02
HEARTBEAT_S = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# Beyond the HTTP drain: the worker closes its copy.
_STOP_GRACE_S = api.HTTP_DRAIN_S + 10


@dataclass(frozen=True, slots=True)
class _Spec:
    """What a worker process is started with."""

    index: int
    config: Config
    directory: Path
    level: int


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    pipe: Connection
    directory: Path
    fresh: bool = True  # has not been sent a report yet


@dataclass
class _Workers:
    """The worker processes, started and restarted from one place."""

    config: Config
    level: int
    socks: list[socket.socket]
    base: Path
    by_index: dict[int, _Worker] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: int = 0

    def start(self, index: int) -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        self.runs += 1
        directory = self.base / f"worker-{index}-{self.runs}"
        receive, send = ctx.Pipe(duplex=False)
        spec = _Spec(index, self.config, directory, self.level)
        process = ctx.Process(
            target=_worker_main,
            args=(spec, receive, self.socks[index]),
            name=f"worker-{index}",
        )
        process.start()
        receive.close()
        worker = _Worker(index, process, send, directory)
        with self.lock:
            self.by_index[index] = worker
        return worker

    def send(self, report: Report, *, changed: bool) -> None:
        with self.lock:
            for worker in self.by_index.values():
                if changed or worker.fresh:
                    with contextlib.suppress(OSError, ValueError):  # it died: the loop sees it
                        worker.pipe.send(report)
                    worker.fresh = False

    def forget(self, worker: _Worker) -> None:
        worker.pipe.close()
        shutil.rmtree(worker.directory, ignore_errors=True)

    def all(self) -> list[_Worker]:
        with self.lock:
            return list(self.by_index.values())


def _report(store: StateStore, workers: _Workers, stop: threading.Event) -> None:
    """Send the primary's state to the workers: when it changes, and every HEARTBEAT_S."""
    last: Report | None = None
    sent_at = 0.0
    while not stop.wait(REPORT_S):
        try:
            report = report_of(store)
        except Exception:  # the store is closing
            continue
        now = time.monotonic()
        changed = report != last or now - sent_at >= HEARTBEAT_S
        workers.send(report, changed=changed)
        if changed:
            last, sent_at = report, now


def _bind(config: Config, count: int) -> list[socket.socket]:
    """One listening socket per worker on ``[api] host:port`` (SO_REUSEPORT).

    The kernel spreads new connections over the sockets evenly; one socket shared by
    all workers leaves them to whichever accepts first, and one worker's event loop
    took nearly all of them. Each socket stays open here while its worker is replaced,
    so connections queued on it are served by the next one.
    """
    host = config.api.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = (host, config.api.port)
    out: list[socket.socket] = []
    try:
        # A plain bind first: a port another server holds, even with SO_REUSEPORT, is
        # refused here rather than shared with it.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(where)
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in out:
            sock.close()
        raise StateStoreError(
            f"cannot listen on {config.api.host}:{config.api.port}: {exc.strerror or exc}"
        ) from exc
    return out


def _primary_http(
    config: Config, store: StateStore, port: int, level: int
) -> tuple[api.Server, threading.Thread]:
    """Serve the app over the primary's own store on *port* (``[api] primary_port``), in a
    thread."""
    server = api.Server(api.create_app(config, store=store), config, level, port=port)
    thread = threading.Thread(target=server.run, name="primary-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise StateStoreError(
                f"the ingesting process cannot serve on {config.api.host}:{port} "
                "([api] primary_port); the log above says why"
            )
        time.sleep(0.02)
    return server, thread


def serve_workers(config: Config, level: int) -> int:
    """Ingest here and serve from ``[api] workers`` processes until SIGTERM; the exit status."""
    api.create_app(config)  # the settings the workers build their app from (tokens) are valid
    n = config.api.workers
    with errors(config):
        socks = _bind(config, n)
        try:
            store = StateStore(config)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
    base = Path(tempfile.mkdtemp(prefix="statestore-serve-"))
    stopping = threading.Event()
    failed = False
    workers = _Workers(config, level, socks, base)

    def kill_all(signum: int) -> None:
        for w in workers.all():
            with contextlib.suppress(OSError):
                os.kill(w.process.pid or 0, signal.SIGKILL)
        exit_at_once(signum)

    handler = SecondSignalExits(lambda _: stopping.set(), exit_now=kill_all)
    previous = {sig: signal.signal(sig, _call(handler)) for sig in HANDLED}
    stop_reports = threading.Event()
    primary: tuple[api.Server, threading.Thread] | None = None
    try:
        store.start()
        announced = config.api.url()
        port = config.api.primary_port
        if port is not None:
            with errors(config):
                primary = _primary_http(config, store, port, level)
            # Commands that find the store held (rebuild, snapshot create) ask this process.
            announced = config.api.model_copy(update={"port": port}).url()
        store.storage.announce(announced)
        log.info(
            "serve.start host=%s port=%d views=%d workers=%d copies=%s",
            config.api.host,
            config.api.port,
            len(config.views),
            n,
            base,
        )
        for i in range(n):
            w = workers.start(i)
            log.info("serve.worker_started worker=%d pid=%s", i, w.process.pid)
        reporter = threading.Thread(
            target=_report, args=(store, workers, stop_reports), name="reports", daemon=True
        )
        reporter.start()
        deaths: collections.deque[float] = collections.deque()
        while not stopping.is_set():
            by_sentinel = {w.process.sentinel: w for w in workers.all()}
            for sentinel in wait(list(by_sentinel), timeout=0.2):
                if stopping.is_set():
                    break
                dead = by_sentinel[sentinel]  # type: ignore[index]
                dead.process.join(5)  # reaped: its exit code is known
                log.error(
                    "serve.worker_died worker=%d pid=%s exitcode=%s",
                    dead.index,
                    dead.process.pid,
                    dead.process.exitcode,
                )
                workers.forget(dead)
                now = time.monotonic()
                deaths.append(now)
                while deaths and now - deaths[0] > RESTART_WINDOW_S:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    log.error(
                        "serve.workers_failing deaths=%d window_s=%d: stopping the server",
                        len(deaths),
                        RESTART_WINDOW_S,
                    )
                    failed = True
                    stopping.set()
                    break
                w = workers.start(dead.index)
                log.info("serve.worker_restarted worker=%d pid=%s", w.index, w.process.pid)
    finally:
        log.info("serve.stopping workers=%d", n)
        for w in workers.all():
            if w.process.is_alive():
                with contextlib.suppress(OSError):
                    w.process.terminate()
        deadline = time.monotonic() + _STOP_GRACE_S
        for w in workers.all():
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                log.error("serve.worker_killed worker=%d pid=%s", w.index, w.process.pid)
                w.process.kill()
                w.process.join()
        stop_reports.set()
        for w in workers.all():
            workers.forget(w)
        for sock in socks:
            sock.close()
        if primary is not None:
            server, thread = primary
            server.should_exit = True
            thread.join(_STOP_GRACE_S)
        store.close()  # the primary closes last
        shutil.rmtree(base, ignore_errors=True)
        for sig, old in previous.items():
            signal.signal(sig, old)
        log.info("serve.stopped")
    return 1 if failed else 0


def _call(handler: SecondSignalExits) -> Any:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler(signum, frame)

    return on_signal


# -- the worker process -------------------------------------------------------------


def _tagged(app: Any, index: int) -> Any:
    """*app*, with every answer naming the worker that gave it."""
    header = (WORKER_HEADER.lower().encode(), str(index).encode())

    async def tagged(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await app(scope, receive, sending)

    return tagged


def _worker_main(spec: _Spec, pipe: Connection, sock: socket.socket) -> None:
    """A serving process: the REST app over a secondary copy, until SIGTERM."""
    # Ctrl-C reaches every process of the terminal: the serving process stops workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_child(spec.level, f"worker-{spec.index}")
    config = spec.config
    try:
        copy = SecondaryCopy(config, spec.directory, interval=config.api.catch_up_ms / 1000)
    except StateStoreError as exc:
        log.error("serve.worker_failed worker=%d error=%s", spec.index, exc)
        sys.exit(1)
    app = api.create_app(config, store=copy.store)
    app.state.catch_up = copy.request

    def swapped(store: StateStore) -> None:
        app.state.store = store

    copy.on_swap = swapped

    def on_signal(sig: int) -> None:
        if sig != signal.SIGINT:
            server.should_exit = True  # and no signal raised again after the drain

    server = api.Server(_tagged(app, spec.index), config, spec.level, on_signal=on_signal)
    lost = threading.Event()

    def listen() -> None:
        try:
            while True:
                copy.take(pipe.recv())
        except (EOFError, OSError):
            if not server.should_exit:
                log.error(
                    "serve.primary_gone worker=%d: the ingesting process ended; stopping",
                    spec.index,
                )
                lost.set()
                server.should_exit = True

    threading.Thread(target=listen, name="reports", daemon=True).start()
    copy.start()
    try:
        server.run(sockets=[sock])
    finally:
        copy.close()
    if lost.is_set() or not server.started:
        sys.exit(1)
