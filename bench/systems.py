"""One bootstrap measurement per system, each in its own process, on the same topic."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .common import PYTHON, STATESTORE, WORK, Run, fresh_dir, log, run, write_config
from .topics import Topic

KSTREAMS = Path(__file__).resolve().parent / "kstreams"
_DONE = re.compile(r"bootstrap\.done view=\S+ records=(\d+) keys=(\d+) seconds=([\d.]+)")
_BULK = re.compile(r"bulk\.start view=\S+ .*processes=(\d+)")
_MERGING = re.compile(r"bulk\.merging view=\S+ .*processes=(\d+)")
_MERGED = re.compile(r"bulk\.merged view=\S+ .*seconds=([\d.]+)")


def _common(r: Run, records: int, seconds: float, nbytes: int | None = None) -> dict[str, Any]:
    """Rate, times, memory and CPU of one run; CPU and RSS are of the whole process tree."""
    out: dict[str, Any] = {
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds) if seconds > 0 else None,
        "wall_s": round(r.wall_s, 3),
        "peak_rss_mb": round(r.peak_rss_mb, 1),
        "cpu_s": r.cpu_s,
        "cpu_us_per_record": _per_record(r.cpu_s, records),
        "broker_cpu_s": r.broker_cpu_s,
        "broker_cpu_us_per_record": _per_record(r.broker_cpu_s, records),
        "disk_write_mb": r.disk_write_mb,
    }
    if r.orphans:
        out["orphans"] = r.orphans
    if nbytes is not None:
        out["mb_per_s"] = round(nbytes / seconds / 1e6, 2)
    return out


def _per_record(cpu_s: float | None, records: int) -> float | None:
    return round(cpu_s / records * 1e6, 2) if cpu_s is not None and records else None


def raw(t: Topic, processes: int = 1, kafka: dict[str, Any] | None = None) -> dict[str, Any]:
    """``bench.raw`` as *processes* consumer processes, partitions round-robin.

    *kafka*: consumer settings that override statestore's own.
    """
    sets = [a for k, v in (kafka or {}).items() for a in ("--set", f"{k}={v}")]
    r = run([PYTHON, "-m", "bench.raw", t.name, "--processes", str(processes), *sets])
    res = r.last_json()
    if res["records"] != t.records:
        raise RuntimeError(f"raw read {res['records']} records of {t.name}, expected {t.records}")
    out = _common(r, res["records"], res["seconds"], res["bytes"])
    out["bytes"] = res["bytes"]
    out["processes"] = processes
    for k in ("consume_seconds", "consume_records_per_s", "start_spread_s", "each"):
        out[k] = res[k]
    return out


def statestore(
    t: Topic,
    *,
    workers: int = 2,
    indexes: tuple[str, ...] = (),
    keep: str | None = None,
    port: int = 8000,
    bulk_min_records: int | None = None,
    kafka: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``statestore bootstrap --workers N`` into a fresh store; *keep* names a store dir to leave.

    *kafka*: librdkafka properties added to the config's ``[kafka]``.
    """
    name = keep or f"store-{t.name}-{'idx' if indexes else 'plain'}-w{workers}"
    work = fresh_dir(name)
    cfg = write_config(
        work / "statestore.toml",
        topic=t.name,
        store=work / "store",
        value=t.value,
        indexes=indexes,
        port=port,
        workers=workers,
        bulk_min_records=bulk_min_records,
        kafka=kafka,
    )
    r = run([STATESTORE, "-c", str(cfg), "bootstrap", "--workers", str(workers)])
    m = _DONE.search(r.stderr)
    if m is None:
        raise RuntimeError(f"no bootstrap.done line in the output:\n{r.stderr[-3000:]}")
    records, keys, seconds = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if keys != t.live_keys or records != t.records:
        raise RuntimeError(
            f"statestore bootstrap of {t.name}: {records} records / {keys} keys, "
            f"expected {t.records} / {t.live_keys}"
        )
    out = _common(r, records, seconds)
    out["keys"] = keys
    out["workers"] = workers
    bulk, merging = _BULK.search(r.stderr), _MERGING.search(r.stderr)
    # bulk.start says processes=0 when the load runs in the bootstrap's own thread.
    out["processes"] = max(1, int(bulk.group(1))) if bulk else None
    out["merge_processes"] = int(merging.group(1)) if merging else None
    out["phases"] = phases(r, records)
    out["indexes"] = list(indexes)
    out["config"] = str(cfg)
    out["rss_samples"] = _thin(r.rss_samples)
    if keep is None:
        shutil.rmtree(work / "store", ignore_errors=True)
    return out


