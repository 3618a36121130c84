"""The ``statestore`` command line: serve, bootstrap, rebuild, status, get, quarantine.

Exit codes: 0 success, 1 a view failed / an entity is absent / a runtime error,
2 bad usage or configuration (unknown view, invalid config, store in use), 130
interrupted.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import functools
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich import progress as rp
from rich.console import Console
from rich.table import Table

from . import (
    CodecError,
    Config,
    ConfigError,
    CursorError,
    KafkaError,
    Progress,
    StateStore,
    StateStoreError,
    StoreLockedError,
    UnknownViewError,
    ViewFailedError,
    ViewStatus,
    __version__,
    load_config,
)
from .kafka import TopicMissingError

__all__ = ["app", "main"]

log = logging.getLogger(__name__)

# Status must answer promptly when Kafka is down: it then shows the stored positions only.
STATUS_KAFKA_TIMEOUT_S = 5.0
PLAIN_PROGRESS_INTERVAL_S = 2.0

app = typer.Typer(
    name="statestore",
    help="Compacted Kafka topics as a local, queryable RocksDB view.",
    no_args_is_help=True,
    add_completion=False,
    # Expected errors are reported as one line; a traceback means a bug, and must not show locals.
    pretty_exceptions_enable=False,
)

_err = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


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


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def _locked_message(config: Config) -> str:
    return (
        f"the store at {config.store.path} is in use by a running server "
        f"(configured at http://{config.api.host}:{config.api.port}); "
        "stop it or use the REST API against it, then run this command again"
    )


@contextmanager
def _errors(config: Config | None = None) -> Iterator[None]:
    """Turn the errors an operator can act on into a message and an exit code."""
    try:
        yield
    except (ConfigError, UnknownViewError, CursorError) as exc:
        raise _fail(str(exc), 2) from None
    except StoreLockedError as exc:
        raise _fail(_locked_message(config) if config is not None else str(exc), 2) from None
    except StateStoreError as exc:
        raise _fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise _fail(
            "interrupted; what was applied is kept and the next run resumes from it", 130
        ) from None


def _handled(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _errors():
            return fn(*args, **kwargs)

    return wrapper


# -- global options and logging ----------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Plain log lines on whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(level: int, cli_level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "statestore_cli", False):
            root.removeHandler(handler)
    new: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        new = RichHandler(console=_err, show_path=False, markup=False, rich_tracebacks=False)
        new.setFormatter(logging.Formatter("%(message)s"))
    else:
        new = _StderrHandler()
        new.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    setattr(new, "statestore_cli", True)  # noqa: B010 - a marker, so a re-run replaces it
    root.addHandler(new)
    root.setLevel(level)
    logging.getLogger(__name__).setLevel(cli_level)


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
    _setup_logging(level, cli_level)


def _config(ctx: typer.Context, override: Path | None) -> Config:
    return load_config(override if override is not None else ctx.obj)


def _check_views(config: Config, names: list[str] | None) -> list[str]:
    """The views to act on; an unknown name fails before the store is opened."""
    for name in names or ():
        config.view(name)
    return list(dict.fromkeys(names)) if names else [v.name for v in config.views]


# -- serve --------------------------------------------------------------------------------


@app.command()
@_handled
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default: [api] host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default: [api] port).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Bootstrap, follow and serve the REST API (ready once every view has caught up)."""
    cfg = _config(ctx, config)
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if changes:
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update=changes)})
    from api.auth import check_bind

    check_bind(cfg)
    # Open once before the server does: a store held by another process, or one that
    # cannot be opened, is reported here in one line instead of as a failed lifespan.
    with _errors(cfg):
        StateStore(cfg).close()

    import uvicorn

    from api.app import create_app

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    log.info("serve.start host=%s port=%d views=%d", cfg.api.host, cfg.api.port, len(cfg.views))
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, drains, and the app's lifespan
    # closes the store.
    uvicorn.run(
        create_app(cfg),
        host=cfg.api.host,
        port=cfg.api.port,
        log_level=level,
        log_config=None,
        ssl_certfile=cfg.api.ssl_certfile,
        ssl_keyfile=cfg.api.ssl_keyfile,
    )


# -- bootstrap and rebuild ----------------------------------------------------------------


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _eta(p: Progress) -> str:
    if p.done or p.remaining == 0:
        return "0s"
    rate = p.rate
    return _duration(p.remaining / rate) if rate > 0 else "?"


class _Reporter:
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

    def __enter__(self) -> _Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _PlainReporter(_Reporter):
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
            _eta(p),
        )


