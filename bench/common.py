"""Shared by the bench modules: paths, bench configs, child processes with peak-RSS sampling."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WORK = ROOT / "var" / "bench"
PYTHON = sys.executable
STATESTORE = str(Path(PYTHON).parent / "statestore")

BOOTSTRAP = "127.0.0.1:9092"
REGISTRY = "http://127.0.0.1:8081/apis/ccompat/v7"
VIEW = "bench"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fresh_dir(name: str) -> Path:
    """An empty directory under var/bench (removed first if a previous run left it)."""
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_config(
    path: Path,
    *,
    topic: str,
    store: Path,
    value: str = "json",
    indexes: Sequence[str] = (),
    port: int = 8000,
    batch_size: int | None = None,
) -> Path:
    """A statestore TOML config with one view named ``bench`` over *topic*."""
    lines = [
        "[kafka]",
        f'"bootstrap.servers" = "{BOOTSTRAP}"',
        "",
        "[schema_registry]",
        f'url = "{REGISTRY}"',
        "",
        "[store]",
        f'path = "{store}"',
    ]
    if batch_size is not None:
        lines.append(f"batch_size = {batch_size}")
    lines += [
        "",
        "[api]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
        "[[views]]",
        f'name = "{VIEW}"',
        f'topic = "{topic}"',
        f'value = "{value}"',
        f"indexes = {json.dumps(list(indexes))}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Run:
    """What a child process did: exit code, wall seconds, peak RSS, output."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: float = 0.0

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(
            f"no JSON result in the output (exit {self.returncode}):\n{self.stdout[-2000:]}\n"
            f"{self.stderr[-4000:]}"
        )


def _rss(proc: psutil.Process) -> float:
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total / 2**20
    except psutil.Error:
        return 0.0


def run(
    args: Sequence[str],
    *,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    interval: float = 0.05,
    check: bool = True,
) -> Run:
    """Run *args* to completion, sampling the RSS of it and its children every *interval* s."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ps = psutil.Process(proc.pid)
    peak = 0.0
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            mb = _rss(ps)
            peak = max(peak, mb)
            samples.append((round(time.monotonic() - started, 3), round(mb, 1)))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"{args[:4]} did not finish within {timeout:.0f}s") from None
    finally:
        done.set()
        sampler.join()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = Run(proc.returncode, wall, peak, out, err, samples, round(cpu, 3))
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:6])} exited {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}"
        )
    return result


def py(module: str, *args: str, **kwargs: Any) -> Run:
    """Run ``python -m bench.<module> ARGS`` (see :func:`run`)."""
    return run([PYTHON, "-m", f"bench.{module}", *args], **kwargs)


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (noise from other work on the machine)."""
    return [round(x, 2) for x in os.getloadavg()]


def busy_others(own: set[int] | None = None, seconds: float = 1.0) -> float:
    """CPU (in cores) used by other processes over *seconds*: the noise at that moment."""
    own = own or {os.getpid()}
    procs = []
    for p in psutil.process_iter():
        if p.pid in own:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            pass
    time.sleep(seconds)
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.cpu_percent(None)
    return round(total / 100, 2)
