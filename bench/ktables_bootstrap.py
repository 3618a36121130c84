"""ktables (PyPI): load a topic into its in-memory GlobalKTable for asyncio, timed.

``KafkaTable.start()`` replays the topic from the beginning and returns once its
position reaches the end offsets taken at start. Values are decoded with
``orjson.loads`` (as statestore parses each JSON value at ingest), keys as UTF-8.
The consumer gets the same fetch sizes as statestore's.

    python -m bench.ktables_bootstrap TOPIC
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

import orjson
from ktables import KafkaConnectionConfig, KafkaTable

from .common import BOOTSTRAP


async def load(topic: str) -> dict[str, object]:
    conn = KafkaConnectionConfig(
        bootstrap_servers=BOOTSTRAP,
        consumer_opts={
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
            "fetch_max_bytes": 64 * 1024 * 1024,
            "max_poll_records": 5000,
        },
    )
    table: KafkaTable[object] = KafkaTable(
        connection=conn,
        topic=topic,
        value_decoder=orjson.loads,
        catchup_timeout=3600,
        ensure_topic=False,
    )
    started = time.monotonic()
    await table.start()
    elapsed = time.monotonic() - started
    stats = table.stats
    keys = len(table)
    await table.stop()
    return {
        "seconds": round(elapsed, 4),
        "keys": keys,
        "status": str(table.status),
        "records_applied": getattr(stats, "records_applied", None),
        "tombstones_applied": getattr(stats, "tombstones_applied", None),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = asyncio.run(load(args.topic))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
