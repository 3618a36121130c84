# ruff: noqa: RUF001, RUF002
"""How the bootstrap rate would scale with cores: a model built from measured figures.

Not a measurement. From the largest JSON topic's runs it takes the CPU per record of
the read phase of a 2-worker bootstrap (workers reading and staging, the owner
ingesting their files; the whole process tree), the merge's seconds with 1 and 2
merge processes (their difference gives the merge's serial share, Amdahl's way),
the broker's CPU per record, one raw consumer's rate and the disk bytes written per
record, and projects N workers on N cores:

- read phase: the least of N cores ÷ CPU per record (CPU-bound), N × one raw
  consumer's rate (fetch-bound) and N × one worker's measured read rate (each worker
  keeps waiting as much as it did here);
- merge: ``t1 × (serial + (1 − serial) / N)``, t1 the 1-process merge; when 2
  processes did not merge faster than 1 (process start-up outweighs the split), the
  2-process time for any N;
- plus the fixed parts measured (start-up, planning, close).

It also runs the model at this machine's core count with the broker's CPU on the
same cores, to compare with what was measured.
"""

from __future__ import annotations

from typing import Any

CORES = (8, 16)


def _pick(results: dict[str, Any]) -> dict[str, Any] | None:
    """The largest JSON topic with a 2-worker bootstrap (with its phases) and a raw run."""
    entries = [
        e
        for e in results.get("bootstrap", [])
        if e["value"] == "json"
        and (e.get("statestore_2") or {}).get("phases", {}).get("read_cpu_us_per_record")
        and e.get("raw")
    ]
    return max(entries, key=lambda e: e["records"]) if entries else None


def inputs(results: dict[str, Any]) -> dict[str, Any] | None:
    """The measured figures the model uses (None when a run lacks them)."""
    e = _pick(results)
    if e is None:
        return None
    s2, s1 = e["statestore_2"], e.get("statestore_1") or {}
    p2, p1 = s2["phases"], s1.get("phases") or {}
    raw, raw2 = e["raw"], e.get("raw_2") or {}
    n = e["records"]
    merge1 = p1.get("merge_s") if s1.get("merge_processes") == 1 else None
    merge2 = p2.get("merge_s")
    serial = None
    if merge1 and merge2 is not None and s2.get("merge_processes") == 2 and merge2 < merge1:
        serial = max(0.0, 2 * merge2 / merge1 - 1)
    read_s = p2.get("read_s") or 0.0
    workers = s2.get("processes") or 1
    return {
        "topic": e["topic"],
        "records": n,
        "workers": workers,
        "cpu_us": s2.get("cpu_us_per_record"),
        "read_us": p2["read_cpu_us_per_record"],
        "merge_us": p2.get("merge_cpu_us_per_record"),
        "broker_us": s2.get("broker_cpu_us_per_record"),
        "read_s": read_s,
        "read_rate": round(n / read_s) if read_s else None,
        "per_worker": round(n / read_s / workers) if read_s else None,
        "merge1_s": merge1,
        "merge2_s": merge2,
        "merge_serial": round(serial, 2) if serial is not None else None,
        # bootstrap.start → done, less the read and merge phases (planning, the final write).
        "other_s": max(0.0, s2["seconds"] - read_s - (merge2 or 0.0)),
        "startup_s": (p2.get("startup_s") or 0.0) + (p2.get("close_s") or 0.0),
        "one_consumer": raw.get("consume_records_per_s") or raw["records_per_s"],
        "raw_1": raw["records_per_s"],
        "raw_2": raw2.get("records_per_s"),
        "raw_us": raw2.get("cpu_us_per_record") or raw.get("cpu_us_per_record"),
        "record_bytes": raw["bytes"] / raw["records"] if raw.get("bytes") else None,
        "disk_bytes": s2["disk_write_mb"] * 1e6 / n if s2.get("disk_write_mb") else None,
        "measured_rate": s2["records_per_s"],
        "measured_wall": s2["wall_s"],
    }


