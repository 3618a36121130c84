"""A read that waits for a position while its serving copy is replaced reads the copy it
waited on, not the one it started with (a worker of ``statestore serve --workers N``
reopens its copy when the ingesting process makes column families it cannot see).

Two stores over one in-memory log stand for the two copies: the first has not applied
the record asked for; the second has. The app's catch-up hook swaps them, as a worker's
reopen does, while the request waits.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from statestore import StateStore, ViewConfig
from statestore.api import create_app
from statestore.testing import MemoryKafka
from tests.support.config import store_config


def test_a_read_after_a_wait_reads_the_copy_that_reached_the_position(tmp_path: Path) -> None:
    kafka = MemoryKafka()
    topic = kafka.create_topic("t", 1)
    topic.produce("old", '{"n": 0}')
    view = ViewConfig(name="v", topic="t")
    config = store_config(tmp_path / "behind", [view])
    with StateStore(config, client=kafka) as behind:
        behind.bootstrap()
        partition, offset = topic.produce("new", '{"n": 1}')
        ahead_config = store_config(tmp_path / "ahead", [view])
        with StateStore(ahead_config, client=kafka) as ahead:
            ahead.bootstrap()
            assert behind.get("v", "new") is None and ahead.get("v", "new") is not None
            app = create_app(config, store=behind)
            swapped: list[bool] = []

            def reopen() -> None:
                if not swapped:
                    swapped.append(True)
                    app.state.store = ahead

            app.state.catch_up = reopen
            with TestClient(app, base_url="http://127.0.0.1") as client:
                r = client.get(
                    "/views/v/entities/new",
                    params={"min_position": f"{partition}:{offset}", "wait_ms": 5000},
                )
            assert swapped, (r.status_code, r.text)
            assert r.status_code == 200, r.text
            assert r.json()["value"] == {"n": 1}
            assert r.headers["x-statestore-position"] == f"{partition}:{offset}"
