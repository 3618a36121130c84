"""Shared by the bench modules: paths, bench configs, child processes with peak-RSS sampling."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
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
# The local S3 server (scripts/local-s3) and its fixed, local-only keys. AWS_REGION is what
# statestore reads first, AWS_DEFAULT_REGION what boto3 and the measured clients read.
S3_ENDPOINT = "http://127.0.0.1:9100"
S3_ENV = {
    "AWS_ENDPOINT_URL": S3_ENDPOINT,
    "AWS_ACCESS_KEY_ID": "statestore",
    "AWS_SECRET_ACCESS_KEY": "statestore-local-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def s3_bucket_client() -> Any:
    """A boto3 client of the local S3 server, for the bench's own buckets (not a measured one)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        region_name=S3_ENV["AWS_REGION"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            s3={"addressing_style": "path"}, request_checksum_calculation="when_required"
        ),
    )


def stop(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """SIGTERM *proc* if it runs, and wait; SIGKILL if it outlives *timeout*."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    workers: int | None = None,
    bulk_min_records: int | None = None,
    kafka: dict[str, Any] | None = None,
    partitioner: str | None = None,
    cluster: dict[str, Any] | None = None,
) -> Path:
    """A statestore TOML config with one view named ``bench`` over *topic*.

    *kafka* adds librdkafka properties to ``[kafka]`` (numbers and strings).

    *workers* sets ``[store] bootstrap_workers`` (what a rebuild through the API uses);
    *bulk_min_records* lowers the records per worker below which a bulk load uses fewer
    processes (the quick run's 100k topics would otherwise load in one).
    """
    lines = [
        "[kafka]",
        f'"bootstrap.servers" = "{BOOTSTRAP}"',
        *(f'"{k}" = {json.dumps(v)}' for k, v in (kafka or {}).items()),
        "",
        "[schema_registry]",
        f'url = "{REGISTRY}"',
        "",
        "[store]",
        f'path = "{store}"',
    ]
    if batch_size is not None:
        lines.append(f"batch_size = {batch_size}")
    if workers is not None:
        lines.append(f"bootstrap_workers = {workers}")
    if bulk_min_records is not None:
        lines.append(f"bulk_min_records = {bulk_min_records}")
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
        *([f'partitioner = "{partitioner}"'] if partitioner else []),
        "",
    ]
    if cluster:
        lines += ["[cluster]", *(f"{k} = {json.dumps(v)}" for k, v in cluster.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Run:
    """What a child process did: exit code, wall seconds, peak RSS and CPU of its tree, output.

    ``cpu_s`` is the CPU time (user + system) of the whole process tree: what ``wait4``
    returns for the child, which the kernel sums over the child and every descendant
    that was waited for (statestore reaps its workers; ``bench.raw`` its consumers).
    ``orphans`` counts descendants still running when the child exited: their CPU is
    not in ``cpu_s``. ``peak_rss_mb`` is the largest sum of the RSS of every process of
    the tree at one sample. ``broker_cpu_s`` is the local broker's CPU meanwhile;
    ``disk_write_mb`` what the disk holding var/ wrote meanwhile (anyone's writes, and
    only what the kernel flushed before the end). ``samples`` are ``(seconds, RSS MB, CPU s so far)`` of the
    tree; ``lines`` the stderr lines with the second each arrived (both from the start).
    """

    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: float = 0.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    lines: list[tuple[float, str]] = field(default_factory=list)
    broker_cpu_s: float | None = None
    orphans: int = 0
    disk_write_mb: float | None = None

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(
            f"no JSON result in the output (exit {self.returncode}):\n{self.stdout[-2000:]}\n"
            f"{self.stderr[-4000:]}"
        )

    def at(self, pattern: str) -> float | None:
        """Seconds from the start to the first stderr line that matches *pattern*."""
        rx = re.compile(pattern)
        return next((t for t, line in self.lines if rx.search(line)), None)

    def cpu_at(self, t: float) -> float | None:
        """The tree's CPU seconds at *t* (interpolated between samples)."""
        return cpu_at(self.samples, t)


def cpu_at(samples: Sequence[tuple[float, float, float]], t: float) -> float | None:
    """CPU seconds at *t* from ``(seconds, RSS MB, CPU s)`` samples, linearly interpolated."""
    before = [s for s in samples if s[0] <= t]
    after = [s for s in samples if s[0] >= t]
    if not before or not after:
        return None
    (t0, _, c0), (t1, _, c1) = before[-1], after[0]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)


def _tree(proc: psutil.Process) -> tuple[float, float, dict[int, float]] | None:
    """RSS MB and CPU s of *proc* and its descendants now, and the pids seen (with start times).

    CPU of a process = its own plus that of the children it has reaped, so a process
    that has exited and been reaped is counted once, by its parent. Parents are read
    before their children: a race with a reap can only undercount, never twice.
    None once *proc* has exited (a zombie's children cannot be listed).
    """
    rss = cpu = 0.0
    seen: dict[int, float] = {}
    try:
        with proc.oneshot():
            t = proc.cpu_times()
            cpu = t.user + t.system + t.children_user + t.children_system
            rss = proc.memory_info().rss
            children = proc.children(recursive=True)
    except psutil.Error:
        return None
    for p in children:
        with contextlib.suppress(psutil.Error), p.oneshot():
            t = p.cpu_times()
            used = t.user + t.system + t.children_user + t.children_system
            size = p.memory_info().rss
            seen[p.pid] = p.create_time()
            cpu += used
            rss += size
    return rss / 2**20, cpu, seen


class Sampler:
    """A thread sampling the RSS and CPU of a process tree every *interval* seconds."""

    def __init__(self, pid: int, started: float, interval: float) -> None:
        self.proc = psutil.Process(pid)
        self.started = started
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []
        self.seen: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.is_set():
            now = _tree(self.proc)
            if now is not None:
                rss, cpu, seen = now
                self.seen.update(seen)
                at = round(time.monotonic() - self.started, 3)
                self.samples.append((at, round(rss, 1), round(cpu, 3)))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def peak_rss_mb(self) -> float:
        return max((s[1] for s in self.samples), default=0.0)

    def alive(self) -> list[int]:
        """Descendants seen that are still running (same pid and start time)."""
        out = []
        for pid, created in self.seen.items():
            if pid == self.proc.pid:
                continue
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).create_time() == created:
                    out.append(pid)
        return out


