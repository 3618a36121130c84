"""Snapshots in an S3-compatible bucket: :class:`S3Location`, the only module that imports boto3.

Endpoint, region and credentials are boto3's own business, read as AWS tools read them:
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (or ``endpoint_url`` in the profile),
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared config and credentials files, ECS and
EC2 roles, EKS web identity. statestore only adds what an endpoint that is not AWS (MinIO,
Ceph, s3proxy) needs, unless the profile says otherwise: path-style addressing, and
checksums only where the S3 API requires them (many such stores refuse boto3's default
``x-amz-checksum-*`` headers).

Reads resume: a GetObject whose body breaks off (reset, timeout, short read) or that gets
a 5xx answer is issued again from the byte reached, with ``If-Match`` on the ETag of the
first answer, so an object replaced meanwhile fails the read instead of being stitched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import boto3
import boto3.exceptions
import botocore.exceptions
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from .errors import SnapshotSourceError
from .location_contract import check_name

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Location"]

log = logging.getLogger(__name__)

# put_file: 16 MB parts, 4 at a time. bench/s3_clients.json (2 cores, local s3proxy):
# 8-16 MB parts came out ahead of 32-64 MB, more threads gained nothing; at most 64 MB
# is buffered, and 10,000 parts (S3's limit) reach 156 GB before s3transfer must grow them.
_PART_SIZE = 16 << 20
_UPLOAD_THREADS = 4
_CONNECT_TIMEOUT = 5.0
_READ_TIMEOUT = 60.0
_MAX_ATTEMPTS = 5
_READ_BUFFER = 1 << 20
_LIST_PAGE = 1000
# A reader's attempts at getting past one point of an object (the read that failed
# included) and the first pause between them; any progress starts the count again.
_READ_ATTEMPTS = 5
_READ_BACKOFF = 0.2

_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
_CREDENTIALS_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
    "keys), or AWS_PROFILE, or run with an instance, task or pod role"
)
_DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
_BAD_KEYS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)
# Failures of a GetObject, or of reading its body, that another GetObject may get past
# (ConnectionError: refused, connect timeout; HTTPClientError: reset, read timeout, cut off
# mid-body).
_TRANSIENT = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    OSError,
)
# What a reader catches: the transient ones, and those it turns into SnapshotSourceError.
_RETRYABLE = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError)


def _split(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket[/prefix]`` (the prefix without slashes at its ends)."""
    if not url.startswith("s3://"):
        raise SnapshotSourceError(f"{url!r} is not an s3://bucket/prefix URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not bucket or any(c in bucket for c in "?#/ ") or "//" in prefix:
        raise SnapshotSourceError(f"{url!r} is not an s3://bucket/prefix URL")
    return bucket, prefix


def _is_aws(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host.endswith(_AWS_HOST_SUFFIXES)


def _configured(core: botocore.session.Session, env: str, key: str) -> bool:
    """The user chose this setting: in the environment or in the profile."""
    return env in os.environ or key in core.get_scoped_config()


def _clients() -> tuple[S3Client, S3Client]:
    """``(client, reader)``: *reader* makes one attempt per call (readers count their own)."""
    core = botocore.session.get_session()
    # AWS CLI v2 and the other SDKs let AWS_REGION override AWS_DEFAULT_REGION and the
    # profile; boto3 reads only the latter two.
    session = boto3.session.Session(
        botocore_session=core, region_name=os.environ.get("AWS_REGION") or None
    )
    options: dict[str, Any] = {
        "connect_timeout": _CONNECT_TIMEOUT,
        "read_timeout": _READ_TIMEOUT,
        "tcp_keepalive": True,
        "max_pool_connections": max(10, _UPLOAD_THREADS * 2),
        "user_agent_appid": "statestore",
    }
    if not (
        _configured(core, "AWS_RETRY_MODE", "retry_mode")
        or _configured(core, "AWS_MAX_ATTEMPTS", "max_attempts")
    ):
        options["retries"] = {"mode": "standard", "max_attempts": _MAX_ATTEMPTS}
    client = session.client("s3", config=Config(**options))
    if not _is_aws(client.meta.endpoint_url):
        if not core.get_scoped_config().get("s3", {}).get("addressing_style"):
            options["s3"] = {"addressing_style": "path"}
        for env, key in (
            ("AWS_REQUEST_CHECKSUM_CALCULATION", "request_checksum_calculation"),
            ("AWS_RESPONSE_CHECKSUM_VALIDATION", "response_checksum_validation"),
        ):
            # botocore before 1.36 has no such setting: it sent no checksums by default
            if key in Config.OPTION_DEFAULTS and not _configured(core, env, key):
                options[key] = "when_required"
        client = session.client("s3", config=Config(**options))
    reader_options = {**options, "retries": {"mode": "standard", "total_max_attempts": 1}}
    reader = session.client("s3", config=Config(**reader_options))
    return client, reader


def _status(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status)


class S3Location:
    """Objects ``<prefix>/<name>`` in an existing bucket, named by ``s3://bucket[/prefix]``."""

    def __init__(self, url: str, *, read_attempts: int = _READ_ATTEMPTS) -> None:
        self.bucket, self.prefix = _split(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.read_attempts = read_attempts
        self.endpoint = "the configured S3 endpoint"
        try:
            self._client, self._reader = _clients()
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail("use", self.url, exc) from exc
        self.endpoint = self._client.meta.endpoint_url

    def __repr__(self) -> str:
        return f"S3Location({self.url!r}, endpoint={self.endpoint!r})"

    # -- names and errors

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def url_of(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def _fail(
        self, what: str, target: str, exc: Exception, *, missing: str = "object"
    ) -> SnapshotSourceError:
        """A SnapshotSourceError telling what failed on *target* and what to do about it.

        *missing* says what a 404 means: ``"object"``, ``"bucket"``, or ``"either"`` (a
        HEAD of an object: its answer has no body to tell which; the bucket is asked)."""
        head = f"cannot {what} {target}"
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError,
        ):
            return SnapshotSourceError(
                f"{head}: no AWS credentials found ({exc}); {_CREDENTIALS_HELP}"
            )
        if isinstance(exc, botocore.exceptions.ProfileNotFound):
            return SnapshotSourceError(f"{head}: {exc}; fix AWS_PROFILE or the AWS config file")
        if isinstance(exc, _UNREACHABLE):
            return SnapshotSourceError(
                f"{head}: the S3 endpoint {self.endpoint} cannot be reached ({exc}); "
                "check it is up, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL"
            )
        if isinstance(exc, boto3.exceptions.S3UploadFailedError) and isinstance(
            exc.__context__, botocore.exceptions.ClientError
        ):
            exc = exc.__context__
        if not isinstance(exc, botocore.exceptions.ClientError):
            return SnapshotSourceError(f"{head}: {exc}")
        code, status = _status(exc)
        if missing == "either" and status == 404:
            missing = "object" if self._bucket_exists() else "bucket"
        if code == "NoSuchBucket" or (status == 404 and missing == "bucket"):
            return SnapshotSourceError(
                f"{head}: the bucket {self.bucket!r} does not exist at {self.endpoint}; "
                "create it, or fix the snapshot URL"
            )
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return SnapshotSourceError(f"{head}: no such object")
        if code in _BAD_KEYS:
            return SnapshotSourceError(
                f"{head}: {self.endpoint} refused the credentials ({code}); check the keys "
                f"boto3 found: {_CREDENTIALS_HELP}"
            )
        if code in _DENIED or status == 403:
            return SnapshotSourceError(
                f"{head}: access denied ({code or status}); the credentials in use lack "
                f"permission on s3://{self.bucket}"
            )
        if code == "PreconditionFailed" or status == 412:
            return SnapshotSourceError(f"{head}: the object changed while it was being read")
        message = exc.response.get("Error", {}).get("Message", "")
        return SnapshotSourceError(f"{head}: {self.endpoint} answered {status} {code}: {message}")

    def _bucket_exists(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            return _status(exc)[1] != 404
        except botocore.exceptions.BotoCoreError:
            return True
        return True

    # -- the Location protocol

    def names(self) -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        found: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=start,
                Delimiter="/",
                PaginationConfig={"PageSize": _LIST_PAGE},
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(start) :]
                    try:
                        found.append(check_name(name))
                    except SnapshotSourceError:
                        continue
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail("list", self.url, exc, missing="bucket") from exc
        return sorted(found)

    def size(self, name: str) -> int:
        key = self._key(name)
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail("find", self.url_of(name), exc, missing="either") from exc

    def put_file(self, name: str, path: Path) -> None:
        key = self._key(name)
        config = TransferConfig(
            multipart_threshold=_PART_SIZE,
            multipart_chunksize=_PART_SIZE,
            max_concurrency=_UPLOAD_THREADS,
        )
        try:
            self._client.upload_file(str(path), self.bucket, key, Config=config)
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            boto3.exceptions.Boto3Error,
            OSError,
        ) as exc:
            raise self._fail(f"upload {path} to", self.url_of(name), exc) from exc

    def put_bytes(self, name: str, data: bytes) -> None:
        key = self._key(name)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail("write", self.url_of(name), exc) from exc

    def get_bytes(self, name: str) -> bytes:
        with self.open(name) as reader:
            return reader.read()

    def open(self, name: str) -> BinaryIO:
        raw = _ObjectReader(self, self._key(name), self.url_of(name))
        return io.BufferedReader(raw, buffer_size=_READ_BUFFER)

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail("remove", self.url_of(name), exc) from exc


class _ObjectReader(io.RawIOBase):
    """The body of one object, read once from start to end, resuming where a read broke off."""

    def __init__(self, location: S3Location, key: str, url: str) -> None:
        super().__init__()
        self._location = location
        self._key = key
        self._url = url
        self._offset = 0
        self._etag: str | None = None
        self._size = 0
        self._body: StreamingBody | None = None
        attempts = 1
        while self._body is None:
            try:
                self._get()
            except _RETRYABLE as exc:
                attempts = self._retry(exc, attempts)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._offset >= self._size or not len(view):
            return 0
        attempts = 1
        while True:
            try:
                if self._body is None:
                    self._get()
                assert self._body is not None
                data = self._body.read(len(view))
                n = len(data)
                if n == 0:
                    raise botocore.exceptions.IncompleteReadError(
                        actual_bytes=self._offset, expected_bytes=self._size
                    )
                view[:n] = data
                self._offset += n
                return n
            except _RETRYABLE as exc:
                self._drop_body()
                attempts = self._retry(exc, attempts)

    def _retry(self, exc: Exception, attempts: int) -> int:
        """Pause before attempt ``attempts + 1``; raise when *exc* is not transient or the
        budget is spent."""
        loc = self._location
        if not _transient(exc):
            raise loc._fail("read", self._url, exc) from exc
        if attempts >= loc.read_attempts:
            if isinstance(exc, _UNREACHABLE):
                raise loc._fail("read", self._url, exc) from exc
            raise SnapshotSourceError(
                f"cannot read {self._url} at byte {self._offset} of {self._size or '?'} after "
                f"{attempts} attempts at {loc.endpoint}; the last error: {_describe(exc)}"
            ) from exc
        pause = _READ_BACKOFF * 2 ** (attempts - 1) * (0.5 + random.random() / 2)
        log.warning(
            "s3.read_retry url=%s offset=%d attempt=%d pause_s=%.2f error=%s",
            self._url,
            self._offset,
            attempts,
            pause,
            _describe(exc),
        )
        time.sleep(pause)
        return attempts + 1

    def _get(self) -> None:
        """GetObject: the whole object first; later the rest from the offset reached, only
        if it is still the object first read (If-Match on its ETag)."""
        loc = self._location
        if self._etag is None and self._offset == 0:
            response = loc._reader.get_object(Bucket=loc.bucket, Key=self._key)
            self._etag = response.get("ETag")
            self._size = response["ContentLength"]
            self._body = response["Body"]
            return
        if self._etag is None:
            raise SnapshotSourceError(
                f"cannot resume reading {self._url} at byte {self._offset}: the store gave "
                "the object no ETag to check it is unchanged"
            )
        response = loc._reader.get_object(
            Bucket=loc.bucket, Key=self._key, Range=f"bytes={self._offset}-", IfMatch=self._etag
        )
        expected = f"bytes {self._offset}-{self._size - 1}/{self._size}"
        if response.get("ContentRange") != expected:
            response["Body"].close()
            raise SnapshotSourceError(
                f"cannot resume reading {self._url}: asked for bytes {self._offset}- of "
                f"{self._size}, the store answered {response.get('ContentRange')!r}"
            )
        self._body = response["Body"]
        log.info("s3.read_resumed url=%s offset=%d", self._url, self._offset)

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            # a broken connection may fail to close as well
            with contextlib.suppress(Exception):
                body.close()

    def close(self) -> None:
        self._drop_body()
        super().close()


def _transient(exc: Exception) -> bool:
    """Another GetObject may get past *exc*: a 5xx, a throttle, a broken or stalled connection."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _status(exc)
        return status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling")
    return isinstance(exc, _TRANSIENT)


def _describe(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _status(exc)
        return f"{status} {code}"
    return f"{type(exc).__name__}: {exc}"
