"""``statestore status``: per view and partition, position, end offset, lag, keys and state.

The store is opened read-only, so status answers beside a running server. The
figures are the ones ``GET /views/{view}`` and ``/metrics`` report (positions,
keys, records, quarantined), with end offsets asked of Kafka now.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .. import Config, KafkaError, StateStore, StateStoreError, TopicMissingError, ViewStatus
from ._app import ConfigOption, handled, load
from ._signals import interrupts

__all__ = ["status"]

# Every command logs as "statestore.cli": stable names for log filters.
log = logging.getLogger("statestore.cli")

# Status must answer promptly when Kafka is down: it then shows the stored positions only.
STATUS_KAFKA_TIMEOUT_S = 5.0


def _view_report(store: StateStore, status: ViewStatus, kafka: dict[str, Any]) -> dict[str, Any]:
    view = store.view(status.name)
    positions = {p.partition: p.position for p in status.partitions}
    marks: dict[int, tuple[int, int]] | None = None
    problem: str | None = None
    if kafka["reachable"] is not False:
        try:
            client = store.client
            parts = client.partitions(status.topic, timeout=STATUS_KAFKA_TIMEOUT_S)
            marks = {
                p: client.watermarks(status.topic, p, timeout=STATUS_KAFKA_TIMEOUT_S) for p in parts
            }
            kafka["reachable"] = True
        except TopicMissingError as exc:
            kafka["reachable"] = True
            problem = str(exc)
        except KafkaError as exc:
            kafka["reachable"] = False
            kafka["error"] = str(exc)
    partitions = []
    stale: list[str] = []
    for p in sorted(set(positions) | set(marks or ())):
        pos = positions.get(p, 0)
        low, end = marks[p] if marks is not None and p in marks else (None, None)
        if low is not None and 0 < pos < low:
            stale.append(f"partition {p}: position {pos} is below the log start {low}")
        if end is not None and pos > end:
            stale.append(f"partition {p}: position {pos} is past the end {end} (topic recreated?)")
        partitions.append(
            {
                "partition": p,
                "position": pos,
                "end_offset": end,
                "log_start": low,
                "lag": None if end is None else max(0, end - pos),
            }
        )
    lags = [item["lag"] for item in partitions]
    lag = sum(x for x in lags if x is not None) if marks is not None and None not in lags else None
    changed = view.prepare()
    state, reason = "ready", None
    if changed is not None:
        state, reason = "stale", f"{changed}; run `statestore rebuild --view {status.name}`"
    elif problem is not None:
        state, reason = "failed", problem
    elif stale:
        state, reason = (
            "stale",
            "; ".join(stale) + f"; run `statestore rebuild --view {status.name}`",
        )
    elif not positions:
        state, reason = "empty", "never bootstrapped; run `statestore bootstrap`"
    elif lag is None:
        state, reason = "unknown", "end offsets unknown (Kafka unreachable)"
    elif lag > 0:
        state = "behind"
    return {
        "name": status.name,
        "topic": status.topic,
        "state": state,
        "reason": reason,
        "keys": status.keys,
        "records_applied": status.records_applied,
        "bytes_applied": status.bytes_applied,
        "quarantined": status.quarantined,
        "misplaced": None if status.partitioning is None else status.partitioning.misplaced,
        "lag": lag,
        "generation": status.generation,
        "last_applied_at_ms": status.last_applied_at_ms,
        "partitions": partitions,
    }


def _status_report(store: StateStore) -> dict[str, Any]:
    servers = store.config.kafka.get("bootstrap.servers")
    kafka: dict[str, Any] = {"bootstrap_servers": servers, "reachable": None, "error": None}
    views = [_view_report(store, s, kafka) for s in store.status()]
    snap = store.snapshots.status
    last = None
    if snap.last_name is not None:
        last = {
            "name": snap.last_name,
            "url": snap.last_url,
            "at": snap.last_at,
            "seconds": snap.last_seconds,
            "size": snap.last_size,
        }
    report: dict[str, Any] = {
        "store": str(store.config.store.path),
        "kafka": kafka,
        "views": views,
        "snapshot": last,
    }
    cluster = store.config.cluster
    if cluster.partitioned and cluster.name is not None:
        members = None
        if kafka["reachable"] is not False:
            members = store.cluster_members(STATUS_KAFKA_TIMEOUT_S)
        report["cluster"] = {"name": cluster.name, "mode": cluster.mode, "members": members}
    return report


def _report(cfg: Config) -> dict[str, Any]:
    with StateStore(cfg, read_only=True) as store:
        return _status_report(store)


def _num(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _render(report: dict[str, Any]) -> tuple[Table, list[str]]:
    table = Table(title=f"statestore at {report['store']}", title_justify="left")
    table.add_column("view")
    table.add_column("topic")
    for name in ("partition", "position", "end offset", "lag", "keys"):
        table.add_column(name, justify="right")
    table.add_column("state")
    notes: list[str] = []
    for v in report["views"]:
        style = {"ready": "green", "behind": "yellow", "failed": "red", "stale": "red"}.get(
            v["state"], ""
        )
        state = f"[{style}]{v['state']}[/]" if style else v["state"]
        table.add_row(v["name"], v["topic"], "", "", "", _num(v["lag"]), _num(v["keys"]), state)
        for p in v["partitions"]:
            table.add_row(
                "",
                "",
                str(p["partition"]),
                _num(p["position"]),
                _num(p["end_offset"]),
                _num(p["lag"]),
            )
        if v["reason"]:
            notes.append(f"{v['name']}: {v['reason']}")
        if v["misplaced"]:
            notes.append(
                f"{v['name']}: {v['misplaced']:,} record(s) in another partition than its "
                "partitioner gives their key"
            )
    cluster = report.get("cluster")
    if cluster is not None:
        if cluster["members"] is None:
            notes.append(f"cluster {cluster['name']}: members unknown (Kafka unreachable)")
        for m in cluster["members"] or []:
            owned = "; ".join(
                f"{t} {','.join(map(str, ps)) or '-'}" for t, ps in m["owned"].items()
            )
            notes.append(
                f"cluster {cluster['name']}: {m['member']} at {m['url']} owns {owned or 'nothing'}"
                f" (heard {m['last_seen_s']} s ago)"
            )
    last = report.get("snapshot")
    if last is not None:
        at = dt.datetime.fromtimestamp(last["at"], dt.UTC).isoformat(timespec="seconds")
        notes.append(f"last snapshot: {last['url']} at {at.replace('+00:00', 'Z')}")
    kafka = report["kafka"]
    if kafka["reachable"] is False:
        notes.insert(
            0,
            f"end offsets unknown: Kafka at {kafka['bootstrap_servers']} is unreachable ({kafka['error']})",
        )
    return table, notes


def _print_status(report: dict[str, Any]) -> None:
    table, notes = _render(report)
    # Piped or redirected, rich would squeeze the table into 80 columns.
    Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(table)
    for note in notes:
        typer.echo(note)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _line(at: str, v: dict[str, Any]) -> str:
    """One view's figures as one log-friendly line (``--watch`` without a terminal)."""
    fields = [
        f"view={v['name']}",
        f"state={v['state']}",
        f"lag={_num(v['lag']).replace(',', '')}",
        f"keys={v['keys']}",
        f"records={v['records_applied']}",
        f"quarantined={v['quarantined']}",
    ]
    if v["misplaced"] is not None:
        fields.append(f"misplaced={v['misplaced']}")
    if v["reason"]:
        fields.append(f"reason={json.dumps(v['reason'])}")
    return f"{at} " + " ".join(fields)


