"""GET /metrics: Prometheus text whose figures equal the status the API reports."""

from __future__ import annotations

import pytest
from api_support import World
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_equal_status(client: TestClient, world: World) -> None:
    """Lag, positions, end offsets, keys, records and state in /metrics match GET /views/{view} exactly."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    got = samples(resp.text)
    for name in world.topics:
        status = client.get(f"/views/{name}").json()
        topic = status["topic"]
        for p in status["partitions"]:
            labels = (("partition", str(p["partition"])), ("topic", topic), ("view", name))
            assert got[("statestore_applied_offset", labels)] == p["position"]
            assert got[("statestore_end_offset", labels)] == p["end_offset"]
            assert got[("statestore_consumer_lag", labels)] == p["lag"]
        assert got[("statestore_keys", (("view", name),))] == status["keys"]
        assert (
            got[("statestore_records_applied_total", (("view", name),))]
            == status["records_applied"]
        )
        assert got[("statestore_quarantined_total", (("view", name),))] == status["quarantined"]
        assert got[("statestore_view_state", (("state", status["state"]), ("view", name)))] == 1.0
