"""The REST app over a store filled without a broker: request validation, paging, the
error bodies of each route, and the position header, answered in-process.

The store is opened over a temporary directory and its views are filled through
``View.apply`` (what the ingest loop calls); no Kafka client is ever created,
because nothing starts the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from statestore import ApiConfig, Config, StateStore, StoreConfig, ViewConfig
from statestore.api import create_app
from statestore.api.models import (
    EntityBody,
    EntityPage,
    ErrorBody,
    LookupResult,
    QuarantinePage,
    ViewInfo,
)

POSITION = "0:4,1:2"


def _json(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


RECORDS: list[tuple[int, int, int, bytes | None, bytes | None]] = [
    (0, 0, 1000, b"a", _json({"status": "x", "n": 1})),
    (0, 1, 1001, b"b", _json({"status": "y", "n": 2})),
    (0, 2, 1002, b"c", _json({"status": "x", "n": 3})),
    (0, 3, 1003, b"a/b", _json({"status": "z", "n": 10})),
    (0, 4, 1004, b"bad", b"{nope"),
    (1, 0, 2000, b"e", _json({"status": "x", "n": 2.5})),
    (1, 1, 2001, b"gone", _json({"status": "x", "n": 0})),
    (1, 2, 2002, b"gone", None),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app over views in each state: d (ready, indexed), raw (ready, bytes keys),
    cold (never caught up) and broken (failed)."""
    config = Config(
        kafka={"bootstrap.servers": "127.0.0.1:9092"},
        store=StoreConfig(path=tmp_path_factory.mktemp("rest") / "store"),
        api=ApiConfig(max_page_size=100, max_lookup_keys=3),
        views=(
            ViewConfig(name="d", topic="t.d", indexes=("status", "n")),
            ViewConfig(name="raw", topic="t.raw", key="bytes", value="string"),
            ViewConfig(name="cold", topic="t.cold"),
            ViewConfig(name="broken", topic="t.broken"),
        ),
    )
    store = StateStore(config)
    try:
        store.view("d").apply(RECORDS)
        store.view("raw").apply([(0, 0, 5, b"\x00\xff", b"hello")])
        for name in ("d", "raw"):
            store.view(name).set_state("ready")
        store.view("broken").set_state("failed", "disk on fire")
        with TestClient(
            create_app(config, store=store), base_url="http://127.0.0.1"
        ) as test_client:
            yield test_client
    finally:
        store.close()


def error_of(response: Any, status: int, code: str) -> str:
    """The message of an error response, after checking its status, code and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    ErrorBody.model_validate(body)
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def keys_of(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [
        item["key"] for item in EntityPage.model_validate(response.json()).model_dump()["items"]
    ]


# -- health ---------------------------------------------------------------------------


def test_liveness_answers_while_views_are_not_ready(client: TestClient) -> None:
    """/healthz is 200 whatever the views' states."""
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readiness_lists_each_view_and_is_503_until_all_are_ready(client: TestClient) -> None:
    """/readyz is 503 while one view is starting or failed, and says which."""
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "views": [
            {"name": "d", "state": "ready", "reason": None},
            {"name": "raw", "state": "ready", "reason": None},
            {"name": "cold", "state": "starting", "reason": None},
            {"name": "broken", "state": "failed", "reason": "disk on fire"},
        ],
    }


# -- single entities ----------------------------------------------------------------------


def test_an_entity_with_its_record_and_the_position(client: TestClient) -> None:
    """GET an entity: its value and record coordinates, and the view's position header."""
    response = client.get("/views/d/entities/a")
    assert response.status_code == 200
    assert response.json() == {
        "key": "a",
        "value": {"status": "x", "n": 1},
        "partition": 0,
        "offset": 0,
        "timestamp": 1000,
    }
    EntityBody.model_validate(response.json())
    assert response.headers["X-Statestore-Position"] == POSITION


@pytest.mark.parametrize(("path", "key"), [("a%2Fb", "a/b"), ("%61", "a")])
def test_keys_are_percent_decoded_once(client: TestClient, path: str, key: str) -> None:
    """A key is the path segment percent-decoded exactly once (a slash as %2F)."""
    response = client.get(f"/views/d/entities/{path}")
    assert response.status_code == 200 and response.json()["key"] == key


@pytest.mark.parametrize(
    ("path", "key"), [("zz", "zz"), ("gone", "gone"), ("%2E", "."), ("bad", "bad")]
)
def test_absent_deleted_and_quarantined_keys_are_404(
    client: TestClient, path: str, key: str
) -> None:
    """A key never written, deleted by a tombstone or only ever bad is a 404 naming it,
    still with the position header."""
    response = client.get(f"/views/d/entities/{path}")
    assert error_of(response, 404, "not_found") == f"no entity under key {key!r} in view 'd'"
    assert response.headers["X-Statestore-Position"] == POSITION


