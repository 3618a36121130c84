"""Progress of bootstraps and rebuilds: rich bars on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import threading
import time

from rich import progress as rp

from .. import Progress
from ._app import err_console

__all__ = ["PLAIN_PROGRESS_INTERVAL_S", "Reporter", "reporter_for", "summary"]

# Every command logs as "statestore.cli": stable names for log filters.
log = logging.getLogger("statestore.cli")

PLAIN_PROGRESS_INTERVAL_S = 2.0


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta(p: Progress) -> str:
    if p.done or p.remaining == 0:
        return "0s"
    rate = p.rate
    return duration(p.remaining / rate) if rate > 0 else "?"


class Reporter:
    """Receives progress from the bootstrap threads; keeps each view's final figures."""

    def __init__(self) -> None:
        self.final: dict[str, Progress] = {}
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        with self._lock:
            if p.done:
                self.final[p.view] = p
            self.show(p)

    def show(self, p: Progress) -> None:
        raise NotImplementedError

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class PlainReporter(Reporter):
    """A log line per view when it starts and every few seconds after: for files and CI."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self._last: dict[str, float] = {}

    def show(self, p: Progress) -> None:
        now = time.monotonic()
        last = self._last.get(p.view)
        if p.done or (last is not None and now - last < PLAIN_PROGRESS_INTERVAL_S):
            return
        self._last[p.view] = now
        log.info(
            "%s.progress view=%s records=%d remaining=%d expected=%d rate=%.0f/s eta=%s",
            self.action,
            p.view,
            p.records,
            p.remaining,
            p.expected,
            p.rate,
            eta(p),
        )


class LiveReporter(Reporter):
    """A rich progress bar per view: records, rate and ETA."""

    def __init__(self, views: list[str]) -> None:
        super().__init__()
        self.bars = rp.Progress(
            rp.TextColumn("[bold]{task.description}"),
            rp.BarColumn(),
            rp.TaskProgressColumn(),
            rp.TextColumn("{task.fields[records]} records"),
            rp.TextColumn("{task.fields[rate]}"),
            rp.TextColumn("ETA {task.fields[eta]}"),
            rp.TextColumn("{task.fields[note]}"),
            console=err_console,
        )
        self.tasks = {
            v: self.bars.add_task(v, total=None, records="0", rate="", eta="?", note="")
            for v in views
        }

    def show(self, p: Progress) -> None:
        total = max(p.expected, 1)
        self.bars.update(
            self.tasks[p.view],
            total=total,
            completed=total if p.done else max(0, p.expected - p.remaining),
            records=f"{p.records:,}",
            rate=f"{p.rate:,.0f} rec/s",
            eta=eta(p),
        )

    def note(self, view: str, text: str) -> None:
        """A short remark after the view's bar (its state, while a server rebuilds it)."""
        self.bars.update(self.tasks[view], note=text)

    def __enter__(self) -> Reporter:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()


def reporter_for(action: str, views: list[str]) -> Reporter:
    """Bars on a terminal, periodic log lines otherwise."""
    return LiveReporter(views) if err_console.is_terminal else PlainReporter(action)


def summary(name: str, keys: int, final: Progress | None, fallback_s: float) -> str:
    """``view: N records, K keys in S s (R records/s)``: the closing line of a catch-up."""
    records = final.records if final is not None else 0
    seconds = final.elapsed if final is not None else fallback_s
    rate = records / seconds if seconds > 0 else 0.0
    return f"{name}: {records:,} records, {keys:,} keys in {seconds:.1f} s ({rate:,.0f} records/s)"
