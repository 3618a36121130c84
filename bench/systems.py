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


def _common(r: Run, records: int, seconds: float, nbytes: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds) if seconds > 0 else None,
        "wall_s": round(r.wall_s, 3),
        "peak_rss_mb": round(r.peak_rss_mb, 1),
        "cpu_s": r.cpu_s,
        "cpu_us_per_record": round(r.cpu_s / records * 1e6, 2) if records else None,
    }
    if nbytes is not None:
        out["mb_per_s"] = round(nbytes / seconds / 1e6, 2)
    return out


def raw(t: Topic) -> dict[str, Any]:
    r = run([PYTHON, "-m", "bench.raw", t.name])
    res = r.last_json()
    out = _common(r, res["records"], res["seconds"], res["bytes"])
    out["bytes"] = res["bytes"]
    return out


def statestore(
    t: Topic, *, indexes: tuple[str, ...] = (), keep: str | None = None, port: int = 8000
) -> dict[str, Any]:
    """``statestore bootstrap`` into a fresh store; *keep* names a store dir to leave in place."""
    name = keep or f"store-{t.name}-{'idx' if indexes else 'plain'}"
    work = fresh_dir(name)
    cfg = write_config(
        work / "statestore.toml",
        topic=t.name,
        store=work / "store",
        value=t.value,
        indexes=indexes,
        port=port,
    )
    r = run([STATESTORE, "-c", str(cfg), "bootstrap"], interval=0.1)
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
    out["indexes"] = list(indexes)
    out["config"] = str(cfg)
    out["rss_samples"] = _thin(r.rss_samples)
    if keep is None:
        shutil.rmtree(work / "store", ignore_errors=True)
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
        log("Kafka Streams comparison skipped: mvn or java not found")
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
