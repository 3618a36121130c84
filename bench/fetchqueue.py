"""The consumer's fetch queue and its backoff: raw consume and a 2-worker bootstrap of the 5M topic.

librdkafka stops fetching a partition for ``fetch.queue.backoff.ms`` (its default:
1,000 ms) each time the consumer's queue holds ``queued.max.messages.kbytes`` or
more. This runs the raw consumer (1 process) and ``statestore bootstrap --workers 2``
on ``bench.json.5m`` with each setting below, alternating, and writes what they
measured to ``bench/fetchqueue.json`` (kept in the repository: docs/benchmarks.md
quotes it).

    python -m bench.fetchqueue [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .common import log
from .machine import describe, git
from .systems import raw, statestore
from .topics import ensure, topic

OUT = Path(__file__).with_name("fetchqueue.json")

SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "32 MB queue, 1 s backoff (librdkafka's default)",
        {"queued.max.messages.kbytes": 32768, "fetch.queue.backoff.ms": 1000},
    ),
    (
        "32 MB queue, 10 ms backoff",
        {"queued.max.messages.kbytes": 32768, "fetch.queue.backoff.ms": 10},
    ),
    (
        "16 MB queue, 10 ms backoff",
        {"queued.max.messages.kbytes": 16384, "fetch.queue.backoff.ms": 10},
    ),
    (
        "8 MB queue, 10 ms backoff (statestore's default)",
        {"queued.max.messages.kbytes": 8192, "fetch.queue.backoff.ms": 10},
    ),
    (
        "4 MB queue, 10 ms backoff",
        {"queued.max.messages.kbytes": 4096, "fetch.queue.backoff.ms": 10},
    ),
)

_KEEP = ("records_per_s", "seconds", "wall_s", "peak_rss_mb", "cpu_us_per_record")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1, help="runs of every setting, alternating")
    args = ap.parse_args()
    t = topic(5_000_000)
    ensure(t)
    rows: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for name, kafka in SETTINGS:
            log(f"fetch queue: {name}, round {round_ + 1} ...")
            r = raw(t, 1, kafka)
            s = statestore(t, workers=2, kafka=kafka)
            rows.append(
                {
                    "setting": name,
                    "kafka": kafka,
                    "round": round_ + 1,
                    "raw_1_process": {k: r[k] for k in _KEEP},
                    "statestore_2_workers": {k: s[k] for k in _KEEP},
                }
            )
            log(
                f"  raw {r['records_per_s']:,}/s; statestore {s['wall_s']} s, {s['peak_rss_mb']} MB"
            )
    OUT.write_text(
        json.dumps(
            {
                "topic": t.name,
                "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": describe(),
                "git": git(),
                "rows": rows,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    log(f"wrote {OUT}")


if __name__ == "__main__":
    main()
