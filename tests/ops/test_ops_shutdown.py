"""Shutdown: SIGTERM finishes the batch in flight and closes the store; a restart re-reads nothing."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from statestore import StateStore, load_config
from tests.support.config import write_config
from tests.support.kafka import BOOTSTRAP
from tests.support.oracle import latest, read_log
from tests.support.processes import finish, reap, run, spawn, wait_for_200
from tests.support.stores import stored

pytestmark = pytest.mark.integration


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(["-c", config, *args], config.parent, timeout=300)


def _records_read(result: subprocess.CompletedProcess[str], view: str) -> int:
    match = re.match(rf"{view}: ([\d,]+) records", result.stdout)
    assert match, result.stdout + result.stderr
    return int(match.group(1).replace(",", ""))


def _produce_many(topic: str, n: int, partitions: int, batch: int = 1) -> None:
    # One record per batch by default: with small fetches, bootstrap reads one at a time.
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "linger.ms": 0 if batch == 1 else 5,
            "batch.num.messages": batch,
        }
    )
    for i in range(n):
        while True:
            try:
                producer.produce(
                    topic,
                    key=f"k{i % 500}".encode(),
                    value=orjson.dumps({"i": i, "n": i % 7}),
                    partition=i % partitions,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


def _sigterm_bootstrap_at(config: Path, cwd: Path, pattern: str) -> tuple[int, list[str], str]:
    """Run `statestore bootstrap`, send SIGTERM at the first log line matching *pattern*;
    (exit code, the lines up to it, the rest of the output)."""
    proc = spawn(["-c", config, "bootstrap"], cwd)
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if re.search(pattern, line):
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        return proc.wait(timeout=60), seen, rest
    finally:
        reap(proc)


def _check_resumes_without_rereading(config: Path, topic: str) -> dict[int, int]:
    """Stored data equals the log up to the stored positions; bootstraps read the rest, then nothing."""
    positions, entities, applied = stored(config, "v")
    log = read_log(topic)
    assert entities == latest(log, positions)
    assert applied == sum(positions.values())

    rest = _run(config, "bootstrap")
    again = _run(config, "bootstrap")

    assert rest.returncode == 0, rest.stderr
    assert _records_read(rest, "v") == len(log) - sum(positions.values())
    assert again.returncode == 0, again.stderr
    assert _records_read(again, "v") == 0
    return positions


def test_sigterm_during_bootstrap_keeps_what_was_read_and_the_next_run_resumes(
    topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """SIGTERM mid-bootstrap (a bulk load) exits 130 keeping what was read, shown as the
    view's positions and records; the next run reads only the rest, and the view then
    equals the log."""
    topic = topic_factory(2)
    _produce_many(topic, 10_000, 2)
    # Still reading when SIGTERM comes, by construction: one record per fetch, and once a
    # record waits in the consumer's queue no fetch for a minute.
    stalled = {
        "max.partition.fetch.bytes": 1,
        "queued.min.messages": 1,
        "fetch.queue.backoff.ms": 60_000,
    }
    views = [{"name": "v", "topic": topic}]
    config = write_config(tmp_path, views, kafka=stalled, store_options={"batch_size": 1})
    code, seen, rest = _sigterm_bootstrap_at(
        config, tmp_path, r"bootstrap\.progress view=v records=[1-9]"
    )

    assert code == 130, "".join(seen) + rest
    assert "cli.stopping signal=SIGTERM" in rest
    assert "error: interrupted" in rest
    kept = re.search(r"bulk\.stopped view=v records=(\d+)", rest)
    assert kept, rest
    with StateStore(load_config(config, environ={}), read_only=True) as store:
        status = store.view("v").status()
    assert status.records_applied == int(kept.group(1))
    assert 0 < status.records_applied < 10_000
    assert sum(p.position for p in status.partitions) == status.records_applied

    log = read_log(topic)
    config = write_config(tmp_path, views, store_options={"batch_size": 1})  # fetching freely again
    again = _run(config, "bootstrap")
    assert again.returncode == 0, again.stderr
    assert _records_read(again, "v") == len(log) - status.records_applied
    assert _check_resumes_without_rereading(config, topic) == {0: 5_000, 1: 5_000}


def test_sigterm_during_the_merge_leaves_an_exact_view(
    topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """SIGTERM while a bulk load of worker processes merges (a view with an index): the
    command exits, and the view then equals the log, index included, and reads nothing
    again."""
    topic = topic_factory(4)
    _produce_many(topic, 30_000, 4, batch=500)  # 500 keys: each lives in one partition
    config = write_config(
        tmp_path,
        [{"name": "v", "topic": topic, "indexes": ["n"]}],
        store_options={"bootstrap_workers": 2, "bulk_min_records": 1_000},
    )
    code, seen, rest = _sigterm_bootstrap_at(config, tmp_path, r"bulk\.merging view=v")

    assert "bulk.merging view=v" in seen[-1], "".join(seen)
    assert "processes=2" in "".join(seen)
    assert code in (0, 130), "".join(seen) + rest
    assert "Traceback" not in "".join(seen) + rest
    log = read_log(topic)
    assert _check_resumes_without_rereading(config, topic) == {
        p: 1 + max(r.offset for r in log if r.partition == p) for p in range(4)
    }
    with StateStore(load_config(config, environ={}), read_only=True) as store:
        entities = {e.key: e.value for e in store.view("v").iter_entities()}
        for n in {v["n"] for v in entities.values()}:
            hits = {e.key for e in store.by("v", "n", n, limit=100_000).items}
            assert hits == {k for k, v in entities.items() if v["n"] == n}


def test_sigterm_while_serving_closes_cleanly_and_a_restart_reads_nothing_again(
    topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """SIGTERM to serve while records keep arriving stops after the batch in flight; the store matches its positions."""
    topic = topic_factory(3)
    _produce_many(topic, 300, 3)
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    url = f"http://127.0.0.1:{load_config(config, environ={}).api.port}"
    proc = spawn(["-c", config, "serve"], tmp_path)
    stop = threading.Event()

    def keep_producing() -> None:
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
        n = 0
        while not stop.is_set():
            # Each key stays on its partition: the view is then the log reduced per key.
            key = n % 50
            producer.produce(
                topic, key=f"k{key}".encode(), value=orjson.dumps({"late": n}), partition=key % 3
            )
            producer.poll(0)
            n += 1
            time.sleep(0.001)
        producer.flush(30)

    writer = threading.Thread(target=keep_producing, daemon=True)
    try:
        wait_for_200(f"{url}/readyz", proc, timeout=90)
        writer.start()
        # Following: records applied since the server got ready.
        deadline = time.monotonic() + 90
        while httpx.get(f"{url}/views/v", timeout=5).json()["records_applied"] < 400:
            assert time.monotonic() < deadline and proc.poll() is None, "serve applied too little"
            time.sleep(0.1)
        stderr = finish(proc, signal.SIGTERM)
    finally:
        stop.set()
        writer.join(30)
        reap(proc)

    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "api.store_closed" in stderr
    assert "Traceback" not in stderr
    positions = _check_resumes_without_rereading(config, topic)
    assert sum(positions.values()) >= 400
