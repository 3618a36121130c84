"""Helpers for the snapshot tests: a generated topic, its config, CLI runs, snapshots."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from tests.support.config import write_config
from tests.support.kafka import BOOTSTRAP, produce_all
from tests.support.processes import run

VIEW = "d"


def produce_range(topic: str, start: int, end: int, keys: int = 700) -> None:
    """Records start..end-1 over *keys* keys; every 23rd a tombstone."""
    records = (
        (
            f"k{i % keys:04d}".encode(),
            None if i % 23 == 0 else orjson.dumps({"i": i, "status": f"s{i % 5}"}),
        )
        for i in range(start, end)
    )
    # Idempotent: a retried batch is neither written twice nor behind a later one, so the
    # log holds the records in the order given (tests rely on which record is a key's last).
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "linger.ms": 5, "enable.idempotence": True}
    )
    produce_all(producer, topic, records, timeout=60)


def view_spec(topic: str, **extra: Any) -> dict[str, Any]:
    return {"name": VIEW, "topic": topic, "indexes": ["status"], **extra}


def config_file(directory: Path, views: list[dict[str, Any]], **store: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, views, store_options=store)


def statestore_cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run([*args], cwd, env=env)


def take_snapshot(config: Path, dest: Path | str, cwd: Path) -> dict[str, Any]:
    result = statestore_cli("-c", config, "snapshot", "create", str(dest), "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def snapshot_of_new_store(
    topic: str, directory: Path, dest: Path | str, records: int = 3000
) -> tuple[Path, dict[str, Any]]:
    """*records* produced to *topic*, a store under *directory* bootstrapped from it, and
    a snapshot of it in *dest*: ``(config path, the snapshot's JSON)``."""
    produce_range(topic, 0, records)
    config = config_file(directory, [view_spec(topic)])
    result = statestore_cli("-c", config, "bootstrap", cwd=directory)
    assert result.returncode == 0, result.stderr
    return config, take_snapshot(config, dest, directory)


def assert_no_leftovers(store: Path) -> None:
    left = [p.name for p in store.parent.iterdir() if p.name.startswith(f".{store.name}.")]
    assert not left, f"work directories left beside the store: {left}"


def assert_each_refused(sources: Mapping[str | Path, str], config: Path, cwd: Path) -> None:
    """Each snapshot of *sources* (an archive or a URL: the error it must name) fails
    ``snapshot verify`` and a seed of the store of *config* with that error, and leaves no
    store and no work directory behind."""
    store = config.parent / "store"
    for src, expected in sources.items():
        verified = statestore_cli("snapshot", "verify", src, cwd=cwd)
        assert verified.returncode == 1 and expected in verified.stderr, (src, verified.stderr)
        seeded = statestore_cli("-c", config, "bootstrap", "--from-snapshot", src, cwd=cwd)
        assert seeded.returncode == 1 and expected in seeded.stderr, (src, seeded.stderr)
        assert not store.exists(), src
        assert_no_leftovers(store)


def _rewrite(archive: Path, out: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """Copy *archive* to *out*, passing each member through *change* (None drops it)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            f = src.extractfile(member)
            assert f is not None
            data = change(member.name, f.read())
            if data is None:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


def damaged_archives(archive: Path, directory: Path) -> dict[Path, str]:
    """Damaged copies of a sound *archive* written into *directory*: ``{path: what the
    error must say}`` (a flipped byte, cut in half, a file dropped, a newer format, junk)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tables = [m for m in tar.getmembers() if m.name.endswith(".sst")]
    biggest = max(tables, key=lambda m: m.size).name

    def flip(name: str, data: bytes) -> bytes:
        if name != biggest:
            return data
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    def newer(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["format"] = 99
        manifest["statestore"] = "9.0.0"
        return json.dumps(manifest).encode()

    raw = archive.read_bytes()
    out = {name: directory / name for name in ("flipped", "truncated", "missing", "newer", "junk")}
    _rewrite(archive, out["flipped"].with_suffix(".tar"), flip)
    out["truncated"].with_suffix(".tar").write_bytes(raw[: len(raw) // 2])
    _rewrite(archive, out["missing"].with_suffix(".tar"), lambda n, d: None if n == biggest else d)
    _rewrite(archive, out["newer"].with_suffix(".tar"), newer)
    out["junk"].with_suffix(".tar").write_bytes(b"not a tar archive at all" * 100)
    expected = {
        "flipped": f"checksum mismatch in {biggest.removeprefix('store/')}",
        "truncated": "truncated",
        "missing": "the archive is truncated: 1 file(s) of its manifest are missing",
        "newer": "made by a newer statestore (9.0.0, snapshot format 99)",
        "junk": "damaged or truncated",
    }
    return {path.with_suffix(".tar"): expected[name] for name, path in out.items()}