def project(inp: dict[str, Any], cores: int, *, broker_here: bool = False) -> dict[str, Any]:
    """N = *cores* workers on *cores* cores; the broker's CPU on them too with *broker_here*."""
    n = inp["records"]
    per_record = inp["read_us"] + ((inp["broker_us"] or 0.0) if broker_here else 0.0)
    bounds = {
        "cpu": cores * 1e6 / per_record,
        "fetch": cores * inp["one_consumer"],
        "worker": cores * inp["per_worker"] if inp["per_worker"] else float("inf"),
    }
    limit = min(bounds, key=lambda k: bounds[k])
    read_rate = bounds[limit]
    if inp["merge_serial"] is not None and inp["merge1_s"]:
        s = inp["merge_serial"]
        merge_s = inp["merge1_s"] * (s + (1 - s) / cores)
    elif inp["merge2_s"] is not None:
        merge_s = inp["merge2_s"]  # splitting did not pay (or no 1-process merge): no gain
    else:
        merge_s = n * (inp["merge_us"] or 0.0) / 1e6 / cores
    seconds = n / read_rate + merge_s + inp["other_s"]
    rate = n / seconds
    return {
        "cores": cores,
        "cpu_rate": round(bounds["cpu"]),
        "fetch_cap": round(bounds["fetch"]),
        "worker_cap": round(bounds["worker"]) if inp["per_worker"] else None,
        "read_rate": round(read_rate),
        "read_limit": limit,
        "merge_s": round(merge_s, 2),
        "merge_share": round(merge_s / seconds, 2),
        "seconds": round(seconds, 2),
        "rate": round(rate),
        "wall_s": round(seconds + inp["startup_s"], 2),
        "network_mb_s": round(read_rate * inp["record_bytes"] / 1e6)
        if inp["record_bytes"]
        else None,
        "disk_mb_s": round(rate * inp["disk_bytes"] / 1e6) if inp["disk_bytes"] else None,
    }


def _f(x: Any) -> str:
    return "–" if x is None else f"{round(x):,}"


def _limit(p: dict[str, Any], inp: dict[str, Any]) -> str:
    first = {
        "fetch": f"the consumers' fetches (N × {inp['one_consumer']:,} records/s, one raw consumer)",
        "cpu": "the workers' CPU",
        "worker": f"each worker's rate as measured (N × {inp['per_worker']:,} records/s: "
        "its waits, for fetches or for the owner's ingest, stay)",
    }[p["read_limit"]]
    text = f"read phase: {first}"
    if p["merge_share"] >= 0.25:
        text += f"; the merge is {p['merge_share']:.0%} of the time"
    return text


