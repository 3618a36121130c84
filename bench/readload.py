"""A steady read load: GET /views/{view}/entities/{key} at a fixed rate, every request timed.

*connections* threads, each with one keep-alive HTTP/1.1 connection to 127.0.0.1,
share *rate* requests per second: each thread sends on a fixed schedule (sending at
once when it is behind, never skipping). Keys are drawn at random among the keys that
hold an entity. It runs until stdin is closed or *seconds* have passed, then writes
every request as ``[scheduled, sent, done, status]`` (CLOCK_MONOTONIC seconds, the
clock every process of the machine shares; status 0 = connection error or timeout)
to *out*, so the caller can cut out any time window.

    python -m bench.readload --port P --keys N --rate R --connections C --seconds S --out FILE
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path

from .common import VIEW
from .topics import TOMBSTONE_EVERY


def live_key(rng: random.Random, keys: int) -> str:
    """A random key that holds an entity (every TOMBSTONE_EVERY-th key was deleted)."""
    i = rng.randrange(keys)
    if i % TOMBSTONE_EVERY == 0:
        i = (i + 1) % keys
    return f"key-{i:08d}"


def client(
    port: int, keys: int, first: float, interval: float, stop: threading.Event, seed: int
) -> list[list[float]]:
    """One connection's requests on its schedule, until *stop*."""
    rng = random.Random(seed)
    conn: http.client.HTTPConnection | None = None
    out: list[list[float]] = []
    k = 0
    while not stop.is_set():
        scheduled = first + k * interval
        k += 1
        wait = scheduled - time.monotonic()
        if wait > 0 and stop.wait(wait):
            break
        sent = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/views/{VIEW}/entities/{live_key(rng, keys)}")
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            status = 0
            if conn is not None:
                conn.close()
            conn = None
        out.append([round(scheduled, 6), round(sent, 6), round(time.monotonic(), 6), status])
    if conn is not None:
        conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    stop = threading.Event()
    interval = args.connections / args.rate
    start = time.monotonic() + 0.05
    results: list[list[list[float]]] = [[] for _ in range(args.connections)]

    def work(i: int) -> None:
        first = start + i * interval / args.connections
        results[i] = client(args.port, args.keys, first, interval, stop, seed=7 + i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(args.connections)]
    for t in threads:
        t.start()
    print("READY", flush=True)

    def until_eof() -> None:
        sys.stdin.read()
        stop.set()

    # Stop at the end of stdin (the caller closes it) or after --seconds.
    threading.Thread(target=until_eof, daemon=True).start()
    stop.wait(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    requests = sorted(r for rs in results for r in rs)
    args.out.write_text(
        json.dumps({"rate": args.rate, "connections": args.connections, "requests": requests})
    )
    print(json.dumps({"requests": len(requests)}), flush=True)


if __name__ == "__main__":
    main()
