"""`min_position` waits hold no worker thread, and each client may have only so many open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from api_support import World, serve_app
from fastapi import FastAPI

from statestore import ApiConfig
from statestore.api import create_app

pytestmark = pytest.mark.integration

FAR = "0:999999999"


@contextmanager
def serving(world: World, **api: Any) -> Iterator[tuple[str, FastAPI]]:
    """A real uvicorn server over the shared store, with these [api] settings."""
    config = world.config.model_copy(update={"api": ApiConfig.model_validate(api)})
    app = create_app(config, store=world.store)
    with serve_app(app) as url:
        yield url, app


async def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _open_waits(
    http: httpx.AsyncClient, app: FastAPI, n: int, wait_ms: int
) -> list[asyncio.Task[httpx.Response]]:
    """*n* requests for a position the view will not reach, once the server holds all of them."""
    waits = [
        asyncio.create_task(
            http.get("/views/people", params={"min_position": FAR, "wait_ms": wait_ms})
        )
        for _ in range(n)
    ]
    await _until(lambda: sum(app.state.waits.values()) == n, f"{n} open waits")
    return waits


def test_waiting_requests_do_not_hold_up_reads(world: World) -> None:
    """60 requests waiting for a position the view will not reach (more than the server's
    40 worker threads) leave a scan, a lookup and an index read answering while every one
    of them is still waiting; each then answers 504 with the position reached."""
    with serving(world, max_waits_per_client=100, max_wait_ms=60_000) as (url, app):

        async def main() -> tuple[list[int], list[httpx.Response], list[httpx.Response]]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                waits = await _open_waits(http, app, 60, wait_ms=20_000)
                reads = [
                    await http.get("/views/people/entities", params={"limit": 5}),
                    await http.post("/views/people/lookup", json={"keys": ["p-001"]}),
                    await http.get("/views/people/by/status/active"),
                ]
                pending_after_reads = [sum(1 for w in waits if not w.done())]
                answers = await asyncio.gather(*waits)
                return pending_after_reads, reads, list(answers)

        pending, reads, answers = asyncio.run(main())

    assert [r.status_code for r in reads] == [200, 200, 200], [r.text for r in reads]
    assert pending == [60]
    assert {a.status_code for a in answers} == {504}
    assert answers[0].json()["error"]["code"] == "position_not_reached"
    assert not app.state.waits


def test_a_client_may_have_only_so_many_waits_open(world: World) -> None:
    """With max_waits_per_client = 2, a third concurrent wait of the same client is 429 at
    once, and a wait that is already satisfied does not count."""
    with serving(world, max_waits_per_client=2) as (url, app):

        async def main() -> tuple[httpx.Response, httpx.Response, list[int]]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                waits = await _open_waits(http, app, 2, wait_ms=10_000)
                third = await http.get(
                    "/views/people", params={"min_position": FAR, "wait_ms": 10_000}
                )
                reached = await http.get("/views/people", params={"min_position": "0:0"})
                codes = [w.status_code for w in await asyncio.gather(*waits)]
                return third, reached, codes

        third, reached, codes = asyncio.run(main())

    assert third.status_code == 429
    assert third.json()["error"]["code"] == "too_many_waits"
    assert third.headers["Retry-After"] == "1"
    assert reached.status_code == 200
    assert codes == [504, 504]
