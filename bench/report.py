# ruff: noqa: RUF001
"""Results: the JSON file of a run, and the tables and plots of docs/benchmarks.md.

The page's hand-written text stays as it is; only the part between the
``<!-- bench:results -->`` markers is rewritten from the results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import model
from .common import RESULTS, ROOT, log

DOCS = ROOT / "docs"
PAGE = DOCS / "benchmarks.md"
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

_path: Path | None = None

SYSTEMS = [
    ("raw", "raw consume, 1 process (the limit)"),
    ("raw_2", "raw consume, 2 processes"),
    ("statestore_1", "statestore bootstrap, 1 worker"),
    ("statestore_2", "statestore bootstrap, 2 workers"),
    ("statestore_index", "statestore bootstrap + index"),
    ("ktables", "ktables (in-memory)"),
    ("kstreams", "Kafka Streams GlobalKTable"),
]
# The statestore run the targets are judged on.
MAIN = "statestore_2"
# Results files written before --workers hold one statestore run per topic under this key.
LEGACY = ("statestore", "statestore bootstrap (results from before --workers)")


def raw_key(processes: int) -> str:
    """The results key of a raw run with *processes* consumer processes."""
    return "raw" if processes == 1 else f"raw_{processes}"


def statestore_key(workers: int) -> str:
    """The results key of a statestore bootstrap with *workers* worker processes."""
    return f"statestore_{workers}"


def _label(key: str, name: str, r: dict[str, Any]) -> str:
    if key == "statestore_index" and r.get("workers"):
        return f"{name}, {r['workers']} workers"
    return name


def bind(results: dict[str, Any], path: Path) -> None:
    global _path
    _path = path
    save(results)


def save(results: dict[str, Any]) -> None:
    if _path is None:
        return
    text = json.dumps(results, indent=1)
    _path.write_text(text)
    (RESULTS / "latest.json").write_text(text)


# -- numbers ------------------------------------------------------------------------------


def _f(x: Any, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{round(x):,}"


def _texts(row: dict[str, Any], *fields: str) -> list[str]:
    """The *fields* of *row* as table cells, as they are."""
    return [str(row[name]) for name in fields]


def _ratio(a: Any, b: Any) -> float | None:
    if not a or not b:
        return None
    return round(float(a) / float(b), 2)


def _size(records: int) -> str:
    return f"{records // 1_000_000}M" if records % 1_000_000 == 0 else f"{records:,}"


def _entry(results: dict[str, Any], value: str, records: int) -> dict[str, Any] | None:
    entries: list[dict[str, Any]] = results["bootstrap"]
    for e in entries:
        if e["value"] == value and e["records"] == records:
            return e
    return None


def _rate(e: dict[str, Any] | None, system: str) -> Any:
    if e is None or not e.get(system):
        return None
    return e[system]["records_per_s"]


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, met) rows."""
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("yes" if ok else "**no**")

    def against(e: dict[str, Any] | None, base: str, floor: float | None, what: str) -> None:
        """A row of statestore's ratio to *base*; no verdict when there is no *floor*."""
        r = _ratio(_rate(e, MAIN), _rate(e, base))
        rows.append(
            (
                what,
                f"{r} × ({_f(_rate(e, MAIN))} vs {_f(_rate(e, base))} rec/s)" if r else "–",
                verdict(None if r is None or floor is None else r >= floor),
            )
        )

    sizes = sorted({e["records"] for e in results["bootstrap"] if e["value"] == "json"})
    for size in [n for n in sizes if n >= 1_000_000] or sizes[-1:]:
        j = _entry(results, "json", size)
        label = f"JSON {size // 1_000_000}M" if size >= 1_000_000 else f"JSON {size:,}"
        against(j, "raw", 1.0, f"bootstrap ≥ 1.0 × raw, {label} (2 workers vs raw 1 process)")
        against(j, "raw_2", 0.8, f"bootstrap ≥ 0.8 × raw, {label} (2 workers vs raw 2 processes)")
    avro = [e for e in results["bootstrap"] if e["value"] == "avro"]
    a = avro[0] if avro else None
    against(a, "raw", 0.8, "bootstrap ≥ 0.8 × raw, Avro 1M, no index (2 workers vs raw 1 process)")
    proto = [e for e in results["bootstrap"] if e["value"] == "protobuf"]
    p = proto[0] if proto else None
    size = _size(p["records"]) if p else "1M"
    against(
        p,
        "raw",
        None,
        f"bootstrap vs raw, Protobuf {size}, no index (2 workers vs raw 1 process; no target set)",
    )
    for system, name in (("ktables", "ktables"), ("kstreams", "Kafka Streams GlobalKTable")):
        for e in results["bootstrap"]:
            rr = _ratio(_rate(e, MAIN), _rate(e, system))
            if rr is not None:
                rows.append(
                    (
                        f"faster than {name} ({e['topic']}, 2 workers)",
                        f"{rr} × ({_f(_rate(e, MAIN))} vs {_f(_rate(e, system))} rec/s)",
                        verdict(rr > 1),
                    )
                )
    emb = (results.get("lookups") or {}).get("embedded") or {}
    g = emb.get("get_per_s")
    rows.append(
        ("embedded get ≥ 200,000/s", f"{_f(g)}/s", verdict(None if g is None else g >= 200_000))
    )
    for row in (results.get("lookups") or {}).get("rest", []):
        if row["route"] == "GET entity" and row["clients"] == 16:
            ok = row["req_per_s"] >= 3000 and (row["p99_ms"] or 1e9) <= 10
            rows.append(
                (
                    f"REST GET ≥ 3,000 req/s, p99 ≤ 10 ms at 16 clients ({row['workers']} process{'es' if row['workers'] > 1 else ''}, {row.get('http', 'h11 + asyncio')})",
                    f"{_f(row['req_per_s'])} req/s, p99 {row['p99_ms']} ms",
                    verdict(ok),
                )
            )
    for row in (results.get("lookups") or {}).get("rest", []):
        if row["route"].startswith("POST lookup") and row["clients"] == 16:
            per = row["req_per_s"] / max(1, row["workers"])
            ok = per >= 1000 and (row["p99_ms"] or 1e9) <= 30
            rows.append(
                (
                    f"REST POST lookup of 100 keys ≥ 1,000 calls/s per serving process, p99 ≤ 30 ms at 16 clients ({row['workers']} process{'es' if row['workers'] > 1 else ''})",
                    f"{_f(per)} calls/s per process ({_f(row['req_per_s'])} in all), p99 {row['p99_ms']} ms",
                    verdict(ok),
                )
            )
    fr = (results.get("freshness") or {}).get("primary") or {}
    p99 = fr.get("p99_ms")
    rows.append(
        (
            "freshness p99 ≤ 100 ms at 5,000 records/s",
            f"p99 {p99} ms (p50 {fr.get('p50_ms')} ms)" if p99 is not None else "–",
            verdict(None if p99 is None else p99 <= 100),
        )
    )
    big = _entry(results, "json", 5_000_000) or {}
    wall = (big.get(MAIN) or {}).get("wall_s")
    rows.append(
        (
            "5M JSON from process start to ready < 20 s (2 workers)",
            f"{_f(wall, 1)} s (the bootstrap command's wall time)" if wall else "– (not run)",
            verdict(None if wall is None else wall < 20),
        )
    )
    for key, name in (("statestore_1", "1 worker"), (MAIN, "2 workers")):
        rss = (big.get(key) or {}).get("peak_rss_mb")
        rows.append(
            (
                f"peak RSS of all processes ≤ 400 MB, 5M bootstrap ({name})",
                f"{_f(rss)} MB (summed)" if rss else "– (not run)",
                verdict(None if rss is None else rss <= 400),
            )
        )
    rows += _seed_targets(results.get("seed"), verdict)
    return rows


