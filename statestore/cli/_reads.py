"""Reads from the command line: ``get``, ``get-by`` and ``quarantine`` (beside a server too)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .. import CodecError, StateStore, parse_index_value
from ._app import ConfigOption, check_views, dumps, fail, handled, load

__all__ = ["get", "get_by", "quarantine"]

ViewArgument = Annotated[str, typer.Argument(help="View name.")]
AfterOption = Annotated[str | None, typer.Option(help="Cursor printed by the previous page.")]


@contextmanager
def _reading(ctx: typer.Context, config: Path | None, view: str) -> Iterator[StateStore]:
    """The store, opened read-only, once *view* is known to be configured."""
    cfg = load(ctx, config)
    check_views(cfg, [view])
    with StateStore(cfg, read_only=True) as store:
        yield store


@handled
def get(
    ctx: typer.Context,
    view: ViewArgument,
    key: Annotated[str, typer.Argument(help="Entity key, as typed in URLs.")],
    config: ConfigOption = None,
) -> None:
    """Print one entity as JSON; exit 1 when it is absent."""
    with _reading(ctx, config, view) as store:
        try:
            store.view(view).key_codec.from_text(key)
        except CodecError as exc:
            raise fail(f"view {view!r}: bad key {key!r}: {exc}", 2) from None
        entity = store.get(view, key)
    if entity is None:
        raise fail(f"view {view!r} has no entity with key {key!r}", 1)
    typer.echo(dumps(entity.to_dict(), indent=2))


@handled
def get_by(
    ctx: typer.Context,
    view: ViewArgument,
    field: Annotated[str, typer.Argument(help="An indexed field, e.g. status or address.city.")],
    value: Annotated[
        str,
        typer.Argument(
            help='The value to match: 42, 1.5, true match that number or boolean; "42" (with '
            "the quotes) the string; anything else matches as text.",
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, help="At most this many entities.")] = 100,
    after: AfterOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the entities whose indexed FIELD equals VALUE, one JSON object a line; exit 1 when none."""
    with _reading(ctx, config, view) as store:
        page = store.by(view, field, parse_index_value(value), after=after, limit=limit)
    for entity in page.items:
        typer.echo(dumps(entity.to_dict()))
    if page.next is not None:
        typer.echo(
            f"more: statestore get-by {view} {field} {shlex.quote(value)} --limit {limit} "
            f"--after {page.next}",
            err=True,
        )
    if not page.items:
        raise fail(f"view {view!r} has no entity whose {field} is {value}", 1)


@handled
def quarantine(
    ctx: typer.Context,
    view: ViewArgument,
    limit: Annotated[int, typer.Option(min=1, help="At most this many records.")] = 100,
    after: AfterOption = None,
    config: ConfigOption = None,
) -> None:
    """List the records a view quarantined (could not decode), one JSON object a line."""
    with _reading(ctx, config, view) as store:
        items, cursor = store.view(view).quarantine(after, limit)
    for item in items:
        typer.echo(dumps(item))
    if cursor is not None:
        typer.echo(f"more: statestore quarantine {view} --after {cursor}", err=True)