def _watch(cfg: Config, as_json: bool, interval: float) -> None:
    """Refresh every *interval* seconds until interrupted (Ctrl-C or SIGTERM: exit 0)."""
    tty = sys.stdout.isatty() and not as_json

    def tick() -> dict[str, Any] | str:
        try:
            return _report(cfg)
        except StateStoreError as exc:
            # The server may be compacting or swapping right then: try again next time.
            return f"error: {exc}"

    with interrupts():
        try:
            if tty:
                console = Console(highlight=False)
                with Live(console=console, auto_refresh=False, transient=False) as live:
                    while True:
                        got = tick()
                        if isinstance(got, str):
                            live.update(Text(got, style="red"), refresh=True)
                        else:
                            table, notes = _render(got)
                            footer = Text("\n".join([*notes, f"{_now()} (Ctrl-C to stop)"]))
                            live.update(Group(table, footer), refresh=True)
                        time.sleep(interval)
            while True:
                got = tick()
                at = _now()
                if isinstance(got, str):
                    typer.echo(f"{at} {got}", err=True)
                elif as_json:
                    typer.echo(json.dumps({"time": at, **got}, separators=(",", ":")))
                else:
                    for v in got["views"]:
                        typer.echo(_line(at, v))
                sys.stdout.flush()
                time.sleep(interval)
        except KeyboardInterrupt:
            return


@handled
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Refresh until Ctrl-C: a live table on a terminal; otherwise a line per view "
            "(with --json, a JSON object per line) each time.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, metavar="SECONDS", help="Seconds between refreshes.")
    ] = 2.0,
    config: ConfigOption = None,
) -> None:
    """Per view and partition: position, end offset, lag, keys and state (works beside a server)."""
    cfg = load(ctx, config)
    if "log_level" not in cfg.kafka and not log.isEnabledFor(logging.DEBUG):
        # An unreachable cluster is reported once in the output; librdkafka would repeat
        # every failed connection attempt on stderr.
        cfg = cfg.model_copy(update={"kafka": {**cfg.kafka, "log_level": 2}})
    if watch:
        _watch(cfg, as_json, interval)
        return
    report = _report(cfg)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