SEED_TARGET = 0.10
SEED_JUDGED_RECORDS = 5_000_000
_WHERE = {"dir": "a directory", "s3": "S3 (the local s3proxy)"}


def _seed_targets(
    sd: dict[str, Any] | None, verdict: Callable[[bool | None], str]
) -> list[tuple[str, str, str]]:
    """The seeded replica's target rows: ready within 10 % of a full bootstrap's time."""
    rows: list[tuple[str, str, str]] = []
    age, tail, size = (
        (f"{sd['snapshot_age_target_s']:g} s", sd["tail_records"], _size(sd["records"]))
        if sd
        else ("1 min", 50_000, "5M")
    )
    for where, name in _WHERE.items():
        target = (
            f"replica seeded from a snapshot in {name} ({age} old, {tail:,} records since) "
            f"ready ≤ {SEED_TARGET:.0%} of a full bootstrap, {size} JSON (process start to ready)"
        )
        if not sd:
            rows.append((target, "– (not run)", verdict(None)))
            continue
        seeded, ratio = sd[f"seed_{where}_s"], sd[f"seed_{where}_ratio"]
        aged = sd["replicas"][where]["snapshot_age_s"]
        # Judged at 5M only: on a small topic, start-up alone is a large part of a bootstrap.
        judged = sd["records"] >= SEED_JUDGED_RECORDS
        rows.append(
            (
                target,
                f"{_f(seeded, 2)} s = {ratio:.1%} of {_f(sd['bootstrap_s'], 2)} s "
                f"(snapshot {_f(aged)} s old, {sd['tail_records']:,} records since)"
                + ("" if judged else "; the target is for 5M records"),
                verdict(ratio <= SEED_TARGET if judged else None),
            )
        )
    return rows


