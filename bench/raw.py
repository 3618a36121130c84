"""The raw limit: a confluent-kafka consumer that reads every record of a topic and does nothing else.

It uses statestore's own consumer settings (``_CONSUMER_DEFAULTS``: the same fetch
sizes, queue sizes and batch size), assigns every partition from the beginning
and stops when its position reaches the end offsets taken at the start. Touching
each value (its length, for MB/s) is all the work it does per record.

    python -m bench.raw TOPIC [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from statestore.kafka import _CONSUMER_DEFAULTS

from .common import BOOTSTRAP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()

    conf = dict(_CONSUMER_DEFAULTS)
    conf.update({"bootstrap.servers": BOOTSTRAP, "group.id": "statestore.bench.raw"})
    consumer = Consumer(conf)
    md = consumer.list_topics(args.topic, timeout=10).topics[args.topic]
    parts = sorted(md.partitions)
    ends = {}
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)
        ends[p] = (low, high)
    expected = sum(high - low for low, high in ends.values())
    started = time.monotonic()
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in parts])
    records = 0
    nbytes = 0
    consume = consumer.consume
    batch = args.batch
    while records < expected:
        for m in consume(batch, 0.2):
            if m.error() is not None:
                continue
            v = m.value()
            records += 1
            if v is not None:
                nbytes += len(v)
    elapsed = time.monotonic() - started
    consumer.close()
    print(
        json.dumps(
            {
                "records": records,
                "bytes": nbytes,
                "seconds": round(elapsed, 4),
                "records_per_s": round(records / elapsed),
                "mb_per_s": round(nbytes / elapsed / 1e6, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
