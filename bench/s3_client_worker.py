"""One measurement of one S3 client, run by ``bench.s3_clients`` inside that client's own venv.

Standard library plus the client under test only (it never imports statestore): the
parent runs it as a script with the throwaway venv's interpreter and reads one JSON
object from its stdout.

    python s3_client_worker.py import boto3|minio
    python s3_client_worker.py transfer boto3|minio BUCKET KEY SOURCE DEST
    python s3_client_worker.py tune BUCKET KEY SOURCE CHUNK_MB CONCURRENCY
    python s3_client_worker.py providers

Endpoint and keys come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), as the parent sets them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_CHUNK = 1 << 20


def _env() -> tuple[str, str, str, str]:
    return (
        os.environ["AWS_ENDPOINT_URL"],
        os.environ["AWS_ACCESS_KEY_ID"],
        os.environ["AWS_SECRET_ACCESS_KEY"],
        os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def _boto3_client() -> Any:
    import boto3
    from botocore.config import Config

    # What statestore.s3 uses on an endpoint that is not AWS: path-style addressing,
    # checksums only where the API requires them (s3proxy 2.x refuses x-amz-checksum-*).
    return boto3.session.Session().client(
        "s3",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _minio_client() -> Any:
    from minio import Minio

    endpoint, access, secret, region = _env()
    parts = urlsplit(endpoint)
    return Minio(
        parts.netloc,
        access_key=access,
        secret_key=secret,
        region=region,
        secure=parts.scheme == "https",
    )


def measure_import(client: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    if client == "boto3":
        import boto3  # noqa: F401

        t1 = time.perf_counter()
        _boto3_client()
    else:
        import minio  # noqa: F401

        t1 = time.perf_counter()
        _minio_client()
    t2 = time.perf_counter()
    return {"import_ms": (t1 - t0) * 1000, "client_ms": (t2 - t1) * 1000}


def _stream_boto3(c: Any, bucket: str, key: str) -> int:
    body = c.get_object(Bucket=bucket, Key=key)["Body"]
    n = 0
    while data := body.read(_CHUNK):
        n += len(data)
    body.close()
    return n


def _stream_minio(c: Any, bucket: str, key: str) -> int:
    response = c.get_object(bucket, key)
    n = 0
    try:
        for data in response.stream(_CHUNK):
            n += len(data)
    finally:
        response.close()
        response.release_conn()
    return n


def _transfer_steps(
    client: str, bucket: str, key: str, source: str, dest: str
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], int], Callable[[], object]]:
    """The client's upload, download to *dest*, streamed read (its byte count) and delete."""
    if client == "boto3":
        b = _boto3_client()
        return (
            lambda: b.upload_file(source, bucket, key),
            lambda: b.download_file(bucket, key, dest),
            lambda: _stream_boto3(b, bucket, key),
            lambda: b.delete_object(Bucket=bucket, Key=key),
        )
    m = _minio_client()
    return (
        lambda: m.fput_object(bucket, key, source),
        lambda: m.fget_object(bucket, key, dest),
        lambda: _stream_minio(m, bucket, key),
        lambda: m.remove_object(bucket, key),
    )


def measure_transfer(client: str, bucket: str, key: str, source: str, dest: str) -> dict[str, Any]:
    """Upload (the client's managed multipart upload, its defaults), download to a file
    (its managed download), and a streamed GET read in 1 MiB pieces."""
    size = os.path.getsize(source)
    upload, download, stream, delete = _transfer_steps(client, bucket, key, source, dest)
    t0 = time.perf_counter()
    upload()
    t1 = time.perf_counter()
    download()
    t2 = time.perf_counter()
    streamed = stream()
    t3 = time.perf_counter()
    delete()
    if streamed != size:
        raise SystemExit(f"streamed {streamed} bytes of {size}")
    return {"upload_s": t1 - t0, "download_file_s": t2 - t1, "stream_s": t3 - t2, "bytes": size}


def measure_tune(
    bucket: str, key: str, source: str, chunk_mb: int, concurrency: int
) -> dict[str, Any]:
    """boto3's managed upload with one TransferConfig."""
    from boto3.s3.transfer import TransferConfig

    c = _boto3_client()
    config = TransferConfig(
        multipart_threshold=chunk_mb << 20,
        multipart_chunksize=chunk_mb << 20,
        max_concurrency=concurrency,
    )
    t0 = time.perf_counter()
    c.upload_file(source, bucket, key, Config=config)
    t1 = time.perf_counter()
    c.delete_object(Bucket=bucket, Key=key)
    return {"upload_s": t1 - t0, "bytes": os.path.getsize(source)}


def minio_providers() -> dict[str, Any]:
    """The credential providers minio-py ships, and what its client reads by itself."""
    import inspect

    import minio
    from minio.credentials import providers

    names = sorted(
        name
        for name, obj in vars(providers).items()
        if inspect.isclass(obj)
        and name.endswith("Provider")
        and obj.__module__ == providers.__name__
    )
    source = inspect.getsource(providers)
    env_read = sorted(
        {
            word.strip("\"'")
            for word in source.replace("(", " ").replace(")", " ").replace(",", " ").split()
            if word.strip("\"'").startswith(("AWS_", "MINIO_"))
        }
    )
    client_source = inspect.getsource(minio.Minio.__init__)
    return {
        "minio": minio.__version__,
        "providers": names,
        "environment_variables_in_providers": env_read,
        "client_reads_AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL" in client_source,
    }


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "import":
        out = measure_import(args[0])
    elif mode == "transfer":
        out = measure_transfer(*args)
    elif mode == "tune":
        out = measure_tune(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif mode == "providers":
        out = minio_providers()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
