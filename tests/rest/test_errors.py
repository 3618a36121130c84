"""Error bodies: one JSON shape, the right status, never a stack trace or an echoed secret."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import World
from fastapi.testclient import TestClient

from statestore import KafkaError, StorageError
from statestore.api import create_app
from statestore.api.models import ErrorBody

pytestmark = pytest.mark.integration

SECRET_DETAIL = "detail-that-must-stay-in-the-log-4d1e"


@pytest.fixture
def fresh(world: World) -> Iterator[TestClient]:
    """A client of a fresh app over the shared store (for tests that patch the store)."""
    with TestClient(
        create_app(world.config, store=world.store), base_url="http://localhost"
    ) as client:
        yield client


def raiser(exc: Exception) -> Any:
    def fail(*args: object, **kwargs: object) -> Any:
        raise exc

    return fail


def assert_error_shape(body: dict[str, Any]) -> None:
    assert set(body) == {"error"}
    ErrorBody.model_validate(body)
    assert "Traceback" not in str(body)


def test_unexpected_exception_is_generic_500(
    fresh: TestClient,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception answers 500 internal_error with a generic message; the log has the traceback."""
    monkeypatch.setattr(world.store, "get", raiser(RuntimeError(SECRET_DETAIL)))
    with caplog.at_level(logging.ERROR):
        response = fresh.get("/views/people/entities/p-001")
    assert response.status_code == 500
    assert_error_shape(response.json())
    assert response.json()["error"]["code"] == "internal_error"
    assert SECRET_DETAIL not in response.text
    assert "Traceback" in caplog.text and SECRET_DETAIL in caplog.text


def test_storage_error_is_generic_500(
    fresh: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage failure answers 500 storage_error without the library's detail."""
    monkeypatch.setattr(world.store, "scan", raiser(StorageError(f"cannot read /{SECRET_DETAIL}")))
    response = fresh.get("/views/people/entities")
    assert response.status_code == 500
    assert_error_shape(response.json())
    assert response.json()["error"]["code"] == "storage_error"
    assert SECRET_DETAIL not in response.text


def test_kafka_error_is_503(
    fresh: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kafka failure surfacing in a read answers 503 kafka_unavailable."""
    monkeypatch.setattr(world.store, "lookup", raiser(KafkaError("brokers down")))
    response = fresh.post("/views/people/lookup", json={"keys": ["p-001"]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "kafka_unavailable"


def test_unencodable_key_is_422(client: TestClient) -> None:
    """A lookup key that cannot be UTF-8 encoded (a lone surrogate) answers 422, not 500."""
    response = client.post(
        "/views/people/lookup",
        content=b'{"keys": ["\\ud800"]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert_error_shape(response.json())


def test_unknown_route_is_json_404(client: TestClient) -> None:
    """A path no route serves answers 404 not_found in the error shape."""
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert_error_shape(response.json())
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_json_405(client: TestClient) -> None:
    """A method a route does not serve answers 405 with Allow, in the error shape."""
    response = client.delete("/views/people/entities/p-001")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_validation_error_does_not_echo_input(client: TestClient) -> None:
    """A 422 names the parameter and the problem but not the value sent."""
    response = client.get("/views/people/entities", params={"limit": SECRET_DETAIL})
    assert response.status_code == 422
    assert "limit" in response.json()["error"]["message"]
    assert SECRET_DETAIL not in response.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/views/nope", 404),
        ("GET", "/views/people/entities/absent", 404),
        ("GET", "/views/people/entities?limit=0", 422),
        ("GET", "/views/people/entities?after=x", 422),
        ("GET", "/views/people/by/nope/x", 404),
        ("GET", "/views/people/entities/p-001?min_position=zz", 422),
        ("GET", "/views/live/entities/seed?min_position=0:999999&wait_ms=1", 504),
        ("POST", "/views/people/lookup", 422),
        ("PUT", "/views", 405),
    ],
)
def test_every_error_has_one_shape(client: TestClient, method: str, path: str, status: int) -> None:
    """Errors of every kind are {"error": {"code", "message"}} with the documented status."""
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert_error_shape(response.json())
