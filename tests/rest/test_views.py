"""View routes over REST: status, index lookups, quarantine, positions and waits."""

from __future__ import annotations

import pytest
from api_support import STATUSES, World
from fastapi.testclient import TestClient

from statestore import format_position, parse_position
from statestore.api.models import EntityPage, ErrorBody, QuarantinePage, ViewInfo, ViewList

pytestmark = pytest.mark.integration

VIEW_ROUTES = (
    "/views/people",
    "/views/people/entities/p-001",
    "/views/people/entities?limit=2",
    "/views/people/by/status/new",
    "/views/people/quarantine",
)


def test_list_views(client: TestClient, world: World) -> None:
    """GET /views lists every view with topic, state, keys, lag and position."""
    response = client.get("/views")
    assert response.status_code == 200
    views = {v.name: v for v in ViewList.model_validate(response.json()).views}
    assert set(views) == {"people", "blobs", "odd", "live"}
    people = views["people"]
    assert people.topic == world.topics["people"]
    assert people.state == "ready"
    assert people.keys == len(world.people)
    assert people.lag == 0
    assert people.quarantined == 1
    assert [p.partition for p in people.partitions] == [0, 1, 2]


def test_view_status(client: TestClient, world: World) -> None:
    """GET /views/{view} answers the full status and the applied position, matching the header."""
    response = client.get("/views/people")
    assert response.status_code == 200
    info = ViewInfo.model_validate(response.json())
    assert info.name == "people"
    assert info.bootstrap_seconds is not None
    assert info.position == format_position(world.store.position("people"))
    assert response.headers["X-Statestore-Position"] == info.position


@pytest.mark.parametrize("path", VIEW_ROUTES)
def test_position_header_on_view_routes(client: TestClient, world: World, path: str) -> None:
    """Every view-scoped response carries X-Statestore-Position with the view's applied offsets."""
    response = client.get(path)
    assert response.status_code == 200
    header = response.headers["X-Statestore-Position"]
    assert parse_position(header) == world.store.position("people")


def test_position_header_on_lookup(client: TestClient, world: World) -> None:
    """POST lookup also carries X-Statestore-Position."""
    response = client.post("/views/blobs/lookup", json={"keys": ["bin"]})
    assert parse_position(response.headers["X-Statestore-Position"]) == world.store.position(
        "blobs"
    )


@pytest.mark.parametrize("status", STATUSES)
def test_by_string_field(client: TestClient, world: World, status: str) -> None:
    """GET /by/{field}/{value} answers exactly the entities whose indexed field equals the value."""
    response = client.get(f"/views/people/by/status/{status}", params={"limit": 1000})
    assert response.status_code == 200
    page = EntityPage.model_validate(response.json())
    expected = sorted(k for k, v in world.people.items() if v.get("status") == status)
    assert [e.key for e in page.items] == expected
    assert page.next is None


def test_by_number_bool_and_quoted_string(client: TestClient, world: World) -> None:
    """A path value that is a JSON number or boolean matches that type; a quoted one matches text."""

    def keys(path: str) -> list[str]:
        return [e["key"] for e in client.get(path, params={"limit": 1000}).json()["items"]]

    assert keys("/views/people/by/age/22") == sorted(
        k for k, v in world.people.items() if v.get("age") == 22
    )
    assert keys("/views/people/by/vip/true") == sorted(
        k for k, v in world.people.items() if v.get("vip") is True
    )
    assert keys("/views/people/by/age/42") == ["q-string42"]
    assert keys("/views/people/by/status/42") == []
    assert keys("/views/people/by/status/%2242%22") == ["q-string42"]


def test_by_nested_field(client: TestClient, world: World) -> None:
    """A dotted index path matches a nested field."""
    response = client.get("/views/people/by/address.city/Oslo", params={"limit": 1000})
    assert [e["key"] for e in response.json()["items"]] == sorted(
        k for k, v in world.people.items() if v.get("address", {}).get("city") == "Oslo"
    )


def test_by_pages(client: TestClient, world: World) -> None:
    """Index results page with `next` and collect every match once."""
    seen: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if after is not None:
            params["after"] = after
        body = client.get("/views/people/by/status/new", params=params).json()
        seen += [e["key"] for e in body["items"]]
        after = body["next"]
        if after is None:
            break
    assert seen == sorted(k for k, v in world.people.items() if v.get("status") == "new")