# -- markdown -----------------------------------------------------------------------------


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _commit(git: dict[str, Any] | None) -> str:
    if not git or not git.get("commit"):
        return "Code: commit not recorded."
    text = f"Code: commit `{git['commit'][:12]}` ({git.get('subject') or '–'})"
    if git.get("dirty"):
        return text + f", with uncommitted changes in {', '.join(git['dirty'])}."
    return text + ", no uncommitted changes."


_SHORT = {
    "raw": "raw 1 proc",
    "raw_2": "raw 2 procs",
    "statestore_1": "1 worker",
    "statestore_2": "2 workers",
    "statestore_index": "+ index",
    "ktables": "ktables",
    "kstreams": "kstreams",
}


def _bootstrap_summary(results: dict[str, Any]) -> list[str]:
    """One row per topic: every system's records/s and statestore's ratios to raw."""
    rows = []
    for e in results["bootstrap"]:
        m = e.get(MAIN) or {}
        rows.append(
            [
                e["topic"],
                *(_f(_rate(e, key)) for key, _ in SYSTEMS),
                str(_ratio(_rate(e, MAIN), _rate(e, "raw")) or "–"),
                str(_ratio(_rate(e, MAIN), _rate(e, "raw_2")) or "–"),
                _f(m.get("wall_s"), 2),
                _f(m.get("peak_rss_mb")),
            ]
        )
    if not rows:
        return []
    return [
        "Records/s of each system (statestore: 1 or 2 worker processes); the ratios are "
        "statestore with 2 workers over raw with 1 and with 2 consumer processes. Details, "
        "per topic, below.",
        "",
        _table(
            [
                "topic",
                *(_SHORT[key] for key, _ in SYSTEMS),
                "2 workers ÷ raw 1 proc",
                "2 workers ÷ raw 2 procs",
                "2 workers: wall s",
                "2 workers: peak RSS MB",
            ],
            rows,
        ),
        "",
    ]


def _processes(key: str, r: dict[str, Any]) -> str:
    if key.startswith("statestore"):
        n = r.get("processes")
        m = r.get("merge_processes")
        return f"{n or '?'} + {m} merge" if m else str(n or "?")
    return str(r.get("processes", 1))


def _bootstrap_topic(results: dict[str, Any], e: dict[str, Any]) -> list[str]:
    """The detail of one topic: every system's rate, times, memory and CPU, statestore's phases."""
    t = results["topics"].get(e["topic"], {})
    raw = e.get("raw") or {}
    raw2 = e.get("raw_2") or {}
    rows = []
    for key, name in [*SYSTEMS, LEGACY]:
        r = e.get(key)
        if not r:
            continue
        mbps = (
            r["records_per_s"] * raw["bytes"] / raw["records"] / 1e6
            if raw.get("bytes") and r.get("records_per_s")
            else None
        )
        rows.append(
            [
                _label(key, name, r),
                _processes(key, r),
                _f(r["records_per_s"]),
                _f(mbps, 1) if mbps else "–",
                _f(r["seconds"], 2),
                _f(r.get("wall_s"), 2),
                _f(r["peak_rss_mb"]),
                _f(r.get("cpu_us_per_record"), 2),
                _f(r.get("broker_cpu_us_per_record"), 2),
                str(_ratio(r["records_per_s"], raw.get("records_per_s")) or "–"),
                str(_ratio(r["records_per_s"], raw2.get("records_per_s")) or "–"),
                str(r.get("noise", {}).get("loop_ns", "–")),
            ]
        )
    out = [
        f"**{e['topic']}**: {e['records']:,} records, {t.get('keys', 0):,} keys "
        f"({t.get('live_keys', 0):,} live), {t.get('partitions', '?')} partitions, "
        f"{e['value'].upper()} values of ~{t.get('value_bytes_avg', '?')} bytes",
        "",
        _table(
            [
                "system",
                "processes",
                "records/s",
                "MB/s",
                "seconds",
                "wall s",
                "peak RSS MB (all processes)",
                "CPU µs/record (all processes)",
                "broker CPU µs/record",
                "× raw 1 proc",
                "× raw 2 procs",
                "loop ns",
            ],
            rows,
        ),
        "",
    ]
    spans = [
        f"{n} {'process' if n == 1 else 'processes'} {_f(r.get('consume_records_per_s'))} records/s"
        for n, r in ((1, raw), (2, raw2))
        if r.get("consume_records_per_s")
    ]
    if spans:
        out += [f"Raw consume span only (first assign → last done): {', '.join(spans)}.", ""]
    phase_rows = []
    for key in ("statestore_1", "statestore_2", "statestore_index"):
        r = e.get(key)
        ph = (r or {}).get("phases")
        if not r or not ph:
            continue
        phase_rows.append(
            [
                _label(key, _SHORT[key], r),
                _f(ph.get("startup_s"), 2),
                _f(ph.get("read_s"), 2),
                _f(ph.get("read_cpu_us_per_record"), 2),
                _f(ph.get("merge_s"), 2),
                str(r.get("merge_processes") or "–"),
                _f(ph.get("merge_cpu_us_per_record"), 2),
                _f(ph.get("close_s"), 2),
                _f(r.get("disk_write_mb")),
            ]
        )
    if phase_rows:
        out += [
            "statestore's phases (from the times its log lines arrived; CPU of all processes, "
            "sampled every 50 ms):",
            "",
            _table(
                [
                    "statestore",
                    "start-up s",
                    "read s",
                    "read CPU µs/record",
                    "merge s",
                    "merge processes",
                    "merge CPU µs/record",
                    "close s",
                    "disk MB written",
                ],
                phase_rows,
            ),
            "",
        ]
    return out


