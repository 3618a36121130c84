"""``statestore bootstrap`` and ``statestore rebuild``: catch views up, with progress."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from .. import StateStore, StoreLockedError, ViewFailedError
from ..snapshot import restore
from ._app import ConfigOption, ViewsOption, check_views, errors, handled, load
from ._progress import reporter_for, summary
from ._remote import rebuild_on_server
from ._signals import interrupts

__all__ = ["bootstrap", "rebuild"]


WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=256,
        help="Processes that read a bulk load in parallel (default: the store's bootstrap_workers).",
    ),
]


def _catch_up(
    ctx: typer.Context,
    config: Path | None,
    views: list[str] | None,
    workers: int | None,
    *,
    rebuild: bool,
    seed: str | None = None,
) -> None:
    cfg = load(ctx, config)
    if workers is not None:
        cfg = cfg.model_copy(
            update={"store": cfg.store.model_copy(update={"bootstrap_workers": workers})}
        )
    names = check_views(cfg, views)
    action = "rebuild" if rebuild else "bootstrap"
    with interrupts(), errors(cfg):
        if seed is not None:
            done = restore(seed, cfg.store.path, cfg)
            typer.echo(
                f"seeded from {done.snapshot.url} ({done.bytes / 1e6:.1f} MB in "
                f"{done.seconds:.1f} s, taken {done.snapshot.manifest.get('created_at')})"
            )
            for name, what in done.plan.items():
                typer.echo(f"  {name}: {what}")
        try:
            store = StateStore(cfg)
        except StoreLockedError:
            if not rebuild:
                raise
            # A server holds the store: it rebuilds beside the served copy and swaps.
            rebuild_on_server(cfg, names, os.environ)
            return
        with store:
            started = time.monotonic()
            reporter = reporter_for(action, names)
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
            typer.echo(summary(s.name, s.keys, reporter.final.get(s.name), elapsed))
    for s in failed:
        typer.secho(f"error: view {s.name!r} failed: {s.reason}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)


@handled
def bootstrap(
    ctx: typer.Context,
    view: ViewsOption = None,
    config: ConfigOption = None,
    workers: WorkersOption = None,
    from_snapshot: Annotated[
        str | None,
        typer.Option(
            "--from-snapshot",
            metavar="SRC",
            help="Seed the empty store from a snapshot first (an archive, or a directory or "
            "s3://bucket/prefix: its newest snapshot), then catch up from its positions.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Catch every view up to the topics' end offsets as of now, then exit.

    A view's first bootstrap is a bulk load read by --workers processes. SIGTERM or
    Ctrl-C stops after what was read is written (exit 130) and the next run resumes
    from there; a second signal exits at once. With --from-snapshot, the store (which
    must be empty) is restored from the snapshot and the views catch up from its
    positions, under every staleness guard (a snapshot too old is rebuilt from Kafka
    or fails, per on_stale).
    """
    _catch_up(ctx, config, view, workers, rebuild=False, seed=from_snapshot)


@handled
def rebuild(
    ctx: typer.Context,
    view: ViewsOption = None,
    config: ConfigOption = None,
    workers: WorkersOption = None,
) -> None:
    """Rebuild the view(s) from offset 0 beside the current copy, then swap it in.

    When a running server holds the store, the server is asked to do it (through
    POST /views/{view}/rebuild; bearer token from STATESTORE_TOKEN) and this
    command shows its progress until the swap. Exit 0 rebuilt, 1 a view failed,
    2 bad usage or the store is held by a process that does not answer.
    """
    _catch_up(ctx, config, view, workers, rebuild=True)
