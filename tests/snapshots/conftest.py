"""Fixtures for the snapshot-location tests: the local S3 server, a bucket per test.

The server is required: the tests fail (never skip) when it does not answer. Start it
with ``scripts/local-s3 start`` (``make test`` does, through ``make services``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from s3_support import (
    ACCESS_KEY,
    ENDPOINT,
    REGION,
    SECRET_KEY,
    FaultProxy,
    admin_client,
    empty_and_delete,
    unique_bucket,
)

from statestore.s3 import S3Location


@pytest.fixture(scope="session")
def s3_admin() -> Any:
    """A boto3 client of the local S3 server; fails when the server does not answer."""
    client = admin_client()
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError) as exc:
        pytest.fail(
            f"no S3 server answers at {ENDPOINT} with the local keys ({exc}); "
            "start it with `scripts/local-s3 start` (make test does)"
        )
    return client


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_admin: Any) -> pytest.MonkeyPatch:
    """The environment an S3 user gives statestore, pointing at the local server.

    Nothing of the developer's own AWS setup leaks in (variables, ~/.aws files), and no
    lookup leaves 127.0.0.1 (the EC2 metadata service is off)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", ENDPOINT)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return monkeypatch


@pytest.fixture
def bucket(s3_admin: Any) -> Iterator[str]:
    """A new, uniquely named, empty bucket; removed with its objects after the test."""
    name = unique_bucket()
    s3_admin.create_bucket(Bucket=name)
    yield name
    empty_and_delete(s3_admin, name)


@pytest.fixture
def location(s3_env: pytest.MonkeyPatch, bucket: str) -> Callable[..., S3Location]:
    """``location(prefix="", endpoint=None)``: an S3Location in the test's bucket, made from
    the environment as a user's would be (*endpoint* replaces AWS_ENDPOINT_URL for it)."""

    def make(prefix: str = "", *, endpoint: str | None = None, **kwargs: Any) -> S3Location:
        with pytest.MonkeyPatch.context() as mp:
            if endpoint is not None:
                mp.setenv("AWS_ENDPOINT_URL", endpoint)
            url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
            return S3Location(url, **kwargs)

    return make


@pytest.fixture
def fault_proxy(s3_admin: Any) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the local S3 server (see s3_support)."""
    proxy = FaultProxy()
    yield proxy
    proxy.close()
