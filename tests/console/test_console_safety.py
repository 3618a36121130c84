"""The console treats every value as text, and asks for a token where the server needs one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.console.conftest import HOSTILE_KEY, HOSTILE_QUARANTINE_KEY, HOSTILE_VALUE, Tab, World
from tests.console.console_support import DEADLINE_MS, serve
from tests.support.config import write_config
from tests.support.kafka import Topics, produce
from tests.support.processes import Server

TOKEN = "console-test-token-7f3a"
TOKEN_KEY = "statestore.console.token"


def _nothing_ran(tab: Tab) -> None:
    """No injected script ran and no element was made from data."""
    page = tab.page
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    assert page.evaluate("Array.from(document.scripts, s => s.getAttribute('src'))") == [
        "console/console.js"
    ]
    assert [m for m in tab.messages if m.startswith("pageerror")] == []


def test_hostile_keys_and_values_render_as_text_in_every_panel(world: World, tab: Tab) -> None:
    """A key holding <script> and a value holding <img onerror> show as text; neither runs."""
    page = tab.open(f"{world.url}/console#lookup")
    expect(page.locator("#lookup-view option")).to_have_count(2, timeout=DEADLINE_MS)
    page.select_option("#lookup-view", "orders")
    page.fill("#key-input", HOSTILE_KEY)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#entity-key")).to_have_text(HOSTILE_KEY, timeout=DEADLINE_MS)
    # The value is shown as JSON: the note's quotes escaped, its markup as it is.
    expect(page.locator("#entity-value")).to_contain_text(json.dumps(HOSTILE_VALUE["note"]))
    assert page.locator("#entity-key").inner_text() == HOSTILE_KEY
    tab.screenshot("hostile-lookup.png")

    page.fill("#prefix-input", "<")
    page.click("#prefix-form button[type=submit]")
    keys = page.locator("#results-table tbody [data-field=key]")
    expect(keys).to_have_text([HOSTILE_KEY], timeout=DEADLINE_MS)
    expect(page.locator("#results-table tbody [data-field=value]")).to_contain_text("onerror=")

    page.goto(f"{world.url}/console#quarantine")
    expect(page.locator("#quarantine-view option")).to_have_count(2, timeout=DEADLINE_MS)
    page.select_option("#quarantine-view", "orders")
    page.click("#quarantine-form button[type=submit]")
    expect(page.locator("#quarantine-table [data-field=key]")).to_have_text(
        [HOSTILE_QUARANTINE_KEY], timeout=DEADLINE_MS
    )

    page.goto(f"{world.url}/console#changes")
    expect(page.locator("#changes-view option")).to_have_count(2, timeout=DEADLINE_MS)
    page.select_option("#changes-view", "orders")
    page.fill("#changes-prefix", "<")
    page.click("#changes-start")
    expect(page.locator("#changes-summary")).to_contain_text(
        "Following orders", timeout=DEADLINE_MS
    )
    live_key = "<img src=x onerror=\"window.__pwned = 'tail'\">"
    produce(
        world.orders, [(1, live_key, {"html": "<script>window.__pwned = 'tail value'</script>"})]
    )
    row = page.locator("#changes-table tbody tr").first
    expect(row.locator("[data-field=key]")).to_have_text(live_key, timeout=DEADLINE_MS)
    expect(row.locator("[data-field=value]")).to_contain_text("<script>window.__pwned")
    page.click("#changes-stop")
    _nothing_ran(tab)


@dataclass
class Guarded:
    """A server with tokens and the topic of its one view."""

    served: Server
    topic: str

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="module")
def guarded(topics: Topics, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """`statestore serve` with one bearer token (not admin) over a topic with data."""
    topic = topics.create(2)
    produce(topic, [(i % 2, f"k-{i}", {"n": i}) for i in range(4)])
    directory: Path = tmp_path_factory.mktemp("console-tokens")
    config = write_config(
        directory,
        [{"name": "guarded", "topic": topic, "value": "json"}],
        tokens=[{"name": "console", "env": "CONSOLE_TOKEN", "views": ["*"]}],
    )
    with serve(config, directory, token=TOKEN) as served:
        yield Guarded(served, topic)


def test_token_server_serves_the_page_but_no_data_without_a_token(guarded: Guarded) -> None:
    """With tokens the console's files load without one (they hold no data); the data routes answer 401."""
    assert httpx.get(f"{guarded.url}/console").status_code == 200
    assert httpx.get(f"{guarded.url}/console/console.js").status_code == 200
    response = httpx.get(f"{guarded.url}/views")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_console_without_token_prompts_and_with_token_shows_data(
    guarded: Guarded, tab: Tab
) -> None:
    """Without a token the console shows the token prompt and no data; with the token, the views and the tail."""
    page = tab.open(f"{guarded.url}/console#views")
    prompt = page.locator("#auth-prompt")
    expect(prompt).to_be_visible(timeout=DEADLINE_MS)
    expect(prompt).to_contain_text("This server needs a bearer token")
    expect(prompt).to_contain_text("a bearer token is required")
    expect(page.locator("#status-line")).to_contain_text("401 unauthorized")
    expect(page.locator("#views-table tbody tr")).to_have_count(0)
    tab.screenshot("token-prompt.png")

    page.fill("#token-input", "not-the-token")
    page.click("#token-use")
    expect(prompt).to_contain_text("the bearer token is not valid", timeout=DEADLINE_MS)
    expect(page.locator("#views-table tbody tr")).to_have_count(0)

    page.fill("#token-input", TOKEN)
    page.click("#token-use")
    row = page.locator('#views-table tr[data-view="guarded"]')
    expect(row.locator('[data-field="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
    expect(row.locator('[data-field="keys"]')).to_have_text("4")
    expect(prompt).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == TOKEN

    # Kept for the tab: a reload still shows data; every panel's calls send it.
    page.goto(f"{guarded.url}/console#changes")
    expect(page.locator("#changes-view option")).to_have_count(1, timeout=DEADLINE_MS)
    page.click("#changes-start")
    expect(page.locator("#changes-summary")).to_contain_text(
        "Following guarded", timeout=DEADLINE_MS
    )
    produce(guarded.topic, [(0, "k-new", {"n": 99})])
    expect(page.locator("#changes-table tbody [data-field=key]")).to_have_text(
        ["k-new"], timeout=DEADLINE_MS
    )
    page.click("#changes-stop")

    # Not an admin token: the rebuild is refused, and the console says why.
    page.goto(f"{guarded.url}/console#progress")
    card = page.locator('section.progress-card[data-view="guarded"]')
    expect(card.locator("button.rebuild")).to_be_visible(timeout=DEADLINE_MS)
    page.once("dialog", lambda dialog: dialog.accept())
    card.locator("button.rebuild").click()
    expect(card.locator(".rebuild-error")).to_contain_text("403 forbidden", timeout=DEADLINE_MS)
    expect(card.locator('[data-field="rebuilds"]')).to_have_text("0")

    page.click("#token-forget")
    expect(prompt).to_be_visible(timeout=DEADLINE_MS)
    expect(page.locator("#progress-cards section")).to_have_count(0)
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
