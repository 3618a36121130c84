"""``statestore snapshot create | list | verify``: consistent snapshots of the store.

``create`` takes the snapshot itself when no process holds the store; when a
server holds it, the server is asked (``POST /admin/snapshot``, bearer token from
``STATESTORE_TOKEN``) and takes it while it keeps serving and ingesting.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer

from .. import __version__
from ..offline import snapshot_unheld
from ..snapshot import (
    SnapshotInfo,
    list_snapshots,
    store_is_empty,
    verify_snapshot,
)
from ._app import ConfigOption, ViewsOption, check_views, dumps, errors, fail, handled, load
from ._remote import HTTP_TIMEOUT_S, TOKEN_ENV, api_url, ask_server, error_text
from ._signals import interrupts

__all__ = ["snapshot_app"]

snapshot_app = typer.Typer(
    name="snapshot",
    help="Consistent snapshots of the store: take one, list them, verify one.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")]

# A snapshot of a large store to a slow destination takes minutes; the server answers
# when it is written.
SNAPSHOT_TIMEOUT_S = 3600.0


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _views_text(views: dict[str, Any]) -> str:
    return ", ".join(f"{name} ({v.get('keys', '?')} keys)" for name, v in views.items())


def _on_server(cfg: Any, dest: str, views: list[str] | None) -> dict[str, Any]:
    base = api_url(cfg)
    headers = {}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body: dict[str, Any] = {"dest": dest}
    if views:
        body["views"] = views
    with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_S, headers=headers) as http:
        resp = ask_server(
            cfg,
            base,
            lambda: http.post(
                "/admin/snapshot", json=body, timeout=httpx.Timeout(SNAPSHOT_TIMEOUT_S)
            ),
            "take the snapshot",
            "an admin token",
        )
    if resp.status_code != 201:
        raise fail(f"the server at {base} could not take the snapshot: {error_text(resp)}", 1)
    result: dict[str, Any] = resp.json()
    return result


@snapshot_app.command("create")
@handled
def create(
    ctx: typer.Context,
    dest: Annotated[
        str,
        typer.Argument(
            metavar="DEST",
            help="A directory, or an s3://bucket/prefix URL (credentials from "
            "the environment: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...).",
        ),
    ],
    view: ViewsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a consistent snapshot of the store into DEST.

    A running server holding the store takes it without stopping reads or ingest
    (POST /admin/snapshot; token from STATESTORE_TOKEN). Exit 0 written, 1 failed,
    2 bad usage or the store is held by a process that does not answer.
    """
    cfg = load(ctx, config)
    names = check_views(cfg, view) if view else None
    with interrupts(), errors(cfg):
        if store_is_empty(cfg.store.path):
            raise fail(f"no store at {cfg.store.path}: run `statestore bootstrap` first", 1)
        info = snapshot_unheld(cfg, dest, names, version=__version__)
        result = _on_server(cfg, dest, names) if info is None else info.to_dict()
    if as_json:
        typer.echo(dumps(result))
        return
    typer.echo(
        f"snapshot {result['name']} written to {result['url']} ({_size(result.get('size'))}, "
        f"{result.get('seconds', '?')} s): {_views_text(result['views'])}"
    )
    for name, why in (result.get("skipped") or {}).items():
        typer.echo(f"  left out: view {name!r}: {why}")


@snapshot_app.command("list")
@handled
def list_(
    dest: Annotated[str, typer.Argument(metavar="DEST", help="A directory or s3://bucket/prefix.")],
    as_json: JsonOption = False,
) -> None:
    """List the complete snapshots in DEST, oldest first."""
    with errors():
        snaps = list_snapshots(dest)
    if as_json:
        typer.echo(dumps([s.to_dict() for s in snaps]))
        return
    if not snaps:
        typer.echo(f"no snapshot in {dest}")
        return
    for s in snaps:
        typer.echo(
            f"{s.name}  {s.manifest.get('created_at')}  {_size(s.size):>9}  {_views_text(s.views)}"
        )


@snapshot_app.command("verify")
@handled
def verify(
    snapshot: Annotated[
        str,
        typer.Argument(
            metavar="SNAPSHOT",
            help="An archive (DIR/NAME.tar, s3://bucket/prefix/NAME.tar), or a place: its "
            "newest snapshot.",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Read a whole snapshot and check every file against its manifest (size, SHA-256).

    Exit 0 sound, 1 damaged, truncated, of a newer format, or unreadable.
    """
    with errors():
        info: SnapshotInfo = verify_snapshot(snapshot)
    if as_json:
        typer.echo(dumps({**info.to_dict(), "ok": True}))
        return
    created = info.manifest.get("created_at")
    files = len(info.manifest.get("files", []))
    typer.echo(
        f"ok: {info.url} ({files} files, {_size(info.size)}, taken {created}): "
        f"{_views_text(info.views)}"
    )
