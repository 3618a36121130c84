"""The asyncio API on a real store fed by applying batches directly (no broker involved)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from statestore import (
    AsyncStateStore,
    Change,
    PositionTimeoutError,
    StateStore,
    UnknownViewError,
    ViewConfig,
)
from statestore.apply import Record
from tests.support.config import store_config


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """A store with a JSON view ``v`` indexed on ``n``."""
    config = store_config(
        tmp_path / "store", [ViewConfig(name="v", topic="unused", indexes=("n",))]
    )
    with StateStore(config) as opened:
        yield opened


def put(offset: int, key: str, n: int) -> Record:
    return (0, offset, 1000 + offset, key.encode(), orjson.dumps({"n": n}))


def test_reads_answer_like_the_blocking_handle(store: StateStore) -> None:
    """get, lookup (short on the loop, long in a thread), scan, by and by_range answer what the
    blocking handle answers."""
    store.view("v").apply([put(i, f"k{i:02d}", i % 7) for i in range(40)])
    reader = store.reader("v")
    keys = [f"k{i:02d}" for i in range(0, 45, 2)]  # 23 keys: above inline_keys, some absent

    async def reads() -> None:
        async with AsyncStateStore(store) as astore:
            aread = astore.reader("v")
            assert aread.sync is not None and astore.reader("v") is aread
            assert await astore.get("v", "k03") == reader.get("k03")
            assert await aread.lookup(keys) == reader.lookup(keys)
            assert await aread.lookup(keys[:3]) == reader.lookup(keys[:3])
            page = await astore.scan("v", start="k10", end="k20", limit=4)
            assert page == reader.scan(start="k10", end="k20", limit=4)
            assert await astore.by("v", "n", 3) == reader.by("n", 3)
            got = await astore.by_range("v", "n", start=2, end=5, limit=100)
            assert got == reader.by_range("n", start=2, end=5, limit=100)
            assert aread.position() == reader.position() == {0: 39}
            assert aread.status().keys == 40

    asyncio.run(reads())


def test_every_read_can_leave_the_loop(store: StateStore) -> None:
    """With inline_keys=0 even a point get runs in the given executor, never on the loop."""
    store.view("v").apply([put(0, "a", 1)])
    threads: set[str] = set()
    view = store.view("v")
    original = view.get

    def get(key: str) -> object:
        threads.add(threading.current_thread().name)
        return original(key)

    view.get = get  # type: ignore[method-assign]

    async def reads() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="reads") as pool:
            astore = AsyncStateStore(store, executor=pool, inline_keys=0)
            entity = await astore.get("v", "a")
            assert entity is not None and entity.value == {"n": 1}

    asyncio.run(reads())
    assert len(threads) == 1 and threads.pop().startswith("reads")


def test_unknown_view_and_bad_arguments(store: StateStore) -> None:
    """An unknown view raises UnknownViewError when the reader is made; a negative
    inline_keys is refused."""

    async def go() -> None:
        astore = AsyncStateStore(store)
        with pytest.raises(UnknownViewError):
            astore.reader("nope")
        with pytest.raises(UnknownViewError):
            await astore.get("nope", "k")

    asyncio.run(go())
    with pytest.raises(UnknownViewError):
        store.reader("nope")
    with pytest.raises(ValueError):
        AsyncStateStore(store, inline_keys=-1)


def test_wait_for_is_woken_by_a_batch_and_times_out(store: StateStore) -> None:
    """wait_for returns once a batch applied from another thread reaches the position, raises
    PositionTimeoutError when none does, and leaves no watcher behind, cancelled or not."""
    view = store.view("v")
    view.apply([put(0, "a", 1)])

    async def go() -> None:
        aread = AsyncStateStore(store).reader("v")
        assert await aread.wait_for("0:0", timeout=0.0) == {0: 0}
        waiting = asyncio.ensure_future(aread.wait_for({0: 5}, timeout=30.0))
        await asyncio.sleep(0)  # the waiter is registered before the batch is applied
        await asyncio.to_thread(view.apply, [put(5, "b", 2)])
        assert await waiting == {0: 5}
        with pytest.raises(PositionTimeoutError) as err:
            await aread.wait_for({0: 9}, timeout=0.05)
        assert err.value.reached == {0: 5}
        cancelled = asyncio.ensure_future(aread.wait_for({0: 9}, timeout=30.0))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(go())
    assert view._watchers == []


def test_async_for_reads_changes_and_ends_when_closed(store: StateStore) -> None:
    """`async for` yields the changes applied from another thread, in order; closing the
    AsyncStateStore ends an `async for` waiting in another task and unsubscribes it."""
    view = store.view("v")

    async def go() -> list[str]:
        astore = AsyncStateStore(store)
        got: list[str] = []
        changes = astore.changes("v", prefix="k")
        first_two = asyncio.Event()

        async def read() -> None:
            async for event in changes:
                assert isinstance(event, Change)
                got.append(event.key)
                if len(got) == 2:
                    first_two.set()

        reading = asyncio.ensure_future(read())
        await asyncio.to_thread(view.apply, [put(0, "k1", 1), put(1, "x", 1), put(2, "k2", 2)])
        async with asyncio.timeout(10):
            await first_two.wait()
            await astore.aclose()
            await reading  # ends: the iterator was closed
        assert changes.subscription.closed
        assert store.change_feed("v").subscribers() == 0
        return got

    assert asyncio.run(go()) == ["k1", "k2"]


def test_cancelling_a_reader_and_leaving_async_with_unsubscribe(store: StateStore) -> None:
    """A task cancelled in `async for` ends with CancelledError; leaving `async with` closes
    the subscription; a closed AsyncStateStore opens no new stream."""

    async def go() -> None:
        astore = AsyncStateStore(store)
        async with astore.changes("v") as changes:

            async def read() -> None:
                async for _ in changes:
                    pass

            task = asyncio.ensure_future(read())
            await asyncio.sleep(0)  # the task starts waiting for a change
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert changes.subscription.closed
        assert await changes.get(timeout=0.0) == []
        assert store.change_feed("v").subscribers() == 0
        await astore.aclose()
        with pytest.raises(Exception, match="closed"):
            astore.changes("v")

    asyncio.run(go())


def test_get_waits_without_a_thread_until_a_change(store: StateStore) -> None:
    """AsyncChanges.get(timeout) returns [] after its timeout when nothing changed, and the
    change once a batch arrives, while the loop stays free for other tasks."""
    view = store.view("v")

    async def go() -> None:
        async with AsyncStateStore(store) as astore, astore.changes("v") as changes:
            assert await changes.get(timeout=0.05) == []
            waiting = asyncio.ensure_future(changes.get(timeout=30.0))
            for _ in range(3):
                await asyncio.sleep(0)  # this task runs while get() waits
            assert not waiting.done()
            await asyncio.to_thread(view.apply, [put(0, "z", 3)])
            events = await waiting
            assert [e.key for e in events if isinstance(e, Change)] == ["z"]
            assert changes.position.endswith("-1")

    asyncio.run(go())
