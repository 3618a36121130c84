"""How far the lag in /metrics is from the true lag, in the two cases where it used to freeze.

``python -m bench.lag_error`` (the local broker and registry running) measures:

1. **after a pause**: ``statestore serve`` follows a topic; it is stopped with SIGSTOP
   while 150,000 records are produced, then resumed, and /metrics is scraped at once
   and every 50 ms for 3 s;
2. **during a schema registry outage**: an Avro view whose registry cannot be reached
   (its URL points at a closed port) waits on a schema id it has never seen while
   records keep arriving; /metrics is scraped every 250 ms for 10 s.

The true lag of a scrape is the topic's end offsets, asked of the broker right after
the scrape, minus the positions that scrape reports; records are not produced while a
scrape and its check run in case 1, so the figure is exact there. Results go to
bench/lag_error.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from .common import BENCH, BOOTSTRAP, REGISTRY, STATESTORE, free_port, fresh_dir, log

RESULT = BENCH / "lag_error.json"


def _topic(partitions: int) -> str:
    name = f"bench.lagerr.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    conf = {"cleanup.policy": "compact"}
    admin.create_topics([NewTopic(name, partitions, 1, config=conf)])[name].result(30)
    return name


def _drop(topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.delete_topics([topic])[topic].result(30)


def _produce(topic: str, n: int, value: Any = None) -> None:
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20})
    for i in range(n):
        v = value if value is not None else json.dumps({"i": i}).encode()
        p.produce(topic, key=f"k{i % 20000}".encode(), value=v)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(60)


def _ends(topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "bench.lagerr"})
    try:
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(partitions)
        )
    finally:
        c.close()


def _scrape(url: str) -> tuple[float, float]:
    """(statestore_view_lag, sum of statestore_applied_offset) of one scrape."""
    lag = positions = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.name == "statestore_view_lag":
                lag += s.value
            elif s.name == "statestore_applied_offset":
                positions += s.value
    return lag, positions


def _serve(work: Path, topic: str, *, avro: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    lines = [
        "[kafka]",
        f'"bootstrap.servers" = "{BOOTSTRAP}"',
        "[store]",
        f'path = "{work / "store"}"',
        "[api]",
        f"port = {port}",
    ]
    if avro:  # a registry nobody answers at
        lines += ["[schema_registry]", f'url = "http://127.0.0.1:{free_port()}"']
    lines += ["[[views]]", 'name = "v"', f'topic = "{topic}"']
    if avro:
        lines.append('value = "avro"')
    config = work / "statestore.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.Popen(
        [STATESTORE, "-c", str(config), "serve"],
        cwd=work,
        stdout=(work / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(
                f"statestore serve did not start: {(work / 'serve.log').read_text()}"
            )
        time.sleep(0.1)


def _view(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/views/v", timeout=10).json()
    return data


def after_pause(produced: int = 150_000) -> dict[str, Any]:
    topic = _topic(3)
    work = fresh_dir("lagerr-pause")
    _produce(topic, 10_000)
    proc, url = _serve(work, topic, avro=False)
    try:
        while not (_view(url)["state"] == "ready" and _view(url)["lag"] == 0):
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGSTOP)
        _produce(topic, produced)
        time.sleep(3.0)  # paused for a while, as a stalled process would be
        os.kill(proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        rows = []
        while time.monotonic() - resumed < 3.0:
            lag, positions = _scrape(url)
            true = _ends(topic, 3) - positions
            rows.append(
                {"t_ms": round((time.monotonic() - resumed) * 1000), "metric": lag, "true": true}
            )
            time.sleep(0.05)
        first = rows[0]
        return {
            "produced_while_paused": produced,
            "first_scrape": first,
            "first_error": first["true"] - first["metric"],
            "max_error": max(r["true"] - r["metric"] for r in rows),
            "scrapes": len(rows),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        _drop(topic)


def registry_outage(seconds: float = 10.0) -> dict[str, Any]:
    from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic = _topic(1)
    schema = json.dumps(
        {"type": "record", "name": "LagErr", "fields": [{"name": "i", "type": "long"}]}
    )
    serializer = AvroSerializer(
        SchemaRegistryClient({"url": REGISTRY}),
        schema,
        conf={"subject.name.strategy": topic_subject_name_strategy},
    )
    value = serializer({"i": 1}, SerializationContext(topic, MessageField.VALUE))
    work = fresh_dir("lagerr-outage")
    _produce(topic, 1000, value)
    proc, url = _serve(work, topic, avro=True)
    try:
        while _view(url)["state"] not in ("degraded", "bootstrapping") or not _view(url)["reason"]:
            time.sleep(0.1)
        rows = []
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            _produce(topic, 2000, value)
            time.sleep(0.25)
            lag, positions = _scrape(url)
            true = _ends(topic, 1) - positions
            rows.append(
                {"t_ms": round((time.monotonic() - start) * 1000), "metric": lag, "true": true}
            )
        errors = [r["true"] - r["metric"] for r in rows]
        return {
            "state": _view(url)["state"],
            "reason": _view(url)["reason"],
            "final": rows[-1],
            "max_error": max(errors),
            "mean_error": sum(errors) / len(errors),
            "scrapes": len(rows),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        _drop(topic)


def main() -> None:
    out = {"after_pause": after_pause(), "registry_outage": registry_outage()}
    out["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    RESULT.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    log(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
