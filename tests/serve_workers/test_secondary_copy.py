"""A serving copy (RocksDB secondary) beside its primary in one process, against the real broker."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from statestore import StateStore
from statestore.secondary import SecondaryCopy, report_of
from tests.support.env import Env

pytestmark = pytest.mark.integration


def _entities(store: StateStore) -> dict[str, Any]:
    return {e.key: e.value for e in store.view("d").iter_entities()}


def test_copy_follows_the_primary_and_is_ready_only_once_caught_up(
    tmp_path: Path, env: Env
) -> None:
    """A copy serves what the primary applied after a catch-up; it is ready only when the
    primary is and a catch-up holds the primary's reported positions; a rebuild's new
    generation opens a new instance (handed to on_swap) with the rebuilt data."""
    topic = env.topic(2)
    env.produce(topic, [(f"k{i % 7}", json.dumps({"i": i})) for i in range(40)])
    config = env.config({"name": "d", "topic": topic})
    with StateStore(config) as primary:
        primary.bootstrap()
        copy = SecondaryCopy(config, tmp_path / "copy", interval=3600)
        swaps: list[StateStore] = []
        copy.on_swap = swaps.append
        try:
            assert not copy.store.ready()  # no report, no catch-up yet
            copy.take(report_of(primary))
            assert not copy.store.ready()  # the primary is ready, the copy not caught up
            copy.catch_up()
            assert copy.store.ready()
            assert _entities(copy.store) == _entities(primary)
            assert copy.store.position("d") == primary.position("d")

            env.produce(topic, [("k1", json.dumps({"i": "new"})), ("k2", None)])
            primary.bootstrap()  # applies the new records
            before = copy.store.position("d")
            copy.take(report_of(primary))
            assert copy.store.position("d") == before  # not seen before a catch-up
            copy.catch_up()
            assert copy.store.position("d") == primary.position("d")
            assert _entities(copy.store) == _entities(primary)
            assert copy.store.get("d", "k1").value == {"i": "new"}  # type: ignore[union-attr]
            assert copy.store.get("d", "k2") is None

            not_ready = report_of(primary)
            not_ready = replace(not_ready, ready=False)
            copy.take(not_ready)
            copy.catch_up()
            assert not copy.store.ready()
            copy.take(report_of(primary))
            copy.catch_up()
            assert copy.store.ready()

            primary.rebuild(["d"])
            generation = primary.view("d").generation
            assert generation == 1
            copy.take(report_of(primary))
            copy.catch_up()
            assert swaps and swaps[-1] is copy.store
            assert copy.store.view("d").generation == generation
            assert _entities(copy.store) == _entities(primary)
            assert copy.store.ready()
        finally:
            copy.close()
        assert (tmp_path / "copy" / "instance-1").parent.is_dir()
        assert not (tmp_path / "copy" / "instance-2").exists()  # the copy served last, removed