def phases(r: Run, records: int) -> dict[str, Any]:
    """Seconds and CPU of a bootstrap's phases, from the times its log lines arrived.

    start-up (process start → ``bootstrap.start``: imports, store, watermarks), read
    (``bulk.start`` → ``bulk.merging``: the workers read and stage, the owner ingests
    their files), merge (``bulk.merging`` → ``bulk.merged``) and close (``bootstrap.done``
    → exit). CPU is the tree's, from the samples: read and merge are attributed to the
    window between their lines, so they are as good as the sampling interval.
    """
    marks = {
        "start": r.at(r"bootstrap\.start "),
        "bulk": r.at(r"bulk\.start "),
        "merging": r.at(r"bulk\.merging "),
        "merged": r.at(r"bulk\.merged "),
        "done": r.at(r"bootstrap\.done "),
    }
    out: dict[str, Any] = {f"at_{k}_s": v for k, v in marks.items()}
    merged = _MERGED.search(r.stderr)
    out["merge_logged_s"] = float(merged.group(1)) if merged else None
    spans = {
        "startup": (0.0, marks["start"]),
        "read": (marks["bulk"], marks["merging"]),
        "merge": (marks["merging"], marks["merged"]),
        "close": (marks["done"], r.wall_s),
    }
    for name, (a, b) in spans.items():
        if a is None or b is None:
            continue
        out[f"{name}_s"] = round(b - a, 3)
        ca = 0.0 if a == 0.0 else r.cpu_at(a)
        # Past the last sample (the process was exiting): the tree's total from wait4.
        cb = r.cpu_at(b) if b < r.wall_s else None
        cb = r.cpu_s if cb is None else cb
        if ca is not None and cb is not None:
            out[f"{name}_cpu_s"] = round(cb - ca, 3)
            out[f"{name}_cpu_us_per_record"] = _per_record(cb - ca, records)
    return out


def _thin(samples: list[tuple[float, float]], most: int = 400) -> list[tuple[float, float]]:
    step = max(1, len(samples) // most)
    return samples[::step]


def ktables(t: Topic) -> dict[str, Any]:
    r = run([PYTHON, "-m", "bench.ktables_bootstrap", t.name])
    res = r.last_json()
    if res["keys"] != t.live_keys:
        raise RuntimeError(f"ktables loaded {res['keys']} keys of {t.name}, expected {t.live_keys}")
    out = _common(r, t.records, res["seconds"])
    out["keys"] = res["keys"]
    return out


def kstreams_build() -> bool:
    """Build the Kafka Streams program once (``mvn -q package``); False when Maven/Java are missing."""
    if (KSTREAMS / "target" / "lib").is_dir() and (KSTREAMS / "target" / "classes").is_dir():
        return True
    if shutil.which("mvn") is None or shutil.which("java") is None:
        log("Kafka Streams comparison FAILED: mvn or java not found")
        return False
    log("building bench/kstreams (mvn -q package) ...")
    subprocess.run(["mvn", "-q", "-B", "-f", str(KSTREAMS / "pom.xml"), "package"], check=True)
    return True


def kstreams(t: Topic) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="ks-state-", dir=fresh_dir("kstreams")))
    cp = f"{KSTREAMS}/target/classes:{KSTREAMS}/target/lib/*"
    r = run(
        [
            "java",
            "-Xms256m",
            "-Xmx1g",
            "-cp",
            cp,
            "dev.statestore.bench.GlobalTableRestore",
            "127.0.0.1:9092",
            t.name,
            str(state),
        ],
        interval=0.1,
    )
    shutil.rmtree(state, ignore_errors=True)
    res = r.last_json()
    if res["keys"] != t.live_keys or res["records"] != t.records:
        raise RuntimeError(f"Kafka Streams restored {res} of {t.name}, expected {t.live_keys} keys")
    out = _common(r, res["records"], res["restore_seconds"])
    out["seconds_from_start"] = res["seconds_from_start"]
    out["keys"] = res["keys"]
    return out


def cleanup() -> None:
    shutil.rmtree(WORK / "kstreams", ignore_errors=True)
