"""The type-checked embedded example, run against the local broker and checked against an
independent reduction of what was produced."""

from __future__ import annotations

import asyncio

import embedded_example as example
import orjson
import pytest

from statestore import AsyncStateStore
from tests.support.env import Env

pytestmark = pytest.mark.integration


def weight(i: int) -> int | float:
    """Negative, multi-digit and fractional weights: JSON text order is not numeric order."""
    w = (i * 37) % 400 - 50
    return w + 0.5 if i % 10 == 0 else w


def deliveries(n: int) -> list[tuple[str, bytes | None]]:
    records: list[tuple[str, bytes | None]] = []
    for i in range(n):
        status = ("new", "in_transit", "delivered")[i % 3]
        records.append((f"d-{i:03d}", orjson.dumps({"status": status, "weight": weight(i)})))
    for i in range(0, n, 7):  # later states of some keys
        records.append((f"d-{i:03d}", orjson.dumps({"status": "delivered", "weight": i})))
    records += [(f"d-{i:03d}", None) for i in range(0, n, 11)]  # deletions
    return records


def test_example_functions_match_the_reduction_of_the_log(env: Env) -> None:
    """Every function of the example answers what the reduction of the produced log says."""
    topic = env.topic(3)
    produced = env.produce(topic, deliveries(240))
    expected = {k.decode(): orjson.loads(v) for k, v in produced.latest().items()}
    config = env.config({"name": "deliveries", "topic": topic, "indexes": ("status", "weight")})
    store = example.open_store(config)
    try:
        reader = store.reader("deliveries")

        by_weight = sorted((v["weight"], k) for k, v in expected.items() if 10 <= v["weight"] < 150)
        assert example.heavy_in_range(reader, 10, 150) == [k for _, k in by_weight]
        assert len(by_weight) > 50  # more than one page

        assert example.keys_between(reader, "d-050", "d-120") == sorted(
            k for k in expected if "d-050" <= k < "d-120"
        )
        assert example.in_status(reader, "in_transit") == {
            k for k, v in expected.items() if v["status"] == "in_transit"
        }
        assert example.status_of(reader, "d-001") == expected["d-001"]["status"]
        assert example.status_of(reader, "d-000") is None  # deleted

        keys = ["d-001", "d-011", "d-014", "nope"]
        statuses = asyncio.run(example.read_async(store, keys, produced.last_offsets()))
        assert statuses == [expected[k]["status"] if k in expected else "absent" for k in keys]

        async def follow() -> dict[str, str | None]:
            async with AsyncStateStore(store) as astore, astore.changes("deliveries") as changes:
                # Produced once the stream is open: each of these changes must arrive.
                later = [
                    ("d-001", orjson.dumps({"status": "lost", "weight": 1})),
                    ("d-002", None),
                    ("d-999", orjson.dumps({"status": "new", "weight": 2})),
                ]
                await asyncio.to_thread(env.produce, topic, later)
                async with asyncio.timeout(30):
                    return await example.follow_until(changes, {"d-001", "d-002", "d-999"})

        seen = asyncio.run(follow())
        assert seen == {"d-001": "lost", "d-002": None, "d-999": "new"}
    finally:
        store.close()
