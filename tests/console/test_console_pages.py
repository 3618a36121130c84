"""The console's panels in a real browser against `statestore serve` on the real broker."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import HOSTILE_QUARANTINE_KEY, Tab, World
from tests.console.console_support import DEADLINE_MS, serve
from tests.support.config import write_config
from tests.support.kafka import Topics, produce


def _csp_errors(tab: Tab) -> list[str]:
    return [m for m in tab.messages if "Content Security Policy" in m or m.startswith("pageerror")]


def _orders_panel(world: World, tab: Tab, panel: str) -> Page:
    """The console opened at *panel*, once its list of the two views is loaded, with the
    view "orders" chosen."""
    page = tab.open(f"{world.url}/console#{panel}")
    expect(page.locator(f"#{panel}-view option")).to_have_count(2, timeout=DEADLINE_MS)
    page.select_option(f"#{panel}-view", "orders")
    return page


def test_views_panel_shows_state_keys_and_lag_per_partition(world: World, tab: Tab) -> None:
    """The views panel lists each view with its state and keys, a partition table and a lag chart per view."""
    page = tab.open(f"{world.url}/console#views")
    row = page.locator('#views-table tr[data-view="orders"]')
    expect(row.locator('[data-field="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
    # 12 keys plus the hostile one; the undecodable record is quarantined, not a key.
    expect(row.locator('[data-field="keys"]')).to_have_text("13")
    expect(row.locator('[data-field="quarantined"]')).to_have_text("1")
    expect(page.locator('#views-table tr[data-view="spare"] [data-field="keys"]')).to_have_text("5")
    card = page.locator('section.view-card[data-view="orders"]')
    expect(card.locator("table.partitions tbody tr")).to_have_count(3)
    expect(card.locator("svg.lag-chart rect.bar-lag")).to_have_count(3)
    expect(card.locator("svg.lag-chart rect.bar-applied")).to_have_count(3)
    expect(card.locator("svg.history-chart polyline")).to_have_count(2)
    tab.screenshot("views.png")
    assert _csp_errors(tab) == []


def test_lag_and_position_move_when_records_are_produced(world: World, tab: Tab) -> None:
    """Records produced to a partition show up in the console as a new position and record count."""
    page = tab.open(f"{world.url}/console#views")
    row = page.locator('#views-table tr[data-view="spare"]')
    expect(row.locator('[data-field="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
    part = page.locator('section.view-card[data-view="spare"] tr[data-partition="0"]')
    before_records = int(
        row.locator('[data-field="records_applied"]').inner_text().replace(",", "")
    )
    before_position = int(part.locator('[data-field="position"]').inner_text().replace(",", ""))
    where = produce(world.spare, [(0, f"moved-{i}", {"n": i}) for i in range(7)])
    assert where[-1] == (0, before_position + 6)
    expect(row.locator('[data-field="records_applied"]')).to_have_text(
        str(before_records + 7), timeout=DEADLINE_MS
    )
    expect(part.locator('[data-field="position"]')).to_have_text(
        str(before_position + 7), timeout=DEADLINE_MS
    )
    expect(part.locator('[data-field="end_offset"]')).to_have_text(
        str(before_position + 7), timeout=DEADLINE_MS
    )
    expect(part.locator('[data-field="lag"]')).to_have_text("0", timeout=DEADLINE_MS)
    bar = page.locator('section.view-card[data-view="spare"] rect.bar-applied[data-partition="0"]')
    expect(bar).to_have_attribute("data-position", str(before_position + 7), timeout=DEADLINE_MS)
    card = page.locator('section.view-card[data-view="spare"]')
    expect(card.locator('code[data-field="position"]')).to_have_text(f"0:{before_position + 6}")
    tab.screenshot("views-after-produce.png")


def test_progress_panel_shows_load_state_and_a_rebuild_from_the_console(
    world: World, tab: Tab
) -> None:
    """The progress panel shows each view's load and history; its Rebuild button rebuilds the view."""
    page = tab.open(f"{world.url}/console#progress")
    card = page.locator('section.progress-card[data-view="spare"]')
    expect(card.locator('h3 [data-field="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
    expect(card.locator('[data-field="load_phase"]')).to_have_text("no bulk load under way")
    expect(card.locator('[data-field="progress"]')).to_contain_text("applied")
    rebuilds = int(card.locator('[data-field="rebuilds"]').inner_text())
    generation = int(card.locator('[data-field="generation"]').inner_text())
    tab.screenshot("progress.png")
    page.once("dialog", lambda dialog: dialog.accept())
    card.locator("button.rebuild").click()
    expect(card.locator('[data-field="rebuilds"]')).to_have_text(
        str(rebuilds + 1), timeout=DEADLINE_MS
    )
    expect(card.locator('[data-field="generation"]')).not_to_have_text(str(generation))
    expect(card.locator('[data-field="last_rebuild"]')).to_contain_text("requested")
    expect(card.locator('h3 [data-field="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
    expect(card.locator(".rebuild-error")).to_have_text("")
    assert _csp_errors(tab) == []


def test_quarantine_panel_lists_quarantined_records(world: World, tab: Tab) -> None:
    """The quarantine browser shows a view's quarantined record with its key, raw value and reason."""
    page = _orders_panel(world, tab, "quarantine")
    page.click("#quarantine-form button[type=submit]")
    rows = page.locator("#quarantine-table tbody tr")
    expect(rows).to_have_count(1, timeout=DEADLINE_MS)
    partition, offset = world.offsets[HOSTILE_QUARANTINE_KEY]
    row = page.locator(f'#quarantine-table tr[data-offset="{partition}:{offset}"]')
    expect(row.locator('[data-field="key"]')).to_have_text(HOSTILE_QUARANTINE_KEY)
    expect(row.locator('[data-field="value"]')).to_contain_text("{not json <script>")
    expect(row.locator('[data-field="reason"]')).not_to_be_empty()
    expect(page.locator("#quarantine-summary")).to_contain_text("1 quarantined record")
    expect(page.locator("#quarantine-next")).to_be_disabled()
    tab.screenshot("quarantine.png")


def test_lookup_shows_the_entity_a_prefix_page_and_index_hits(world: World, tab: Tab) -> None:
    """A key lookup shows that entity with its partition and offset; prefix and index searches list the matches."""
    page = _orders_panel(world, tab, "lookup")
    page.fill("#key-input", "o-007")
    page.click("#key-form button[type=submit]")
    partition, offset = world.offsets["o-007"]
    expect(page.locator("#entity-key")).to_have_text("o-007", timeout=DEADLINE_MS)
    expect(page.locator("#entity-partition")).to_have_text(str(partition))
    expect(page.locator("#entity-offset")).to_have_text(str(offset))
    expect(page.locator("#entity-value")).to_contain_text('"status": "shipped"')
    expect(page.locator("#entity-value")).to_contain_text('"n": 7')
    expect(page.locator("#entity-position")).to_have_text(re.compile(r"^0:\d+,1:\d+,2:\d+$"))
    tab.screenshot("lookup.png")

    page.fill("#prefix-input", "o-00")
    page.click("#prefix-form button[type=submit]")
    keys = page.locator("#results-table tbody tr [data-field=key]")
    expect(keys).to_have_text([f"o-{i:03d}" for i in range(10)], timeout=DEADLINE_MS)
    keys.nth(3).click()
    expect(page.locator("#entity-key")).to_have_text("o-003")

    page.fill("#field-input", "status")
    page.fill("#value-input", "shipped")
    page.click("#index-form button[type=submit]")
    expect(keys).to_have_text([f"o-{i:03d}" for i in range(1, 12, 2)], timeout=DEADLINE_MS)
    tab.screenshot("search.png")

    page.fill("#key-input", "o-999")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#lookup-error")).to_contain_text("404 not_found", timeout=DEADLINE_MS)
    expect(page.locator("#entity-detail")).to_be_hidden()

    page.fill("#field-input", "colour")
    page.click("#index-form button[type=submit]")
    expect(page.locator("#lookup-error")).to_contain_text("404 unknown_index", timeout=DEADLINE_MS)
    expect(page.locator("#lookup-error")).to_contain_text("status")


def test_change_tail_shows_changes_as_they_are_applied(world: World, tab: Tab) -> None:
    """The live tail shows each change the view applies, newest first, puts and deletes alike."""
    page = _orders_panel(world, tab, "changes")
    page.fill("#changes-prefix", "tail-")
    page.click("#changes-start")
    expect(page.locator("#changes-summary")).to_contain_text(
        "Following orders", timeout=DEADLINE_MS
    )
    produce(
        world.orders,
        [(2, "tail-1", {"status": "created"}), (2, "other", {"x": 1}), (2, "tail-1", None)],
    )
    rows = page.locator("#changes-table tbody tr")
    expect(rows).to_have_count(2, timeout=DEADLINE_MS)
    expect(rows.nth(0).locator("[data-field=op]")).to_have_text("delete")
    expect(rows.nth(1).locator("[data-field=op]")).to_have_text("put")
    expect(rows.nth(1).locator("[data-field=key]")).to_have_text("tail-1")
    expect(rows.nth(1).locator("[data-field=value]")).to_have_text('{"status":"created"}')
    expect(page.locator("#changes-summary")).to_contain_text("2 change(s) seen")
    tab.screenshot("changes.png")
    page.click("#changes-stop")
    expect(page.locator("#changes-summary")).to_contain_text("Stopped; 2 change(s) seen")
    assert _csp_errors(tab) == []


def test_progress_panel_follows_a_bootstrap_from_waiting_to_ready(
    topics: Topics, tmp_path_factory: pytest.TempPathFactory, tab: Tab
) -> None:
    """A view waiting for its topic shows as bootstrapping with the reason; once the topic has records, ready with every offset applied."""
    name = topics.name()
    directory = tmp_path_factory.mktemp("console-bootstrap")
    config = write_config(
        directory, [{"name": "later", "topic": name, "value": "json", "missing_topic": "wait"}]
    )
    with serve(config, directory, ready=False) as served:
        page = tab.open(f"{served.url}/console#progress")
        card = page.locator('section.progress-card[data-view="later"]')
        expect(card.locator('h3 [data-field="state"]')).to_have_text(
            "bootstrapping", timeout=DEADLINE_MS
        )
        expect(card.locator('[data-field="reason"]')).to_contain_text(
            "waiting for the topic", timeout=DEADLINE_MS
        )
        expect(card.locator('[data-field="progress"]')).to_have_text("no partitions known yet")
        tab.screenshot("progress-bootstrapping.png")
        topics.create_named(name, 2)
        produce(name, [(i % 2, f"l-{i}", {"n": i}) for i in range(9)])
        expect(card.locator('h3 [data-field="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
        expect(card.locator('[data-field="progress"]')).to_have_text(
            "applied 9 of 9 offsets", timeout=DEADLINE_MS
        )
        expect(card.locator('[data-field="bootstrap_records"]')).to_have_text("9")
        expect(card.locator('[data-field="reason"]')).to_have_text("—")
