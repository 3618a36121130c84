"""What the numbers were measured on: machine, versions, and the load from other work."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _java() -> str | None:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stderr or out.stdout).splitlines()
    return first[0] if first else None


def git() -> dict[str, Any]:
    """The commit the code was measured at, and whether the work tree had changes beside it."""
    root = Path(__file__).resolve().parent.parent

    def out(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout if res.returncode == 0 else None

    commit = (out("rev-parse", "HEAD") or "").strip() or None
    status = out("status", "--porcelain", "--untracked-files=no") or ""
    return {
        "commit": commit,
        "subject": (out("log", "-1", "--format=%s") or "").strip() or None,
        # Tracked files changed but not committed: the numbers are of commit + these.
        "dirty": sorted(line[3:] for line in status.splitlines() if line.strip()),
    }


def describe() -> dict[str, Any]:
    import confluent_kafka

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "rocksdict": _version("rocksdict"),
        "fastapi": _version("fastapi"),
        "uvicorn": _version("uvicorn"),
        "httptools": _version("httptools"),
        "uvloop": _version("uvloop"),
        "ktables": _version("ktables"),
        "aiokafka": _version("aiokafka"),
        "kafka_streams": "4.4.0",
        "java": _java(),
    }


def calibrate() -> float:
    """ns per iteration of a fixed Python loop: ~30-60 on an idle core, more when others load it."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        x = 0
        for i in range(200_000):
            x += i
        best = min(best, (time.perf_counter() - t) / 200_000 * 1e9)
    return round(best, 1)


def noise() -> dict[str, Any]:
    """The load on the machine right now (1-minute load average, a calibration loop)."""
    return {"load1": round(os.getloadavg()[0], 2), "loop_ns": calibrate()}
