"""Freshness: produce at a steady rate while a view follows; produce-to-visible latency.

Three roles, each its own process (``scripts/bench`` runs them together):

* ``follow CONFIG`` — a StateStore that bootstraps, then follows; a change listener
  (called once the batch's WriteBatch is written, i.e. when the record is readable)
  takes ``now - sent_ns`` for every applied record, and ``now -`` the record's
  timestamp, which the bench topic sets to the broker's append time (LogAppendTime):
  the part of the latency that is the view's (fetch, apply) and not the producer's. Prints ``READY`` once
  following, and its latencies as JSON when its stdin closes.
* ``produce TOPIC --rate R --seconds S`` — one producer (librdkafka defaults but
  ``acks=1``: linger 5 ms) sending ~200-byte JSON values stamped with ``sent_ns``
  right before ``produce()``, paced to R records/s.
* ``secondary STORE --interval S`` — see :mod:`bench.secondary`.

Both clocks are the same machine's ``time.time_ns()``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
import time
from typing import Any

import orjson

from statestore import StateStore, load_config
from statestore.records import HEADER_SIZE

from .common import VIEW
from .topics import producer

# Records of the first second (at 5,000/s) are not counted: the producer's warm-up.
WARMUP = 5000


def _record_ts(stored: bytes) -> int:
    """The Kafka timestamp (ms) kept in a stored record's header."""
    return int(_TS.unpack_from(stored, 13)[0])


_TS = struct.Struct(">q")


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    values = sorted(values)
    n = len(values)

    def at(q: float) -> float:
        return round(values[min(n - 1, int(q * n))], 2)

    return {
        "count": n,
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(values[-1], 2),
        "mean_ms": round(sum(values) / n, 2),
    }


def follow(config: str, series_path: str | None = None) -> None:
    latencies: list[float] = []
    from_append: list[float] = []
    series: list[tuple[int, float]] | None = [] if series_path else None
    batches: list[int] = []
    header = HEADER_SIZE

    def listener(view: Any, applied: Any) -> None:
        now = time.time_ns()
        n = 0
        for change in applied.changes:
            data = change[-1]
            if data is None:
                continue
            body = orjson.loads(data[header:])
            sent = body.get("sent_ns")
            # The first second is the producer's warm-up (metadata for the new topic).
            if sent is not None and body.get("seq", 0) >= WARMUP:
                latencies.append((now - sent) / 1e6)
                # The topic stamps records with LogAppendTime: the broker's append, in ms.
                from_append.append(now / 1e6 - _record_ts(data))
                if series is not None:
                    series.append((now, (now - sent) / 1e6))
                n += 1
        if n:
            batches.append(n)

    with StateStore(load_config(config)) as store:
        store.bootstrap()
        store.subscribe(VIEW, listener)
        store.start()
        print("READY", flush=True)
        sys.stdin.read()  # until the bench closes our stdin
        time.sleep(0.2)
    if series_path and series is not None:
        with open(series_path, "w", encoding="utf-8") as f:
            json.dump(series, f)
    out = percentiles(latencies)
    out["from_broker_append"] = percentiles(from_append)
    out["batches"] = len(batches)
    out["records_per_batch_avg"] = round(sum(batches) / len(batches), 1) if batches else 0
    print(json.dumps(out), flush=True)


def produce(topic: str, rate: int, seconds: float) -> None:
    p = producer(**{"linger.ms": 5, "batch.size": 1_000_000})
    pad = "y" * 120
    sent = 0
    started = time.monotonic()
    end = started + seconds
    tick = 0.002
    next_t = started
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - started) * rate)
        while sent < due:
            body = {
                "id": f"fresh-{sent:09d}",
                "status": "in_transit",
                "seq": sent,
                "sent_ns": time.time_ns(),
                "pad": pad,
            }
            p.produce(topic, orjson.dumps(body), b"fresh-%09d" % sent)
            sent += 1
        p.poll(0)
        next_t += tick
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    p.flush(30)
    elapsed = time.monotonic() - started
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)
    f = sub.add_parser("follow")
    f.add_argument("config")
    f.add_argument("--series", help="write (time_ns, latency_ms) of every record here")
    pr = sub.add_parser("produce")
    pr.add_argument("topic")
    pr.add_argument("--rate", type=int, default=5000)
    pr.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    if args.role == "follow":
        threading.current_thread().name = "bench-follow"
        follow(args.config, args.series)
    else:
        produce(args.topic, args.rate, args.seconds)


if __name__ == "__main__":
    main()
