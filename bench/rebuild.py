"""A rebuild of a served view while reads are served: ``POST /views/{view}/rebuild`` under load.

``statestore serve`` (the CLI, owning the bootstrapped store of the serve topic) is
put under a steady read load (``bench.readload``, its own process: GETs of live
keys at a fixed rate); after *before_s* seconds the view is rebuilt through the API
(the bench config binds 127.0.0.1 and has no tokens, so no token is sent), and
``GET /views/{view}`` is polled every 50 ms until the generation has gone up and
the view is ``ready``; the load goes on for *after_s* seconds more.

Reported: the rebuild's records/s (records of the new copy / seconds from the POST
to the swapped copy seen ready; the server's own ``bootstrap.done`` seconds beside
it), the reads served during the rebuild and their latency (from sending, and from
the time the schedule meant to send, which also counts the waits of a stalled
client), the 5xx answers and connection errors, and the server's CPU and summed RSS
meanwhile (reads included). A GET of a live key that is not answered 2xx or 5xx (a
404: a wrong answer), a wrong key count after the swap, or a rebuild that does not
finish makes the run an error; 5xx answers are counted, not judged.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from .common import PYTHON, ROOT, STATESTORE, VIEW, Sampler, cpu_at, log
from .rest import check
from .topics import Topic

_DONE = re.compile(r"bootstrap\.done view=\S+ records=(\d+) keys=(\d+) seconds=([\d.]+)")
_BULK = re.compile(r"bulk\.start view=\S+ .*processes=(\d+)")
_MERGED = re.compile(r"bulk\.merged view=\S+ .*seconds=([\d.]+)")


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _post(port: int, path: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def _serve(cfg: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``statestore serve`` in the background, its log in *log_path*; returns once ready."""
    with log_path.open("wb") as err:
        proc = subprocess.Popen(
            [STATESTORE, "-c", str(cfg), "serve", "--port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"statestore serve exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError("statestore serve did not become ready")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _await_rebuild(port: int, generation: int, timeout: float) -> dict[str, Any]:
    """Poll the view until a newer generation is ready; its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _get(port, f"/views/{VIEW}")
        if info["state"] == "failed":
            raise RuntimeError(f"the rebuild failed: {info.get('reason')}")
        if info["generation"] > generation and info["state"] == "ready":
            return info
        time.sleep(0.05)
    raise RuntimeError(f"the rebuild did not finish within {timeout:.0f}s")


def _pct(sorted_ms: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q * len(sorted_ms)) - 1))], 3)


def window(requests: list[list[float]], start: float, end: float) -> dict[str, Any]:
    """The requests scheduled in ``[start, end)``: counts, statuses and latency percentiles."""
    rs = [r for r in requests if start <= r[0] < end]
    ok = [r for r in rs if 200 <= r[3] < 300]
    sent = sorted((r[2] - r[1]) * 1000 for r in ok)
    planned = sorted((r[2] - r[0]) * 1000 for r in ok)
    seconds = end - start
    return {
        "seconds": round(seconds, 3),
        "requests": len(rs),
        "served": len(ok),
        "served_per_s": round(len(ok) / seconds) if seconds > 0 else None,
        "p50_ms": _pct(sent, 0.5),
        "p99_ms": _pct(sent, 0.99),
        "max_ms": _pct(sent, 1.0),
        "p99_from_schedule_ms": _pct(planned, 0.99),
        "status_5xx": sum(1 for r in rs if 500 <= r[3] < 600),
        "other_non_2xx": sum(1 for r in rs if 0 < r[3] < 200 or 300 <= r[3] < 500),
        "connection_errors": sum(1 for r in rs if r[3] == 0),
    }


def _last(rx: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = list(rx.finditer(text))
    return found[-1] if found else None


def measure(
    cfg: Path,
    t: Topic,
    port: int,
    *,
    rate: float,
    connections: int,
    before_s: float,
    after_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Rebuild the view of *cfg* through the API of ``statestore serve`` under a read load."""
    work = cfg.parent
    log_path = work / "serve-rebuild.log"
    reads_path = work / "reads.json"
    server = _serve(cfg, port, log_path)
    load: subprocess.Popen[str] | None = None
    sampler: Sampler | None = None
    try:
        check(port, t.keys)
        before = _get(port, f"/views/{VIEW}")
        started = time.monotonic()
        sampler = Sampler(server.pid, started, 0.1)
        load = subprocess.Popen(
            [
                *(PYTHON, "-m", "bench.readload", "--port", str(port), "--keys", str(t.keys)),
                *("--rate", str(rate), "--connections", str(connections)),
                *("--seconds", str(before_s + timeout_s + after_s + 30), "--out", str(reads_path)),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert load.stdin is not None and load.stdout is not None
        if load.stdout.readline().strip() != "READY":
            raise RuntimeError("bench.readload did not start")
        time.sleep(before_s)
        posted = time.monotonic()
        answer = _post(port, f"/views/{VIEW}/rebuild")
        after = _await_rebuild(port, before["generation"], timeout_s)
        ready = time.monotonic()
        time.sleep(after_s)
        load.stdin.close()  # the load stops and writes its requests
        load.wait(60)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        if sampler is not None:
            sampler.stop()
        _stop(server)
    requests: list[list[float]] = json.loads(reads_path.read_text())["requests"]
    during = window(requests, posted, ready)
    if during["other_non_2xx"]:
        raise RuntimeError(f"{during['other_non_2xx']} GETs of live keys were answered 3xx/4xx")
    if after["keys"] != t.live_keys:
        raise RuntimeError(f"the rebuilt view holds {after['keys']} keys, expected {t.live_keys}")
    text = log_path.read_text()
    done, bulk, merged = _last(_DONE, text), _last(_BULK, text), _last(_MERGED, text)
    records = int(done.group(1)) if done else after["records_applied"]
    if records != t.records:
        raise RuntimeError(f"the rebuild read {records} records, expected {t.records}")
    seconds = ready - posted
    samples = sampler.samples if sampler is not None else []
    a, b = posted - started, ready - started
    cpu_a, cpu_b = cpu_at(samples, a), cpu_at(samples, b)
    cpu = cpu_b - cpu_a if cpu_a is not None and cpu_b is not None else None
    out: dict[str, Any] = {
        "topic": t.name,
        "records": records,
        "keys": after["keys"],
        "post_status": answer,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "logged_seconds": float(done.group(3)) if done else None,
        "processes": max(1, int(bulk.group(1))) if bulk else None,
        "merge_logged_s": float(merged.group(1)) if merged else None,
        "generation": [before["generation"], after["generation"]],
        "load": {"rate": rate, "connections": connections},
        "during": during,
        "before": window(requests, started + 0.5, posted),
        "after": window(requests, ready, ready + after_s),
        "server_cpu_s": round(cpu, 3) if cpu is not None else None,
        "server_cpu_us_per_record": round(cpu / records * 1e6, 2) if cpu is not None else None,
        "server_peak_rss_mb": max((s[1] for s in samples if a <= s[0] <= b), default=None),
        "server_rss_before_mb": max((s[1] for s in samples if s[0] < a), default=None),
    }
    log(
        f"rebuild: {records:,} records in {seconds:.2f}s ({out['records_per_s']:,}/s); "
        f"{during['served']:,} reads served meanwhile, p99 {during['p99_ms']} ms, "
        f"5xx {during['status_5xx']}, connection errors {during['connection_errors']}"
    )
    return out
