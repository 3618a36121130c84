"""Disk trouble: an unwritable or full store directory is a clear error and a non-zero exit;
a damaged RocksDB store is detected and rebuilt from Kafka (or refused, as configured).

Read-only and full disks are real file systems, mounted by the test (it runs as root): a
read-only bind mount and a small tmpfs filled to the last byte.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
from reliability_support import (
    differences,
    entity_records,
    entity_view,
    index_differences,
    read_view,
    run_cli,
)
from run_mode import Figures

from statestore import StateStore, load_config
from tests.support.kafka import Topics, fast_producer, produce_all
from tests.support.oracle import read_log, reduce_log
from tests.support.processes import Server, free_port

pytestmark = pytest.mark.integration

VIEW = "disk"


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of *size* at *mountpoint*, unmounted afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint))
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=60)


@contextmanager
def read_only_view_of(source: Path, mountpoint: Path) -> Iterator[Path]:
    """*source* bind-mounted read-only at *mountpoint* (root cannot write there either)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    _sh("mount", "--bind", str(source), str(mountpoint))
    try:
        _sh("mount", "-o", "remount,bind,ro", str(mountpoint))
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=60)


def fill(directory: Path) -> None:
    """Write zeros into *directory* until its file system has no byte left."""
    with (directory / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    for i in range(1000):  # the last partial block
        try:
            (directory / f"filler-{i}").write_bytes(b"\0" * 512)
        except OSError:
            break


@pytest.fixture(scope="module")
def built(
    shared_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A compacted topic of 3,000 JSON records over 800 keys (with tombstones), and a store
    bootstrapped from it that tests copy."""
    made = Topics(shared_bootstrap)
    topic = made.create(2, prefix="disk")
    produce_all(
        fast_producer(shared_bootstrap),
        topic,
        entity_records(random.Random(7), 3_000, keys=800),
    )
    directory = tmp_path_factory.mktemp("disk-built")
    config = config_for(directory, topic, shared_bootstrap, directory / "store")
    result = run_cli(["-c", config, "bootstrap"], directory)
    assert result.returncode == 0, result.stderr
    yield topic, directory / "store"
    made.close()


@pytest.fixture
def small_topic(built: tuple[str, Path]) -> str:
    return built[0]


def copy_store(built: tuple[str, Path], target: Path) -> Path:
    shutil.copytree(built[1], target)
    return target


def config_for(
    directory: Path, topic: str, bootstrap: str, store: Path, **store_options: str
) -> Path:
    return entity_view(directory, VIEW, topic, bootstrap, store=store, store_options=store_options)


def assert_clear_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def assert_equals_log(config: Path, bootstrap: str, topic: str) -> int:
    expected = reduce_log(read_log(topic, bootstrap))
    view, _ = read_view(config, VIEW)
    diffs = differences(view, expected)
    assert diffs == [], "\n".join(diffs)
    assert index_differences(config, VIEW, "pad") == []
    return len(diffs)


# -- unwritable and full at start ---------------------------------------------------------


# Each start-up path once: a new store with one command, an existing store with the other.
@contextmanager
def read_only_store(tmp_path: Path, built: tuple[str, Path], existing: bool) -> Iterator[Path]:
    """A store directory (the built store when *existing*) on a read-only file system."""
    source = tmp_path / "src"
    source.mkdir()
    if existing:
        copy_store(built, source / "store")
    with read_only_view_of(source, tmp_path / "ro") as ro:
        yield ro / "store"


@contextmanager
def full_disk_store(tmp_path: Path, built: tuple[str, Path], existing: bool) -> Iterator[Path]:
    """A store directory (the built store when *existing*) on a file system with no byte left."""
    with tmpfs(tmp_path / "disk", "4m") as disk:
        store = disk / "store"
        if existing:
            copy_store(built, store)
        fill(disk)
        yield store


# trouble: (the store directory it gives, the reason a command must name)
TROUBLES: dict[str, tuple[Callable[..., AbstractContextManager[Path]], str]] = {
    "read_only": (read_only_store, "Read-only file system"),
    "full": (full_disk_store, "No space left on device"),
}


@pytest.mark.parametrize(
    ("trouble", "existing", "command"),
    [
        ("read_only", False, "bootstrap"),
        ("read_only", True, "serve"),
        ("full", False, "serve"),
        ("full", True, "bootstrap"),
    ],
    ids=[
        "read-only-new-store-bootstrap",
        "read-only-existing-store-serve",
        "full-new-store-serve",
        "full-existing-store-bootstrap",
    ],
)
def test_a_store_on_a_read_only_or_full_disk_fails_at_start(
    built: tuple[str, Path],
    small_topic: str,
    shared_bootstrap: str,
    tmp_path: Path,
    trouble: str,
    existing: bool,
    command: str,
    figures: Figures,
) -> None:
    """A store directory on a read-only file system, or on one with no byte left, makes bootstrap and serve exit non-zero with the path and the reason."""
    store_on, reason = TROUBLES[trouble]
    with store_on(tmp_path, built, existing) as store:
        config = config_for(tmp_path, small_topic, shared_bootstrap, store)
        port = ["--port", str(free_port())] if command == "serve" else []
        result = run_cli(["-c", config, command, *port], tmp_path)
    assert_clear_failure(result, str(store), reason)
    figures.add(
        "disk_trouble",
        **{f"{trouble}_{'existing' if existing else 'new'}_{command}_exit": result.returncode},
    )


def test_store_path_that_is_a_file_fails_at_start(
    small_topic: str, shared_bootstrap: str, tmp_path: Path
) -> None:
    """A store path that names a regular file makes bootstrap exit non-zero and say so."""
    store = tmp_path / "store"
    store.write_text("not a directory")
    config = config_for(tmp_path, small_topic, shared_bootstrap, store)
    result = run_cli(["-c", config, "bootstrap"], tmp_path)
    assert_clear_failure(result, "is a file, not a directory", str(store))
    assert store.read_text() == "not a directory"


def test_disk_filling_up_while_serving_fails_the_view_not_the_process(
    topics: Topics, shared_bootstrap: str, tmp_path: Path, figures: Figures
) -> None:
    """When the disk fills during ingest, serve stays up, reports the view failed with the reason (readiness 503), and after space is freed a bootstrap resumes from the stored offsets and equals the log."""
    topic = topics.create(2, prefix="diskfull")
    total = produce_all(
        fast_producer(shared_bootstrap),
        topic,
        ((f"k-{i:06d}".encode(), b'{"pad": "%s"}' % (b"x" * 400)) for i in range(40_000)),
    )
    with tmpfs(tmp_path / "disk", "6m") as disk:
        store = disk / "store"
        # Small bulk-load buffers: the first staged files fit on the disk, a later one fills it.
        config = config_for(tmp_path, topic, shared_bootstrap, store, memory_mb="32")
        server = Server(config, free_port(), tmp_path, tmp_path / "serve.log")
        try:
            deadline = time.monotonic() + 120
            info: dict[str, object] = {}
            while time.monotonic() < deadline:
                try:
                    info = server.view_info(VIEW)
                except (httpx.TransportError, AssertionError):
                    info = {}
                if info.get("state") == "failed":
                    break
                assert server.alive(), server.output()[-3000:]
                time.sleep(0.2)
            assert info.get("state") == "failed", info
            assert "No space left on device" in str(info.get("reason")), info
            ready = server.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["views"][0]["state"] == "failed"
            assert server.http.get("/healthz").status_code == 200
            assert server.alive()
        finally:
            server.close()
        assert "Traceback" not in server.output()
        _sh("mount", "-o", "remount,size=256m", str(disk))
        result = run_cli(["-c", config, "bootstrap"], tmp_path)
        assert result.returncode == 0, result.stderr
        match = re.search(r"bulk\.start view=disk .* offsets=(\d+)", result.stderr)
        assert match is not None, result.stderr
        assert 0 < int(match.group(1)) < total, "the bootstrap after the failure started from zero"
        mismatches = assert_equals_log(config, shared_bootstrap, topic)
    figures.add(
        "disk_trouble",
        disk_full_while_serving={
            "records": total,
            "resumed_expected": int(match.group(1)),
            "mismatches": mismatches,
        },
    )


# -- a damaged store ------------------------------------------------------------------------


def _largest_sst(store: Path) -> Path:
    return max(store.glob("*.sst"), key=lambda p: p.stat().st_size)


def _flip(path: Path, start: int, end: int, step: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(max(0, start), min(len(data), end), step):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_manifest(store: Path) -> None:
    manifest = next(store.glob("MANIFEST-*"))
    _flip(manifest, 20, manifest.stat().st_size, 7)


def _damage_current(store: Path) -> None:
    (store / "CURRENT").write_text("garbage\n")


def _truncate_sst(store: Path) -> None:
    sst = _largest_sst(store)
    with sst.open("r+b") as f:
        f.truncate(sst.stat().st_size // 2)


def _damage_sst_footer(store: Path) -> None:
    sst = _largest_sst(store)
    size = sst.stat().st_size
    _flip(sst, size - 200, size - 160)


def _remove_sst(store: Path) -> None:
    _largest_sst(store).unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "corrupted-manifest": _damage_manifest,
    "garbled-current": _damage_current,
    "truncated-sst": _truncate_sst,
    "corrupted-sst-footer": _damage_sst_footer,
    "missing-sst": _remove_sst,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_store_is_rebuilt_from_kafka(
    built: tuple[str, Path],
    small_topic: str,
    shared_bootstrap: str,
    tmp_path: Path,
    damage: str,
    figures: Figures,
) -> None:
    """A store RocksDB finds damaged at open is moved aside with a logged reason and rebuilt from Kafka, equal to the log."""
    store = copy_store(built, tmp_path / "store")
    config = config_for(tmp_path, small_topic, shared_bootstrap, store)
    DAMAGE[damage](store)

    result = run_cli(["-c", config, "bootstrap"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    logged = re.search(r"store\.damaged path=\S+ moved_to=(\S+) reason=(.+)", result.stderr)
    assert logged is not None, result.stderr
    assert Path(logged.group(1)).is_dir()
    assert logged.group(2).strip()
    assert "expected=3000" in result.stderr  # rebuilt from offset 0
    mismatches = assert_equals_log(config, shared_bootstrap, small_topic)
    # Once rebuilt it is a healthy store again: the next open keeps it, with its offsets.
    with StateStore(load_config(config)) as store_again:
        assert store_again.storage.damage is None
        assert sum(store_again.view(VIEW).slot.positions.values()) == 3000
    figures.add("damaged_store", **{damage: {"rebuilt": True, "mismatches": mismatches}})


def test_damaged_store_with_on_corruption_fail_refuses_to_start(
    built: tuple[str, Path], small_topic: str, shared_bootstrap: str, tmp_path: Path
) -> None:
    """With on_corruption = "fail", a damaged store is a clear error and a non-zero exit, and it is left untouched."""
    store = copy_store(built, tmp_path / "store")
    config = config_for(tmp_path, small_topic, shared_bootstrap, store, on_corruption="fail")
    _damage_manifest(store)
    before = sorted(p.name for p in store.iterdir())

    for command in (["bootstrap"], ["serve", "--port", str(free_port())]):
        result = run_cli(["-c", config, *command], tmp_path)
        assert_clear_failure(result, "is damaged", str(store), "on_corruption")

    assert sorted(p.name for p in store.iterdir()) == before
    assert not list(tmp_path.glob("store.damaged-*"))


def test_damaged_data_block_is_an_error_never_a_wrong_answer(
    built: tuple[str, Path], small_topic: str, shared_bootstrap: str, tmp_path: Path
) -> None:
    """A data block damaged after open is reported as a read error (never as a missing or partial answer), and `statestore rebuild` repairs the view."""
    store = copy_store(built, tmp_path / "store")
    config = config_for(tmp_path, small_topic, shared_bootstrap, store)
    expected = reduce_log(read_log(small_topic, shared_bootstrap))
    sst = _largest_sst(store)
    _flip(sst, 0, sst.stat().st_size // 2, 13)
    some_key = sorted(expected)[0].decode()

    got = run_cli(["-c", config, "get", VIEW, some_key], tmp_path)
    assert_clear_failure(got, "read from the store", "Corruption")
    with pytest.raises(Exception, match="Corruption") as raised:
        read_view(config, VIEW)
    assert type(raised.value).__name__ == "StorageError"

    rebuilt = run_cli(["-c", config, "rebuild"], tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_equals_log(config, shared_bootstrap, small_topic)
