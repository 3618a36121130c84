"""boto3 or minio as statestore's S3 client: throughput, import time and installed size.

Each client is installed in a throwaway venv of its own under /tmp (so minio never
enters the project's .venv) and measured there by ``bench/s3_client_worker.py``, against
the local s3proxy (``scripts/local-s3 start``; ``make services`` starts it):

- a file of random bytes (256 MB by default) uploaded and downloaded ``--runs`` times,
  the clients alternating: the client's managed upload and managed download to a file
  (each with its own defaults), and one streamed GET read in 1 MiB pieces (what
  ``S3Location.open`` does); every download is compared with the source;
- import time and client construction, each in a fresh interpreter;
- installed size: ``du -s`` of the venv's site-packages minus that of an empty venv;
- boto3's managed upload over a grid of part sizes and threads (``put_file``'s
  TransferConfig in ``statestore/s3.py`` comes from this).

MB is 2**20 bytes throughout. Writes ``bench/s3_clients.json``.

    python -m bench.s3_clients [--runs 5] [--size-mb 256] [--tune-runs 2] [--no-tune]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from .common import S3_ENDPOINT as ENDPOINT
from .common import S3_ENV, log, s3_bucket_client
from .machine import describe, git

OUT = Path(__file__).with_name("s3_clients.json")
WORKER = Path(__file__).with_name("s3_client_worker.py")
SCRATCH = Path("/tmp/statestore-s3-bench")

CLIENTS = ("boto3", "minio")
TUNE_CHUNKS_MB = (8, 16, 32, 64)
TUNE_THREADS = (2, 4, 8)
IMPORT_RUNS = 7
_MB = 1 << 20


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(S3_ENV)
    return env


def _packages(client: str) -> list[str]:
    if client == "boto3":
        # the version the project's venv has, so the figures describe what statestore runs
        return [f"boto3=={metadata.version('boto3')}"]
    return ["minio"]


def _venv(name: str, packages: list[str]) -> Path:
    """The python of a venv under SCRATCH holding *packages* (made again when they change)."""
    root = SCRATCH / f"venv-{name}"
    python = root / "bin" / "python"
    marker = root / ".packages"
    want = json.dumps(packages)
    if python.exists() and marker.exists() and marker.read_text() == want:
        return python
    shutil.rmtree(root, ignore_errors=True)
    log(f"venv {root}: {' '.join(packages) or '(empty)'}")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    if packages:
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *packages,
            ],
            check=True,
        )
    marker.write_text(want)
    return python


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def _du_kb(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def _distributions(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    return {d["name"].lower(): d["version"] for d in json.loads(out.stdout)}


def _worker(python: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(python), str(WORKER), *args],
        check=True,
        capture_output=True,
        text=True,
        env=_child_env(),
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * _MB):
            h.update(chunk)
    return h.hexdigest()


def _source(size_mb: int) -> Path:
    path = SCRATCH / f"source-{size_mb}m.bin"
    if path.exists() and path.stat().st_size == size_mb * _MB:
        return path
    SCRATCH.mkdir(parents=True, exist_ok=True)
    log(f"writing {size_mb} MB of random bytes to {path}")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(_MB))
    tmp.replace(path)
    return path


def _stats(values: list[float], digits: int = 1) -> dict[str, Any]:
    return {
        "best": round(max(values), digits),
        "median": round(statistics.median(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def _ms_stats(values: list[float]) -> dict[str, Any]:
    return {
        "best": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "runs": [round(v, 1) for v in values],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="transfer runs per client")
    ap.add_argument("--size-mb", type=int, default=256, help="size of the transferred file")
    ap.add_argument("--tune-runs", type=int, default=2, help="runs of each boto3 upload setting")
    ap.add_argument("--no-tune", action="store_true", help="skip boto3's upload settings grid")
    args = ap.parse_args()

    s3 = s3_bucket_client()
    try:
        s3.list_buckets()
    except Exception as exc:
        raise SystemExit(
            f"no S3 server answers at {ENDPOINT} ({exc}); start it with `scripts/local-s3 start`"
        ) from exc

    pythons = {c: _venv(c, _packages(c)) for c in CLIENTS}
    empty = _venv("empty", [])
    base_kb = _du_kb(_site_packages(empty))
    base_dists = _distributions(empty)

    installed: dict[str, Any] = {}
    for client, python in pythons.items():
        dists = _distributions(python)
        added = {k: v for k, v in dists.items() if k not in base_dists}
        kb = _du_kb(_site_packages(python)) - base_kb
        installed[client] = {"mb": round(kb / 1024, 1), "distributions": added}
        log(f"{client}: {kb / 1024:.1f} MB installed ({', '.join(sorted(added))})")

    imports: dict[str, Any] = {}
    for client, python in pythons.items():
        samples = [_worker(python, "import", client) for _ in range(IMPORT_RUNS)]
        imports[client] = {
            "import_ms": _ms_stats([s["import_ms"] for s in samples]),
            "client_ms": _ms_stats([s["client_ms"] for s in samples]),
        }
        log(
            f"{client}: import {imports[client]['import_ms']['median']} ms, "
            f"client {imports[client]['client_ms']['median']} ms (medians of {IMPORT_RUNS})"
        )

    source = _source(args.size_mb)
    digest = _sha256(source)
    bucket = f"bench-s3-clients-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    dest = SCRATCH / "download.bin"
    rates: dict[str, dict[str, list[float]]] = {
        c: {"upload": [], "download_file": [], "stream": []} for c in CLIENTS
    }
    tune: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            order = CLIENTS if run % 2 == 0 else tuple(reversed(CLIENTS))
            for client in order:
                dest.unlink(missing_ok=True)
                r = _worker(
                    pythons[client],
                    "transfer",
                    client,
                    bucket,
                    f"{client}-{run}",
                    str(source),
                    str(dest),
                )
                if _sha256(dest) != digest:
                    raise SystemExit(f"{client}: the downloaded file differs from the source")
                mb = r["bytes"] / _MB
                rates[client]["upload"].append(mb / r["upload_s"])
                rates[client]["download_file"].append(mb / r["download_file_s"])
                rates[client]["stream"].append(mb / r["stream_s"])
                log(
                    f"run {run + 1} {client}: up {mb / r['upload_s']:.0f} MB/s, download_file "
                    f"{mb / r['download_file_s']:.0f} MB/s, stream {mb / r['stream_s']:.0f} MB/s"
                )
        if not args.no_tune:
            grid = [(c, t) for c in TUNE_CHUNKS_MB for t in TUNE_THREADS]
            grid_rates: dict[tuple[int, int], list[float]] = {g: [] for g in grid}
            for run in range(args.tune_runs):
                for chunk, threads in grid if run % 2 == 0 else list(reversed(grid)):
                    r = _worker(
                        pythons["boto3"], "tune", bucket, f"tune-{chunk}-{threads}",
                        str(source), str(chunk), str(threads),
                    )  # fmt: skip
                    grid_rates[(chunk, threads)].append(r["bytes"] / _MB / r["upload_s"])
            for (chunk, threads), values in grid_rates.items():
                tune.append({"chunk_mb": chunk, "threads": threads, "upload_mb_s": _stats(values)})
                log(
                    f"boto3 upload, {chunk} MB parts x {threads} threads: {_stats(values)['median']} MB/s"
                )
        providers = _worker(pythons["minio"], "providers")
    finally:
        dest.unlink(missing_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)

    versions = {c: installed[c]["distributions"].get(c) for c in CLIENTS}
    result = {
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "git": git(),
        "server": {"endpoint": ENDPOINT, **_s3proxy()},
        "file_mb": args.size_mb,
        "units": "MB = 2**20 bytes; throughput in MB/s (best = highest), times in ms (best = lowest)",
        "clients": {
            c: {
                "version": versions[c],
                "upload_mb_s": _stats(rates[c]["upload"]),
                "download_file_mb_s": _stats(rates[c]["download_file"]),
                "stream_mb_s": _stats(rates[c]["stream"]),
                **imports[c],
                "installed": installed[c],
            }
            for c in CLIENTS
        },
        "boto3_upload_grid": tune,
        "minio_credentials": providers,
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    log(f"wrote {OUT}")


def _s3proxy() -> dict[str, str | None]:
    """The version and storage backend of the s3proxy scripts/local-s3 runs."""
    home = Path(__file__).resolve().parent.parent / "var" / "s3"
    jars = sorted((home / "libs").glob("s3proxy-*.jar"))
    backend = None
    with contextlib.suppress(OSError):
        for line in (home / "s3proxy.properties").read_text().splitlines():
            if line.startswith("jclouds.provider="):
                backend = line.partition("=")[2]
    return {
        "s3proxy": jars[0].stem.removeprefix("s3proxy-") if jars else None,
        "backend": backend,
    }


if __name__ == "__main__":
    main()
