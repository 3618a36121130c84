"""A store's contents read back, read-only, to compare with the oracle (tests/support/oracle.py)."""

from __future__ import annotations

from pathlib import Path

import orjson

from statestore import StateStore, load_config


def stored(config: Path, view: str) -> tuple[dict[int, int], dict[str, bytes], int]:
    """The view's stored positions, entities (key -> value as JSON) and records applied."""
    with StateStore(load_config(config, environ={}), read_only=True) as store:
        status = store.view(view).status()
        positions = {p.partition: p.position for p in status.partitions}
        entities = {e.key: orjson.dumps(e.value) for e in store.view(view).iter_entities()}
        return positions, entities, status.records_applied
