"""Disk and memory per million entities, for sizing a deployment (docs/deploy.md).

``python -m bench.sizing`` (the local broker running, the benchmark's topics made by
``make bench``) bootstraps each JSON topic into a fresh store with ``statestore
bootstrap``, measures the store directory on disk, then runs ``statestore serve`` on it
and measures its resident memory: once idle after start-up, and after reading 100,000
random keys over REST (the block and row caches then hold what they can). With an
index on ``status`` as well, for the 5M topic. Results go to bench/sizing.json.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from . import topics
from .common import BENCH, STATESTORE, free_port, fresh_dir, log, write_config

RESULT = BENCH / "sizing.json"
# Reads of random keys before the second memory sample: more than the block cache (64 MB)
# and the row cache (32 MB) can hold of the 5M topic's view, so both fill up.
READS = 100_000
CASES = [(1_000_000, ()), (5_000_000, ()), (5_000_000, ("status",))]


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _serve_rss(config: Path, port: int, keys: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [STATESTORE, "-c", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("statestore serve did not get ready")
            time.sleep(0.2)
        idle = psutil.Process(proc.pid).memory_info().rss
        order = random.Random(7).sample(range(keys), min(keys, READS))
        found = 0
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in order:
                found += (
                    client.get(f"/views/bench/entities/{topics.key_of(i).decode()}").status_code
                    == 200
                )
        read = psutil.Process(proc.pid).memory_info().rss
        return {
            "rss_idle_mb": round(idle / 2**20, 1),
            "rss_after_reads_mb": round(read / 2**20, 1),
            "reads": len(order),
            "found": found,
        }
    finally:
        proc.terminate()
        proc.wait(60)


def measure(records: int, indexes: tuple[str, ...]) -> dict[str, Any]:
    t = topics.topic(records, "json")
    if topics.count(t.name) != records:
        raise RuntimeError(f"{t.name} does not hold {records} records: run make bench first")
    topic = t.name
    name = f"sizing-{topic}-{'idx' if indexes else 'plain'}"
    work = fresh_dir(name)
    store = work / "store"
    port = free_port()
    config = write_config(
        work / "statestore.toml", topic=topic, store=store, indexes=indexes, port=port
    )
    started = time.monotonic()
    done = subprocess.run(
        [STATESTORE, "-c", str(config), "--log-level", "warning", "bootstrap"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    seconds = time.monotonic() - started
    status = subprocess.run(
        [STATESTORE, "-c", str(config), "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    view = json.loads(status.stdout)["views"][0]
    keys = int(view["keys"])
    assert keys == t.live_keys, (keys, t.live_keys)
    out = {
        "topic": topic,
        "indexes": list(indexes),
        "records": view["records_applied"],
        "entities": keys,
        "bootstrap_s": round(seconds, 2),
        "disk_mb": round(_disk(store) / 2**20, 1),
    }
    out.update(_serve_rss(config, port, keys=t.keys))
    out["disk_mb_per_million_entities"] = round(out["disk_mb"] / keys * 1e6, 1)
    log(f"sizing {out}")
    return out


def main() -> None:
    rows = [measure(records, indexes) for records, indexes in CASES]
    RESULT.write_text(
        json.dumps(
            {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, indent=2
        )
        + "\n",
        encoding="utf-8",
    )
    log(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
