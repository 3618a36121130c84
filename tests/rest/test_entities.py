"""Entity reads over REST: one key, scans, lookups, odd keys, bytes values."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from api_support import ODD_KEYS, World, key_path
from fastapi.testclient import TestClient

from statestore.api.models import EntityBody, EntityPage, ErrorBody, LookupResult

pytestmark = pytest.mark.integration


def test_get_entity(client: TestClient, world: World) -> None:
    """GET of a present key returns its key, decoded value and Kafka coordinates."""
    response = client.get("/views/people/entities/p-007")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = EntityBody.model_validate(response.json())
    assert body.key == "p-007"
    assert body.value == world.people["p-007"]
    assert body.partition == 7 % 3
    assert body.offset >= 0
    assert isinstance(body.timestamp, int)


def test_get_absent_key_is_404(client: TestClient) -> None:
    """A key that was never written answers 404 not_found with the error body."""
    response = client.get("/views/people/entities/never-written")
    assert response.status_code == 404
    assert ErrorBody.model_validate(response.json()).error.code == "not_found"
    assert "X-Statestore-Position" in response.headers


def test_get_deleted_key_is_404(client: TestClient) -> None:
    """A key whose latest record is a tombstone answers 404 not_found."""
    response = client.get("/views/people/entities/gone")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_view_is_404(client: TestClient) -> None:
    """Every view route answers 404 unknown_view for a view that is not configured."""
    for method, path in [
        ("GET", "/views/nope"),
        ("GET", "/views/nope/entities/x"),
        ("GET", "/views/nope/entities"),
        ("POST", "/views/nope/lookup"),
        ("GET", "/views/nope/by/status/new"),
        ("GET", "/views/nope/quarantine"),
    ]:
        response = client.request(method, path, json={"keys": []} if method == "POST" else None)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "unknown_view", path


@pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
def test_odd_key_round_trips(client: TestClient, key: str) -> None:
    """A key with spaces, slashes, percent signs, ?, #, emoji or 300 characters is served exactly."""
    response = client.get(f"/views/odd/entities/{key_path(key)}")
    assert response.status_code == 200, response.json()
    assert response.json()["key"] == key
    assert response.json()["value"] == {"key": key}


def test_percent_encoded_slash_is_not_a_slash(client: TestClient) -> None:
    """`a%252Fb` addresses the key `a%2Fb`, and `a%2Fb` addresses the different key `a/b`."""
    assert client.get("/views/odd/entities/a%252Fb").json()["key"] == "a%2Fb"
    assert client.get("/views/odd/entities/a%2Fb").json()["key"] == "a/b"
    assert client.get("/views/odd/entities/%2525").json()["key"] == "%25"


def test_invalid_utf8_key_is_422(client: TestClient) -> None:
    """A path whose percent-escapes are not UTF-8 is rejected, not looked up as a mangled key."""
    response = client.get("/views/odd/entities/%FF%FE")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_key"


def test_odd_keys_listed_exactly(client: TestClient) -> None:
    """A scan of the odd-keys view lists every odd key exactly once, in byte order."""
    response = client.get("/views/odd/entities", params={"limit": 1000})
    keys = [item["key"] for item in response.json()["items"]]
    assert keys == sorted(ODD_KEYS, key=lambda k: k.encode("utf-8"))


def test_lookup_odd_keys(client: TestClient) -> None:
    """POST lookup finds odd keys sent in the JSON body, with no encoding needed."""
    response = client.post("/views/odd/lookup", json={"keys": list(ODD_KEYS)})
    assert [item["key"] for item in response.json()["items"]] == list(ODD_KEYS)


def test_bytes_value_served_as_base64(client: TestClient) -> None:
    """A `bytes` view serves its values as base64 text."""
    response = client.get("/views/blobs/entities/bin")
    assert response.status_code == 200
    assert base64.b64decode(response.json()["value"]) == b"\x00\x01\xfe\xffhello"


