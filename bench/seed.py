"""A new replica seeded from a snapshot, against a full bootstrap of the same topic, same run.

On a topic of its own (``bench.seed.json.<size>``: the records of the plan's JSON topic
of that size, made by the same generator), with the CLI as a user runs it:

1. ``statestore bootstrap`` of a fresh store (the same measurement as the bootstrap
   phase's): process start to exit, the figure a seeded replica is judged against;
2. ``statestore snapshot create DIR`` and ``... create s3://statestore-bench/bench`` of
   that store (the bucket is made here, against the local S3 server; the AWS_* variables
   are set for those processes only): wall time and archive size;
3. *tail* records produced to the topic (updates of existing keys in a sixth round,
   1 in 50 a tombstone; some revive keys the topic had deleted);
4. once each snapshot is *age_s* old: a fresh store whose config says ``[store] seed =``
   the directory (then the S3 prefix), brought up with ``statestore bootstrap``: process
   start to exit, which is restore (read, check, write), open and catch-up of the tail;
5. the source store caught up too (``statestore bootstrap`` again), and each replica's
   keys, records and lag (``statestore status --json``) compared with it and with the
   count the tail implies: any difference fails the run.

The tail changes the topic's record count, which others check: every system of the
bootstrap phase, the rebuild (on the quick run's 100k topic), and every run's start
(``topics.ensure`` fills a topic again when its count is off). So the phase has a topic
of its own, filled each run and deleted at the end, and it may run in any order. Each
command's log is kept in var/bench/seed/*.log; the stores and snapshots are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from . import systems, topics
from .common import (
    BOOTSTRAP,
    PYTHON,
    ROOT,
    S3_ENV,
    STATESTORE,
    WORK,
    Run,
    log,
    run,
    s3_bucket_client,
    write_config,
)
from .topics import Topic

NAME = "seed"
BUCKET = "statestore-bench"
PREFIX = "bench"
_SEQ = topics.UPDATES_PER_KEY  # the tail is the round after the topic's last
_RESTORED = re.compile(r"snapshot\.restored .*bytes=(\d+) seconds=([\d.]+)")
_DONE = re.compile(r"bootstrap\.done view=\S+ records=(\d+) keys=(\d+)")


def seed_topic(records: int) -> Topic:
    """The phase's own topic: the contents of ``bench.json.<size>``, under another name."""
    return Topic(f"bench.seed.json.{topics.label(records)}", records, "json")


# -- the tail -----------------------------------------------------------------------------


def tail_keys(t: Topic, n: int) -> list[tuple[int, bool]]:
    """``(key index, written with a value)`` of the *n* tail records: distinct keys spread
    over the key space; every 50th (offset by one, so never a key the topic deleted) a
    tombstone."""
    if n > t.keys:
        raise ValueError(f"a tail of {n} records needs {n} keys; {t.name} has {t.keys}")
    stride = t.keys // n
    return [(j * stride, j % topics.TOMBSTONE_EVERY != 1) for j in range(n)]


def keys_after(t: Topic, tail: list[tuple[int, bool]]) -> int:
    """Live keys of *t* once *tail* is applied."""
    live = t.live_keys
    for i, alive in tail:
        before = i % topics.TOMBSTONE_EVERY != 0
        live += int(alive) - int(before)
    return live


def produce_tail(t: Topic, tail: list[tuple[int, bool]]) -> float:
    """Write *tail* to *t* (same keys and values as the topic's generator); seconds taken."""
    value_of = topics.values(t)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    p = topics.producer()
    started = time.monotonic()
    ts = int(time.time() * 1000)
    for n, (i, alive) in enumerate(tail):
        value = value_of(i, _SEQ, ts + n) if alive else None
        p.produce(t.name, value, topics.key_of(i), on_delivery=delivered)
        if n % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left or failed:
        raise RuntimeError(f"{left} tail records of {t.name} not delivered; errors: {failed[:3]}")
    return time.monotonic() - started


def _delete_topic(name: str) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.delete_topics([name])[name].result(timeout=30)


