"""The per-view handle, the asyncio API and ranges against the real local broker."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from statestore import (
    AsyncStateStore,
    Change,
    InvalidRangeError,
    StateStore,
    UnknownIndexError,
    format_position,
)
from tests.support.env import Env

pytestmark = pytest.mark.integration


def test_handle_follows_the_topic(env: Env) -> None:
    """A handle made before later records answers them once its wait_for (given the position
    as text) returns: points, key ranges and index ranges reflect moves between values."""
    topic = env.topic(2)
    first = env.produce(topic, [(f"s-{i:02d}", orjson.dumps({"rank": i})) for i in range(30)])
    config = env.config({"name": "scores", "topic": topic, "indexes": ("rank",)})
    with StateStore(config) as store:
        store.bootstrap()
        store.start()
        scores = store.reader("scores")
        assert scores.wait_for(format_position(first.last_offsets()), timeout=20.0)
        assert [e.key for e in scores.by_range("rank", start=5, end=8).items] == [
            "s-05",
            "s-06",
            "s-07",
        ]
        later = env.produce(
            topic,
            [("s-05", orjson.dumps({"rank": 100})), ("s-29", None), ("s-30", orjson.dumps({}))],
        )
        reached = scores.wait_for(later.last_offsets(), timeout=20.0)
        assert all(reached[p] >= o for p, o in later.last_offsets().items())
        assert scores.position() == reached
        assert [e.key for e in scores.by_range("rank", start=5, end=8).items] == ["s-06", "s-07"]
        top = scores.by_range("rank", start=28).items
        assert [(e.key, e.value["rank"]) for e in top] == [("s-28", 28), ("s-05", 100)]
        got = scores.lookup(["s-05", "s-29", "s-30"])
        assert [None if e is None else e.value for e in got] == [{"rank": 100}, None, {}]
        assert [e.key for e in scores.scan("s-2", start="s-25", end="s-30").items] == [
            "s-25",
            "s-26",
            "s-27",
            "s-28",
        ]
        assert scores.status().keys == 30
        with pytest.raises(InvalidRangeError):
            scores.scan(start="s-9", end="s-1")
        with pytest.raises(UnknownIndexError):
            scores.by_range("nope", start=1)


def test_async_api_while_following(env: Env) -> None:
    """While the store follows the topic, an asyncio service waits for a position produced
    after it started waiting, reads through the async handle, and receives the changes of
    its prefix with `async for`, each of them once, then a deletion produced meanwhile."""
    topic = env.topic(3)
    env.produce(topic, [(f"a-{i}", orjson.dumps({"v": i})) for i in range(10)])
    config = env.config({"name": "v", "topic": topic, "indexes": ("v",)})
    with StateStore(config) as store:
        store.bootstrap()
        store.start()

        async def service() -> tuple[list[tuple[str, Any]], list[Any]]:
            async with AsyncStateStore(store) as astore:
                v = astore.reader("v")
                async with v.changes(prefix="b-") as changes:
                    records = [(f"b-{i}", orjson.dumps({"v": 100 + i})) for i in range(5)]
                    records.append(("a-1", orjson.dumps({"v": -1})))
                    produced = await asyncio.to_thread(env.produce, topic, records)
                    await v.wait_for(produced.last_offsets(), timeout=20.0)
                    seen: list[tuple[str, Any]] = []
                    async with asyncio.timeout(20):
                        async for event in changes:
                            assert isinstance(event, Change)
                            seen.append((event.key, None if event.deleted else event.value["v"]))
                            if len(seen) == 5:
                                await asyncio.to_thread(env.produce, topic, [("b-0", None)])
                            if event.deleted:
                                break
                page = await v.by_range("v", start=-5, end=103)
                return seen, [(e.key, e.value["v"]) for e in page.items]

        seen, ranged = asyncio.run(service())
        assert sorted(seen[:5]) == [(f"b-{i}", 100 + i) for i in range(5)]
        assert seen[5:] == [("b-0", None)]
        expected = sorted([(-1, "a-1")] + [(i, f"a-{i}") for i in range(10) if i != 1])
        expected += [(101, "b-1"), (102, "b-2")]
        assert ranged == [(k, v) for v, k in expected]
