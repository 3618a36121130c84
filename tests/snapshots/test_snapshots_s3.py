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
from s3_support import FaultProxy
from snapshot_support import (
    VIEW,
    assert_no_leftovers,
    config_file,
    damaged_archives,
    end_offsets,
    produce_range,
    snapshot_of_new_store,
    view_spec,
)

from tests.cli.cli_support import clean_env, run, start_server
from tests.ops.ops_support import read_log, reduce_log, stored

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _cli(*args: str | Path, cwd: Path, **env: str) -> Any:
    return run([*args], cwd, env=clean_env(**env))


def test_snapshots_in_s3_from_the_cli_and_a_server_seed_replicas_equal_to_the_log(
    tmp_path: Path,
    topic_factory: Callable[..., str],
    s3_env: pytest.MonkeyPatch,
    bucket: str,
) -> None:
    topic = topic_factory(3)
    dest = f"s3://{bucket}/statestore/orders"
    src, first = snapshot_of_new_store(topic, tmp_path / "src", dest)
    assert first["url"].startswith(f"{dest}/snapshot-") and first["url"].endswith(".tar")

    # A running server writes the next one while it ingests.
    produce_range(topic, 3000, 3600)
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

    produce_range(topic, 3600, 4000)
    replica = config_file(tmp_path / "replica", [view_spec(topic)], seed=dest)
    seeded = _cli("-c", replica, "bootstrap", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert f"snapshot.restored name={second['name']}" in seeded.stderr
    log = read_log(topic)
    assert stored(replica, VIEW)[1] == reduce_log(log, end_offsets(topic))


def test_a_download_cut_mid_archive_resumes_and_repeated_5xx_fail_with_no_store(
    tmp_path: Path,
    topic_factory: Callable[..., str],
    s3_env: pytest.MonkeyPatch,
    bucket: str,
    fault_proxy: FaultProxy,
) -> None:
    topic = topic_factory(3)
    dest = f"s3://{bucket}/snaps"
    _, info = snapshot_of_new_store(topic, tmp_path / "src", dest)

    # Cut twice in the middle of the archive (a close, then a reset): resumed each time.
    fault_proxy.cut_next_get(info["size"] // 3, path_contains=".tar")
    fault_proxy.cut_next_get(info["size"] // 3, reset=True, path_contains=".tar")
    replica = config_file(tmp_path / "cut", [view_spec(topic)])
    seeded = _cli(
        "-c",
        replica,
        "bootstrap",
        "--from-snapshot",
        dest,
        cwd=tmp_path,
        AWS_ENDPOINT_URL=fault_proxy.url,
    )
    assert seeded.returncode == 0, seeded.stderr
    archive_gets = [g for g in fault_proxy.gets() if ".tar" in g.path]
    assert [g.action for g in archive_gets] == ["cut", "cut", "forwarded"]
    assert archive_gets[1].headers.get("range", "").startswith("bytes=")
    assert stored(replica, VIEW)[1] == reduce_log(read_log(topic), end_offsets(topic))

    # The server answers 503 to every read of the archive: the seed fails, no store.
    fault_proxy.fail_next_gets(50, path_contains=".tar")
    failing = config_file(tmp_path / "503", [view_spec(topic)])
    result = _cli(
        "-c",
        failing,
        "bootstrap",
        "--from-snapshot",
        dest,
        cwd=tmp_path,
        AWS_ENDPOINT_URL=fault_proxy.url,
    )
    assert result.returncode == 1
    assert info["url"] in result.stderr and "503" in result.stderr, result.stderr
    store = tmp_path / "503" / "store"
    assert not store.exists()
    assert_no_leftovers(store)

    # Nothing listens at the endpoint: a clear error, no store; with [store] seed the
    # views bootstrap from Kafka instead, and the failure is reported.
    down = config_file(tmp_path / "down", [view_spec(topic)], seed=dest)
    closed = "http://127.0.0.1:9"
    result = _cli("-c", down, "bootstrap", cwd=tmp_path, AWS_ENDPOINT_URL=closed)
    assert result.returncode == 0, result.stderr
    assert "store.seed_failed" in result.stderr and "127.0.0.1:9" in result.stderr
    assert stored(down, VIEW)[1] == reduce_log(read_log(topic), end_offsets(topic))


def test_damaged_archives_in_s3_are_refused_and_leave_no_store(
    tmp_path: Path,
    topic_factory: Callable[..., str],
    s3_env: pytest.MonkeyPatch,
    s3_admin: Any,
    bucket: str,
) -> None:
    topic = topic_factory(3)
    local = tmp_path / "snaps"
    snapshot_of_new_store(topic, tmp_path / "src", local, records=2000)
    (archive,) = local.glob("*.tar")
    config = config_file(tmp_path / "dst", [view_spec(topic)])
    store = tmp_path / "dst" / "store"
    for path, expected in damaged_archives(archive, tmp_path / "bad").items():
        s3_admin.put_object(Bucket=bucket, Key=f"bad/{path.name}", Body=path.read_bytes())
        url = f"s3://{bucket}/bad/{path.name}"
        verified = _cli("snapshot", "verify", url, cwd=tmp_path)
        assert verified.returncode == 1 and expected in verified.stderr, (url, verified.stderr)
        seeded = _cli("-c", config, "bootstrap", "--from-snapshot", url, cwd=tmp_path)
        assert seeded.returncode == 1 and expected in seeded.stderr, (url, seeded.stderr)
        assert not store.exists(), url
        assert_no_leftovers(store)
