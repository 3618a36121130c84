"""Bearer tokens scoped to views, and the refusal to listen beyond loopback without them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import World, make_config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from statestore import ApiConfig, Config, ConfigError, TokenConfig, ViewConfig
from statestore.api import check_bind, create_app

pytestmark = pytest.mark.integration

ALL_TOKEN = "tok-all-3f9a1c"
PEOPLE_TOKEN = "tok-people-77be02"
ENV = {"SS_TOKEN_ALL": ALL_TOKEN, "SS_TOKEN_PEOPLE": PEOPLE_TOKEN}
TOKENS = (
    TokenConfig(env="SS_TOKEN_ALL", name="all"),
    TokenConfig(env="SS_TOKEN_PEOPLE", views=("people",), name="people-reader"),
)

# (method, path template) of every view-scoped route; {v} is the view.
VIEW_ROUTES = (
    ("GET", "/views/{v}"),
    ("GET", "/views/{v}/entities/p-001"),
    ("GET", "/views/{v}/entities"),
    ("POST", "/views/{v}/lookup"),
    ("GET", "/views/{v}/by/status/new"),
    ("GET", "/views/{v}/quarantine"),
)


def with_api(config: Config, **api: object) -> Config:
    return config.model_copy(update={"api": ApiConfig.model_validate(api)})


@pytest.fixture(scope="module")
def secured(world: World) -> Iterator[TestClient]:
    """A client of an app over the shared store with two tokens: all views, and people only."""
    config = with_api(world.config, tokens=TOKENS)
    with TestClient(
        create_app(config, store=world.store, environ=ENV), base_url="http://localhost"
    ) as client:
        yield client


def call(client: TestClient, method: str, path: str, token: str | None) -> Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"keys": ["p-001"]} if method == "POST" else None
    response: Response = client.request(method, path, headers=headers, json=body)
    return response


def assert_no_secret(response: Response) -> None:
    text = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
    assert ALL_TOKEN not in text and PEOPLE_TOKEN not in text


@pytest.mark.parametrize(("method", "template"), VIEW_ROUTES)
def test_no_token_is_401(secured: TestClient, method: str, template: str) -> None:
    """A view route without a token answers 401 unauthorized with WWW-Authenticate: Bearer."""
    response = call(secured, method, template.format(v="people"), None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "template"), VIEW_ROUTES)
def test_wrong_token_is_401(secured: TestClient, method: str, template: str) -> None:
    """A view route with an unknown token answers 401 and never echoes the token."""
    for bad in ("nope", ALL_TOKEN + "x", ALL_TOKEN[:-1]):
        response = call(secured, method, template.format(v="people"), bad)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert bad not in response.text


@pytest.mark.parametrize(("method", "template"), VIEW_ROUTES)
def test_out_of_scope_is_403(secured: TestClient, method: str, template: str) -> None:
    """A token not scoped to the view answers 403 forbidden, even for a view that does not exist."""
    for view in ("blobs", "no-such-view"):
        response = call(secured, method, template.format(v=view), PEOPLE_TOKEN)
        assert response.status_code == 403, view
        assert response.json()["error"]["code"] == "forbidden"
        assert_no_secret(response)


@pytest.mark.parametrize(("method", "template"), VIEW_ROUTES)
def test_in_scope_is_200(secured: TestClient, method: str, template: str) -> None:
    """A token scoped to the view, or to every view, reads it."""
    for token in (PEOPLE_TOKEN, ALL_TOKEN):
        response = call(secured, method, template.format(v="people"), token)
        assert response.status_code == 200, (token, response.json())
        assert_no_secret(response)


def test_wildcard_token_reads_every_view(secured: TestClient) -> None:
    """A `*` token reads a view no narrower token covers."""
    response = call(secured, "GET", "/views/blobs/entities/bin", ALL_TOKEN)
    assert response.status_code == 200


def test_list_views_is_filtered_by_scope(secured: TestClient) -> None:
    """GET /views lists only the views the token may read, and needs a token."""
    assert call(secured, "GET", "/views", None).status_code == 401
    scoped = call(secured, "GET", "/views", PEOPLE_TOKEN).json()["views"]
    assert [v["name"] for v in scoped] == ["people"]
    every = call(secured, "GET", "/views", ALL_TOKEN).json()["views"]
    assert {v["name"] for v in every} == {"people", "blobs", "odd", "live"}


def test_health_routes_are_open(secured: TestClient) -> None:
    """/healthz and /readyz answer without a token."""
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200


def test_non_bearer_authorization_is_401(secured: TestClient) -> None:
    """An Authorization header of another scheme is not a token: 401."""
    response = secured.get("/views/people", headers={"Authorization": f"Basic {ALL_TOKEN}"})
    assert response.status_code == 401
    assert_no_secret(response)


def test_tokens_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Neither accepted nor rejected tokens appear in the log."""
    config = with_api(world.config, tokens=TOKENS)
    with (
        caplog.at_level(logging.DEBUG),
        TestClient(
            create_app(config, store=world.store, environ=ENV), base_url="http://localhost"
        ) as client,
    ):
        call(client, "GET", "/views/people", ALL_TOKEN)
        call(client, "GET", "/views/blobs", PEOPLE_TOKEN)
        call(client, "GET", "/views/people", "wrong-" + ALL_TOKEN)
    assert ALL_TOKEN not in caplog.text and PEOPLE_TOKEN not in caplog.text


