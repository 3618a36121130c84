"""`statestore serve --workers N` against the real broker: one ingesting process, N serving ones."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.config import write_config
from tests.support.env import Env
from tests.support.processes import Proc, free_port, run
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

WORKER = "x-statestore-worker"


def _config(directory: Path, topic: str, *, api: dict[str, Any] | None = None, **view: Any) -> Path:
    """View ``d`` over *topic* (plus *view* settings), JSON logs."""
    return write_config(
        directory, [{"name": "d", "topic": topic, **view}], api=api, log={"format": "json"}
    )


class Served:
    """A running `statestore serve --workers N`, its log and its processes."""

    def __init__(self, config: Path, cwd: Path, *args: str) -> None:
        text = config.read_text(encoding="utf-8")
        found = re.search(r"port = (\d+)", text)
        assert found
        self.url = f"http://127.0.0.1:{found.group(1)}"
        self.log_path = cwd / "serve.log"
        self.run = Proc(["-c", config, "serve", *args], cwd, self.log_path)
        self.proc = self.run.popen
        self.process = psutil.Process(self.proc.pid)

    def lines(self) -> list[dict[str, Any]]:
        # JSON throughout: the workers log in the same format
        return self.run.json_lines()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def workers(self) -> list[psutil.Process]:
        out = []
        for p in self.process.children():
            # Not multiprocessing's resource tracker, the other child.
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(p.cmdline()):
                    out.append(p)
        return out

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-4000:]
        # A new connection each time: the kernel hands connections to either worker.
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    def from_each_worker(
        self, request: Callable[[], httpx.Response], workers: int = 2
    ) -> dict[str, httpx.Response]:
        """Repeat *request* until every worker has answered it; the last answer of each."""
        seen: dict[str, httpx.Response] = {}
        deadline = time.monotonic() + 60
        while len(seen) < workers:
            assert time.monotonic() < deadline, f"only workers {sorted(seen)} answered"
            resp = request()
            seen[resp.headers[WORKER]] = resp
        return seen

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            for child in self.process.children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(config: Path, *args: str) -> Served:
        s = Served(config, tmp_path, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def _ready(s: Served, workers: int = 2) -> bool:
    try:
        seen = s.from_each_worker(lambda: s.get("/readyz"), workers)
    except httpx.TransportError:
        return False
    return all(r.status_code == 200 for r in seen.values())


# (partitions, records, *serve args, workers=, api=) -> (topic, produced, config, server)
ServeTopic = Callable[..., tuple[str, Any, Path, Served]]


@pytest.fixture
def serve_topic(tmp_path: Path, env: Env, served: Callable[..., Served]) -> ServeTopic:
    """Starts `statestore serve *args*` over the view ``d`` of a new topic of *partitions*
    holding *records*, with the [api] settings *api*, once each of its *workers* is ready."""

    def start(
        partitions: int,
        records: list[tuple[str, str | None]],
        *args: str,
        workers: int = 2,
        api: dict[str, Any] | None = None,
    ) -> tuple[str, Any, Path, Served]:
        topic = env.topic(partitions)
        produced = env.produce(topic, records)
        config = _config(tmp_path, topic, api=api)
        s = served(config, *args)
        eventually(lambda: _ready(s, workers), f"{workers} workers ready", timeout=90.0)
        return topic, produced, config, s

    return start


def _records(n: int, keys: int, tag: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for i in range(n):
        key = f"k{i % keys}"
        out.append((key, None if i % 17 == 5 else json.dumps({"i": i, "tag": tag})))
    return out


def _reduction(produced: list[Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _, _, key, value in sorted(produced, key=lambda r: (r[0], r[1])):
        if value is None:
            state.pop(key.decode(), None)
        else:
            state[key.decode()] = json.loads(value)
    return state


def _lookup_all(s: Served, keys: list[str], **params: str) -> Callable[[], httpx.Response]:
    def ask() -> httpx.Response:
        assert s.proc.poll() is None
        return httpx.post(f"{s.url}/views/d/lookup", json={"keys": keys}, params=params, timeout=30)

    return ask


def test_workers_serve_the_reduction_and_read_your_writes(
    serve_topic: ServeTopic, produce: Callable[..., Any]
) -> None:
    """Both workers serve exactly the reduction of the log, and a read with the produced
    records' position as min_position sees them at whichever worker answers, though the
    workers' own catch-up interval is long (they catch up on demand)."""
    topic, first, _, s = serve_topic(
        3, _records(600, 150, "a"), api={"workers": 2, "catch_up_ms": 3000}
    )
    keys = [f"k{i}" for i in range(200)]  # 50 never produced: null
    want = _reduction(first.records)
    for worker, resp in s.from_each_worker(_lookup_all(s, keys)).items():
        assert resp.status_code == 200
        got = {item["key"]: item["value"] for item in resp.json()["items"] if item is not None}
        assert got == want, f"worker {worker}"
    assert len(s.workers()) == 2

    for round_ in range(3):
        more = produce(topic, _records(90, 150, f"b{round_}"))
        want = _reduction(first.records + more.records)
        first.records += more.records
        top = more.last_offsets()
        token = ",".join(f"{p}:{o}" for p, o in sorted(top.items()))
        seen = s.from_each_worker(_lookup_all(s, keys, min_position=token, wait_ms="10000"))
        for worker, resp in seen.items():
            assert resp.status_code == 200, resp.text
            got = {i["key"]: i["value"] for i in resp.json()["items"] if i is not None}
            assert got == want, f"worker {worker} round {round_}"
            position = dict(
                map(int, item.split(":"))
                for item in resp.headers["x-statestore-position"].split(",")
            )
            assert all(position[p] >= o for p, o in top.items())
    # A position never produced times out with the existing error, at every worker.
    for resp in s.from_each_worker(
        lambda: s.get("/views/d/entities/k1", params={"min_position": "0:99999", "wait_ms": "50"})
    ).values():
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "position_not_reached"


