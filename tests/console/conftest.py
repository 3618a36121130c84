"""Fixtures for the console's browser tests: the real broker, a served store, headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from tests.console.console_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, serve
from tests.support.config import write_config
from tests.support.kafka import Topics, produce
from tests.support.processes import Server

# A key and values that would run script if the page ever parsed data as HTML.
HOSTILE_KEY = '<script>window.__pwned = "key"</script>'
HOSTILE_VALUE = {"status": "created", "note": "<img src=x onerror=\"window.__pwned = 'value'\">"}
HOSTILE_QUARANTINE_KEY = "<img src=x onerror=\"window.__pwned = 'quarantine'\">"
HOSTILE_QUARANTINE_VALUE = b'{not json <script>window.__pwned = "raw"</script>'


@dataclass
class World:
    """The served store the tests share: view ``orders`` (indexed on status) and ``spare``."""

    served: Server
    orders: str
    spare: str
    offsets: dict[str, tuple[int, int]]

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="session")
def topics(bootstrap_servers: str) -> Iterator[Topics]:
    """Topics the console tests share for the session (the broker fixture fails, never
    skips, when the broker is down)."""
    made = Topics(bootstrap_servers, prefix="test.console")
    yield made
    made.close()


@pytest.fixture(scope="session")
def world(topics: Topics, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """`statestore serve` without tokens over two topics with data, caught up."""
    orders, spare = topics.create(3), topics.create(1)
    records: list[tuple[int, str, Any]] = [
        (i % 3, f"o-{i:03d}", {"status": "shipped" if i % 2 else "created", "n": i})
        for i in range(12)
    ]
    records += [
        (0, HOSTILE_KEY, HOSTILE_VALUE),
        (1, HOSTILE_QUARANTINE_KEY, HOSTILE_QUARANTINE_VALUE),
    ]
    where = produce(orders, records)
    produce(spare, [(0, f"s-{i}", {"n": i}) for i in range(5)])
    directory = tmp_path_factory.mktemp("console")
    config = write_config(
        directory,
        [
            {"name": "orders", "topic": orders, "value": "json", "indexes": ["status"]},
            {"name": "spare", "topic": spare, "value": "json"},
        ],
    )
    with serve(config, directory) as served:
        offsets = {key: at for (_, key, _), at in zip(records, where, strict=True)}
        yield World(served, orders, spare, offsets)


# Playwright's sync API runs an event loop in this thread until it stops: one per test
# module, so that the tests after the console's may run asyncio themselves.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile; fails when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-tools (make test does)")
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1280, "height": 900},
    )
    yield context
    context.close()


@dataclass
class Tab:
    """A browser tab and what the page reported on its console."""

    page: Page
    messages: list[str]

    def open(self, url: str) -> Page:
        self.page.goto(url)
        return self.page

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser: BrowserContext) -> Iterator[Tab]:
    """A new tab (its own sessionStorage); closed after the test."""
    page = browser.new_page()
    page.set_default_timeout(30_000)
    messages: list[str] = []
    page.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: messages.append(f"pageerror: {exc}"))
    yield Tab(page, messages)
    page.close()
