"""The app behind a real uvicorn server on 127.0.0.1: keys survive real HTTP path handling."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_support import ODD_KEYS, World, key_path, serve_app

from statestore.api import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base_url(world: World) -> Iterator[str]:
    """A uvicorn server on an ephemeral loopback port serving the shared store."""
    with serve_app(create_app(world.config, store=world.store)) as url:
        yield url


def test_odd_keys_over_real_http(base_url: str) -> None:
    """Every odd key, percent-encoded in the path, comes back exactly from a real server."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for key in ODD_KEYS:
            response = http.get(f"/views/odd/entities/{key_path(key)}")
            assert response.status_code == 200, (key, response.text)
            assert response.json()["key"] == key


def test_encoded_percent_and_slash_over_real_http(base_url: str) -> None:
    """Over real HTTP, `%252F` is the key text `%2F` and `%2F` is a slash inside the key."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/views/odd/entities/a%252Fb").json()["key"] == "a%2Fb"
        assert http.get("/views/odd/entities/a%2Fb").json()["key"] == "a/b"
        assert http.get("/views/odd/entities/a/b").json()["key"] == "a/b"
        assert http.get("/views/odd/entities/%FF").status_code == 422


def test_plain_reads_over_real_http_answer_as_the_route(base_url: str) -> None:
    """Over real HTTP, plain entity reads and the same reads routed by FastAPI answer alike."""
    paths = [f"/views/odd/entities/{key_path(key)}" for key in ODD_KEYS]
    paths += ["/views/odd/entities/a%0Ab", "/views/odd/entities/%FF", "/views/nope/entities/x"]
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for path in paths:
            plain, routed = http.get(path), http.get(f"{path}?via=fastapi")
            assert plain.status_code == routed.status_code, path
            assert plain.content == routed.content, path
            # The server adds its own date; every other header comes from the app.
            assert [h for h in plain.headers.multi_items() if h[0] != "date"] == [
                h for h in routed.headers.multi_items() if h[0] != "date"
            ], path


def test_health_over_real_http(base_url: str) -> None:
    """The real server answers /healthz and /readyz."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 200
