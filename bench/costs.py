"""Per-record costs of the apply steps, each timed alone (µs per record, best of 9).

What a bootstrap pays per record on top of the raw consume: the JSON check
(``orjson.loads``), the key check, the stored-record header, and then either the read
of the stored record plus the WriteBatch put and write into the entity family (record
by record, as a caught-up view applies), or what a bulk-load worker does instead (no
read): encode the staging key and record, sort, and write a sorted SST file. Run
against a scratch store of 200,000 keys, batches of 5,000 distinct keys.

    python -m bench.costs
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from statestore.records import stage_key_maker
from statestore.storage import RocksOptions, SstFile, Storage

from .topics import entity, key_of

KEYS = 200_000
BATCH = 5000


def best(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(9):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(min(times) / n * 1e6, 3)


def main() -> None:
    rng = random.Random(3)
    values = [orjson.dumps(entity(i, 1, 1_732_000_000_000)) for i in range(BATCH)]
    keys = [key_of(i) for i in rng.sample(range(KEYS), BATCH)]
    header = struct.Struct(">Biqqi").pack
    out: dict[str, float] = {}
    loads = orjson.loads
    out["json_check"] = best(lambda: [loads(v) for v in values], BATCH)
    out["key_check"] = best(lambda: [k.decode("utf-8") for k in keys], BATCH)
    out["header_pack"] = best(
        lambda: [header(1, 3, 123456, 1_732_000_000_000, -1) + v for v in values], BATCH
    )

    tmp = Path(tempfile.mkdtemp(prefix="statestore-costs-"))
    try:
        st = Storage(tmp / "store", RocksOptions())
        st.create_family("v")
        data = b"\x00" * 25 + values[0]
        for start in range(0, KEYS, BATCH):
            b = st.batch()
            put, h = b.fast_put("v")
            for i in range(start, start + BATCH):
                put(key_of(i), data, h)
            st.write(b)
        out["get_per_key"] = best(lambda: st.get_many("v", keys), BATCH)

        def write() -> None:
            b = st.batch()
            put, h = b.fast_put("v")
            for k in keys:
                put(k, data, h)
            st.write(b)

        out["put_and_write"] = best(write, BATCH)

        make_key = stage_key_maker(3)

        def stage() -> None:
            items = [(make_key(k, 123456), data) for k in keys]
            items.sort()
            sst = SstFile(tmp / "stage.sst")
            sst.add_sorted(items)
            sst.finish()

        out["stage_sst"] = best(stage, BATCH)
        st.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
