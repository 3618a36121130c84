"""Helpers of the reliability tests alone: generated entity records, the view read back
and its comparison with the reduction of its log (tests/support/oracle.py, which reads the
topic with a plain consumer and no statestore code). Topics, producers, configs and
`statestore` processes are in tests/support.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from run_mode import Figures

from statestore import StateStore, load_config
from tests.support.config import write_config
from tests.support.oracle import LogRecord, read_log, reduce_log
from tests.support.processes import run

# (key, value); value None is a tombstone.
Rec = tuple[bytes | None, bytes | None]


def entity_records(
    rng: random.Random, n: int, *, keys: int, start: int = 0, tombstones: float = 0.1
) -> Iterator[Rec]:
    """*n* JSON records over *keys* keys, ``tombstones`` of them deletes; values carry a seq."""
    for i in range(start, start + n):
        key = f"k-{rng.randrange(keys):06d}".encode()
        if rng.random() < tombstones:
            yield key, None
        else:
            yield key, orjson.dumps({"seq": i, "pad": "x" * rng.randrange(10, 120)})


def entity_view(directory: Path, view: str, topic: str, bootstrap: str, **options: Any) -> Path:
    """The config of one view of *topic*'s entity records, indexed on ``pad`` (the field
    ``index_differences`` checks); *options* go to ``write_config``."""
    return write_config(
        directory,
        [{"name": view, "topic": topic, "indexes": ["pad"]}],
        bootstrap=bootstrap,
        **options,
    )


# -- the view and the comparison -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEntity:
    partition: int
    offset: int
    value: Any


def read_view(config_path: Path, view: str) -> tuple[dict[bytes, StoredEntity], Any]:
    """Every entity of *view* through the embedded API, read-only, and the view's status."""
    with StateStore(load_config(config_path), read_only=True) as store:
        v = store.view(view)
        entities = {
            v.key_codec.from_text(e.key): StoredEntity(e.partition, e.offset, e.value)
            for e in v.iter_entities()
        }
        return entities, v.status()


def index_differences(config_path: Path, view: str, field: str) -> list[str]:
    """Values of an indexed *field* whose index lookup differs from a scan of the view."""
    with StateStore(load_config(config_path), read_only=True) as store:
        by_value: dict[Any, set[str]] = {}
        for e in store.view(view).iter_entities():
            if isinstance(e.value, dict) and field in e.value:
                by_value.setdefault(e.value[field], set()).add(e.key)
        diffs = []
        for value, keys in sorted(by_value.items(), key=lambda kv: repr(kv[0])):
            hits = {e.key for e in store.by(view, field, value, limit=1_000_000).items}
            if hits != keys:
                diffs.append(f"{field}={value!r}: index {len(hits)} keys, view {len(keys)}")
        return diffs


def differences(
    view: dict[bytes, StoredEntity],
    expected: dict[bytes, LogRecord],
    decode: Callable[[bytes], Any] = orjson.loads,
    limit: int = 20,
) -> list[str]:
    """Key-by-key differences between a view and the reduction of its log (empty: equal)."""
    diffs: list[str] = []
    for key in sorted(set(view) | set(expected)):
        got, want = view.get(key), expected.get(key)
        if got is None:
            diffs.append(f"{key!r}: missing (log has offset {want.partition}:{want.offset})")  # type: ignore[union-attr]
        elif want is None:
            diffs.append(f"{key!r}: in the view ({got.partition}:{got.offset}) but not in the log")
        elif (got.partition, got.offset) != (want.partition, want.offset):
            diffs.append(
                f"{key!r}: view has {got.partition}:{got.offset}, log {want.partition}:{want.offset}"
            )
        elif want.value is not None and got.value != decode(want.value):
            diffs.append(f"{key!r}: value differs at {got.partition}:{got.offset}")
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


class Comparison(NamedTuple):
    """A view compared with the reduction of its topic's log."""

    log: list[LogRecord]
    expected: dict[bytes, LogRecord]
    diffs: list[str]  # key by key (empty: equal)
    status: Any  # the view's status


def compare_with_log(config_path: Path, view: str, topic: str, bootstrap: str) -> Comparison:
    """Read *topic* with the oracle's plain consumer, reduce it and compare *view* with it."""
    log = read_log(topic, bootstrap)
    expected = reduce_log(log)
    entities, status = read_view(config_path, view)
    return Comparison(log, expected, differences(entities, expected), status)


def check_against_log(
    config_path: Path,
    view: str,
    topic: str,
    bootstrap: str,
    figures: Figures,
    scenario: str,
    *,
    seed: int,
    index: str = "pad",
    **tried: Any,
) -> None:
    """Compare *view* with the reduction of *topic*'s log and add the counts to *figures*
    under *scenario* (after the *seed* and what the scenario *tried*), then assert that the
    view equals the log key by key, that each record was applied exactly once, and that
    the index on *index* answers what a scan of the view does."""
    log, expected, diffs, status = compare_with_log(config_path, view, topic, bootstrap)
    figures.add(
        scenario,
        seed=seed,
        **tried,
        log_records=len(log),
        keys=len(expected),
        mismatches=len(diffs),
    )
    assert diffs == [], f"seed {seed}: view differs from the log:\n" + "\n".join(diffs)
    assert status.keys == len(expected)
    # The applied counter is written in the same batch as the data and the positions.
    assert status.records_applied == len(log)
    assert index_differences(config_path, view, index) == []


# -- statestore subprocesses -------------------------------------------------------------


def run_cli(
    args: list[str | Path], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """A `statestore` command run to its end, with the suite's long default timeout."""
    return run(args, cwd, timeout=timeout)
