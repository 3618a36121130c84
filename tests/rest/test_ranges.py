"""Key ranges (`/entities?start=&end=`) and index ranges (`/by/{field}?start=&end=`) over REST."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import World
from fastapi.testclient import TestClient

from statestore.api.models import EntityPage, ErrorBody

pytestmark = pytest.mark.integration


def pages(client: TestClient, path: str, limit: int, **params: Any) -> list[str]:
    """Keys of every page of *path*, following `next`; each page checked against EntityPage."""
    keys: list[str] = []
    after: str | None = None
    while True:
        query = {**params, "limit": limit, **({"after": after} if after else {})}
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        assert response.headers["X-Statestore-Position"]
        page = EntityPage.model_validate(response.json())
        assert len(page.items) <= limit
        keys += [e.key for e in page.items]
        if page.next is None:
            return keys
        after = page.next


def error_of(client: TestClient, path: str, status: int, **params: Any) -> str:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    return ErrorBody.model_validate(response.json()).error.code


def test_key_range_pages(client: TestClient, world: World) -> None:
    """start (inclusive) and end (exclusive) bound a scan; pages of 3 collect each key once."""
    got = pages(client, "/views/people/entities", 3, start="p-010", end="p-025")
    assert got == sorted(k for k in world.people if "p-010" <= k < "p-025")


def test_key_range_with_prefix_and_open_ends(client: TestClient, world: World) -> None:
    """A prefix and a range read the keys both admit; an empty or absent bound is open."""
    got = pages(client, "/views/people/entities", 4, prefix="p-01", start="p-015", end="")
    assert got == ["p-015", "p-016", "p-017", "p-018", "p-019"]
    tail = pages(client, "/views/people/entities", 50, start="p-058")
    assert tail == sorted(k for k in world.people if k >= "p-058")
    head = pages(client, "/views/people/entities", 50, end="p-002")
    assert head == ["p-000", "p-001"]


def test_bad_key_ranges(client: TestClient) -> None:
    """A start after the end is 422 invalid_range; a cursor outside the range or malformed is
    422 invalid_cursor; an unknown view is 404."""
    path = "/views/people/entities"
    assert error_of(client, path, 422, start="p-5", end="p-1") == "invalid_range"
    cursor = client.get(path, params={"start": "p-010", "limit": 1}).json()["next"]
    assert error_of(client, path, 422, start="p-020", after=cursor) == "invalid_cursor"
    assert error_of(client, path, 422, start="p-020", after="bogus") == "invalid_cursor"
    assert error_of(client, "/views/nope/entities", 404, start="a") == "unknown_view"


def test_number_range_orders_numerically(client: TestClient, world: World) -> None:
    """An index range over numbers answers by numeric value, then key (42 after 24, below 100)."""
    ages = sorted((v["age"], k) for k, v in world.people.items() if "age" in v)
    got = pages(client, "/views/people/by/age", 4, start="21", end="100")
    assert got == [k for a, k in ages if 21 <= a < 100]
    assert got[-1] == "q-string42"
    assert pages(client, "/views/people/by/age", 100, start="22", end="22") == []
    assert pages(client, "/views/people/by/age", 100) == [k for _, k in ages]


def test_string_and_boolean_ranges(client: TestClient, world: World) -> None:
    """String ranges go by code point and leave other types out; quoted bounds are strings."""
    statuses = sorted((v["status"], k) for k, v in world.people.items())
    got = pages(client, "/views/people/by/status", 7, start="in", end="o")
    assert got == [k for s, k in statuses if "in" <= s < "o"]
    assert pages(client, "/views/people/by/status", 10, start='"4"', end='"5"') == ["q-string42"]
    vips = sorted(k for k, v in world.people.items() if v["vip"] is True)
    assert pages(client, "/views/people/by/vip", 100, start="true") == vips
    city = pages(client, "/views/people/by/address.city", 100, end="C")
    assert city == sorted(
        k for k, v in world.people.items() if v.get("address", {}).get("city") == "Bergen"
    )


def test_bad_index_ranges(client: TestClient) -> None:
    """Bounds of two types or a start after the end are 422 invalid_range; a range on an
    unindexed field is 404 unknown_index; a cursor of another range or kind is 422."""
    path = "/views/people/by/age"
    assert error_of(client, path, 422, start="20", end="x") == "invalid_range"
    assert error_of(client, path, 422, start="30", end="20") == "invalid_range"
    assert error_of(client, "/views/people/by/name", 404, start="a") == "unknown_index"
    cursor = client.get(path, params={"start": "20", "limit": 1}).json()["next"]
    assert error_of(client, path, 422, start="23", after=cursor) == "invalid_cursor"
    assert error_of(client, path, 422, start="20", after="x.y") == "invalid_cursor"
    equal = client.get("/views/people/by/age/20", params={"limit": 1}).json()["next"]
    assert error_of(client, path, 422, after=equal) == "invalid_cursor"


def test_openapi_describes_the_range_parameters(client: TestClient) -> None:
    """The OpenAPI document names start and end on the scan and on the index-range route."""
    spec = client.get("/openapi.json").json()
    scan = {p["name"] for p in spec["paths"]["/views/{view}/entities"]["get"]["parameters"]}
    by_range = {p["name"] for p in spec["paths"]["/views/{view}/by/{field}"]["get"]["parameters"]}
    assert {"prefix", "start", "end", "after", "limit"} <= scan
    assert {"field", "start", "end", "after", "limit"} <= by_range