def _rebuild(rb: dict[str, Any] | None) -> list[str]:
    """The rebuild-while-serving section."""
    if not rb:
        return []
    load = rb["load"]

    def row(name: str, w: dict[str, Any]) -> list[str]:
        return [
            name,
            _f(w["seconds"], 2),
            _f(w["served"]),
            _f(w["served_per_s"]),
            *_texts(
                w,
                "p50_ms",
                "p99_ms",
                "max_ms",
                "p99_from_schedule_ms",
                "status_5xx",
                "connection_errors",
            ),
        ]

    return [
        "### Rebuild while serving reads",
        "",
        f"`statestore serve` on the view of **{rb['topic']}**, under a steady load of "
        f"{load['rate']:g} GETs/s of live keys over {load['connections']} keep-alive connections "
        "(`bench/readload.py`, its own process); `POST /views/bench/rebuild`, then "
        "`GET /views/bench` polled every 50 ms until the new generation is `ready`. Seconds: "
        "from the POST to the new copy seen ready; the server's own `bootstrap.done` seconds "
        "beside it. Server CPU and RSS: all its processes (the rebuild's workers included), "
        "reads included. The server logs an access line per request (its default).",
        "",
        _table(
            [
                "records",
                "seconds",
                "records/s",
                "server's seconds",
                "worker processes",
                "server CPU µs/record",
                "server peak RSS MB (all processes)",
                "server RSS MB before",
            ],
            [
                [
                    _f(rb["records"]),
                    _f(rb["seconds"], 2),
                    _f(rb["records_per_s"]),
                    _f(rb.get("logged_seconds"), 2),
                    str(rb.get("processes") or "–"),
                    _f(rb.get("server_cpu_us_per_record"), 2),
                    _f(rb.get("server_peak_rss_mb")),
                    _f(rb.get("server_rss_before_mb")),
                ]
            ],
        ),
        "",
        _table(
            [
                "reads",
                "seconds",
                "served",
                "per s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "p99 ms from the schedule",
                "5xx",
                "connection errors",
            ],
            [
                row("before the rebuild", rb["before"]),
                row("**during the rebuild**", rb["during"]),
                row("after the swap", rb["after"]),
            ],
        ),
        "",
        'Latency from sending the request to the last byte of the answer; "from the '
        'schedule" counts from when the fixed-rate schedule meant to send it, so a client '
        "held up by slow answers shows there too.",
        "",
    ]