def markdown(results: dict[str, Any]) -> list[str]:
    """The "How the rate scales with cores" section (empty without the figures)."""
    inp = inputs(results)
    if inp is None:
        return []
    cores_here = results["meta"]["machine"].get("cores") or 2
    here = project(inp, cores_here, broker_here=True)
    rows = []
    for c in CORES:
        away, near = project(inp, c), project(inp, c, broker_here=True)
        rows.append(
            [
                str(c),
                _f(away["cpu_rate"]),
                _f(away["fetch_cap"]),
                _f(away["worker_cap"]),
                f"{away['merge_s']:.2f}",
                _f(away["rate"]),
                _f(near["rate"]),
                f"{away['wall_s']:.1f}",
                _f(away["network_mb_s"]),
                _f(away["disk_mb_s"]),
                _limit(away, inp),
            ]
        )
    head = [
        "cores (= workers)",
        "read phase, CPU-bound rec/s",
        "read phase, fetch cap rec/s",
        "read phase, N × one worker rec/s",
        "merge s",
        "rec/s, broker elsewhere",
        "rec/s, broker on the same cores",
        "s from process start to ready",
        "network MB/s",
        "disk writes MB/s",
        "what limits it",
    ]
    serial = inp["merge_serial"]
    m1, m2 = inp["merge1_s"], inp["merge2_s"]
    if serial is not None:
        merge_line = (
            f"the merge took {m1:.2f} s with 1 process and {m2:.2f} s with 2: a serial share of "
            f"{serial:.0%} (the owner's single final ingest of the ranges' files and its one final "
            "write, the merge processes' start-up, and what did not split evenly), which bounds "
            f"the merge at {m1 * serial:.2f} s on any number of cores"
        )
    elif m1 is not None and m2 is not None:
        merge_line = (
            f"the merge took {m1:.2f} s with 1 process and {m2:.2f} s with 2: splitting it did "
            "not pay at this size (starting the merge processes cost more than it saved), so "
            f"the model keeps {m2:.2f} s for any number of cores"
        )
    else:
        merge_line = (
            "no 1-process merge was measured: the model keeps the 2-process merge time "
            f"({m2 or 0:.2f} s) for any number of cores"
        )
    out = [
        "### How the rate scales with cores (a model, not a measurement)",
        "",
        f"**This is a projection from the figures above, not a measurement.** Inputs, from the "
        f"2-worker bootstrap of **{inp['topic']}** ({inp['records']:,} records) and the raw runs:",
        "",
        f"- CPU per record of the whole process tree: {inp['cpu_us']} µs, of which the read phase "
        f"(the workers reading, checking and staging sorted SST files; the owner ingesting them) "
        f"{inp['read_us']} µs and the merge {inp['merge_us']} µs; the broker spent "
        f"{inp['broker_us']} µs per record serving the fetches;",
        f"- one raw consumer: {inp['one_consumer']:,} records/s (consume span); raw with 1 process "
        f"{_f(inp['raw_1'])}, with 2 processes {_f(inp['raw_2'])} records/s on this machine's "
        f"{cores_here} cores, broker included;",
        f"- {merge_line};",
        f"- fixed: {inp['other_s']:.2f} s of planning and final writes, {inp['startup_s']:.2f} s of "
        "process start-up and close;",
        f"- {inp['record_bytes']:.0f} bytes per record fetched, "
        + (
            f"{inp['disk_bytes']:.0f} bytes per record written to disk (staged files and the "
            "merged view, as the disk counted them)."
            if inp["disk_bytes"]
            else "disk writes not measured."
        ),
        "",
        f"Check on this machine ({cores_here} cores, broker on the same cores): CPU alone "
        f"would allow {_f(here['cpu_rate'])} records/s in the read phase; measured "
        f"{_f(inp['read_rate'])} records/s ({inp['workers']} worker processes) and "
        f"{_f(inp['measured_rate'])} records/s overall. "
        + (
            "The read phase was slower than its CPU allows: the workers also waited (for "
            "fetches, for the owner's ingest, for a core), which the third bound carries "
            "over to N workers."
            if inp["read_rate"] and inp["read_rate"] < 0.85 * here["cpu_rate"]
            else "The read phase was CPU-bound here, as the first bound assumes."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(" --- " for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "What would limit it there, none of which this machine can measure:",
        "",
        "- **The broker's fetch rate and the network per consumer.** The model lets each worker's "
        "consumer fetch as fast as one consumer did here, and the broker serve N of them at once; "
        f"here 2 consumers got {inp['raw_2'] / inp['raw_1']:.2f} × what one did. "
        "A broker on other machines also needs the network column's bandwidth to this one."
        if inp["raw_2"] and inp["raw_1"]
        else "- **The broker's fetch rate and the network per consumer** (not measured here).",
        "- **Disk write bandwidth for the SST files**: the staged files and the merged view are "
        "written once each; the disk column is what the projected rate needs on average.",
        "- **The merge's single final ingest**: the ranges' files are ingested and the positions "
        "and counters written by the owning process alone, after every range is merged.",
        "",
    ]
    return out
