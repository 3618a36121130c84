"""Broker bounce: the broker is stopped and restarted under a running `statestore serve`,
mid-bootstrap and mid-follow. The server recovers by itself, says so in status and
readiness while Kafka is away, and ends equal to the log.

The broker bounced is a private one (see the ``own_broker`` fixture), never the shared one.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import check_against_log, entity_records, entity_view
from run_mode import Figures, Mode, OwnBroker
from trickle import Trickle

from statestore import KafkaError
from statestore.kafka import KafkaClient
from tests.support.kafka import Topics, fast_producer, high_watermarks, produce_all
from tests.support.processes import Server, free_port

pytestmark = pytest.mark.integration

VIEW = "bounce"
KEYS = 30_000
# A bootstrap slow by construction, so the broker stops while it still runs: each
# consumer holds at most 512 KB and, once that is full, fetches nothing for a second
# (fetch.queue.backoff.ms). That is at most ~0.5 MB/s per worker: the 200,000 records
# (~20 MB) take some 20 s with two, against the few seconds a broker takes to stop.
THROTTLED_FETCH = {
    "queued.min.messages": 2000,
    "queued.max.messages.kbytes": 512,
    "max.partition.fetch.bytes": 65536,
    "fetch.queue.backoff.ms": 1000,
}


@pytest.fixture
def own_topics(own_broker: OwnBroker) -> Any:
    made = Topics(own_broker.bootstrap)
    yield made
    with contextlib.suppress(Exception):
        made.close()


def sample(server: Server) -> dict[str, Any]:
    """The view's state and reason, and what /readyz answers, right now."""
    try:
        info = server.view_info(VIEW)
        ready = server.http.get("/readyz", timeout=10)
    except httpx.TransportError as exc:
        return {"error": str(exc)}
    return {
        "state": info["state"],
        "reason": info["reason"],
        "records": info["records_applied"],
        "ready": ready.status_code,
        "ready_body": ready.json(),
    }


def wait_until(
    server: Server, what: str, test: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert server.alive(), f"serve exited:\n{server.output()[-3000:]}"
        seen = sample(server)
        if "error" not in seen and test(seen):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s; last seen {seen}")


def kafka_named(s: dict[str, Any]) -> bool:
    return "kafka" in str(s.get("reason") or "").lower()


def stop_broker(broker: OwnBroker, server: Server, state: str) -> dict[str, Any]:
    """Stop the broker; the first sample with the view in *state* for a reason naming Kafka."""
    broker.stop()
    return wait_until(
        server,
        f"the outage reported while {state}",
        lambda s: s["state"] == state and kafka_named(s),
        timeout=60,
    )


@pytest.mark.timeout(900)
def test_broker_bounces_mid_bootstrap_and_mid_follow(
    own_broker: OwnBroker,
    own_topics: Topics,
    tmp_path: Path,
    mode: Mode,
    figures: Figures,
) -> None:
    """With the broker stopped mid-bootstrap and mid-follow, serve reports the outage (not ready while bootstrapping, degraded while following), recovers by itself once the broker is back, and ends equal to the log."""
    bootstrap = own_broker.bootstrap
    seed = random.randrange(1 << 30)
    topic = own_topics.create(3, prefix="bounce")
    produce_all(
        fast_producer(bootstrap),
        topic,
        entity_records(random.Random(seed), mode.topic_records, keys=KEYS),
    )
    config = entity_view(tmp_path, VIEW, topic, bootstrap, kafka=THROTTLED_FETCH)
    writer = Trickle(
        bootstrap,
        topic,
        seed + 1,
        keys=KEYS,
        batch=100,
        interval=0.05,
        producer={"message.timeout.ms": 600_000, "log_level": 2},
    )
    server = Server(config, free_port(), tmp_path, tmp_path / "serve.log")
    pid = server.pid
    observed: dict[str, Any] = {}
    bounces = 0
    try:
        # -- mid-bootstrap -------------------------------------------------------------
        wait_until(
            server,
            "bootstrap under way",
            lambda s: s["state"] == "bootstrapping" and s["records"] > 0,
        )
        bounces += 1
        down = stop_broker(own_broker, server, "bootstrapping")
        assert down["ready"] == 503
        observed["bootstrap_outage"] = {k: down[k] for k in ("state", "reason", "ready")}
        # With Kafka away, a stalled range is never taken for a compaction hole and skipped.
        with pytest.raises(KafkaError):
            KafkaClient({"bootstrap.servers": bootstrap}, timeout=3).next_record_offset(topic, 0, 0)
        own_broker.start()
        wait_until(
            server,
            "ready after the broker came back",
            lambda s: s["ready"] == 200 and s["state"] == "ready" and s["reason"] is None,
        )

        # -- mid-follow ----------------------------------------------------------------
        for i in range(mode.bounces):
            writer.on.set()
            time.sleep(2.0)
            flowing = i % 2 == 1
            if not flowing:
                # Idle over the restart: recovery must not wait for a new record.
                writer.pause()
            bounces += 1
            down = stop_broker(own_broker, server, "degraded")
            # Policy: a caught-up view keeps serving what it has applied, and says so.
            assert down["ready"] == 200, down
            assert down["ready_body"]["views"][0]["state"] == "degraded"
            some = server.http.get(f"/views/{VIEW}/entities", params={"limit": 1})
            assert some.status_code == 200 and some.json()["items"], some.text
            observed[f"follow_outage_{i}"] = {k: down[k] for k in ("state", "reason", "ready")}
            own_broker.start()
            wait_until(
                server,
                "ready again after the broker came back",
                lambda s: s["state"] == "ready" and s["reason"] is None,
            )
            writer.pause()
        # Following again after the bounces.
        writer.on.set()
        time.sleep(3.0)
        writer.pause()
        server.wait_caught_up(VIEW, high_watermarks(topic, bootstrap))
        assert server.pid == pid and server.alive(), "the server was restarted"
    finally:
        writer.close()
        code = server.close()
    assert code in (0, -15), server.output()[-3000:]
    assert "Traceback" not in server.output()

    check_against_log(
        config,
        VIEW,
        topic,
        bootstrap,
        figures,
        "broker_bounce",
        seed=seed,
        bounces=bounces,
        mid_bootstrap=1,
        mid_follow=bounces - 1,
        observed=observed,
    )
