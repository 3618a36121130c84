"""The raw limit: confluent-kafka consumers that read every record of a topic and do nothing else.

Each consumer uses statestore's own consumer settings (``_CONSUMER_DEFAULTS``: the
same fetch sizes, queue sizes and batch size), assigns its partitions from the
beginning and stops when its position reaches the end offsets taken at its start.
Touching each value (its length, for MB/s) is all the work it does per record.

``--processes P`` runs P consumer processes (children of this one), the topic's
partitions dealt round-robin among them, and prints one combined result: records
over the seconds from the first process start to the last one done (``seconds``),
and over the first assign to the last one done (``consume_seconds``). Without it
one consumer reads every partition in this process, timed from its assign.

``--set K=V`` overrides one of those consumer settings (repeatable).

    python -m bench.raw TOPIC [--batch 5000] [--processes P] [--set K=V ...]
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # CLOCK_MONOTONIC is one clock for all processes of the machine

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


def consume(
    topic: str, batch: int, share: int = 0, shares: int = 1, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read this share of the topic's partitions (sorted, every *shares*-th from *share*)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from statestore.kafka import _CONSUMER_DEFAULTS

    from .common import BOOTSTRAP

    conf = dict(_CONSUMER_DEFAULTS)
    conf.update({"bootstrap.servers": BOOTSTRAP, "group.id": "statestore.bench.raw"})
    conf.update(o.split("=", 1) for o in overrides)
    consumer = Consumer(conf)
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = sorted(md.partitions)[share::shares]
    expected = 0
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        expected += high - low
    assigned = time.monotonic()
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    records = 0
    nbytes = 0
    poll = consumer.consume
    while records < expected:
        for m in poll(batch, 0.2):
            if m.error() is not None:
                continue
            v = m.value()
            records += 1
            if v is not None:
                nbytes += len(v)
    done = time.monotonic()
    consumer.close()
    elapsed = done - assigned
    return {
        "partitions": parts,
        "records": records,
        "bytes": nbytes,
        "seconds": round(elapsed, 4),
        "records_per_s": round(records / elapsed) if elapsed > 0 else None,
        "mb_per_s": round(nbytes / elapsed / 1e6, 2) if elapsed > 0 else None,
        "started": STARTED,
        "assigned": assigned,
        "done": done,
    }


def launch(
    topic: str, batch: int, processes: int, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run *processes* consumers side by side; their combined result."""
    first = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.raw", topic),
                *("--share", f"{i}/{processes}", "--batch", str(batch)),
                *(a for o in overrides for a in ("--set", o)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    each = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a raw consumer exited {proc.returncode}")
        each.append(json.loads(out.strip().splitlines()[-1]))
    last = max(r["done"] for r in each)
    records = sum(r["records"] for r in each)
    nbytes = sum(r["bytes"] for r in each)
    seconds = last - first
    consume_s = last - min(r["assigned"] for r in each)
    return {
        "processes": processes,
        "records": records,
        "bytes": nbytes,
        "seconds": round(seconds, 4),
        "records_per_s": round(records / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 2),
        "consume_seconds": round(consume_s, 4),
        "consume_records_per_s": round(records / consume_s),
        "start_spread_s": round(max(r["started"] for r in each) - first, 4),
        "each": [
            {k: r[k] for k in ("partitions", "records", "seconds", "records_per_s")} for r in each
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--processes", type=int, help="consumer processes, partitions round-robin")
    ap.add_argument("--share", help=argparse.SUPPRESS)  # I/P: a consumer started by --processes
    ap.add_argument("--set", action="append", default=[], help="a consumer setting K=V")
    args = ap.parse_args()
    sets = tuple(args.set)
    if args.processes:
        res = launch(args.topic, args.batch, args.processes, sets)
    elif args.share:
        share, shares = (int(x) for x in args.share.split("/"))
        res = consume(args.topic, args.batch, share, shares, sets)
    else:
        res = consume(args.topic, args.batch, overrides=sets)
        for k in ("started", "assigned", "done", "partitions"):
            res.pop(k)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
