"""The embedded API as a service uses it: public names only, type-checked by mypy --strict.

A delivery service keeps a view "deliveries" of a compacted topic whose values are
``{"status": str, "weight": int, ...}``, indexed on ``status`` and ``weight``.
tests/examples/test_embedded_example.py runs these functions against the local broker.
"""

from __future__ import annotations

from statestore import (
    AsyncChanges,
    AsyncStateStore,
    Change,
    Config,
    Entity,
    Reset,
    StateStore,
    ViewReader,
)


def open_store(config: Config) -> StateStore:
    """Open the store, catch every view up with its topic, then follow in the background."""
    store = StateStore(config)
    store.bootstrap()
    store.start()
    return store


def heavy_in_range(deliveries: ViewReader, low: int, high: int) -> list[str]:
    """Keys of the deliveries weighing from *low* to *high* (exclusive), lightest first."""
    keys: list[str] = []
    after: str | None = None
    while True:
        page = deliveries.by_range("weight", start=low, end=high, limit=50, after=after)
        keys.extend(e.key for e in page.items)
        if page.next is None:
            return keys
        after = page.next


def keys_between(deliveries: ViewReader, start: str, end: str) -> list[str]:
    """Keys from *start* (inclusive) to *end* (exclusive), in key order, a page at a time."""
    keys: list[str] = []
    after: str | None = None
    while True:
        page = deliveries.scan(start=start, end=end, limit=25, after=after)
        keys.extend(e.key for e in page.items)
        if page.next is None:
            return keys
        after = page.next


def in_status(deliveries: ViewReader, status: str) -> set[str]:
    """Keys of the deliveries in *status*."""
    page = deliveries.by("status", status, limit=1000)
    return {e.key for e in page.items}


def status_of(deliveries: ViewReader, key: str) -> str | None:
    """The status of one delivery, None when there is no such delivery."""
    entity: Entity | None = deliveries.get(key)
    if entity is None:
        return None
    status = entity.value["status"]
    return status if isinstance(status, str) else None


async def read_async(store: StateStore, keys: list[str], position: dict[int, int]) -> list[str]:
    """Wait until *position* is applied, then read *keys* without blocking the loop; the
    statuses found, "absent" where a key has none."""
    async with AsyncStateStore(store) as astore:
        deliveries = astore.reader("deliveries")
        await deliveries.wait_for(position, timeout=10.0)
        found = await deliveries.lookup(keys)
        return ["absent" if e is None else str(e.value["status"]) for e in found]


async def follow_until(changes: AsyncChanges, keys: set[str]) -> dict[str, str | None]:
    """Read *changes* until each of *keys* has changed; the last status seen per key
    (None: deleted). A ``Reset`` would ask for a resync from a scan; a stream opened from
    now on starts without one."""
    seen: dict[str, str | None] = {}
    async for event in changes:
        if isinstance(event, Reset):
            continue
        change: Change = event
        seen[change.key] = None if change.deleted else str(change.value["status"])
        if keys <= seen.keys():
            break
    return seen