def test_by_unindexed_field_is_404(client: TestClient) -> None:
    """A field without an index answers 404 unknown_index naming the indexed fields."""
    response = client.get("/views/people/by/name/x")
    assert response.status_code == 404
    error = ErrorBody.model_validate(response.json()).error
    assert error.code == "unknown_index"
    assert "status" in error.message


def test_by_cursor_from_other_value_is_422(client: TestClient) -> None:
    """A cursor issued for one index value is refused for another (422 invalid_cursor)."""
    cursor = client.get("/views/people/by/status/new", params={"limit": 1}).json()["next"]
    response = client.get("/views/people/by/status/delivered", params={"after": cursor})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_by_bad_limit_is_422(client: TestClient) -> None:
    """An index lookup with limit 0 answers 422."""
    assert client.get("/views/people/by/status/new", params={"limit": 0}).status_code == 422


def test_quarantine(client: TestClient, world: World) -> None:
    """GET /quarantine lists records the view could not apply, with the reason."""
    response = client.get("/views/people/quarantine")
    assert response.status_code == 200
    page = QuarantinePage.model_validate(response.json())
    assert len(page.items) == 1
    record = page.items[0]
    assert record.topic == world.topics["people"]
    assert record.partition == 2
    assert "JSON" in record.reason
    assert page.next is None


def test_quarantine_paging_and_bad_cursor(client: TestClient) -> None:
    """Quarantine pages with `next`; a tampered cursor answers 422 invalid_cursor."""
    assert client.get("/views/odd/quarantine").json() == {"items": [], "next": None}
    response = client.get("/views/people/quarantine", params={"after": "AAAA.BBBB"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_cursor"
    assert client.get("/views/people/quarantine", params={"limit": 0}).status_code == 422


def test_min_position_waits_for_new_record(client: TestClient, world: World) -> None:
    """A read with min_position of a just-produced offset waits for it and then sees the record."""
    [(partition, offset)] = world.kafka.produce(world.topics["live"], [("fresh", {"n": 1}, 0)])
    response = client.get(
        "/views/live/entities/fresh",
        params={"min_position": f"{partition}:{offset}", "wait_ms": 20_000},
    )
    assert response.status_code == 200
    assert response.json()["value"] == {"n": 1}
    assert parse_position(response.headers["X-Statestore-Position"])[partition] >= offset


def test_min_position_already_reached(client: TestClient, world: World) -> None:
    """A min_position the view has already applied answers at once with the data."""
    position = format_position(world.store.position("people"))
    response = client.get("/views/people/entities/p-001", params={"min_position": position})
    assert response.status_code == 200


def test_min_position_not_reached_is_504(client: TestClient, world: World) -> None:
    """A min_position beyond the topic's end answers 504 with the position the view did reach."""
    response = client.get(
        "/views/live/entities/seed", params={"min_position": "0:1000000", "wait_ms": 50}
    )
    assert response.status_code == 504
    error = ErrorBody.model_validate(response.json()).error
    assert error.code == "position_not_reached"
    assert error.position is not None
    assert parse_position(error.position)[0] < 1000000
    assert response.headers["X-Statestore-Position"] == error.position


@pytest.mark.parametrize("position", ["x", "0", "0:", ":1", "0:1,", "-1:0", "0:-2", "0:1;1:2"])
def test_malformed_min_position_is_422(client: TestClient, position: str) -> None:
    """A min_position that is not `<partition>:<offset>,...` answers 422."""
    response = client.get("/views/people/entities/p-001", params={"min_position": position})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("path", ["/views/people", "/views/people/entities/p-001"])
def test_a_query_parameter_given_twice_is_422(client: TestClient, path: str) -> None:
    """`wait_ms=5&wait_ms=0.0` is ambiguous: answered 422, never read as its last value."""
    response = client.get(f"{path}?wait_ms=5&wait_ms=0.0")
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_request",
        "message": "query.wait_ms: given more than once",
    }


def test_negative_wait_ms_is_422(client: TestClient) -> None:
    """A negative wait_ms answers 422."""
    response = client.get(
        "/views/people/entities/p-001", params={"min_position": "0:0", "wait_ms": -1}
    )
    assert response.status_code == 422