class _LiveReporter(_Reporter):
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
            console=_err,
        )
        self.tasks = {
            v: self.bars.add_task(v, total=None, records="0", rate="", eta="?") for v in views
        }

    def show(self, p: Progress) -> None:
        total = max(p.expected, 1)
        self.bars.update(
            self.tasks[p.view],
            total=total,
            completed=total if p.done else max(0, p.expected - p.remaining),
            records=f"{p.records:,}",
            rate=f"{p.rate:,.0f} rec/s",
            eta=_eta(p),
        )

    def __enter__(self) -> _Reporter:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()


def _summary(status: ViewStatus, final: Progress | None, fallback_s: float) -> str:
    records = final.records if final is not None else 0
    seconds = final.elapsed if final is not None else fallback_s
    rate = records / seconds if seconds > 0 else 0.0
    return (
        f"{status.name}: {records:,} records, {status.keys:,} keys in {seconds:.1f} s "
        f"({rate:,.0f} records/s)"
    )


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """A job runner stops with SIGTERM: stop like Ctrl-C, keeping what is applied."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _catch_up(
    ctx: typer.Context, config: Path | None, views: list[str] | None, *, rebuild: bool
) -> None:
    cfg = _config(ctx, config)
    names = _check_views(cfg, views)
    action = "rebuild" if rebuild else "bootstrap"
    with _sigterm_interrupts(), _errors(cfg), StateStore(cfg) as store:
        started = time.monotonic()
        reporter: _Reporter = _LiveReporter(names) if _err.is_terminal else _PlainReporter(action)
        with reporter:
            try:
                if rebuild:
                    store.rebuild(names, on_progress=reporter)
                else:
                    store.bootstrap(names, on_progress=reporter, raise_on_failure=False)
            except ViewFailedError:
                pass  # reported per view below
        statuses = [store.view(n).status() for n in names]
        elapsed = time.monotonic() - started
    failed = [s for s in statuses if s.state == "failed"]
    for s in statuses:
        if s.state != "failed":
            typer.echo(_summary(s, reporter.final.get(s.name), elapsed))
    for s in failed:
        typer.secho(f"error: view {s.name!r} failed: {s.reason}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
@_handled
def bootstrap(ctx: typer.Context, view: ViewsOption = None, config: ConfigOption = None) -> None:
    """Catch every view up to the topics' end offsets as of now, then exit."""
    _catch_up(ctx, config, view, rebuild=False)


@app.command()
@_handled
def rebuild(ctx: typer.Context, view: ViewsOption = None, config: ConfigOption = None) -> None:
    """Wipe the view(s) and bootstrap them from offset 0."""
    _catch_up(ctx, config, view, rebuild=True)


# -- status -------------------------------------------------------------------------------


def _view_report(store: StateStore, status: ViewStatus, kafka: dict[str, Any]) -> dict[str, Any]:
    view = store.view(status.name)
    positions = {p.partition: p.position for p in status.partitions}
    marks: dict[int, tuple[int, int]] | None = None
    problem: str | None = None
    if kafka["reachable"] is not False:
        try:
            client = store.client
            parts = client.partitions(status.topic, timeout=STATUS_KAFKA_TIMEOUT_S)
            marks = {
                p: client.watermarks(status.topic, p, timeout=STATUS_KAFKA_TIMEOUT_S) for p in parts
            }
            kafka["reachable"] = True
        except TopicMissingError as exc:
            kafka["reachable"] = True
            problem = str(exc)
        except KafkaError as exc:
            kafka["reachable"] = False
            kafka["error"] = str(exc)
    partitions = []
    stale: list[str] = []
    for p in sorted(set(positions) | set(marks or ())):
        pos = positions.get(p, 0)
        low, end = marks[p] if marks is not None and p in marks else (None, None)
        if low is not None and 0 < pos < low:
            stale.append(f"partition {p}: position {pos} is below the log start {low}")
        if end is not None and pos > end:
            stale.append(f"partition {p}: position {pos} is past the end {end} (topic recreated?)")
        partitions.append(
            {
                "partition": p,
                "position": pos,
                "end_offset": end,
                "log_start": low,
                "lag": None if end is None else max(0, end - pos),
            }
        )
    lags = [item["lag"] for item in partitions]
    lag = sum(x for x in lags if x is not None) if marks is not None and None not in lags else None
    changed = view.prepare()
    state, reason = "ready", None
    if changed is not None:
        state, reason = "stale", f"{changed}; run `statestore rebuild --view {status.name}`"
    elif problem is not None:
        state, reason = "failed", problem
    elif stale:
        state, reason = (
            "stale",
            "; ".join(stale) + f"; run `statestore rebuild --view {status.name}`",
        )
    elif not positions:
        state, reason = "empty", "never bootstrapped; run `statestore bootstrap`"
    elif lag is None:
        state, reason = "unknown", "end offsets unknown (Kafka unreachable)"
    elif lag > 0:
        state = "behind"
    return {
        "name": status.name,
        "topic": status.topic,
        "state": state,
        "reason": reason,
        "keys": status.keys,
        "records_applied": status.records_applied,
        "quarantined": status.quarantined,
        "lag": lag,
        "generation": status.generation,
        "last_applied_at_ms": status.last_applied_at_ms,
        "partitions": partitions,
    }


