"""A web page cannot use a server on loopback: the Host check and cross-site writes."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import World
from fastapi.testclient import TestClient

from statestore import ApiConfig, Config, TokenConfig
from statestore.api import create_app

pytestmark = pytest.mark.integration

ENV = {"SS_BROWSER_TOKEN": "tok-browser-51c2"}


def app_client(world: World, **api: Any) -> TestClient:
    config: Config = world.config.model_copy(update={"api": ApiConfig.model_validate(api)})
    return TestClient(
        create_app(config, store=world.store, environ=ENV), base_url="http://localhost"
    )


@pytest.mark.parametrize(
    "path", ["/views/people", "/views/people/entities/p-001", "/views", "/readyz"]
)
def test_an_anonymous_server_answers_loopback_names_only(world: World, path: str) -> None:
    """DNS rebinding: a request naming another site's host is 400 invalid_host on every
    route (the direct entity path too); loopback names, with or without a port, are answered."""
    with app_client(world) as client:
        rebound = client.get(path, headers={"Host": "attacker.example:8000"})
        answered = [
            client.get(path, headers={"Host": host}).status_code
            for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST")
        ]

    assert rebound.status_code == 400
    assert rebound.json()["error"]["code"] == "invalid_host"
    assert "people" not in rebound.text
    assert all(code in (200, 503) for code in answered), answered


def test_a_cross_site_post_changes_nothing(world: World) -> None:
    """A cross-site `POST /views/{v}/rebuild` with a simple content type (what a form or a
    no-preflight fetch sends) is 403 cross_site, by Origin or by Sec-Fetch-Site, and no
    rebuild starts; the same request from the server's own origin is let through."""
    before = world.store.view("people").status().generation
    with app_client(world) as client:
        by_origin = client.post(
            "/views/people/rebuild",
            headers={"Origin": "https://attacker.example", "Content-Type": "text/plain"},
            content=b"x",
        )
        by_fetch_site = client.post(
            "/views/people/rebuild",
            headers={"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
            content=b"x",
        )
        null_origin = client.post(
            "/views/people/rebuild", headers={"Origin": "null", "Content-Type": "text/plain"}
        )
        same_site = client.post(
            "/views/people/lookup",
            headers={"Origin": "http://localhost:8000"},
            json={"keys": ["p-001"]},
        )

    for refused in (by_origin, by_fetch_site, null_origin):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "cross_site"
    assert same_site.status_code == 200, same_site.text
    assert world.store.view("people").status().generation == before
    assert world.store.view("people").state != "rebuilding"


def test_allowed_hosts_are_answered(world: World) -> None:
    """A name in `[api] allowed_hosts` is answered like a loopback name; others are not."""
    with app_client(world, allowed_hosts=["statestore.internal"]) as client:
        allowed = client.get("/views/people", headers={"Host": "statestore.internal:8000"})
        other = client.get("/views/people", headers={"Host": "attacker.example"})

    assert allowed.status_code == 200
    assert other.status_code == 400


def test_with_tokens_any_host_is_answered_unless_allowed_hosts_is_set(world: World) -> None:
    """With tokens a page has none to send: any Host gets the usual 401; once allowed_hosts
    is set, only those names (and loopback) are answered."""
    tokens = (TokenConfig(env="SS_BROWSER_TOKEN", name="b"),)
    with app_client(world, tokens=tokens) as client:
        open_host = client.get("/views/people", headers={"Host": "statestore.svc:8000"})
    with app_client(world, tokens=tokens, allowed_hosts=["statestore.svc"]) as client:
        listed = client.get(
            "/views/people",
            headers={"Host": "statestore.svc:8000", "Authorization": "Bearer tok-browser-51c2"},
        )
        other = client.get(
            "/views/people",
            headers={"Host": "attacker.example", "Authorization": "Bearer tok-browser-51c2"},
        )

    assert open_host.status_code == 401
    assert listed.status_code == 200
    assert other.status_code == 400


def test_no_redirect_echoes_the_host(world: World) -> None:
    """A path with a trailing slash is 404, never a redirect that puts the client's Host
    into Location before any token is checked."""
    tokens = (TokenConfig(env="SS_BROWSER_TOKEN", name="b"),)
    with app_client(world, tokens=tokens) as client:
        response = client.get(
            "/views/", headers={"Host": "attacker.example"}, follow_redirects=False
        )

    assert response.status_code in (401, 404)
    assert "location" not in response.headers