def test_openapi_documents_bearer_auth(secured: TestClient) -> None:
    """With tokens configured, the OpenAPI schema declares bearer auth and the 401/403 answers."""
    schema = secured.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    operation = schema["paths"]["/views/{view}/entities/{key}"]["get"]
    assert operation["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(operation["responses"])
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_missing_token_env_fails_at_creation(tmp_path: Path) -> None:
    """A token whose environment variable is unset stops app creation with a ConfigError."""
    config = make_config(
        tmp_path,
        [ViewConfig(name="v", topic="t")],
        ApiConfig(tokens=(TokenConfig(env="SS_UNSET"),)),
    )
    with pytest.raises(ConfigError, match="SS_UNSET"):
        create_app(config, environ={})
    with pytest.raises(ConfigError, match="SS_UNSET"):
        create_app(config, environ={"SS_UNSET": ""})


def test_token_scoped_to_unknown_view_fails(tmp_path: Path) -> None:
    """A token scoped to a view that is not configured stops app creation with a ConfigError."""
    api = ApiConfig(tokens=(TokenConfig(env="SS_T", views=("typo",)),))
    config = make_config(tmp_path, [ViewConfig(name="v", topic="t")], api)
    with pytest.raises(ConfigError, match="typo"):
        create_app(config, environ={"SS_T": "x"})


@pytest.mark.parametrize("require", [True, False])
def test_metrics_access(tmp_path: Path, require: bool) -> None:
    """The metrics guard needs a valid token exactly when metrics_require_token is set."""
    api = ApiConfig(tokens=(TokenConfig(env="SS_T"),), metrics_require_token=require)
    config = make_config(tmp_path, [ViewConfig(name="v", topic="t")], api)
    app: FastAPI = create_app(config, environ={"SS_T": "metrics-token"})
    client = TestClient(app, base_url="http://localhost")
    assert client.get("/metrics").status_code == (401 if require else 200)
    authorised = client.get("/metrics", headers={"Authorization": "Bearer metrics-token"})
    assert authorised.status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org", ""])
def test_check_bind_refuses_open_host_without_tokens(tmp_path: Path, host: str) -> None:
    """Binding beyond loopback without tokens or allow_anonymous raises a ConfigError that says what to do."""
    config = make_config(tmp_path, [ViewConfig(name="v", topic="t")], ApiConfig(host=host))
    with pytest.raises(
        ConfigError, match=r"refusing to serve on .* without tokens.*allow_anonymous"
    ):
        check_bind(config)
    with pytest.raises(ConfigError, match="refusing to serve"):
        create_app(config)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_check_bind_allows_loopback(tmp_path: Path, host: str) -> None:
    """Loopback hosts need no tokens."""
    check_bind(make_config(tmp_path, [ViewConfig(name="v", topic="t")], ApiConfig(host=host)))


def test_check_bind_allows_tokens_or_explicit_anonymous(tmp_path: Path) -> None:
    """An open host is accepted with tokens configured, or with allow_anonymous = true."""
    views = [ViewConfig(name="v", topic="t")]
    check_bind(make_config(tmp_path, views, ApiConfig(host="0.0.0.0", allow_anonymous=True)))
    check_bind(
        make_config(tmp_path, views, ApiConfig(host="0.0.0.0", tokens=(TokenConfig(env="X"),)))
    )


def _view_labels(metrics_text: str) -> set[str]:
    return set(re.findall(r'view="([^"]+)"', metrics_text))


def test_open_routes_detail_only_the_views_a_token_may_read(secured: TestClient) -> None:
    """/readyz and /metrics stay open, but with tokens configured they name no view to a
    caller without a token (or with an unknown one), and to a scoped token only its views."""
    anonymous_ready = secured.get("/readyz")
    scoped_ready = secured.get("/readyz", headers={"Authorization": f"Bearer {PEOPLE_TOKEN}"})
    all_ready = secured.get("/readyz", headers={"Authorization": f"Bearer {ALL_TOKEN}"})
    wrong_ready = secured.get("/readyz", headers={"Authorization": "Bearer nope"})
    anonymous_metrics = secured.get("/metrics")
    scoped_metrics = secured.get("/metrics", headers={"Authorization": f"Bearer {PEOPLE_TOKEN}"})
    all_metrics = secured.get("/metrics", headers={"Authorization": f"Bearer {ALL_TOKEN}"})

    assert anonymous_ready.status_code == all_ready.status_code
    assert anonymous_ready.json()["views"] == [] == wrong_ready.json()["views"]
    assert [v["name"] for v in scoped_ready.json()["views"]] == ["people"]
    assert len(all_ready.json()["views"]) > 1
    assert anonymous_metrics.status_code == 200
    assert _view_labels(anonymous_metrics.text) == set()
    assert _view_labels(scoped_metrics.text) == {"people"}
    assert {"people", "blobs"} <= _view_labels(all_metrics.text)
