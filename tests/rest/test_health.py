"""Liveness, readiness, views that are not ready or failed, and the app's lifespan."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from api_support import Kafka, make_config
from fastapi.testclient import TestClient

from statestore import StateStore, ViewConfig
from statestore.api import create_app
from statestore.api.models import ErrorBody, Readiness

pytestmark = pytest.mark.integration


def wait_ready(client: TestClient, deadline_s: float = 60.0) -> None:
    """Poll /readyz until it answers 200; fail (not a timing assertion) if it never does."""
    deadline = time.monotonic() + deadline_s
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail(f"the app never became ready: {client.get('/readyz').json()}")
        time.sleep(0.1)


def test_healthz(client: TestClient) -> None:
    """GET /healthz answers 200 {"status": "ok"}."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_ready(client: TestClient) -> None:
    """GET /readyz answers 200 with every view ready when all have caught up."""
    response = client.get("/readyz")
    assert response.status_code == 200
    body = Readiness.model_validate(response.json())
    assert body.status == "ready"
    assert {v.state for v in body.views} == {"ready"}


def test_not_ready_until_bootstrapped(kafka: Kafka, tmp_path: Path) -> None:
    """Before bootstrap, /readyz and entity reads answer 503 not_ready; after it, 200."""
    topic = kafka.topic()
    kafka.produce(topic, [("k", {"a": 1}, 0)])
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic=topic)])
    store = StateStore(config)
    try:
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            readyz = client.get("/readyz")
            assert readyz.status_code == 503
            body = Readiness.model_validate(readyz.json())
            assert body.status == "not_ready"
            assert [(v.name, v.state) for v in body.views] == [("v", "starting")]

            for path in ("/views/v/entities/k", "/views/v/entities", "/views/v/by/x/y"):
                response = client.get(path)
                assert response.status_code == 503, path
                error = ErrorBody.model_validate(response.json()).error
                assert error.code == "not_ready"
                assert error.state == "starting"
            lookup = client.post("/views/v/lookup", json={"keys": ["k"]})
            assert lookup.status_code == 503
            assert client.get("/views/v").json()["state"] == "starting"

            store.bootstrap()

            assert client.get("/readyz").status_code == 200
            response = client.get("/views/v/entities/k")
            assert response.status_code == 200
            assert response.json()["value"] == {"a": 1}
    finally:
        store.close()


def test_failed_view_is_503(kafka: Kafka, tmp_path: Path) -> None:
    """A failed view answers reads with 503 view_failed and its reason; /readyz is 503."""
    missing = f"statestore-api-test-missing-{uuid.uuid4().hex}"
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic=missing)])
    store = StateStore(config)
    try:
        store.bootstrap(raise_on_failure=False)
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            response = client.get("/views/v/entities/k")
            assert response.status_code == 503
            error = ErrorBody.model_validate(response.json()).error
            assert error.code == "view_failed"
            assert error.state == "failed"
            assert error.reason is not None and missing in error.reason
            readyz = client.get("/readyz").json()
            assert readyz["status"] == "not_ready"
            assert readyz["views"][0]["state"] == "failed"
            assert client.get("/views/v").status_code == 200
    finally:
        store.close()


def test_lifespan_opens_starts_and_closes_the_store(kafka: Kafka, tmp_path: Path) -> None:
    """Without a store passed in, the app opens and starts one, serves it, and closes it on shutdown."""
    topic = kafka.topic(partitions=2)
    kafka.produce(topic, [("a", {"n": 1}, 0), ("b", {"n": 2}, 1)])
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic=topic)])
    with TestClient(create_app(config), base_url="http://localhost") as client:
        wait_ready(client)
        assert client.get("/views/v/entities/b").json()["value"] == {"n": 2}
    # The lock is released: the store opens again for writing.
    reopened = StateStore(config)
    try:
        assert reopened.get("v", "a") is not None
    finally:
        reopened.close()


def test_lifespan_without_start_does_not_consume(kafka: Kafka, tmp_path: Path) -> None:
    """With start=False the app opens the store but does not bootstrap it."""
    topic = kafka.topic()
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic=topic)])
    with TestClient(create_app(config, start=False), base_url="http://localhost") as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/views/v").json()["state"] == "starting"


def test_store_not_open_is_503(tmp_path: Path) -> None:
    """Before the lifespan has opened the store, view routes and /readyz answer 503."""
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic="t")])
    client = TestClient(create_app(config), base_url="http://localhost")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    response = client.get("/views")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