def test_empty_bytes_value_is_data(client: TestClient) -> None:
    """An empty value is an entity (empty base64), while a null value deleted its key."""
    assert client.get("/views/blobs/entities/empty").json()["value"] == ""
    assert client.get("/views/blobs/entities/nothing").status_code == 404


def test_scan_prefix_pages_collect_every_key_once(client: TestClient, world: World) -> None:
    """Paging through a prefix with `next` yields exactly the keys with that prefix, none twice."""
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"prefix": "p-0", "limit": 7}
        if after is not None:
            params["after"] = after
        response = client.get("/views/people/entities", params=params)
        assert response.status_code == 200
        page = EntityPage.model_validate(response.json())
        assert len(page.items) <= 7
        seen += [item.key for item in page.items]
        pages += 1
        if page.next is None:
            break
        after = page.next
    expected = sorted(k for k in world.people if k.startswith("p-0"))
    assert seen == expected
    assert pages == -(-len(expected) // 7)


def test_scan_default_limit_and_whole_view(client: TestClient, world: World) -> None:
    """Without prefix or limit, a view of fewer than 100 keys comes back whole in one page."""
    response = client.get("/views/people/entities")
    body = response.json()
    assert len(body["items"]) == len(world.people)
    assert body["next"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc"])
def test_scan_bad_limit_is_422(client: TestClient, limit: str) -> None:
    """A limit outside 1..api.max_page_size (or not a number) answers 422."""
    response = client.get("/views/people/entities", params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "limit" in response.json()["error"]["message"]


def test_scan_tampered_cursor_is_422(client: TestClient) -> None:
    """A cursor that was altered, or issued for another prefix, answers 422 invalid_cursor."""
    cursor = client.get("/views/people/entities", params={"limit": 2}).json()["next"]
    body, _, mac = cursor.partition(".")
    tampered = [
        body + "." + ("A" if mac[0] != "A" else "B") + mac[1:],
        "garbage",
        "x.y.z",
    ]
    for bad in tampered:
        response = client.get("/views/people/entities", params={"limit": 2, "after": bad})
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "invalid_cursor", bad
    other = client.get("/views/people/entities", params={"prefix": "q-", "after": cursor})
    assert other.status_code == 422


def test_lookup_returns_nulls_in_order(client: TestClient, world: World) -> None:
    """Lookup answers in the order asked, with null for absent and deleted keys, duplicates kept."""
    keys = ["p-003", "missing", "gone", "p-001", "p-003"]
    response = client.post("/views/people/lookup", json={"keys": keys})
    assert response.status_code == 200
    items = LookupResult.model_validate(response.json()).items
    assert [None if i is None else i.key for i in items] == ["p-003", None, None, "p-001", "p-003"]
    assert items[0] is not None and items[0].value == world.people["p-003"]


def test_lookup_empty(client: TestClient) -> None:
    """Lookup of no keys answers an empty list."""
    assert client.post("/views/people/lookup", json={"keys": []}).json() == {"items": []}


def test_lookup_too_many_keys(client: TestClient) -> None:
    """More keys than api.max_lookup_keys answers 422 too_many_keys."""
    response = client.post("/views/people/lookup", json={"keys": [f"k{i}" for i in range(1001)]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "too_many_keys"


def test_lookup_body_too_large(client: TestClient) -> None:
    """A lookup body over 1 MiB answers 413 body_too_large."""
    response = client.post("/views/people/lookup", json={"keys": ["x" * (1024 * 1024)]})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_lookup_streamed_body_too_large(client: TestClient) -> None:
    """A chunked lookup body (no Content-Length) over 1 MiB also answers 413."""

    def chunks() -> Iterator[bytes]:
        yield b'{"keys": ["'
        for _ in range(200):
            yield b"y" * 8192
        yield b'"]}'

    response = client.post(
        "/views/people/lookup",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"keys": "p-001"}', b'{"keys": [1, 2]}', b"{}", b"[]"],
)
def test_lookup_bad_body_is_422(client: TestClient, body: bytes) -> None:
    """A lookup body that is not `{"keys": [strings]}` answers 422 invalid_request."""
    response = client.post(
        "/views/people/lookup", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