def test_a_path_that_is_not_utf8_is_an_invalid_key(client: TestClient) -> None:
    """Percent-escapes that do not decode as UTF-8 are refused, not turned into U+FFFD."""
    message = error_of(client.get("/views/d/entities/%ff"), 422, "invalid_key")
    assert message == "the path is not UTF-8 once percent-decoded"


def test_bytes_keys_are_addressed_in_hex(client: TestClient) -> None:
    """A bytes view answers its hex key and refuses text that is not hex."""
    response = client.get("/views/raw/entities/00FF")
    assert response.status_code == 200
    assert response.json()["key"] == "00ff" and response.json()["value"] == "hello"
    message = error_of(client.get("/views/raw/entities/zz"), 422, "invalid_key")
    assert "bytes keys are addressed in hex; 'zz' is not hex" in message


# -- view states ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/views/nope/entities/a", "/views/nope/entities", "/views/nope", "/views/nope/by/status/x"],
)
def test_an_unknown_view_is_404_naming_the_configured_ones(client: TestClient, path: str) -> None:
    """Every view route answers an unknown view with 404 unknown_view."""
    message = error_of(client.get(path), 404, "unknown_view")
    assert message == "unknown view 'nope'; configured views: d, raw, cold, broken"


def test_a_view_that_never_caught_up_is_503_with_retry_after(client: TestClient) -> None:
    """Reads of a starting view are 503 not_ready with its state and Retry-After."""
    response = client.get("/views/cold/entities/a")
    assert "has not caught up with its topic yet (state starting)" in error_of(
        response, 503, "not_ready"
    )
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["state"] == "starting"


def test_a_failed_view_is_503_with_its_reason(client: TestClient) -> None:
    """Reads of a failed view are 503 view_failed naming the reason."""
    response = client.get("/views/broken/entities")
    assert (
        error_of(response, 503, "view_failed")
        == "view 'broken' has failed: disk on fire; see the server log"
    )
    assert response.json()["error"]["reason"] == "disk on fire"


@pytest.mark.parametrize(
    ("view", "state"), [("cold", "starting"), ("broken", "failed"), ("d", "ready")]
)
def test_the_status_of_a_view_is_served_in_any_state(
    client: TestClient, view: str, state: str
) -> None:
    """GET /views/{view} answers whatever the state, conforming to ViewInfo."""
    response = client.get(f"/views/{view}")
    assert response.status_code == 200
    info = ViewInfo.model_validate(response.json())
    assert (info.name, info.state) == (view, state)


def test_the_view_status_counts_keys_and_quarantine(client: TestClient) -> None:
    """The status of a filled view: live keys, quarantined records, per-partition positions."""
    info = client.get("/views/d").json()
    assert (info["keys"], info["quarantined"], info["position"]) == (5, 1, POSITION)
    assert [(p["partition"], p["position"]) for p in info["partitions"]] == [(0, 5), (1, 3)]


def test_the_view_list_names_every_view(client: TestClient) -> None:
    """GET /views lists every configured view in order with its state."""
    views = client.get("/views").json()["views"]
    assert [(v["name"], v["state"]) for v in views] == [
        ("d", "ready"),
        ("raw", "ready"),
        ("cold", "starting"),
        ("broken", "failed"),
    ]


# -- scans and paging -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("", ["a", "a/b", "b", "c", "e"]),
        ("?prefix=a", ["a", "a/b"]),
        ("?prefix=zz", []),
        ("?start=b&end=d", ["b", "c"]),
        ("?start=b", ["b", "c", "e"]),
        ("?end=b", ["a", "a/b"]),
        ("?prefix=a&start=a%2F", ["a/b"]),
    ],
)
def test_scans_select_keys_in_key_order(client: TestClient, query: str, keys: list[str]) -> None:
    """A scan returns the live keys its prefix and [start, end) admit, in key order."""
    assert keys_of(client.get(f"/views/d/entities{query}")) == keys