def _seed(results: dict[str, Any]) -> list[str]:
    """The seeding section: the full bootstrap, the snapshots, the seeded replicas."""
    sd = results.get("seed")
    if not sd:
        return []
    boot = sd["bootstrap"]
    mb = sd["snapshot_bytes"] / 1e6
    # The bootstrap phase's run of the same records (another topic), when this run has one.
    same = (_entry(results, "json", sd["records"]) or {}).get(MAIN) or {}
    steps = [
        [
            f"full bootstrap of a fresh store (`statestore bootstrap`, {sd['workers']} workers)",
            _f(sd["bootstrap_s"], 2),
            f"{_f(sd['bootstrap_records_per_s'])} records/s from process start "
            f"({_f(boot.get('records_per_s'))}/s in its own bootstrap.done seconds)"
            + (
                f"; the bootstrap phase's run of the same records: {_f(same['wall_s'], 2)} s"
                if same.get("wall_s")
                else ""
            ),
        ],
        *(
            [
                f"`statestore snapshot create` → {_WHERE[w]}",
                _f(sd["snapshots"][w]["seconds"], 2),
                f"{mb:,.1f} MB archive ({_f(sd['snapshots'][w].get('logged_s'), 2)} s in the "
                "command's own figure)",
            ]
            for w in _WHERE
        ),
    ]
    replicas = [
        [
            f"seeded from {_WHERE[w]}",
            f"**{_f(r['wall_s'], 2)}**",
            f"{sd[f'seed_{w}_ratio']:.1%}",
            _f(r["snapshot_age_s"]),
            _f(r.get("startup_s"), 2),
            _f(r.get("restore_logged_s"), 2),
            _f(r.get("open_s"), 2),
            _f(r.get("connect_s"), 2),
            _f(r.get("catch_up_s"), 2),
            _f(r.get("close_s"), 2),
            _f(r.get("peak_rss_mb")),
        ]
        for w, r in sd["replicas"].items()
    ]
    return [
        "### Seeding a replica from a snapshot",
        "",
        f"On **{sd['topic']}** ({sd['records']:,} records, {sd['live_keys']:,} live keys: the "
        "same generator as the bootstrap topics, on a topic of its own because the "
        "measurement writes to it). A fresh store is bootstrapped; a snapshot of it is taken "
        "to a directory and to S3; "
        f"{sd['tail_records']:,} records are produced (a new value for as many keys, some of "
        "them deleted in the topic; 1 in 50 a tombstone); once a snapshot is the age below, a fresh store whose config says "
        "`[store] seed = ` its directory or `s3://` prefix is brought up with `statestore "
        "bootstrap`: restore (read, SHA-256 check, write and fsync, open), then catch-up of "
        "the tail. Seconds are the command's wall time, from process start to exit. Each "
        "replica's keys, records and positions were checked equal to the source store's "
        f"(caught up too): {sd['keys_after_tail']:,} keys. The archive had just been written, "
        "so it was read from the page cache.",
        "",
        _table(["step", "seconds", "notes"], steps),
        "",
        _table(
            [
                "new replica",
                "process start → ready s",
                "÷ full bootstrap",
                "snapshot age s",
                "start-up s",
                "restore s",
                "open s",
                "connect s",
                f"catch-up s ({sd['tail_records']:,} records)",
                "close s",
                "peak RSS MB",
            ],
            replicas,
        ),
        "",
        "Start-up: interpreter, imports and config, up to the restore; restore: its own "
        "`snapshot.restored ... seconds=`; open: to the view's `bootstrapping` state; "
        "connect: to `bootstrap.start` (Kafka client, end offsets); close: after "
        "`bootstrap.done` to exit. From the times the log lines arrived.",
        "",
    ]


def _cluster(c: dict[str, Any] | None) -> list[str]:
    """The partitioned cluster's section (the cluster phase's results): ready, held, REST
    with forwarding, failover."""
    if not c:
        return []
    one, many = c["replicated_rest"], c["cluster_rest"]
    rows = [
        [
            "process start → ready s",
            f"**{_f(c['replicated_ready_s'], 2)}**",
            f"**{_f(c['cluster_ready_s'], 2)}** (all {c['instances']} ready, every partition "
            "answered for)",
        ],
        [
            "keys held per instance",
            _f(c["replicated_keys"]),
            " / ".join(_f(k) for k in c["cluster_keys"]),
        ],
        [
            "CPU s to be ready per instance (workers included)",
            _f(c.get("replicated_cpu_s"), 1),
            " / ".join(_f(x, 1) for x in c.get("cluster_cpu_s", [])),
        ],
        [
            "store on disk per instance MB",
            _f(c["replicated_store_mb"], 1),
            " / ".join(_f(m, 1) for m in c["cluster_store_mb"]),
        ],
        [
            "partitions owned",
            str(c["partitions"]),
            " / ".join(str(n) for n in c["owned_partitions"]),
        ],
        [
            f"REST GET, {one['clients']} clients, req/s (p50 / p99 ms)",
            f"{_f(one['req_per_s'])} ({_f(one['p50_ms'], 2)} / {_f(one['p99_ms'], 2)})",
            f"{_f(many['req_per_s'])} ({_f(many['p50_ms'], 2)} / {_f(many['p99_ms'], 2)}) on one "
            f"instance, {c['forwarded_share']:.0%} of the keys forwarded",
        ],
        [
            "kill -9 of one instance → every sampled key answered again s",
            "—",
            f"**{_f(c['failover_s'], 2)}** (session timeout {c['session_timeout_ms']} ms; "
            f"answers meanwhile: {c['failover_answers']})",
        ],
    ]
    return [
        "### A partitioned cluster",
        "",
        f"On **{c['topic']}** ({c['records']:,} records, {c['keys']:,} keys, "
        f"{c['partitions']} partitions): one replicated `statestore serve` on a fresh store, "
        f"then {c['instances']} `statestore serve` processes of one partitioned cluster "
        '(`[cluster] mode = "partitioned"`, docs/cluster.md) started together on fresh '
        "stores, all on this machine: they share its cores and disk with each other and the "
        "broker, so the cluster cannot be ready sooner here than one instance; the CPU "
        "seconds each spent are what a machine of its own would have to give. The "
        "cluster's ready time includes joining the group and `settle_ms` (2 s). REST: "
        "the lookups phase's GET script (random live keys) with wrk. Failover: a sample of "
        "600 live keys asked of a survivor, from the kill until all answer 200 (a 503 while "
        "a partition moves is counted, never a 404).",
        "",
        _table(["", "replicated (1 instance)", f"partitioned ({c['instances']} instances)"], rows),
        "",
    ]


