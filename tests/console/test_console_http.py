"""The console's routes over HTTP: its files, their security headers, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.console.conftest import World

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    return message


def test_page_is_served_with_a_strict_content_security_policy(world: World) -> None:
    """/console is HTML with a CSP allowing only this origin's scripts, and no inline script."""
    response = httpx.get(f"{world.url}/console")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", response.text, re.S)
    assert scripts == [(' src="console/console.js" defer', "")]
    assert "http://" not in response.text and "https://" not in response.text


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("console.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ],
)
def test_console_files_are_served_with_their_type_and_policy(
    world: World, name: str, media_type: str
) -> None:
    """Each console file comes with its media type and the same security headers."""
    response = httpx.get(f"{world.url}/console/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["content-security-policy"] == CSP
    assert response.content
    # Nothing fetched from elsewhere at run time.
    assert not re.search(rb"https?://(?!www\.w3\.org/2000/svg)", response.content)


@pytest.mark.parametrize(
    "path", ["/console/nope.js", "/console/index.html", "/console/console.py", "/console/%2E%2E"]
)
def test_unknown_console_files_are_404_in_the_error_model(world: World, path: str) -> None:
    """Only the console's own files are served; anything else is a 404 error body."""
    message = _error(httpx.get(f"{world.url}{path}"), 404, "not_found")
    assert "console" in message


def test_a_path_out_of_the_console_folder_is_not_served(world: World) -> None:
    """An encoded path climbing out of the console folder matches no file."""
    _error(httpx.get(f"{world.url}/console/..%2Fconsole.py"), 404, "not_found")


def test_bad_console_requests_get_the_error_model(world: World) -> None:
    """Over-long names and repeated parameters are 422, other methods 405, all as error bodies."""
    message = _error(httpx.get(f"{world.url}/console/{'a' * 65}.js"), 422, "invalid_request")
    assert message.startswith("path.name:")
    message = _error(httpx.get(f"{world.url}/console?x=1&x=2"), 422, "invalid_request")
    assert message == "query.x: given more than once"
    _error(httpx.post(f"{world.url}/console"), 405, "method_not_allowed")
    _error(httpx.delete(f"{world.url}/console/console.js"), 405, "method_not_allowed")


def test_console_routes_stay_out_of_the_api_schema(world: World) -> None:
    """The console is a page, not part of the REST API: OpenAPI does not list it."""
    paths = httpx.get(f"{world.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


def test_console_can_be_turned_off(tmp_path: Path) -> None:
    """``[api] console = false``: /console and its files answer 404 like any unknown path."""
    from fastapi.testclient import TestClient

    from statestore import ApiConfig, Config, StoreConfig, ViewConfig
    from statestore.api import create_app

    for enabled, status in ((False, 404), (True, 200)):
        config = Config(
            store=StoreConfig(path=tmp_path / "store"),
            api=ApiConfig(console=enabled),
            views=(ViewConfig(name="v", topic="t"),),
        )
        with TestClient(create_app(config, start=False), base_url="http://localhost") as client:
            assert client.get("/console").status_code == status
            assert client.get("/console/console.js").status_code == status