def test_readyz_waits_for_the_primary_and_the_copy(
    tmp_path: Path,
    admin: Any,
    produce: Callable[..., Any],
    served: Callable[..., Served],
) -> None:
    """Workers answer /healthz but /readyz 503 while the ingesting process has not caught up
    (its topic does not exist yet); once it has, every worker is ready and serves the data."""
    from confluent_kafka.admin import NewTopic

    topic = f"sw-late-{os.getpid()}-{time.monotonic_ns()}"
    config = _config(tmp_path, topic, api={"workers": 2}, missing_topic="wait")
    s = served(config)
    eventually(lambda: _answers(s), "the workers answer", timeout=90.0)
    for resp in s.from_each_worker(lambda: s.get("/readyz")).values():
        assert resp.status_code == 503
        assert resp.json()["status"] == "not_ready"
    for resp in s.from_each_worker(lambda: s.get("/healthz")).values():
        assert resp.status_code == 200
    admin.create_topics([NewTopic(topic, 2, 1, config={"cleanup.policy": "compact"})])[
        topic
    ].result(timeout=30)
    try:
        produced = produce(topic, [("a", '{"n": 1}'), ("b", '{"n": 2}')])
        eventually(lambda: _ready(s), "both workers ready", timeout=90.0)
        want = _reduction(produced.records)
        # Ready may come before the records (caught up to the new, empty topic): the reads
        # ask for their position.
        top = produced.last_offsets()
        token = ",".join(f"{p}:{o}" for p, o in sorted(top.items()))
        ask = _lookup_all(s, ["a", "b"], min_position=token, wait_ms="10000")
        for resp in s.from_each_worker(ask).values():
            assert {i["key"]: i["value"] for i in resp.json()["items"]} == want
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def _answers(s: Served) -> bool:
    try:
        return s.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_sigterm_stops_every_process_and_removes_the_copies(serve_topic: ServeTopic) -> None:
    """SIGTERM drains the workers, closes the primary last, exits 0, leaves no process and
    no secondary directory; every log line (workers' too) is JSON, workers named."""
    _, _, _, s = serve_topic(2, _records(50, 10, "a"), "--workers", "3", workers=3)
    children = s.process.children(recursive=True)
    workers = s.workers()
    assert len(workers) == 3
    copies = Path(s.events("serve.start")[0]["copies"])
    assert copies.is_dir()
    assert s.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    assert not copies.exists()
    assert "error: " not in s.log_path.read_text()
    lines = s.lines()
    processes = {line.get("process") for line in lines}
    assert {"worker-0", "worker-1", "worker-2"} <= processes
    events = [line.get("event") for line in lines if line.get("process") is None]
    # The primary stops after its workers, and says so last.
    assert events[-1] == "serve.stopped"
    primary_closed = max(
        i
        for i, line in enumerate(lines)
        if line.get("event") == "view.state"
        and line["state"] == "stopped"
        and "process" not in line
    )
    last_worker_line = max(i for i, line in enumerate(lines) if "process" in line)
    assert last_worker_line < primary_closed


def test_a_killed_worker_is_restarted(serve_topic: ServeTopic) -> None:
    """A worker killed with SIGKILL is logged and started again in a new copy; serving goes on."""
    _, produced, _, s = serve_topic(2, _records(40, 10, "a"), api={"workers": 2})
    victim = s.workers()[0]
    victim.kill()
    eventually(
        lambda: bool(s.events("serve.worker_restarted")), "the worker restarted", timeout=90.0
    )
    died = s.events("serve.worker_died")[0]
    assert died["pid"] == victim.pid
    assert died["exitcode"] == -signal.SIGKILL
    eventually(lambda: _ready(s), "both workers ready again", timeout=90.0)
    assert victim.pid not in {p.pid for p in s.workers()}
    assert len(s.workers()) == 2
    want = _reduction(produced.records)
    for resp in s.from_each_worker(_lookup_all(s, sorted(want))).values():
        assert {i["key"]: i["value"] for i in resp.json()["items"]} == want
    assert s.stop() == 0