def _status_report(store: StateStore) -> dict[str, Any]:
    servers = store.config.kafka.get("bootstrap.servers")
    kafka: dict[str, Any] = {"bootstrap_servers": servers, "reachable": None, "error": None}
    views = [_view_report(store, s, kafka) for s in store.status()]
    return {"store": str(store.config.store.path), "kafka": kafka, "views": views}


def _num(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _print_status(report: dict[str, Any]) -> None:
    table = Table(title=f"statestore at {report['store']}", title_justify="left")
    table.add_column("view")
    table.add_column("topic")
    for name in ("partition", "position", "end offset", "lag", "keys"):
        table.add_column(name, justify="right")
    table.add_column("state")
    notes: list[str] = []
    for v in report["views"]:
        style = {"ready": "green", "behind": "yellow", "failed": "red", "stale": "red"}.get(
            v["state"], ""
        )
        state = f"[{style}]{v['state']}[/]" if style else v["state"]
        table.add_row(v["name"], v["topic"], "", "", "", _num(v["lag"]), _num(v["keys"]), state)
        for p in v["partitions"]:
            table.add_row(
                "",
                "",
                str(p["partition"]),
                _num(p["position"]),
                _num(p["end_offset"]),
                _num(p["lag"]),
            )
        if v["reason"]:
            notes.append(f"{v['name']}: {v['reason']}")
    # Piped or redirected, rich would squeeze the table into 80 columns.
    Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(table)
    kafka = report["kafka"]
    if kafka["reachable"] is False:
        notes.insert(
            0,
            f"end offsets unknown: Kafka at {kafka['bootstrap_servers']} is unreachable ({kafka['error']})",
        )
    for note in notes:
        typer.echo(note)


@app.command()
@_handled
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per view and partition: position, end offset, lag, keys and state (works beside a server)."""
    cfg = _config(ctx, config)
    if "log_level" not in cfg.kafka and not log.isEnabledFor(logging.DEBUG):
        # An unreachable cluster is reported once in the output; librdkafka would repeat
        # every failed connection attempt on stderr.
        cfg = cfg.model_copy(update={"kafka": {**cfg.kafka, "log_level": 2}})
    with StateStore(cfg, read_only=True) as store:
        report = _status_report(store)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)


# -- reads --------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: object, *, indent: int | None = None) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, indent=indent)


@app.command()
@_handled
def get(
    ctx: typer.Context,
    view: Annotated[str, typer.Argument(help="View name.")],
    key: Annotated[str, typer.Argument(help="Entity key, as typed in URLs.")],
    config: ConfigOption = None,
) -> None:
    """Print one entity as JSON; exit 1 when it is absent."""
    cfg = _config(ctx, config)
    _check_views(cfg, [view])
    with StateStore(cfg, read_only=True) as store:
        try:
            store.view(view).key_codec.from_text(key)
        except CodecError as exc:
            raise _fail(f"view {view!r}: bad key {key!r}: {exc}", 2) from None
        entity = store.get(view, key)
    if entity is None:
        raise _fail(f"view {view!r} has no entity with key {key!r}", 1)
    typer.echo(_dumps(entity.to_dict(), indent=2))


@app.command()
@_handled
def quarantine(
    ctx: typer.Context,
    view: Annotated[str, typer.Argument(help="View name.")],
    limit: Annotated[int, typer.Option(min=1, help="At most this many records.")] = 100,
    after: Annotated[str | None, typer.Option(help="Cursor printed by the previous page.")] = None,
    config: ConfigOption = None,
) -> None:
    """List the records a view quarantined (could not decode), one JSON object a line."""
    cfg = _config(ctx, config)
    _check_views(cfg, [view])
    with StateStore(cfg, read_only=True) as store:
        items, cursor = store.view(view).quarantine(after, limit)
    for item in items:
        typer.echo(_dumps(item))
    if cursor is not None:
        typer.echo(f"more: statestore quarantine {view} --after {cursor}", err=True)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
