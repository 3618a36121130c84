"""Log output: text lines (the default) or one JSON object per line.

Log messages are written as an event name and ``key=value`` fields
(``view.state view=d state=ready reason=-``). In JSON each line carries the
same: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message`` as written, and, for a message in that shape, ``event`` and each
field (integers as numbers; a value runs to the next `` key=``, so a reason
with spaces stays whole). Worker processes (bulk-load readers and merges) log
the same way, with a ``process`` field naming them: the format is passed to
them in the ``STATESTORE_LOG_FORMAT`` environment variable.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, Literal

import orjson

__all__ = ["FORMAT_ENV", "JsonFormatter", "LogFormat", "configure_child", "text_formatter"]

LogFormat = Literal["text", "json"]
FORMAT_ENV = "STATESTORE_LOG_FORMAT"

_EVENT = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+$")
_FIELD_START = re.compile(r"\s(?=[A-Za-z_][\w.]*=)")
_INT = re.compile(r"^-?\d{1,18}$")
_RESERVED = frozenset({"time", "level", "logger", "message", "event", "process", "exception"})


def _fields(message: str) -> dict[str, Any]:
    """``event`` and the ``key=value`` fields of a message written in that shape."""
    head, _, rest = message.partition(" ")
    if not _EVENT.match(head):
        return {}
    out: dict[str, Any] = {"event": head}
    if not rest:
        return out
    for part in _FIELD_START.split(" " + rest):
        key, eq, value = part.strip().partition("=")
        if not eq or not key:
            continue
        if key in _RESERVED or key in out:
            key = f"field_{key}"
        out[key] = int(value) if _INT.match(value) else value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record; *process* names a worker process."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if self._process is not None:
            data["process"] = self._process
        data.update(_fields(message))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode("utf-8")


def text_formatter(process: str | None = None) -> logging.Formatter:
    """The text format: time, level, (worker,) logger and message."""
    who = f" {process}" if process else ""
    sep = ":" if process else ""
    return logging.Formatter(f"%(asctime)s %(levelname)s{who} %(name)s{sep} %(message)s")


def configure_child(level: int, process: str) -> None:
    """Log to stderr in a worker process, in the format its owner logs in."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(FORMAT_ENV) == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(text_formatter(process))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