def test_workers_dying_in_a_loop_stop_the_server_with_status_1(serve_topic: ServeTopic) -> None:
    """More than 5 worker deaths within a minute stop the whole server: exit status 1, a
    clear log line, no process left behind."""
    _, _, _, s = serve_topic(1, [("a", "{}")], api={"workers": 2})
    children = s.process.children(recursive=True)
    killed: set[int] = set()

    def gave_up() -> bool:
        """Kill every worker not killed yet; true once the server has exited."""
        for worker in s.workers():
            if worker.pid not in killed:
                killed.add(worker.pid)
                children.append(worker)
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.kill()
        return s.proc.poll() is not None

    eventually(gave_up, "the server gives up on its dying workers", timeout=120.0)
    assert s.proc.returncode == 1
    assert "error: the server stopped on a failure" in s.log_path.read_text()
    assert len(killed) >= 6  # the last one started may be killed before the server gives up
    failing = s.events("serve.workers_failing")
    assert failing and failing[0]["deaths"] == 6
    assert s.lines()[-1]["event"] == "serve.stopped"
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive


def test_writes_and_change_streams_are_refused_on_workers(
    serve_topic: ServeTopic, tmp_path: Path
) -> None:
    """Rebuild, snapshot and the change stream answer 409 with the error model at every worker."""
    _, _, _, s = serve_topic(1, [("a", "{}")], api={"workers": 2})

    def post(path: str, body: Any = None) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(f"{s.url}{path}", json=body, timeout=30)

    for resp in s.from_each_worker(post("/views/d/rebuild")).values():
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "read_only"
        assert "workers" in resp.json()["error"]["message"]
    dest = str(tmp_path / "snap")
    for resp in s.from_each_worker(post("/admin/snapshot", {"dest": dest})).values():
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "snapshot_refused"
    assert not Path(dest).exists()
    for resp in s.from_each_worker(lambda: s.get("/views/d/changes")).values():
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "read_only"


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "65"])
def test_bad_worker_counts_are_usage_errors(tmp_path: Path, value: str) -> None:
    """--workers outside 1..64 or not an integer is the CLI's usage error (exit 2), nothing served."""
    config = _config(tmp_path, "unused")
    done = run(["-c", config, "serve", "--workers", value], tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--workers" in done.stderr
    assert not (tmp_path / "store").exists()


def test_bad_worker_count_in_config_is_a_config_error(tmp_path: Path) -> None:
    """[api] workers = 0 is refused as a config error naming the setting."""
    config = _config(tmp_path, "unused", api={"workers": 0})
    done = run(["-c", config, "serve"], tmp_path, timeout=60)
    assert done.returncode != 0
    assert "workers" in done.stderr
    assert not (tmp_path / "store").exists()


def test_the_primary_port_rebuilds_and_the_workers_follow_the_new_copy(
    serve_topic: ServeTopic, tmp_path: Path
) -> None:
    """With [api] primary_port, `statestore rebuild` beside the server goes to the ingesting
    process; every worker then serves the new generation with the same data. The primary's
    /metrics is the ingest's, each worker's its own copy's."""
    primary_port = free_port()
    _, produced, config, s = serve_topic(
        2, _records(120, 30, "a"), api={"workers": 2, "primary_port": primary_port}
    )
    primary = f"http://127.0.0.1:{primary_port}"
    assert httpx.get(f"{primary}/readyz", timeout=10).status_code == 200
    assert WORKER not in httpx.get(f"{primary}/readyz", timeout=10).headers
    done = run(["-c", config, "rebuild", "--view", "d"], tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert httpx.get(f"{primary}/views/d", timeout=10).json()["generation"] == 1

    def rebuilt() -> bool:
        seen = s.from_each_worker(lambda: s.get("/views/d"))
        return all(r.json()["generation"] == 1 for r in seen.values())

    eventually(rebuilt, "every worker serves the rebuilt generation", timeout=90.0)
    want = _reduction(produced.records)
    for resp in s.from_each_worker(_lookup_all(s, sorted(want))).values():
        assert {i["key"]: i["value"] for i in resp.json()["items"]} == want
    assert s.events("secondary.reopened")

    ingest = httpx.get(f"{primary}/metrics", timeout=10).text
    # The process that follows the topics says when it started following; copies do not.
    assert "statestore_start_time_seconds" in ingest
    assert 'statestore_applied_offset{partition="0",topic=' in ingest
    for resp in s.from_each_worker(lambda: s.get("/metrics")).values():
        assert "statestore_applied_offset" in resp.text
        assert "statestore_http_request_duration_seconds" in resp.text
        assert "statestore_start_time_seconds" not in resp.text
    assert s.stop() == 0