def broker_process() -> psutil.Process | None:
    """The local broker's process (var/kafka/kafka.pid), to price its CPU per record."""
    try:
        pid = int((ROOT / "var" / "kafka" / "kafka.pid").read_text().strip())
        proc = psutil.Process(pid)
        if any("kafka.Kafka" in part for part in proc.cmdline()):
            return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def cpu_of(proc: psutil.Process | None) -> float | None:
    """User + system CPU seconds of *proc* (None when it is unknown or gone)."""
    if proc is None:
        return None
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def _disk_of(path: Path) -> str | None:
    """The block device (as psutil names it) of the filesystem that holds *path*."""
    best = None
    for part in psutil.disk_partitions(all=False):
        if str(path).startswith(part.mountpoint) and (
            best is None or len(part.mountpoint) > len(best.mountpoint)
        ):
            best = part
    return Path(best.device).name if best is not None else None


def disk_written() -> int | None:
    """Bytes written so far to the disk that holds var/ (None when it cannot be told)."""
    name = _disk_of(WORK if WORK.exists() else ROOT)
    counters = psutil.disk_io_counters(perdisk=True) or {}
    return counters[name].write_bytes if name in counters else None


def _collect(stream: Any, started: float, into: list[tuple[float, str]]) -> None:
    """Read *stream* to its end, each line with the second it arrived."""
    for line in stream:
        into.append((round(time.monotonic() - started, 3), line))
    stream.close()


def run(
    args: Sequence[str],
    *,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    interval: float = 0.05,
    check: bool = True,
) -> Run:
    """Run *args* to completion, sampling the RSS and CPU of it and its children every *interval* s."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    broker = broker_process()
    broker_before = cpu_of(broker)
    disk_before = disk_written()
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = Sampler(proc.pid, started, interval)
    out: list[tuple[float, str]] = []
    err: list[tuple[float, str]] = []
    readers = [
        threading.Thread(target=_collect, args=(proc.stdout, started, out), daemon=True),
        threading.Thread(target=_collect, args=(proc.stderr, started, err), daemon=True),
    ]
    for r in readers:
        r.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    killer = threading.Timer(timeout, kill)
    killer.start()
    try:
        # wait4, not Popen.wait: its rusage is the CPU of this child's whole tree.
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        sampler.stop()
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(60)
    broker_after = cpu_of(broker)
    disk_after = disk_written()
    stdout = "".join(line for _, line in out)
    stderr = "".join(line for _, line in err)
    if timed_out.is_set():
        raise RuntimeError(f"{args[:4]} did not finish within {timeout:.0f}s")
    orphans = sampler.alive()
    if orphans:
        log(
            f"{' '.join(args[:4])}: {len(orphans)} descendant(s) outlived it; their CPU is not counted"
        )
    result = Run(
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_mb=sampler.peak_rss_mb,
        stdout=stdout,
        stderr=stderr,
        rss_samples=[(t, mb) for t, mb, _ in sampler.samples],
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        samples=sampler.samples,
        lines=[(t, line.rstrip("\n")) for t, line in err],
        broker_cpu_s=(
            round(broker_after - broker_before, 3)
            if broker_before is not None and broker_after is not None
            else None
        ),
        orphans=len(orphans),
        disk_write_mb=(
            round((disk_after - disk_before) / 1e6, 1)
            if disk_before is not None and disk_after is not None
            else None
        ),
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:6])} exited {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
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