def test_paging_visits_each_entity_once(client: TestClient) -> None:
    """Following `next` pages of 2 gives every key once, then a null cursor."""
    seen: list[str] = []
    url = "/views/d/entities?limit=2"
    pages = 0
    while True:
        response = client.get(url)
        seen += keys_of(response)
        pages += 1
        cursor = response.json()["next"]
        if cursor is None:
            break
        url = f"/views/d/entities?limit=2&after={cursor}"
    assert seen == ["a", "a/b", "b", "c", "e"] and pages == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "query.limit: Input should be greater than or equal to 1"),
        ("limit=-3", "query.limit: Input should be greater than or equal to 1"),
        ("limit=abc", "query.limit: Input should be a valid integer"),
        ("limit=101", "query.limit: must be between 1 and 100"),
        ("limit=1&limit=2", "query.limit: given more than once"),
        ("wait_ms=-1", "query.wait_ms: Input should be greater than or equal to 0"),
        ("min_position=0", "query.min_position: String should match pattern"),
        ("min_position=0:1,x", "query.min_position: String should match pattern"),
    ],
)
def test_bad_query_parameters_are_422(client: TestClient, query: str, message: str) -> None:
    """Each bad query parameter is a 422 invalid_request naming it."""
    assert error_of(client.get(f"/views/d/entities?{query}"), 422, "invalid_request").startswith(
        message
    )


def test_a_start_after_the_end_is_an_invalid_range(client: TestClient) -> None:
    """start > end is refused rather than answered with an empty page."""
    error_of(client.get("/views/d/entities?start=d&end=b"), 422, "invalid_range")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/views/d/entities?after=garbage", "malformed cursor"),
        ("/views/d/entities?after=YQ.AAAAAAAAAAAAAAAA", "invalid cursor: it was altered"),
    ],
)
def test_bad_cursors_are_invalid_cursor(client: TestClient, path: str, message: str) -> None:
    """A made-up or forged cursor is a 422 invalid_cursor."""
    assert error_of(client.get(path), 422, "invalid_cursor").startswith(message)


def test_a_cursor_of_one_query_does_not_page_another(client: TestClient) -> None:
    """A cursor from an index page is refused by a scan, and a scan's by the other view."""
    by_cursor = client.get("/views/d/by/status/x?limit=1").json()["next"]
    assert by_cursor is not None
    error_of(client.get(f"/views/d/entities?after={by_cursor}"), 422, "invalid_cursor")
    scan_cursor = client.get("/views/d/entities?limit=1").json()["next"]
    error_of(client.get(f"/views/raw/entities?after={scan_cursor}"), 422, "invalid_cursor")


# -- indexes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("/views/d/by/status/x", ["a", "c", "e"]),
        ("/views/d/by/status/%22x%22", ["a", "c", "e"]),
        ("/views/d/by/status/nothing", []),
        ("/views/d/by/n/2", ["b"]),
        ("/views/d/by/n/2.5", ["e"]),
        ("/views/d/by/n/%222%22", []),
        ("/views/d/by/n?start=2&end=3", ["b", "e"]),
        ("/views/d/by/n?start=3", ["c", "a/b"]),
        ("/views/d/by/status?start=y", ["b", "a/b"]),
    ],
)
def test_index_lookups_and_ranges(client: TestClient, path: str, keys: list[str]) -> None:
    """Equality pages in key order; ranges in value then key order; a quoted number is a string."""
    assert keys_of(client.get(path)) == keys


@pytest.mark.parametrize("path", ["/views/d/by/nope/x", "/views/d/by/nope?start=1"])
def test_an_unindexed_field_is_404_naming_the_indexes(client: TestClient, path: str) -> None:
    """A field without an index is 404 unknown_index listing the indexed fields."""
    assert (
        error_of(client.get(path), 404, "unknown_index")
        == "view 'd' has no index on 'nope' (indexed fields: status, n)"
    )


@pytest.mark.parametrize("query", ["start=a&end=1", "start=5&end=2"])
def test_bad_index_ranges_are_invalid_range(client: TestClient, query: str) -> None:
    """Bounds of two types, or a start after the end, are 422 invalid_range."""
    error_of(client.get(f"/views/d/by/n?{query}"), 422, "invalid_range")


# -- read-your-writes -----------------------------------------------------------------------


def test_a_position_reached_answers_at_once(client: TestClient) -> None:
    """min_position the view has applied answers 200."""
    assert keys_of(client.get("/views/d/entities?min_position=0:4,1:2&limit=1")) == ["a"]


def test_a_position_not_reached_is_504_with_the_position_reached(client: TestClient) -> None:
    """min_position beyond the view answers 504 with how far it got, in body and header."""
    response = client.get("/views/d/entities/a?min_position=0:99&wait_ms=0")
    message = error_of(response, 504, "position_not_reached")
    assert message == f"view 'd' did not reach position 0:99 in time; it has applied {POSITION}"
    assert response.json()["error"]["position"] == POSITION
    assert response.headers["X-Statestore-Position"] == POSITION


