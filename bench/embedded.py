"""Embedded reads: ``StateStore.get`` (decoded entity) and ``lookup`` of 100 keys per call.

Opens the bootstrapped store read-only (the same read path the server uses) and
reads random keys that hold an entity for a fixed time.

    python -m bench.embedded CONFIG --keys N [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from statestore import StateStore, load_config

from .common import VIEW
from .topics import TOMBSTONE_EVERY


def live_key(rng: random.Random, keys: int) -> str:
    i = rng.randrange(keys)
    if i % TOMBSTONE_EVERY == 0:
        i = (i + 1) % keys
    return f"key-{i:08d}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    rng = random.Random(42)
    sample = [live_key(rng, args.keys) for _ in range(200_000)]
    out: dict[str, object] = {}
    with StateStore(load_config(args.config), read_only=True) as store:
        get = store.get
        # Warm the block cache a little, as a serving process would be.
        for k in sample[:20_000]:
            get(VIEW, k)
        n = 0
        missing = 0
        started = time.perf_counter()
        deadline = started + args.seconds
        while time.perf_counter() < deadline:
            for k in sample[n % 150_000 : n % 150_000 + 1000]:
                if get(VIEW, k) is None:
                    missing += 1
            n += 1000
        elapsed = time.perf_counter() - started
        out["get_per_s"] = round(n / elapsed)
        out["get_us"] = round(elapsed / n * 1e6, 3)
        out["get_missing"] = missing

        lookup = store.lookup
        batches = [sample[i : i + 100] for i in range(0, len(sample), 100)]
        calls = 0
        started = time.perf_counter()
        deadline = started + args.seconds
        while time.perf_counter() < deadline:
            for b in batches[calls % 1500 : calls % 1500 + 10]:
                lookup(VIEW, b)
            calls += 10
        elapsed = time.perf_counter() - started
        out["lookup100_calls_per_s"] = round(calls / elapsed)
        out["lookup100_keys_per_s"] = round(calls * 100 / elapsed)
        out["lookup100_ms"] = round(elapsed / calls * 1e3, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