# -- S3 -----------------------------------------------------------------------------------


def _empty_prefix(client: Any, *, make: bool) -> None:
    """Remove every object under ``BUCKET/PREFIX/``; with *make*, create the bucket first."""
    if make:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=BUCKET)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    for page in pages:
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])


# -- the commands -------------------------------------------------------------------------


def _statestore(
    cfg: Path, *args: str, logs: str, env: dict[str, str] | None = None, timeout: float = 1800
) -> Run:
    """``statestore -c CFG ARGS``, its stderr kept in ``<logs>.log`` beside the config."""
    r = run([STATESTORE, "-c", str(cfg), *args], env=env, timeout=timeout, check=False)
    (cfg.parent / f"{logs}.log").write_text(r.stderr)
    if r.returncode != 0:
        raise RuntimeError(
            f"statestore {' '.join(args)} exited {r.returncode}:\n{r.stdout[-2000:]}\n"
            f"{r.stderr[-4000:]}"
        )
    return r


def _status(cfg: Path) -> dict[str, Any]:
    """The view's entry of ``statestore status --json``."""
    r = run([STATESTORE, "-c", str(cfg), "status", "--json"], timeout=120)
    views: list[dict[str, Any]] = json.loads(r.stdout)["views"]
    return views[0]


def _snapshot(cfg: Path, dest: str, env: dict[str, str] | None, logs: str) -> dict[str, Any]:
    """``statestore snapshot create DEST --json``: wall time, the command's own, size."""
    r = _statestore(cfg, "snapshot", "create", dest, "--json", logs=logs, env=env)
    made = r.last_json()
    return {
        "url": made["url"],
        "seconds": round(r.wall_s, 3),
        "logged_s": made.get("seconds"),
        "bytes": made["size"],
        "taken_at": time.time(),
        "peak_rss_mb": round(r.peak_rss_mb, 1),
        "cpu_s": r.cpu_s,
    }


def with_seed(cfg: Path, store: Path, src: str) -> Path:
    """Add ``seed = SRC`` to the ``[store]`` table of the bench config *cfg*."""
    line = f'path = "{store}"\n'
    text = cfg.read_text(encoding="utf-8")
    if line not in text:
        raise RuntimeError(f"{cfg} has no {line.strip()!r} line to add the seed to")
    cfg.write_text(text.replace(line, f"{line}seed = {json.dumps(src)}\n", 1), encoding="utf-8")
    return cfg


def timeline(r: Run) -> dict[str, Any]:
    """Where a seeded start's time went, from the times its log lines arrived.

    start-up: process start → the restore begins (interpreter, imports, config; the
    restore's start is its ``snapshot.restored`` line less the seconds it logs); restore:
    read the archive, check every file's SHA-256, write and fsync it, open it once and
    move it into place (its own ``seconds=``); open: → ``view.state ... bootstrapping``
    (the store opened, views prepared); connect: → ``bootstrap.start`` (Kafka client,
    watermarks); catch-up: → ``bootstrap.done``; close: → exit.
    """
    restored = _RESTORED.search(r.stderr)
    if restored is None or "store.seed_failed" in r.stderr:
        raise RuntimeError(f"the replica was not seeded from the snapshot:\n{r.stderr[-3000:]}")
    done = _DONE.search(r.stderr)
    if done is None:
        raise RuntimeError(f"no bootstrap.done line in the replica's output:\n{r.stderr[-3000:]}")
    restore_s = float(restored.group(2))
    marks = {
        "restored": r.at(r"snapshot\.restored "),
        "opened": r.at(r"view\.state .*state=bootstrapping"),
        "start": r.at(r"bootstrap\.start "),
        "done": r.at(r"bootstrap\.done "),
    }
    out: dict[str, Any] = {f"at_{k}_s": v for k, v in marks.items()}
    out["restore_bytes"] = int(restored.group(1))
    out["caught_up_records"] = int(done.group(1))
    at_restore = (marks["restored"] or 0.0) - restore_s
    spans = {
        "startup_s": (0.0, at_restore),
        "restore_s": (at_restore, marks["restored"]),
        "open_s": (marks["restored"], marks["opened"]),
        "connect_s": (marks["opened"], marks["start"]),
        "catch_up_s": (marks["start"], marks["done"]),
        "close_s": (marks["done"], r.wall_s),
    }
    for name, (a, b) in spans.items():
        out[name] = round(b - a, 3) if a is not None and b is not None else None
    out["restore_logged_s"] = restore_s
    return out


