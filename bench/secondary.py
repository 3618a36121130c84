"""The freshness cost of serving from RocksDB secondary instances (an experiment).

A secondary instance opens the primary's files read-only and sees new writes only
after ``try_catch_up_with_primary()``, which replays the primary's new WAL and
MANIFEST entries. This process catches up every ``--interval`` seconds while the
freshness producer runs, and takes the first moment each produced key
(``fresh-<seq>``) is visible to it: that, minus ``sent_ns``, is what a reader
served by such a worker sees. It also reports what each catch-up costs.

This talks to rocksdict directly (no view refresh, no HTTP): the floor under what a
worker of ``statestore serve --workers N`` (statestore/secondary.py) sees.

    python -m bench.secondary STORE_DIR --interval 0.02
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time

import orjson
from rocksdict import AccessType, Options, Rdict

from statestore.records import HEADER_SIZE

from .freshness import WARMUP, percentiles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--cf", default="v.bench#0")
    ap.add_argument("--window", type=int, default=1500)
    args = ap.parse_args()
    opts = Options(raw_mode=True)
    opts.set_max_open_files(-1)
    families = [n for n in Rdict.list_cf(args.store, opts) if n != "default"]
    own = tempfile.mkdtemp(prefix="statestore-secondary-")
    db = Rdict(
        args.store,
        opts,
        column_families={n: Options(raw_mode=True) for n in families},
        access_type=AccessType.secondary(own),
    )
    cf = db.get_column_family(args.cf)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("READY", flush=True)

    latencies: list[float] = []
    catchups: list[float] = []
    lo = 0
    seen: set[int] = set()
    while not stop.is_set():
        t0 = time.perf_counter()
        db.try_catch_up_with_primary()
        catchups.append((time.perf_counter() - t0) * 1e3)
        now = time.time_ns()
        seqs = [s for s in range(lo, lo + args.window) if s not in seen]
        values = cf.get([b"fresh-%09d" % s for s in seqs])
        for s, data in zip(seqs, values, strict=True):
            if data is not None:
                seen.add(s)
                if s >= WARMUP:
                    sent = orjson.loads(data[HEADER_SIZE:])["sent_ns"]
                    latencies.append((now - sent) / 1e6)
        while lo in seen:
            seen.discard(lo)
            lo += 1
        left = args.interval - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
    db.close()
    out = percentiles(latencies)
    out["interval_ms"] = args.interval * 1e3
    out["catch_up_ms"] = percentiles(catchups)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
