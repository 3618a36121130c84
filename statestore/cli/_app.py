"""The typer application, its global options, logging and the mapping of errors to exit codes."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from .. import (
    Config,
    ConfigError,
    CursorError,
    StateStoreError,
    StoreLockedError,
    UnknownIndexError,
    UnknownViewError,
    __version__,
    load_config,
)
from ..logs import FORMAT_ENV, JsonFormatter, LogFormat, text_formatter
from ..offline import holder

__all__ = [
    "ConfigOption",
    "ViewsOption",
    "app",
    "check_views",
    "dumps",
    "err_console",
    "errors",
    "fail",
    "handled",
    "load",
    "locked_message",
]

app = typer.Typer(
    name="statestore",
    help="Compacted Kafka topics as a local, queryable RocksDB view.",
    no_args_is_help=True,
    add_completion=False,
    # Expected errors are reported as one line; a traceback means a bug, and must not show locals.
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormatName(enum.StrEnum):
    text = "text"
    json = "json"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--config",
        metavar="FILE",
        help="Config file (overrides the one given before the command).",
        show_default=False,
        dir_okay=False,
    ),
]
ViewsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--view",
        metavar="NAME",
        help="Only this view (repeat for several); default: every view.",
        show_default=False,
    ),
]


# -- errors -------------------------------------------------------------------------------


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr; return the Exit to raise."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def locked_message(config: Config) -> str:
    """Why the store cannot be opened: who holds it, as far as it said."""
    held = holder(config.store.path)
    if held is not None:
        pid = "?" if held.pid is None else held.pid
        return (
            f"the store at {config.store.path} is in use by a running server at "
            f"{held.url} (pid {pid}); stop it or use its REST API, "
            "then run this command again"
        )
    return (
        f"the store at {config.store.path} is in use by another process (a bootstrap, a "
        "server still starting, or a program embedding the store); wait for it or stop "
        "it, then run this command again"
    )


@contextmanager
def errors(config: Config | None = None) -> Iterator[None]:
    """Turn the errors an operator can act on into a message and an exit code."""
    try:
        yield
    except (ConfigError, UnknownViewError, UnknownIndexError, CursorError) as exc:
        raise fail(str(exc), 2) from None
    except StoreLockedError as exc:
        raise fail(locked_message(config) if config is not None else str(exc), 2) from None
    except StateStoreError as exc:
        raise fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise fail(
            "interrupted; what was applied is kept and the next run resumes from it", 130
        ) from None


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command under :func:`errors`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with errors():
            return fn(*args, **kwargs)

    return wrapper


# -- global options and logging ----------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Plain log lines on whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(level: int, cli_level: int, fmt: LogFormat = "text") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "statestore_cli", False):
            root.removeHandler(handler)
    # Worker processes the command spawns log in the same format.
    os.environ[FORMAT_ENV] = fmt
    new: logging.Handler
    if fmt == "json":
        new = _StderrHandler()
        new.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        new = RichHandler(console=err_console, show_path=False, markup=False, rich_tracebacks=False)
        new.setFormatter(logging.Formatter("%(message)s"))
    else:
        new = _StderrHandler()
        new.setFormatter(text_formatter())
    setattr(new, "statestore_cli", True)  # noqa: B010 - a marker, so a re-run replaces it
    root.addHandler(new)
    root.setLevel(level)
    logging.getLogger(__package__).setLevel(cli_level)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"statestore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Option(
            "-c",
            "--config",
            envvar="STATESTORE_CONFIG",
            metavar="FILE",
            help="Config file.",
            dir_okay=False,
        ),
    ] = Path("statestore.toml"),
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
    ] = 0,
    log_level: Annotated[
        LogLevel | None,
        typer.Option("--log-level", case_sensitive=False, help="Log level (overrides -v)."),
    ] = None,
    log_format: Annotated[
        LogFormatName | None,
        typer.Option(
            "--log-format",
            case_sensitive=False,
            help="text, or json: one JSON object per line (overrides the config's log.format).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Compacted Kafka topics as a local, queryable RocksDB view."""
    ctx.obj = config
    if log_level is not None:
        level = cli_level = logging.getLevelNamesMapping()[log_level.value.upper()]
    else:
        # Long-running commands log their course; queries keep stderr quiet. A live
        # progress display on a terminal replaces the bootstrap log lines.
        busy = ctx.invoked_subcommand == "serve" or (
            ctx.invoked_subcommand in ("bootstrap", "rebuild") and not sys.stderr.isatty()
        )
        base = logging.INFO if busy else logging.WARNING
        level = max(logging.DEBUG, base - 10 * verbose)
        cli_level = min(level, logging.INFO)
    fmt: LogFormat = log_format.value if log_format is not None else "text"
    ctx.meta["statestore.logging"] = (level, cli_level, log_format is not None)
    _setup_logging(level, cli_level, fmt)


def load(ctx: typer.Context, override: Path | None) -> Config:
    """The configuration named by the command's -c, else by the global one; its
    ``[log] format`` takes effect unless --log-format was given."""
    config = load_config(override if override is not None else ctx.obj)
    level, cli_level, fixed = ctx.meta.get("statestore.logging", (None, None, True))
    if not fixed and config.log.format != "text":
        _setup_logging(level, cli_level, config.log.format)
    return config


def check_views(config: Config, names: list[str] | None) -> list[str]:
    """The views to act on; an unknown name fails before the store is opened."""
    for name in names or ():
        config.view(name)
    return list(dict.fromkeys(names)) if names else [v.name for v in config.views]


# -- JSON output --------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object, *, indent: int | None = None) -> str:
    """JSON for entity values of any codec: bytes as base64, dates ISO 8601, decimals as text."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, indent=indent)