def _replica(
    t: Topic, work: Path, name: str, src: str, env: dict[str, str] | None, workers: int
) -> dict[str, Any]:
    """A fresh store seeded from *src* by its config, brought up with ``statestore bootstrap``."""
    home = work / name
    home.mkdir()
    store = home / "store"
    cfg = write_config(home / "statestore.toml", topic=t.name, store=store, workers=workers)
    with_seed(cfg, store, src)
    r = _statestore(cfg, "bootstrap", logs="bootstrap", env=env)
    out: dict[str, Any] = {
        "src": src,
        "wall_s": round(r.wall_s, 3),
        "peak_rss_mb": round(r.peak_rss_mb, 1),
        "cpu_s": r.cpu_s,
        **timeline(r),
        "config": str(cfg),
    }
    return out


def _check(name: str, got: dict[str, Any], want: dict[str, Any], keys: int) -> None:
    """The replica's view holds what the source's does (keys, records, positions), lag 0."""
    problems = [
        f"{what} {got[what]} (source {want[what]})"
        for what in ("keys", "records_applied")
        if got[what] != want[what]
    ]
    if got["keys"] != keys:
        problems.append(f"keys {got['keys']} (the topic and its tail imply {keys})")
    if got["lag"]:
        problems.append(f"lag {got['lag']}")
    positions = {p["partition"]: p["position"] for p in got["partitions"]}
    if positions != {p["partition"]: p["position"] for p in want["partitions"]}:
        problems.append("positions differ from the source's")
    if problems:
        raise RuntimeError(f"the replica seeded from the {name} snapshot: {'; '.join(problems)}")


def _cleanup(t: Topic, s3: Any) -> None:
    """Remove the stores, the snapshots (here and in the bucket) and the topic; keep the logs.

    A failure here is logged, never raised: it must not hide the measurement's own.
    """
    for leftover in ("store", "snapshots", "replica-dir/store", "replica-s3/store"):
        shutil.rmtree(WORK / NAME / leftover, ignore_errors=True)
    try:
        _empty_prefix(s3, make=False)
    except Exception as exc:
        log(f"seed: could not remove the snapshots in s3://{BUCKET}/{PREFIX}: {exc}")
    try:
        _delete_topic(t.name)
    except Exception as exc:
        log(f"seed: could not delete the topic {t.name}: {exc}")


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def _wait_until_aged(taken_at: float, age_s: float) -> float:
    """Sleep until the snapshot taken at *taken_at* is *age_s* old; its age then."""
    time.sleep(max(0.0, taken_at + age_s - time.time()))
    return time.time() - taken_at


