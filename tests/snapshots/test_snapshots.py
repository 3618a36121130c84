"""Snapshots against the real broker: taken from a running server while it ingests, seeding
new stores that equal an independent reduction of the log, and every way a snapshot can be
wrong (damaged, of another topic or format, too old) refused with a clear error and no
half-restored store left behind.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from snapshot_support import (
    VIEW,
    assert_each_refused,
    assert_no_leftovers,
    config_file,
    damaged_archives,
    produce_range,
    snapshot_of_new_store,
    statestore_cli,
    take_snapshot,
    view_spec,
)

from statestore import StateStore, load_config
from statestore.snapshot import restore, store_is_empty
from statestore.storage import Storage
from tests.support.config import write_config
from tests.support.kafka import high_watermarks
from tests.support.oracle import latest, read_log
from tests.support.processes import STATESTORE, api_port, clean_env, run, start_server
from tests.support.stores import stored
from tests.support.waits import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def built(tmp_path: Path, topic_factory: Callable[..., str]) -> tuple[str, Path, Path]:
    """A topic with 3,000 records, a store bootstrapped from it and a snapshot directory
    holding one snapshot of that store: ``(topic, config, snapshots dir)``."""
    topic = topic_factory(3)
    snaps = tmp_path / "snaps"
    config, _ = snapshot_of_new_store(topic, tmp_path / "src", snaps)
    return topic, config, snaps


def _archive(snaps: Path) -> Path:
    (archive,) = sorted(snaps.glob("*.tar"))
    return archive


# -- consistency -------------------------------------------------------------------------


def test_a_snapshot_taken_from_a_running_server_while_it_ingests_seeds_an_equal_replica(
    tmp_path: Path, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(3)
    produce_range(topic, 0, 4000)
    src = config_file(tmp_path / "a", [view_spec(topic)])
    server = start_server(src, tmp_path / "a")
    try:
        # Records keep arriving while the server takes the snapshot: whatever positions it
        # holds, its content must be exactly the log reduced to them.
        producing = threading.Thread(target=produce_range, args=(topic, 4000, 12000))
        producing.start()
        try:
            info = take_snapshot(src, tmp_path / "snaps", tmp_path)  # asked of the server
        finally:
            producing.join()
    finally:
        server.stop()
    produce_range(topic, 12000, 12500)
    log = read_log(topic)
    positions = {int(p): o for p, o in info["views"][VIEW]["positions"].items()}
    assert info["views"][VIEW]["keys"] == len(latest(log, positions))

    # The archive alone: the reduction at its positions, nothing more, nothing less.
    alone = config_file(tmp_path / "c", [view_spec(topic)])
    restore(info["url"], tmp_path / "c" / "store", load_config(alone, environ={}))
    got_positions, entities, _ = stored(alone, VIEW)
    assert got_positions == positions
    assert entities == latest(log, positions)

    # A replica seeded from it ([store] seed, an empty store) reads only the tail.
    replica = config_file(tmp_path / "b", [view_spec(topic)], seed=str(tmp_path / "snaps"))
    result = statestore_cli("-c", replica, "bootstrap", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "snapshot.restored" in result.stderr
    ends = high_watermarks(topic)
    tail = sum(ends.values()) - sum(positions.values())
    assert f"{VIEW}: {tail:,} records" in result.stdout, result.stdout
    got_positions, entities, _ = stored(replica, VIEW)
    assert got_positions == ends
    assert entities == latest(log, ends)
    # Index entries came with the snapshot and were kept current by the tail.
    with StateStore(load_config(replica, environ={}), read_only=True) as store:
        by_status = {e.key for e in store.view(VIEW).by("status", "s1", None, 10_000).items}
    expected = {k for k, v in latest(log, ends).items() if orjson.loads(v)["status"] == "s1"}
    assert by_status == expected


def test_a_server_seeds_an_empty_store_and_takes_snapshots_on_schedule(
    tmp_path: Path, built: tuple[str, Path, Path]
) -> None:
    topic, _, snaps = built
    produce_range(topic, 3000, 3200)
    scheduled = tmp_path / "scheduled"
    config = config_file(tmp_path / "srv", [view_spec(topic)], seed=str(snaps))
    text = config.read_text() + f'\n[snapshots]\ndest = "{scheduled}"\nevery = "1s"\nkeep = 2\n'
    config.write_text(text)
    server = start_server(config, tmp_path / "srv")
    try:
        status = httpx.get(f"{server.url}/admin/snapshots", timeout=10).json()
        assert status["seeded_from"] == str(_archive(snaps))
        assert status["seed_error"] is None
        eventually(
            lambda: httpx.get(f"{server.url}/admin/snapshots", timeout=10).json()["taken"] >= 3,
            "three scheduled snapshots",
        )
        status = httpx.get(f"{server.url}/admin/snapshots", timeout=10).json()
        assert status["every_s"] == 1.0 and status["failures"] == 0
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert "statestore_snapshot_last_success_timestamp_seconds " in metrics
        assert "statestore_snapshot_interval_seconds 1.0" in metrics
        assert "statestore_snapshot_last_size_bytes " in metrics
    finally:
        server.stop()
    # Pruned to the newest two; each sound and holding the whole view.
    listed = statestore_cli("snapshot", "list", str(scheduled), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    snapshots = json.loads(listed.stdout)
    assert len(snapshots) == 2
    assert len(list(scheduled.glob("*.tar"))) == 2
    log = read_log(topic)
    for snap in snapshots:
        verified = statestore_cli("snapshot", "verify", snap["url"], cwd=tmp_path)
        assert verified.returncode == 0, verified.stderr
        positions = {int(p): o for p, o in snap["views"][VIEW]["positions"].items()}
        assert snap["views"][VIEW]["keys"] == len(latest(log, positions))
    # `statestore status` shows the last one (the store is read without the server).
    shown = statestore_cli("-c", config, "status", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["snapshot"]["name"] == snapshots[-1]["name"]


# -- what a snapshot must match ----------------------------------------------------------


def test_a_snapshot_of_another_topic_or_codec_is_refused_naming_what_differs(
    tmp_path: Path, built: tuple[str, Path, Path], topic_factory: Callable[..., str]
) -> None:
    topic, _, snaps = built
    other = topic_factory(3)
    for view, expected in (
        (view_spec(other), f"topic {topic!r} in the snapshot, {other!r} in the config"),
        (view_spec(topic, key="bytes"), "key 'string' in the snapshot, 'bytes' in the config"),
    ):
        config = config_file(tmp_path / f"x-{view['topic']}-{view.get('key', 'string')}", [view])
        result = statestore_cli("-c", config, "bootstrap", "--from-snapshot", snaps, cwd=tmp_path)
        assert result.returncode == 1, result.stdout
        assert expected in result.stderr, result.stderr
        store = config.parent / "store"
        assert not store.exists()
        assert_no_leftovers(store)


def test_views_the_snapshot_lacks_are_bootstrapped_and_views_the_config_lacks_left_out(
    tmp_path: Path, built: tuple[str, Path, Path], topic_factory: Callable[..., str]
) -> None:
    topic, _, snaps = built
    extra = topic_factory(2)
    produce_range(extra, 0, 300, keys=50)
    config = config_file(
        tmp_path / "mix",
        [
            {"name": "other", "topic": extra},
            view_spec(topic, indexes=["status", "i"]),
        ],
    )
    result = statestore_cli(
        "-c", config, "bootstrap", "--from-snapshot", _archive(snaps), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "other: not in the snapshot: bootstrapped from Kafka" in result.stdout
    assert f"{VIEW}: seeded; index(es) i backfilled" in result.stdout
    log = read_log(topic)
    ends = high_watermarks(topic)
    expected = latest(log, ends)
    assert stored(config, VIEW)[1] == expected
    assert stored(config, "other")[1] == latest(read_log(extra), high_watermarks(extra))
    # The backfilled index holds every stored entity under its value, and nothing else.
    by_i: dict[int, set[str]] = {}
    for key, value in expected.items():
        by_i.setdefault(orjson.loads(value)["i"], set()).add(key)
    with StateStore(load_config(config, environ={}), read_only=True) as store:
        view = store.view(VIEW)
        found = {i: {e.key for e in view.by("i", i, None, 10).items} for i in by_i}
        everything = view.by_range("i", None, None, None, len(expected) + 1).items
    assert found == by_i
    assert len(everything) == len(expected)

    # A snapshot view that is not configured is not carried into the store.
    only_other = config_file(tmp_path / "only", [{"name": "other", "topic": extra}])
    result = statestore_cli("-c", only_other, "bootstrap", "--from-snapshot", snaps, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{VIEW}: in the snapshot, not configured: left out" in result.stdout
    families = Storage.list_families(tmp_path / "only" / "store")
    assert families is not None
    assert not [f for f in families if f".{VIEW}#" in f]


def test_a_store_that_holds_views_is_never_replaced(
    tmp_path: Path, built: tuple[str, Path, Path]
) -> None:
    _, config, snaps = built
    before = stored(config, VIEW)
    result = statestore_cli("-c", config, "bootstrap", "--from-snapshot", snaps, cwd=tmp_path)
    assert result.returncode == 1
    assert "already holds views" in result.stderr
    assert stored(config, VIEW) == before


# -- damaged archives --------------------------------------------------------------------


def test_damaged_truncated_and_newer_archives_are_refused_and_leave_no_store(
    tmp_path: Path, built: tuple[str, Path, Path]
) -> None:
    topic, _, snaps = built
    archive = _archive(snaps)
    config = config_file(tmp_path / "dst", [view_spec(topic)])
    assert_each_refused(damaged_archives(archive, tmp_path / "bad"), config, tmp_path)
    # The sound archive still seeds.
    seeded = statestore_cli("-c", config, "bootstrap", "--from-snapshot", archive, cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr


# -- staleness guards --------------------------------------------------------------------


def test_a_seed_below_the_log_start_is_rebuilt_or_fails_per_on_stale(
    tmp_path: Path, topic_factory: Callable[..., str], admin: AdminClient
) -> None:
    # Records can be deleted from the start of a topic that also has the delete policy.
    topic = topic_factory(3, cleanup_policy="compact,delete")
    produce_range(topic, 0, 3000)
    src = config_file(tmp_path / "src", [view_spec(topic)])
    assert statestore_cli("-c", src, "bootstrap", cwd=tmp_path).returncode == 0
    snaps = tmp_path / "snaps"
    take_snapshot(src, snaps, tmp_path)
    produce_range(topic, 3000, 4000)
    # Records the snapshot never read are deleted: it cannot be caught up from Kafka.
    ends = high_watermarks(topic)
    futures = admin.delete_records([TopicPartition(topic, 0, ends[0])])
    for fut in futures.values():
        fut.result(timeout=30)
    for policy, states in (("rebuild", ("ready", "stopped")), ("fail", ("failed", "stale"))):
        config = config_file(tmp_path / policy, [view_spec(topic, on_stale=policy)])
        result = statestore_cli("-c", config, "bootstrap", "--from-snapshot", snaps, cwd=tmp_path)
        assert "below the log start offset" in result.stderr, result.stderr
        status = json.loads(statestore_cli("-c", config, "status", "--json", cwd=tmp_path).stdout)
        (view,) = status["views"]
        assert view["state"] in states, view
        if policy == "rebuild":
            assert result.returncode == 0, result.stderr
            log = read_log(topic)
            assert stored(config, VIEW)[1] == latest(log, high_watermarks(topic))
        else:
            assert result.returncode == 1
            assert f"view {VIEW!r} failed" in result.stderr


def test_a_seed_older_than_delete_retention_is_not_used_as_is(
    tmp_path: Path, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(3, delete_retention_ms="1500")
    produce_range(topic, 0, 500)
    src = config_file(tmp_path / "src", [view_spec(topic)])
    assert statestore_cli("-c", src, "bootstrap", cwd=tmp_path).returncode == 0
    info = take_snapshot(src, tmp_path / "snaps", tmp_path)
    manifest = json.loads(Path(info["url"]).with_suffix(".json").read_text())
    synced = manifest["views"][VIEW]["synced_at_ms"]
    # The snapshot becomes older than the topic's delete.retention.ms.
    eventually(lambda: time.time() * 1000 - synced > 1500, "the snapshot older than 1.5 s", 30)
    config = config_file(tmp_path / "dst", [view_spec(topic, on_stale="fail")])
    result = statestore_cli(
        "-c", config, "bootstrap", "--from-snapshot", tmp_path / "snaps", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "delete.retention.ms" in result.stderr, result.stderr


# -- crashes and a full disk ---------------------------------------------------------------


@pytest.mark.parametrize("step", ["begin", "files", "downloaded", "opened", "aside"])
def test_sigkill_at_any_step_of_a_restore_leaves_the_old_state_or_no_store(
    tmp_path: Path, built: tuple[str, Path, Path], step: str
) -> None:
    topic, _, snaps = built
    config = config_file(tmp_path / "dst", [view_spec(topic)])
    store = tmp_path / "dst" / "store"
    if step == "aside":
        # An empty store (a first start that was interrupted) is what gets replaced.
        Storage(store).close()
        assert store_is_empty(store)
    env = clean_env(STATESTORE_FAILPOINT=f"restore:{step}")
    proc = subprocess.Popen(
        [str(STATESTORE), "-c", str(config), "bootstrap", "--from-snapshot", str(snaps)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == f"failpoint {step}":
                break
        else:
            raise AssertionError(f"the restore never reached step {step}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    # Either no store, or the empty one that was there: never a partly restored one.
    assert store_is_empty(store)
    if store.exists():
        families = Storage.list_families(store)
        assert families is None or not [f for f in families if f != "meta"]
    # The next attempt removes what the killed one left and seeds the store.
    result = statestore_cli("-c", config, "bootstrap", "--from-snapshot", snaps, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_no_leftovers(store)
    assert stored(config, VIEW)[1] == latest(read_log(topic), high_watermarks(topic))


@contextmanager
def _tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=60)


def test_a_disk_filling_during_a_restore_is_an_error_and_leaves_no_store(
    tmp_path: Path, built: tuple[str, Path, Path]
) -> None:
    topic, _, snaps = built
    size = _archive(snaps).stat().st_size
    with _tmpfs(tmp_path / "disk", f"{size // 2 // 1024}k") as disk:
        config = config_file(tmp_path / "dst", [view_spec(topic)])
        text = config.read_text().replace(
            json.dumps(str(tmp_path / "dst" / "store")), json.dumps(str(disk / "store"))
        )
        config.write_text(text)
        result = statestore_cli("-c", config, "bootstrap", "--from-snapshot", snaps, cwd=tmp_path)
        assert result.returncode == 1
        assert "No space left on device" in result.stderr, result.stderr
        assert not (disk / "store").exists()
        assert list(disk.iterdir()) == []


# -- the API ------------------------------------------------------------------------------


def test_the_snapshot_route_takes_admin_tokens_and_rejects_bad_requests(
    tmp_path: Path, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(3)
    produce_range(topic, 0, 200)
    directory = tmp_path / "srv"
    directory.mkdir()
    config = write_config(
        directory,
        [view_spec(topic)],
        tokens=[
            {"env": "T_ADMIN", "admin": True, "name": "ops"},
            {"env": "T_READ", "name": "reader"},
        ],
    )
    env = clean_env(T_ADMIN="admin-token-123456", T_READ="read-token-1234567")
    server = start_server(config, directory, env=env)
    admin_h = {"Authorization": "Bearer admin-token-123456"}
    read_h = {"Authorization": "Bearer read-token-1234567"}
    url = f"{server.url}/admin/snapshot"
    dest = str(tmp_path / "snaps")
    try:
        assert httpx.post(url, json={"dest": dest}, timeout=10).status_code == 401
        denied = httpx.post(url, json={"dest": dest}, headers=read_h, timeout=10)
        assert denied.status_code == 403
        assert "admin = true" in denied.json()["error"]["message"]
        for body, status in (
            ({"dest": dest, "extra": 1}, 422),
            ({"dest": ""}, 422),
            ({}, 422),  # no dest and no [snapshots] dest
            ({"dest": dest, "views": ["nope"]}, 404),
            ({"dest": str(config)}, 502),  # a file where the directory should be
        ):
            got = httpx.post(url, json=body, headers=admin_h, timeout=30)
            assert got.status_code == status, (body, got.text)
            assert got.json()["error"]["message"]
        made = httpx.post(url, json={"dest": dest}, headers=admin_h, timeout=60)
        assert made.status_code == 201, made.text
        assert made.json()["views"][VIEW]["keys"] == len(
            latest(read_log(topic), high_watermarks(topic))
        )
        # The CLI goes through the server, with the token from STATESTORE_TOKEN.
        result = run(
            ["-c", config, "snapshot", "create", dest],
            directory,
            env=clean_env(STATESTORE_TOKEN="read-token-1234567"),
        )
        assert result.returncode == 2 and "admin = true" in result.stderr
        result = run(
            ["-c", config, "snapshot", "create", dest],
            directory,
            env=clean_env(STATESTORE_TOKEN="admin-token-123456"),
        )
        assert result.returncode == 0, result.stderr
        assert len(list((tmp_path / "snaps").glob("*.tar"))) == 2
    finally:
        server.stop()
    assert api_port(config) > 0


def test_cli_errors_for_places_without_snapshots(tmp_path: Path) -> None:
    empty = tmp_path / "none"
    listed = statestore_cli("snapshot", "list", empty, cwd=tmp_path)
    assert listed.returncode == 0 and "no snapshot in" in listed.stdout
    verified = statestore_cli("snapshot", "verify", empty, cwd=tmp_path)
    assert verified.returncode == 1 and "no complete snapshot in" in verified.stderr
    bad = statestore_cli("snapshot", "verify", "ftp://example/x", cwd=tmp_path)
    assert bad.returncode == 1 and "s3://bucket/prefix" in bad.stderr
    shutil.rmtree(empty, ignore_errors=True)


def test_a_store_set_aside_as_damaged_is_seeded_again(
    tmp_path: Path, built: tuple[str, Path, Path]
) -> None:
    topic, _, snaps = built
    config = config_file(tmp_path / "dst", [view_spec(topic)], seed=str(snaps))
    first = statestore_cli("-c", config, "bootstrap", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "snapshot.restored" in first.stderr
    store = tmp_path / "dst" / "store"
    (store / "CURRENT").write_text("garbage\n")  # RocksDB reports the store as damaged
    produce_range(topic, 3000, 3300)
    again = statestore_cli("-c", config, "bootstrap", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "store.damaged" in again.stderr and "snapshot.restored" in again.stderr
    assert stored(config, VIEW)[1] == latest(read_log(topic), high_watermarks(topic))
