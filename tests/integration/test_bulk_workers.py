"""Bulk loads read by worker processes, against the real local broker: the view they leave
equals the reduction of the log, whatever happens to a worker on the way."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import orjson
import psutil
import pytest
from test_bootstrap import canonical, entities, updates

from statestore import StateStore
from statestore.config import Config, StoreConfig, ViewConfig
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

BAD = b"{not json"


def records_with_bad(
    n_keys: int, n_records: int, every: int = 97
) -> list[tuple[bytes, bytes | None]]:
    """Updates and tombstones, with a malformed JSON value every *every* records."""
    out = updates(n_keys, n_records, tombstones=0.05)
    return [(k, BAD) if i % every == 0 else (k, v) for i, (k, v) in enumerate(out)]


def worker_config(make_config: Callable[..., Config], topic: str, **store: Any) -> Config:
    config = make_config(ViewConfig(name="v", topic=topic, indexes=("status",)))
    options = {"bootstrap_workers": 2, "bulk_min_records": 1_000, **store}
    return config.model_copy(update={"store": StoreConfig(path=config.store.path, **options)})


def check_exact(store: StateStore, produced: Any) -> None:
    """Entities, counters, positions, index and quarantine all match the log."""
    good = [r for r in produced.records if r[3] != BAD]
    expected = canonical(_latest(good))
    assert entities(store, "v") == expected
    status = store.view("v").status()
    assert status.keys == len(expected)
    assert status.records_applied == len(produced.records)
    assert status.quarantined == len(produced.records) - len(good)
    ends: dict[int, int] = {}
    for p, o, _, _ in produced.records:
        ends[p] = max(ends.get(p, 0), o + 1)
    assert {p.partition: p.position for p in status.partitions} == ends
    for value in ("a", "b", "c"):
        hits = {e.key for e in store.by("v", "status", value, limit=100_000).items}
        assert hits == {
            k.decode() for k, v in expected.items() if orjson.loads(v)["status"] == value
        }
    quarantined = store.view("v").quarantine(limit=100_000)[0]
    assert sorted((q["partition"], q["offset"]) for q in quarantined) == sorted(
        (p, o) for p, o, _, v in produced.records if v == BAD
    )


def _latest(records: list[tuple[int, int, bytes | None, bytes | None]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for _, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        assert key is not None
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_worker_processes_load_the_view_exactly(
    topic_factory: Any, produce: Any, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two worker processes, each partition split where a share ends: the merged view holds
    exactly the last good value per key, with exact counters, positions, index and
    quarantine."""
    topic = topic_factory(3)
    produced = produce(topic, records_with_bad(3_000, 30_000))
    caplog.set_level(logging.INFO, logger="statestore")
    loads: list[Any] = []
    with StateStore(worker_config(make_config, topic)) as store:
        store.bootstrap(on_progress=lambda _: loads.append(store.view("v").status().load))
        check_exact(store, produced)
        assert store.view("v").status().load is None
    assert "processes=2" in caplog.text
    # While it loaded, status showed the phase, the processes and the records read.
    reading = [load for load in loads if load is not None and load.phase == "reading"]
    assert reading and all(load.processes == 2 for load in reading)
    assert reading[-1].records_read <= len(produced.records)
    # Reopened, it is served at once and reads nothing again.
    with StateStore(worker_config(make_config, topic)) as store:
        status = store.bootstrap()["v"]
        assert status.bootstrap_records == 0
        check_exact(store, produced)


def _workers() -> list[psutil.Process]:
    """The live worker processes of this test process (exited ones left out)."""
    out = []
    for p in psutil.Process(os.getpid()).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "statestore._worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_a_killed_worker_is_reported_and_the_load_resumes(
    topic_factory: Any, produce: Any, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL of a worker mid-load: the load names the dead worker and its signal, starts
    again from what the ingested files made durable, and the view is exact."""
    topic = topic_factory(4)
    produced = produce(topic, records_with_bad(20_000, 120_000))
    caplog.set_level(logging.INFO, logger="statestore")
    killed: list[int] = []

    def on_progress(progress: Any) -> None:
        if killed or progress.records == 0:
            return
        workers = _workers()
        assert len(workers) == 2, workers
        for w in workers:
            w.send_signal(signal.SIGSTOP)
        # Both are frozen mid-load (a stopped process cannot have finished).
        eventually(
            lambda: all(w.status() == psutil.STATUS_STOPPED for w in workers),
            "both workers to be stopped",
            timeout=10.0,
        )
        workers[0].send_signal(signal.SIGKILL)
        killed.append(workers[0].pid)
        workers[1].send_signal(signal.SIGCONT)

    with StateStore(worker_config(make_config, topic, memory_mb=128)) as store:
        store.bootstrap(on_progress=on_progress)
        assert killed
        assert f"pid {killed[0]}) died: killed by SIGKILL" in caplog.text
        assert "bulk.retry" in caplog.text
        check_exact(store, produced)


def test_a_load_stopped_mid_merge_finishes_the_merge_on_restart(
    topic_factory: Any, produce: Any, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A merge cut short (its entity file never ingested) leaves the view loading; the next
    start merges again from the staged files and the view is exact."""
    topic = topic_factory(3)
    produced = produce(topic, records_with_bad(2_000, 20_000))
    config = worker_config(make_config, topic)
    from statestore import storage as storage_module

    real = storage_module.Storage.ingest

    def broken(self: Any, cf: str, path: Any) -> None:
        if cf.startswith("v."):
            raise storage_module.StorageError("simulated crash during the merge")
        real(self, cf, path)

    storage_module.Storage.ingest = broken  # type: ignore[method-assign]
    try:
        with StateStore(config) as store:
            status = store.bootstrap(raise_on_failure=False)["v"]
            assert status.state == "failed"
            assert "simulated crash during the merge" in (status.reason or "")
    finally:
        storage_module.Storage.ingest = real  # type: ignore[method-assign]
    with StateStore(config) as store:
        assert store.view("v").bulk
        status = store.bootstrap()["v"]
        assert status.bootstrap_records == 0  # everything was staged before the crash
        check_exact(store, produced)