def measure(
    records: int,
    *,
    tail: int,
    age_s: float,
    workers: int,
    bulk_min_records: int | None = None,
) -> dict[str, Any]:
    """The phase (see the module's docstring); raises when a replica's view differs."""
    t = seed_topic(records)
    # Bytecode as an installed package has it (pip compiles on install). Without it, with
    # PYTHONDONTWRITEBYTECODE set and sources newer than their .pyc, every process of the
    # phase compiles statestore again: ~0.2 s, nothing to a bootstrap, a tenth of a seeded
    # start.
    run([PYTHON, "-m", "compileall", "-q", str(ROOT / "statestore")], check=False)
    began = time.monotonic()
    filled = topics.ensure(t)
    # The broker's writes of a topic just filled (1.2 GB at 5M) would otherwise reach the
    # disk during the bootstrap and slow it down: the yardstick of this phase.
    os.sync()
    fill_s = time.monotonic() - began
    s3 = s3_bucket_client()
    _empty_prefix(s3, make=True)
    try:
        # The same command and checks as the bootstrap phase; its store is the source.
        boot = systems.statestore(t, workers=workers, keep=NAME, bulk_min_records=bulk_min_records)
        work = WORK / NAME
        cfg = Path(boot["config"])
        boot.pop("rss_samples", None)
        log(f"seed: full bootstrap of {t.name}: {boot['wall_s']:.2f}s from process start to exit")
        snaps = {
            "dir": _snapshot(cfg, str(work / "snapshots"), None, "snapshot-dir"),
            "s3": _snapshot(cfg, f"s3://{BUCKET}/{PREFIX}", S3_ENV, "snapshot-s3"),
        }
        for where, s in snaps.items():
            log(f"seed: snapshot to {where}: {s['seconds']:.2f}s, {s['bytes'] / 1e6:.1f} MB")
        keys = tail_keys(t, tail)
        produce_s = produce_tail(t, keys)
        have = topics.count(t.name)
        if have != t.records + tail:
            raise RuntimeError(
                f"{t.name} holds {have} records after the tail, want {t.records + tail}"
            )
        want_keys = keys_after(t, keys)
        replicas: dict[str, dict[str, Any]] = {}
        for where, src, env in (
            ("dir", str(work / "snapshots"), None),
            ("s3", f"s3://{BUCKET}/{PREFIX}", S3_ENV),
        ):
            age = _wait_until_aged(snaps[where]["taken_at"], age_s)
            rep = _replica(t, work, f"replica-{where}", src, env, workers)
            rep["snapshot_age_s"] = round(age, 1)
            if rep["caught_up_records"] != tail:
                raise RuntimeError(
                    f"the replica seeded from the {where} snapshot caught up "
                    f"{rep['caught_up_records']} records, want the {tail} of the tail"
                )
            replicas[where] = rep
            log(
                f"seed: replica from the {where} snapshot ({age:.0f}s old): "
                f"{rep['wall_s']:.2f}s from process start to exit (restore "
                f"{rep['restore_logged_s']:.2f}s, catch-up {rep['catch_up_s']}s)"
            )
        source_run = _statestore(cfg, "bootstrap", logs="source-catch-up")
        source = _status(cfg)
        if source["keys"] != want_keys:
            raise RuntimeError(
                f"the source store holds {source['keys']} keys after the tail, want {want_keys}"
            )
        for where, rep in replicas.items():
            got = _status(Path(rep["config"]))
            _check(where, got, source, want_keys)
            rep["keys"] = got["keys"]
    finally:
        _cleanup(t, s3)
    bootstrap_s = boot["wall_s"]
    return {
        "topic": t.name,
        "records": t.records,
        "keys": t.keys,
        "live_keys": t.live_keys,
        "filled_this_run": filled,
        "fill_s": round(fill_s, 1),
        "workers": workers,
        "bootstrap_s": bootstrap_s,
        "bootstrap_records_per_s": round(t.records / bootstrap_s),
        "snapshot_create_dir_s": snaps["dir"]["seconds"],
        "snapshot_create_s3_s": snaps["s3"]["seconds"],
        "snapshot_bytes": snaps["dir"]["bytes"],
        "snapshot_age_target_s": age_s,
        "snapshot_age_s": replicas["dir"]["snapshot_age_s"],
        "tail_records": tail,
        "tail_produce_s": round(produce_s, 3),
        "keys_after_tail": want_keys,
        "seed_dir_s": replicas["dir"]["wall_s"],
        "seed_s3_s": replicas["s3"]["wall_s"],
        "seed_dir_ratio": _ratio(replicas["dir"]["wall_s"], bootstrap_s),
        "seed_s3_ratio": _ratio(replicas["s3"]["wall_s"], bootstrap_s),
        "restore_dir_s": replicas["dir"]["restore_logged_s"],
        "restore_s3_s": replicas["s3"]["restore_logged_s"],
        "source_catch_up_s": round(source_run.wall_s, 3),
        "bootstrap": boot,
        "snapshots": snaps,
        "replicas": replicas,
    }