def markdown(results: dict[str, Any], images: dict[str, str]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    parts = [
        f"Run: **{meta['mode']}**, {m['date']}, {meta.get('seconds', '?')} s in all. "
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}; "
        f"Python {m['python']}, confluent-kafka {m['confluent_kafka']} (librdkafka {m['librdkafka']}), "
        f"rocksdict {m['rocksdict']}, uvicorn {m['uvicorn']} (httptools: {m['httptools'] or 'not installed'}, "
        f"uvloop: {m['uvloop'] or 'not installed'}), ktables {m['ktables']} (aiokafka {m['aiokafka']}), "
        f"Kafka Streams {m['kafka_streams']} on {m['java']}. Broker: the local single-node Kafka "
        "on the same machine.",
        "",
        _commit(meta.get("git")),
        "",
        f"Load from other work at the start: load average {meta['noise_start']['load1']}, "
        f"calibration loop {meta['noise_start']['loop_ns']} ns/iteration (about 30–40 on an idle core); "
        "each measurement below records its own (see the JSON).",
        "",
        "### Targets",
        "",
        _table(["target", "measured", "met"], [list(r) for r in targets(results)]),
        "",
        "### Bootstrap",
        "",
    ]
    parts += _bootstrap_summary(results)
    for e in results["bootstrap"]:
        parts += _bootstrap_topic(results, e)
    if "bootstrap" in images:
        parts += [f"![bootstrap rates]({images['bootstrap']})", ""]
    costs = results.get("costs")
    if costs:
        names = {
            "json_check": "JSON check (`orjson.loads` of a ~200-byte value)",
            "key_check": "key check (UTF-8)",
            "header_pack": "stored-record header + value bytes",
            "get_per_key": "read of the stored record (a get per distinct key; the follow path only)",
            "put_and_write": "WriteBatch put + write, entity family (the follow path, record by record)",
            "stage_sst": "a bulk-load worker's staging: staging key + record, sort, sorted SST file write",
        }
        parts += [
            "Per-record costs of the apply steps, each timed alone (`python -m bench.costs`, "
            f"loop {costs.get('noise', {}).get('loop_ns', '?')} ns at the time):",
            "",
            _table(
                ["step", "µs per record"],
                [[names.get(k, k), str(v)] for k, v in costs.items() if k in names],
            ),
            "",
        ]

    lk = results.get("lookups") or {}
    if lk:
        emb = lk.get("embedded") or {}
        parts += [
            "### Lookups",
            "",
            f"On the view of **{lk['topic']}** ({lk['keys']:,} keys), random keys that hold an entity.",
            "",
            _table(
                ["embedded (one process, store opened read-only)", "per second", "time per call"],
                [
                    ["`get` → decoded entity", _f(emb.get("get_per_s")), f"{emb.get('get_us')} µs"],
                    [
                        "`lookup` of 100 keys",
                        f"{_f(emb.get('lookup100_calls_per_s'))} calls ({_f(emb.get('lookup100_keys_per_s'))} keys)",
                        f"{emb.get('lookup100_ms')} ms",
                    ],
                ],
            ),
            "",
        ]
        if lk.get("rest"):
            rows = [
                [
                    r["route"],
                    str(r["workers"]),
                    r.get("http", "h11 + asyncio"),
                    str(r["clients"]),
                    _f(r["req_per_s"]),
                    *_texts(r, "p50_ms", "p90_ms", "p99_ms", "non_2xx"),
                    str(r.get("noise", {}).get("loop_ns", "–")),
                ]
                for r in lk["rest"]
            ]
            if any("server" in r for r in lk["rest"]):
                how = (
                    "Processes = serving processes of `statestore serve --workers N` (the "
                    "product as an operator runs it, `--log-level warning`): with 1, the "
                    "process that owns the store and follows the topic serves; with 2, that "
                    "process ingests and 2 worker processes serve, each on its own "
                    "SO_REUSEPORT socket and from a RocksDB secondary copy of the store that "
                    "catches up when the ingesting process reports new positions (checked "
                    "every 20 ms). "
                    "HTTP stack: what uvicorn runs on; the project depends on httptools and "
                    "uvloop, so `statestore serve` runs on them (the h11 + asyncio row is the "
                    "same app in one process, `bench/serve.py`, for comparison)."
                )
            else:  # results from before `serve --workers`
                how = (
                    "One process = `statestore serve` (owns the store and follows the topic); "
                    "2 and 3 processes = uvicorn workers sharing the socket, each with the store "
                    "opened read-only. HTTP stack: what uvicorn runs on; the project depends on "
                    "httptools and uvloop, so `statestore serve` runs on them (the h11 + asyncio "
                    "row is for comparison)."
                )
            parts += [
                "REST (uvicorn + the product's app; load from wrk in its own process, "
                f"{lk['rest'][0]['seconds']:g} s per row). " + how,
                "",
                _table(
                    [
                        "route",
                        "processes",
                        "HTTP stack",
                        "clients",
                        "req/s",
                        "p50 ms",
                        "p90 ms",
                        "p99 ms",
                        "non-2xx",
                        "loop ns",
                    ],
                    rows,
                ),
                "",
            ]
    parts += _rebuild(results.get("rebuild"))
    fr = results.get("freshness")
    if fr:
        p, prod = fr["primary"], fr["producer"]
        ws = fr.get("with_secondary") or {}
        s = ws.get("secondary") or {}
        cu = s.get("catch_up_ms", {})

        def lat(name: str, r: dict[str, Any]) -> list[str]:
            return [
                name,
                _f(r.get("count")),
                str(r.get("p50_ms")),
                str(r.get("p90_ms")),
                str(r.get("p99_ms")),
                str(r.get("p999_ms")),
                str(r.get("max_ms")),
            ]

        rows = [lat(f"the following store (embedded / `serve`), {prod['seconds']:.0f} s run", p)]
        if p.get("from_broker_append"):
            rows.append(
                lat(
                    "… of which broker append → readable (the view's part)", p["from_broker_append"]
                )
            )
        if ws:
            rows.append(
                lat(
                    f"the following store, {ws['producer']['seconds']:.0f} s run beside a secondary",
                    ws["primary"],
                )
            )
            rows.append(
                lat(
                    f"a RocksDB secondary instance catching up every {s.get('interval_ms', 0):g} ms",
                    s,
                )
            )
        parts += [
            "### Freshness",
            "",
            f"Producer: {prod['sent']:,} records in {prod['seconds']} s ({prod['rate']:,}/s), "
            "linger.ms 5, acks 1, 12 partitions. Latency = the moment the record is readable "
            "minus the moment `produce()` was called (same clock); the second row starts the "
            "clock when the broker appended the record (the topic uses LogAppendTime), which "
            "leaves out the producer's batching and its wait for the broker.",
            "",
            _table(["reader", "records", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"], rows),
            "",
            f"The follower applied {p.get('batches', 0):,} batches of {p.get('records_per_batch_avg')} "
            "records on average. "
            + (
                f"A `try_catch_up_with_primary()` call took p50 {cu.get('p50_ms')} ms, "
                f"p99 {cu.get('p99_ms')} ms (max {cu.get('max_ms')} ms)."
                if cu
                else ""
            ),
            "",
        ]
    scale = [e for e in results["bootstrap"] if e["value"] == "json" and e.get(MAIN)]
    if scale:
        rows = [
            [
                f"{e['records']:,}",
                _f((e.get("statestore_1") or {}).get("records_per_s")),
                _f(e[MAIN]["records_per_s"]),
                _f(e[MAIN]["seconds"], 2),
                _f(e[MAIN]["wall_s"], 2),
                _f(e[MAIN].get("cpu_us_per_record"), 2),
                _f(e[MAIN]["peak_rss_mb"]),
                _f((e.get("statestore_index") or {}).get("records_per_s")),
                _f((e.get("statestore_index") or {}).get("peak_rss_mb")),
            ]
            for e in scale
        ]
        parts += [
            "### Scale (statestore bootstrap, JSON)",
            "",
            _table(
                [
                    "records",
                    "1 worker: records/s",
                    "2 workers: records/s",
                    "seconds",
                    "wall s",
                    "CPU µs/record",
                    "peak RSS MB (all processes)",
                    "with index: records/s",
                    "with index: peak RSS MB",
                ],
                rows,
            ),
            "",
        ]
        if "scale" in images:
            parts += [f"![bootstrap scale]({images['scale']})", ""]
        if "rss" in images:
            parts += [f"![RSS during bootstrap]({images['rss']})", ""]
    parts += model.markdown(results)
    parts += _seed(results)
    parts += _cluster(results.get("cluster"))
    if results.get("errors"):
        parts += ["### Errors in this run", ""]
        parts += [f"- {e['step']}: `{e['error'][:300]}`" for e in results["errors"]]
        parts.append("")
    return "\n".join(parts)


# -- plots --------------------------------------------------------------------------------


def plots(results: dict[str, Any], outdir: Path, prefix: str) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots skipped: matplotlib is not installed")
        return {}
    images: dict[str, str] = {}

    def save(fig: Any, key: str) -> None:
        fig.tight_layout()
        name = f"{prefix}{key}.png"
        fig.savefig(outdir / name, dpi=110)
        plt.close(fig)
        images[key] = name

    m = results["meta"]["machine"]
    stamp = f"{m['cores']} cores, {m['date']}"
    entries = [e for e in results["bootstrap"] if e.get("raw")]
    if entries:
        fig, ax = plt.subplots(figsize=(10, 4.4))
        width = 0.12
        for i, (key, name) in enumerate(SYSTEMS):
            xs, ys = [], []
            for j, e in enumerate(entries):
                if e.get(key):
                    xs.append(j + (i - (len(SYSTEMS) - 1) / 2) * width)
                    ys.append(e[key]["records_per_s"] / 1000)
            if xs:
                bars = ax.bar(xs, ys, width, label=name)
                ax.bar_label(bars, fmt="%.0f", fontsize=6)
        ax.set_xticks(range(len(entries)), [e["topic"] for e in entries])
        ax.set_ylabel("thousand records / s")
        ax.set_title(f"Bootstrap rate, same topics ({stamp})", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "bootstrap")
    scale = [e for e in results["bootstrap"] if e["value"] == "json" and e.get(MAIN)]
    if len(scale) >= 2:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
        xs = [e["records"] / 1e6 for e in scale]
        a1.plot(xs, [e[MAIN]["cpu_us_per_record"] for e in scale], "o-")
        a1.set_xlabel("million records")
        a1.set_ylabel("CPU µs per record (flat = linear cost)")
        a1b = a1.twinx()
        a1b.plot(xs, [e[MAIN]["records_per_s"] / 1000 for e in scale], "s--", color="tab:orange")
        a1b.set_ylabel("thousand records / s", color="tab:orange")
        a1b.set_ylim(bottom=0)
        a1.set_ylim(bottom=0)
        a1.set_title("CPU per record (line) and rate (dashed)", fontsize=9)
        a2.plot(xs, [e[MAIN]["peak_rss_mb"] for e in scale], "o-", label="no index")
        idx = [e for e in scale if e.get("statestore_index")]
        if idx:
            a2.plot(
                [e["records"] / 1e6 for e in idx],
                [e["statestore_index"]["peak_rss_mb"] for e in idx],
                "s--",
                label="with index",
            )
        a2.axhline(400, color="grey", lw=0.8, ls=":")
        a2.set_ylim(bottom=0)
        a2.set_xlabel("million records")
        a2.set_ylabel("peak RSS MB, all processes")
        a2.legend(fontsize=8)
        fig.suptitle(f"statestore bootstrap, 2 workers, at scale ({stamp})", fontsize=10)
        save(fig, "scale")
    if scale and scale[-1][MAIN].get("rss_samples"):
        e = scale[-1]
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for key, label in (
            ("statestore_1", "1 worker"),
            (MAIN, "2 workers"),
            ("statestore_index", "2 workers, with index"),
        ):
            if e.get(key) and e[key].get("rss_samples"):
                ts, mb = zip(*e[key]["rss_samples"], strict=True)
                ax.plot(ts, mb, label=label)
        ax.axhline(400, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("seconds since the process started")
        ax.set_ylabel("RSS MB, all processes")
        ax.set_ylim(bottom=0)
        ax.set_title(f"RSS of `statestore bootstrap`, {e['topic']} ({stamp})", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "rss")
    return images


def render(results: dict[str, Any], *, docs: bool) -> Path:
    """Write the report: docs/benchmarks.md (+ plots) for *docs*, else bench/results/quick.md."""
    if docs:
        images = plots(results, DOCS, "benchmarks-")
        body = markdown(results, images)
        page = PAGE.read_text() if PAGE.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
        if START not in page or END not in page:
            page = page.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
        head, rest = page.split(START, 1)
        _, tail = rest.split(END, 1)
        PAGE.write_text(f"{head}{START}\n{body}\n{END}{tail}")
        log(f"wrote {PAGE.relative_to(ROOT)}")
        return PAGE
    RESULTS.mkdir(parents=True, exist_ok=True)
    images = plots(results, RESULTS, "quick-")
    out = RESULTS / "quick.md"
    out.write_text("# Benchmarks (quick run)\n\n" + markdown(results, images))
    log(f"wrote {out.relative_to(ROOT)}")
    return out