# -- lookups --------------------------------------------------------------------------------


def test_lookup_answers_in_the_order_asked_with_nulls(client: TestClient) -> None:
    """POST lookup returns each key's entity in order, null for absent or deleted ones."""
    response = client.post("/views/d/lookup", json={"keys": ["e", "gone", "a"]})
    assert response.status_code == 200
    items = LookupResult.model_validate(response.json()).items
    assert [None if i is None else i.key for i in items] == ["e", None, "a"]
    assert response.headers["X-Statestore-Position"] == POSITION


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (
            b'{"keys": ["a", "b", "c", "e"]}',
            422,
            "too_many_keys",
            "4 keys asked; at most 3 per lookup, split the request",
        ),
        (b'{"keys": "a"}', 422, "invalid_request", "body.keys: Input should be a valid list"),
        (b'{"keys": [1]}', 422, "invalid_request", "body.keys.0: Input should be a valid string"),
        (b'{"key": ["a"]}', 422, "invalid_request", "body.keys: Field required"),
        (b"[]", 422, "invalid_request", "body:"),
    ],
)
def test_bad_lookups_name_the_problem(
    client: TestClient, body: bytes, status: int, code: str, message: str
) -> None:
    """Each bad lookup body is refused with its own code and a message naming the field."""
    response = client.post(
        "/views/d/lookup", content=body, headers={"content-type": "application/json"}
    )
    assert error_of(response, status, code).startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "body.1: JSON decode error"),
        (b"\xff\xfe", "body.0: JSON decode error"),
        (b"", "body: Field required"),
    ],
)
def test_a_lookup_body_that_is_not_json_is_refused(
    client: TestClient, body: bytes, message: str
) -> None:
    """A body that is not JSON (or not UTF-8, or empty) is a 422 naming where it stops, never a 500."""
    response = client.post(
        "/views/d/lookup", content=body, headers={"content-type": "application/json"}
    )
    assert error_of(response, 422, "invalid_request") == message


def test_a_lookup_body_over_a_mebibyte_is_413(client: TestClient) -> None:
    """Bodies over 1 MiB are refused before they are parsed."""
    body = b'{"keys": ["' + b"k" * (1024 * 1024) + b'"]}'
    response = client.post(
        "/views/d/lookup", content=body, headers={"content-type": "application/json"}
    )
    assert "request body is larger than 1048576 bytes" in error_of(response, 413, "body_too_large")


# -- quarantine, routing, hosts -------------------------------------------------------------


def test_quarantined_records_are_listed_with_their_reason(client: TestClient) -> None:
    """The record that could not be applied is listed with its coordinates, raw key and reason."""
    response = client.get("/views/d/quarantine")
    assert response.status_code == 200
    page = QuarantinePage.model_validate(response.json())
    assert page.next is None and len(page.items) == 1
    item = page.items[0]
    assert (item.topic, item.partition, item.offset, item.key) == ("t.d", 0, 4, "YmFk")
    assert "not valid JSON" in item.reason


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/views/", 404, "not_found"),
        ("POST", "/views/d/entities", 405, "method_not_allowed"),
        ("GET", "/views/d/lookup", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_use_the_error_body(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    """Unknown paths (a trailing slash too: no redirect) and wrong methods answer the error model."""
    error_of(client.request(method, path), status, code)


def test_requests_for_other_host_names_are_refused(client: TestClient) -> None:
    """A loopback server answers only loopback host names (DNS rebinding)."""
    response = client.get("/healthz", headers={"host": "attacker.example"})
    assert "loopback names" in error_of(response, 400, "invalid_host")


@pytest.mark.parametrize("path", ["/views/small/entities", "/views/small/quarantine"])
def test_pages_without_a_limit_fit_a_small_max_page_size(tmp_path: Path, path: str) -> None:
    """With [api] max_page_size below the default page size, a page without ?limit= is
    served at most max_page_size long rather than refused."""
    config = Config(
        store=StoreConfig(path=tmp_path / "store"),
        api=ApiConfig(max_page_size=5),
        views=(ViewConfig(name="small", topic="t"),),
    )
    with StateStore(config) as store:
        small_view = store.view("small")
        # Eight entities and eight records that fail to decode: a full page is five long.
        small_view.apply([(0, i, 1000 + i, f"k{i}".encode(), _json({"n": i})) for i in range(8)])
        small_view.apply([(1, i, 2000 + i, f"q{i}".encode(), b"{nope") for i in range(8)])
        small_view.set_state("ready")
        with TestClient(create_app(config, store=store), base_url="http://127.0.0.1") as small:
            response = small.get(path)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 5
    assert response.json()["next"]
