"""``statestore rebuild`` beside a running server: the server rebuilds, the command watches.

The server holds the store (RocksDB allows one writer), so the command asks it
through ``POST /views/{view}/rebuild``; the server builds the new copy beside
the served one and swaps it in. The command follows the swap through
``GET /views/{view}`` and the new copy's progress by reading the store's
metadata read-only. The bearer token, when the server wants one, comes from
``STATESTORE_TOKEN``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import typer

from .. import Config, Progress, read_progress
from ..offline import holder
from ._app import fail
from ._progress import LiveReporter, reporter_for, summary

__all__ = [
    "HTTP_TIMEOUT_S",
    "POLL_INTERVAL_S",
    "TOKEN_ENV",
    "api_url",
    "ask_server",
    "error_text",
    "rebuild_on_server",
]

# Every command logs as "statestore.cli": stable names for log filters.
log = logging.getLogger("statestore.cli")

TOKEN_ENV = "STATESTORE_TOKEN"
POLL_INTERVAL_S = 1.0
HTTP_TIMEOUT_S = 30.0


def api_url(config: Config) -> str:
    """Where the server holding the store answers: what it announced, else ``[api]``."""
    held = holder(config.store.path)
    return held.url if held is not None else config.api.url()


@dataclass
class _Watch:
    """One view the server rebuilds, as seen from here."""

    name: str
    generation: int
    ends: dict[int, int]
    started: float = field(default_factory=time.monotonic)
    status: dict[str, Any] = field(default_factory=dict)
    final: Progress | None = None
    failed: str | None = None
    seen_state: str = ""

    @property
    def done(self) -> bool:
        return self.final is not None or self.failed is not None


def error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}"


def ask_server(
    config: Config, base: str, call: Callable[[], httpx.Response], doing: str, token: str
) -> httpx.Response:
    """*call()* the server that holds the store; a transport failure, a 401 or a 403 is
    the command's error (exit 2), naming what it was *doing* and the *token* it needs."""
    try:
        resp = call()
    except httpx.TransportError as exc:
        raise fail(
            f"the store at {config.store.path} is in use by a running server, which does not "
            f"answer at {base} ({exc.__class__.__name__}: {exc}) to {doing}; stop it, or check "
            "[api] host and port, then run this command again",
            2,
        ) from None
    if resp.status_code == 401:
        raise fail(
            f"the server at {base} wants a bearer token: export {TOKEN_ENV} with {token} "
            f"({error_text(resp)})",
            2,
        )
    if resp.status_code == 403:
        raise fail(f"the server at {base} refused: {error_text(resp)} (token from {TOKEN_ENV})", 2)
    return resp


def _check_server(http: httpx.Client, config: Config, name: str, base: str) -> dict[str, Any]:
    """The server's status of *name*, once it is clear the server holds this store."""
    path = config.store.path
    resp = ask_server(
        config,
        base,
        lambda: http.get(f"/views/{quote(name, safe='')}"),
        "rebuild through it",
        f"a token scoped to view {name!r}",
    )
    if resp.status_code != 200:
        raise fail(
            f"the server at {base} does not serve view {name!r} ({error_text(resp)}); the "
            f"store at {path} is held by another process: stop it, then run this command again",
            2,
        )
    status: dict[str, Any] = resp.json()
    topic = config.view(name).topic
    if status.get("topic") != topic:
        raise fail(
            f"the server at {base} serves view {name!r} from topic {status.get('topic')!r}, "
            f"not {topic!r}: it is not the server holding the store at {path}",
            2,
        )
    return status


def _poll(http: httpx.Client, base: str, w: _Watch) -> None:
    try:
        resp = http.get(f"/views/{quote(w.name, safe='')}")
    except httpx.TransportError as exc:
        raise fail(
            f"lost contact with the server at {base} while it rebuilt view {w.name!r} ({exc}); "
            "`statestore status` shows where the view is",
            1,
        ) from None
    if resp.status_code != 200:
        raise fail(f"the server at {base} answered: {error_text(resp)}", 1)
    status: dict[str, Any] = resp.json()
    w.status = status
    state = str(status.get("state"))
    if state != w.seen_state:
        log.info("rebuild.state view=%s state=%s reason=%s", w.name, state, status.get("reason"))
        w.seen_state = state
    if state == "failed":
        w.failed = str(status.get("reason") or "no reason given")
    elif status.get("generation", w.generation) > w.generation and state != "rebuilding":
        elapsed = time.monotonic() - w.started
        records = int(status.get("records_applied", 0))
        w.final = Progress(w.name, records, sum(w.ends.values()), 0, elapsed, True)


def rebuild_on_server(config: Config, names: list[str], environ: Mapping[str, str]) -> None:
    """Have the server holding the store rebuild *names*; show progress; exit 1 on a failure."""
    base = api_url(config)
    if not log.isEnabledFor(logging.DEBUG):
        # A line per poll would drown the progress lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    token = environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # trust_env=False: the request goes to the server on [api], never through a proxy.
    with httpx.Client(
        base_url=base, headers=headers, timeout=HTTP_TIMEOUT_S, trust_env=False
    ) as http:
        watches: list[_Watch] = []
        for name in names:
            status = _check_server(http, config, name, base)
            ends = {
                int(p["partition"]): int(p["end_offset"])
                for p in status.get("partitions", [])
                if p.get("end_offset") is not None
            }
            watches.append(_Watch(name, int(status["generation"]), ends))
        log.info("rebuild.on_server url=%s views=%s", base, ",".join(names))
        for w in watches:
            resp = http.post(f"/views/{quote(w.name, safe='')}/rebuild")
            if resp.status_code not in (200, 202):
                raise fail(
                    f"the server at {base} did not rebuild view {w.name!r}: {error_text(resp)}",
                    2 if resp.status_code in (401, 403, 404) else 1,
                )
        reporter = reporter_for("rebuild", names)
        try:
            with reporter:
                while True:
                    for w in watches:
                        if not w.done:
                            _poll(http, base, w)
                    pending = [w for w in watches if not w.done]
                    for w in watches:
                        if w.final is not None and w.name not in reporter.final:
                            reporter(w.final)
                            if isinstance(reporter, LiveReporter):
                                reporter.note(w.name, w.seen_state)
                    if not pending:
                        break
                    # The new copies' progress, from the store's metadata (best effort).
                    found = read_progress(config, {w.name: w.generation + 1 for w in pending})
                    for w in pending:
                        if w.name in found:
                            copy = found[w.name]
                            elapsed = time.monotonic() - w.started
                            expected = sum(w.ends.values())
                            remaining = copy.remaining(w.ends)
                            reporter(
                                Progress(w.name, copy.records, expected, remaining, elapsed, False)
                            )
                    if isinstance(reporter, LiveReporter):
                        for w in watches:
                            reporter.note(w.name, w.seen_state)
                    time.sleep(POLL_INTERVAL_S)
        except KeyboardInterrupt:
            raise fail(
                f"interrupted; the server at {base} goes on with the rebuild "
                "(`statestore status` shows where it is)",
                130,
            ) from None
    for w in watches:
        if w.final is not None:
            typer.echo(summary(w.name, int(w.status.get("keys", 0)), w.final, 0.0))
    failed = [w for w in watches if w.failed is not None]
    for w in failed:
        typer.secho(f"error: view {w.name!r} failed: {w.failed}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)
