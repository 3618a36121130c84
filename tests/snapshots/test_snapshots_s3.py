"""Snapshots in the real local S3 server (s3proxy): taken by the CLI and by a running server,
listed, verified, seeding replicas equal to the log; downloads cut or refused mid-archive
are resumed or fail cleanly, never leaving a half-restored store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import snapshot_support as snap
from s3_support import FaultProxy

from tests.support.kafka import high_watermarks
from tests.support.oracle import latest, read_log
from tests.support.processes import clean_env, run, start_server
from tests.support.stores import stored

# Every test runs with an S3 user's environment pointing at the local server.
pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.usefixtures("s3_env")]


@pytest.fixture
def topic(topic_factory: Callable[..., str]) -> str:
    """The topic a test snapshots: new, 3 partitions, deleted after the test."""
    return topic_factory(3)


def _cli(*args: str | Path, cwd: Path, **env: str) -> Any:
    return run([*args], cwd, env=clean_env(**env))


def assert_equals_log(config: Path, topic: str) -> None:
    """The view stored by *config* is the log of *topic* reduced, up to its end."""
    assert stored(config, snap.VIEW)[1] == latest(read_log(topic), high_watermarks(topic))


def test_snapshots_in_s3_from_the_cli_and_a_server_seed_replicas_equal_to_the_log(
    tmp_path: Path, topic: str, bucket: str
) -> None:
    """Snapshots written to S3 by the CLI and by a running server are listed in order and
    verified, and a replica seeded from the newest equals the log."""
    dest = f"s3://{bucket}/statestore/orders"
    src, first = snap.snapshot_of_new_store(topic, tmp_path / "src", dest)
    assert first["url"].startswith(f"{dest}/snapshot-") and first["url"].endswith(".tar")

    # A running server writes the next one while it ingests.
    snap.produce_range(topic, 3000, 3600)
    server = start_server(src, tmp_path / "src", env=clean_env())
    try:
        answer = httpx.post(f"{server.url}/admin/snapshot", json={"dest": dest}, timeout=120)
        assert answer.status_code == 201, answer.text
        second = answer.json()
    finally:
        server.stop()
    listed = _cli("snapshot", "list", dest, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == [first["name"], second["name"]]
    verified = _cli("snapshot", "verify", dest, cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert second["name"] in verified.stdout

    snap.produce_range(topic, 3600, 4000)
    replica = snap.config_file(tmp_path / "replica", [snap.view_spec(topic)], seed=dest)
    seeded = _cli("-c", replica, "bootstrap", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert f"snapshot.restored name={second['name']}" in seeded.stderr
    assert_equals_log(replica, topic)


def test_a_download_cut_mid_archive_resumes_and_repeated_5xx_fail_with_no_store(
    tmp_path: Path, topic: str, bucket: str, fault_proxy: FaultProxy
) -> None:
    """A download cut mid-archive resumes with a range request; a server answering 503 or
    not listening fails the seed with a clear error and no store (with [store] seed, the
    views bootstrap from Kafka instead)."""
    dest = f"s3://{bucket}/snaps"
    _, info = snap.snapshot_of_new_store(topic, tmp_path / "src", dest)

    def seed_through_the_proxy(config: Path) -> Any:
        return _cli(
            "-c",
            config,
            "bootstrap",
            "--from-snapshot",
            dest,
            cwd=tmp_path,
            AWS_ENDPOINT_URL=fault_proxy.url,
        )

    # Cut twice in the middle of the archive (a close, then a reset): resumed each time.
    fault_proxy.cut_next_get(info["size"] // 3, path_contains=".tar")
    fault_proxy.cut_next_get(info["size"] // 3, reset=True, path_contains=".tar")
    replica = snap.config_file(tmp_path / "cut", [snap.view_spec(topic)])
    seeded = seed_through_the_proxy(replica)
    assert seeded.returncode == 0, seeded.stderr
    archive_gets = [g for g in fault_proxy.gets() if ".tar" in g.path]
    assert [g.action for g in archive_gets] == ["cut", "cut", "forwarded"]
    assert archive_gets[1].headers.get("range", "").startswith("bytes=")
    assert_equals_log(replica, topic)

    # The server answers 503 to every read of the archive: the seed fails, no store.
    fault_proxy.fail_next_gets(50, path_contains=".tar")
    failing = snap.config_file(tmp_path / "503", [snap.view_spec(topic)])
    result = seed_through_the_proxy(failing)
    assert result.returncode == 1
    assert info["url"] in result.stderr and "503" in result.stderr, result.stderr
    store = tmp_path / "503" / "store"
    assert not store.exists()
    snap.assert_no_leftovers(store)

    # Nothing listens at the endpoint: a clear error, no store; with [store] seed the
    # views bootstrap from Kafka instead, and the failure is reported.
    down = snap.config_file(tmp_path / "down", [snap.view_spec(topic)], seed=dest)
    closed = "http://127.0.0.1:9"
    result = _cli("-c", down, "bootstrap", cwd=tmp_path, AWS_ENDPOINT_URL=closed)
    assert result.returncode == 0, result.stderr
    assert "store.seed_failed" in result.stderr and "127.0.0.1:9" in result.stderr
    assert_equals_log(down, topic)


def test_damaged_archives_in_s3_are_refused_and_leave_no_store(
    tmp_path: Path, topic: str, s3_admin: Any, bucket: str
) -> None:
    """Each damaged archive in S3 fails verify and seed with what is wrong, and no store."""
    local = tmp_path / "snaps"
    snap.snapshot_of_new_store(topic, tmp_path / "src", local, records=2000)
    (archive,) = local.glob("*.tar")
    urls: dict[str | Path, str] = {}
    for path, expected in snap.damaged_archives(archive, tmp_path / "bad").items():
        s3_admin.put_object(Bucket=bucket, Key=f"bad/{path.name}", Body=path.read_bytes())
        urls[f"s3://{bucket}/bad/{path.name}"] = expected
    snap.assert_each_refused(
        urls, snap.config_file(tmp_path / "dst", [snap.view_spec(topic)]), tmp_path
    )
