"""A partitioned cluster of three instances against one replicated instance, on one topic.

Each side is `statestore serve` on a fresh store, from process start:

- time to ready: the replicated instance's ``/readyz`` 200 (the whole topic read), and
  the cluster's, every instance's ``/readyz`` 200 with every partition answered for
  (each instance reads its share; the three start together);
- what each instance holds and did: keys, the store's size on disk, and the CPU seconds it
  (and its bulk-load workers) took to be ready: on one machine the instances share its
  cores, so the cluster is not ready sooner; the CPU each spent is what a machine of its
  own would have to give;
- REST throughput with wrk, the same GET script as the lookups phase: on the replicated
  instance, and on one cluster instance, which forwards the keys it does not own (the
  share forwarded is measured from the owners it names);
- failover: ``kill -9`` of one instance, then the seconds until every key of a sample
  answers 200 from another one again (session timeout + settle + the reads).

    python -m bench.cluster [--records N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from . import rest, topics
from .common import STATESTORE, VIEW, free_port, fresh_dir, log, stop, write_config

NAME = "cluster"
INSTANCES = 3
SESSION_MS = 6000  # the broker's group.min.session.timeout.ms
SAMPLE = 600


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, None, dict(exc.headers)
    except OSError:
        return 0, None, {}


def _du_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


class _Instance:
    def __init__(self, work: Path, topic: str, cluster: str | None) -> None:
        self.dir = work / ((cluster and f"i{len(list(work.glob('i*')))}") or "replicated")
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = write_config(
            self.dir / "statestore.toml",
            topic=topic,
            store=self.dir / "store",
            port=self.port,
            partitioner="consistent_random",  # how bench/topics.py's producer placed keys
            cluster=None
            if cluster is None
            else {
                "mode": "partitioned",
                "name": cluster,
                "advertised_url": self.url,
                "session_timeout_ms": SESSION_MS,
            },
        )
        self.log = open(self.dir / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [STATESTORE, "--log-level", "warning", "-c", str(self.config), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"instance exited: {(self.dir / 'serve.log').read_text()[-3000:]}")
        return _get(f"{self.url}/readyz")[0] == 200

    def cpu_s(self) -> float:
        """CPU seconds of the process and the workers it waited for, so far."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return round(t.user + t.system + t.children_user + t.children_system, 1)

    def keys(self) -> int:
        status, body, _ = _get(f"{self.url}/views/{VIEW}")
        return int(body["keys"]) if status == 200 and body else -1

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def _wait(what: str, check: Any, timeout: float) -> float:
    """Seconds until *check()* holds (polled every 50 ms); RuntimeError past *timeout*."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _owners(instance: _Instance) -> dict[str, str | None]:
    status, body, _ = _get(f"{instance.url}/cluster")
    if status != 200 or body is None:
        return {}
    owners: dict[str, str | None] = body["views"][VIEW]["owners"]
    return owners


def measure(records: int, seconds: float, clients: int = 16) -> dict[str, Any]:
    t = topics.topic(records, "json")
    topics.ensure(t)
    work = fresh_dir(NAME)
    out: dict[str, Any] = {
        "topic": t.name,
        "records": t.records,
        "keys": t.keys,
        "live_keys": t.live_keys,
        "partitions": topics.PARTITIONS,
        "instances": INSTANCES,
        "session_timeout_ms": SESSION_MS,
    }
    scripts = rest.scripts(work, t.keys)
    started: list[_Instance] = []
    try:
        # -- one replicated instance ------------------------------------------------------
        one = _Instance(work, t.name, None)
        started.append(one)
        out["replicated_ready_s"] = round(_wait("replicated ready", one.ready, 3600), 2)
        out["replicated_keys"] = one.keys()
        out["replicated_cpu_s"] = one.cpu_s()
        out["replicated_store_mb"] = _du_mb(one.dir / "store")
        log(f"cluster: one replicated instance ready in {out['replicated_ready_s']} s")
        out["replicated_rest"] = rest.wrk(one.port, scripts["get"], clients, seconds)
        one.stop()
        shutil.rmtree(one.dir / "store", ignore_errors=True)

        # -- three partitioned instances, started together ---------------------------------
        name = f"bench-{int(time.time())}"
        cluster = [_Instance(work, t.name, name) for _ in range(INSTANCES)]
        started += cluster
        out["cluster_ready_s"] = round(
            _wait("cluster ready", lambda: all(i.ready() for i in cluster), 3600), 2
        )
        owners = _owners(cluster[0])
        members = sorted({m for m in owners.values() if m is not None})
        out["owned_partitions"] = [
            sum(1 for m in owners.values() if m == member) for member in members
        ]
        out["cluster_keys"] = [i.keys() for i in cluster]
        out["cluster_cpu_s"] = [i.cpu_s() for i in cluster]
        out["cluster_store_mb"] = [_du_mb(i.dir / "store") for i in cluster]
        log(
            f"cluster: {INSTANCES} partitioned instances ready in {out['cluster_ready_s']} s "
            f"(keys {out['cluster_keys']}, partitions {out['owned_partitions']})"
        )
        mine = _get(f"{cluster[0].url}/cluster")[1]
        me = mine["member"] if mine else None
        local = sum(1 for m in owners.values() if m == me)
        out["forwarded_share"] = round(1 - local / max(1, len(owners)), 3)
        out["cluster_rest"] = rest.wrk(cluster[0].port, scripts["get"], clients, seconds)
        log(
            f"cluster: GET {out['cluster_rest']['req_per_s']}/s on one instance "
            f"({out['forwarded_share']:.0%} forwarded) vs {out['replicated_rest']['req_per_s']}/s"
        )

        # -- failover -----------------------------------------------------------------------
        victim, survivor = cluster[-1], cluster[0]
        rng = random.Random(7)
        sample = [
            i for i in rng.sample(range(t.keys), SAMPLE * 2) if i % topics.TOMBSTONE_EVERY != 0
        ][:SAMPLE]
        urls = [f"{survivor.url}/views/{VIEW}/entities/{topics.key_of(i).decode()}" for i in sample]
        bad = [u for u in urls if _get(u)[0] != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} sample keys do not answer before the kill: {bad[:3]}")
        victim.proc.kill()
        victim.proc.wait()
        killed = time.monotonic()
        statuses: dict[int, int] = {}

        def answered() -> bool:
            for u in urls:
                code = _get(u)[0]
                statuses[code] = statuses.get(code, 0) + 1
                if code != 200:
                    return False
            return True

        _wait("failover", answered, 600)
        out["failover_s"] = round(time.monotonic() - killed, 2)
        out["failover_answers"] = {str(k): v for k, v in sorted(statuses.items())}
        log(f"cluster: every sampled key answered {out['failover_s']} s after kill -9")
        return out
    finally:
        for i in started:
            i.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(json.dumps(measure(args.records, args.seconds), indent=1))


if __name__ == "__main__":
    main()
