"""The direct path for plain entity reads answers exactly as the FastAPI route does.

A request with a query string always goes through FastAPI, so each plain request
is compared with the same request plus a query parameter the route ignores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from api_support import ODD_KEYS, Kafka, World, key_path, make_config
from fastapi.testclient import TestClient
from httpx import Response
from starlette.requests import Request

from statestore import ApiConfig, StateStore, TokenConfig, ViewConfig
from statestore.api import create_app, fastpath
from statestore.api.deps import ViewContext, readable_view
from statestore.api.errors import ApiError

pytestmark = pytest.mark.integration

ROUTED = "via=fastapi"

PLAIN_PATHS = (
    "/views/people/entities/p-007",
    "/views/people/entities/q-string42",
    "/views/blobs/entities/bin",
    "/views/blobs/entities/empty",
    "/views/blobs/entities/nothing",
    "/views/people/entities/never-written",
    "/views/people/entities/gone",
    "/views/people/entities/bad-json",
    "/views/people/entities/",
    "/views/nope/entities/p-007",
    "/views/odd/entities/a%252Fb",
    "/views/odd/entities/a/b",
    "/views/odd/entities/%FF%FE",
    "/views/odd/entities/line%0Afeed%0D",
    "/views/odd/entities/%F0%9F%8E%89%20absent",
    *(f"/views/odd/entities/{key_path(key)}" for key in ODD_KEYS),
)

TOKEN_ALL = "tok-all-5d0c2e"
TOKEN_PEOPLE = "tok-people-91af47"
ENV = {"SS_FP_ALL": TOKEN_ALL, "SS_FP_PEOPLE": TOKEN_PEOPLE}


def both(client: TestClient, path: str, headers: dict[str, str] | None = None) -> list[Response]:
    """The answer to *path* as a plain request and as one FastAPI must route."""
    return [client.get(path, headers=headers), client.get(f"{path}?{ROUTED}", headers=headers)]


def assert_same(plain: Response, routed: Response) -> None:
    assert plain.status_code == routed.status_code
    assert plain.headers.multi_items() == routed.headers.multi_items()
    assert plain.content == routed.content


@pytest.mark.parametrize("path", PLAIN_PATHS)
def test_plain_read_answers_as_the_route(client: TestClient, path: str) -> None:
    """Present, absent, deleted and odd keys, bad escapes and unknown views: same status, headers, body."""
    assert_same(*both(client, path))


def test_plain_reads_take_the_direct_path(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain GETs of an entity are answered by the direct path; with a query string they are not."""
    seen: list[str] = []
    direct = fastpath.entity_response

    def spy(request: Request, ctx: ViewContext, key: str) -> object:
        seen.append(ctx.name)
        return direct(request, ctx, key)

    monkeypatch.setattr(fastpath, "entity_response", spy)
    assert client.get("/views/odd/entities/a%252Fb").json()["key"] == "a%2Fb"
    assert client.get("/views/blobs/entities/x%0Ay").status_code == 404
    assert client.get("/views/people/entities/p-001?min_position=0:0").status_code == 200
    assert client.get(f"/views/people/entities/p-001?{ROUTED}").status_code == 200
    assert client.head("/views/people/entities/p-001").status_code == 405
    assert client.get("/views/people/entities").status_code == 200
    assert seen == ["odd", "blobs"]


def test_dependency_overrides_reach_plain_reads(world: World) -> None:
    """With dependency overrides set, plain reads go through FastAPI so the overrides apply."""
    app = create_app(world.config, store=world.store)

    async def closed() -> None:
        raise ApiError(503, "maintenance", "closed for maintenance")

    app.dependency_overrides[readable_view] = closed
    with TestClient(app, base_url="http://localhost") as client:
        response = client.get("/views/people/entities/p-001")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "maintenance"


@pytest.fixture(scope="module")
def secured(world: World) -> Iterator[TestClient]:
    """An app over the shared store with two tokens: every view, and people only."""
    tokens = (
        TokenConfig(env="SS_FP_ALL", name="all"),
        TokenConfig(env="SS_FP_PEOPLE", views=("people",), name="people-reader"),
    )
    config = world.config.model_copy(update={"api": ApiConfig(tokens=tokens)})
    with TestClient(
        create_app(config, store=world.store, environ=ENV), base_url="http://localhost"
    ) as client:
        yield client


# (Authorization header, view, status): a token's scope, the same for reads and lookups.
SCOPE_CASES: list[tuple[str | None, str, int]] = [
    (None, "people", 401),
    ("Bearer not-a-token", "people", 401),
    (f"Bearer {TOKEN_PEOPLE}", "people", 200),
    (f"Bearer {TOKEN_PEOPLE}", "odd", 403),
    (f"Bearer {TOKEN_ALL}", "odd", 200),
    (f"Bearer {TOKEN_ALL}", "nope", 404),
]
# The key read in each view of SCOPE_CASES.
READ_KEY = {"people": "p-001", "odd": "a%2Fb", "nope": "p-001"}


@pytest.mark.parametrize(
    ("authorization", "path", "status"),
    [
        *(
            (auth, f"/views/{view}/entities/{READ_KEY[view]}", code)
            for auth, view, code in SCOPE_CASES
        ),
        (None, "/views/nope/entities/p-001", 401),
        ("Basic dXNlcjpwYXNz", "/views/people/entities/p-001", 401),
        ("Bearer", "/views/people/entities/p-001", 401),
        (f"Bearer {TOKEN_PEOPLE}", "/views/people/entities/absent", 404),
        (f"Bearer {TOKEN_PEOPLE}", "/views/nope/entities/p-001", 403),
        (f"bearer {TOKEN_ALL}", "/views/odd/entities/a%2Fb", 200),
    ],
)
def test_plain_read_with_tokens_answers_as_the_route(
    secured: TestClient, authorization: str | None, path: str, status: int
) -> None:
    """With tokens configured, missing, wrong, out-of-scope and valid tokens answer alike on both paths."""
    headers = {"Authorization": authorization} if authorization is not None else None
    plain, routed = both(secured, path, headers)
    assert plain.status_code == status
    assert_same(plain, routed)


@contextmanager
def one_view_app(tmp_path: Path, topic: str) -> Iterator[tuple[StateStore, TestClient]]:
    """A store with the view `v` over *topic*, not bootstrapped, and a client of an app over it."""
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic=topic)])
    store = StateStore(config)
    try:
        with TestClient(create_app(config, store=store), base_url="http://localhost") as client:
            yield store, client
    finally:
        store.close()


def test_not_ready_view_answers_as_the_route(kafka: Kafka, tmp_path: Path) -> None:
    """Before the view has caught up both paths answer 503 not_ready with Retry-After; after, 200."""
    topic = kafka.topic()
    kafka.produce(topic, [("k", {"a": 1}, 0)])
    with one_view_app(tmp_path, topic) as (store, client):
        plain, routed = both(client, "/views/v/entities/k")
        assert plain.status_code == 503
        assert plain.headers["Retry-After"] == "1"
        assert_same(plain, routed)
        store.bootstrap()
        plain, routed = both(client, "/views/v/entities/k")
        assert plain.status_code == 200
        assert_same(plain, routed)


def test_failed_view_answers_as_the_route(kafka: Kafka, tmp_path: Path) -> None:
    """A failed view answers 503 view_failed with its reason on both paths."""
    with one_view_app(tmp_path, f"statestore-api-test-missing-{uuid.uuid4().hex}") as (
        store,
        client,
    ):
        store.bootstrap(raise_on_failure=False)
        plain, routed = both(client, "/views/v/entities/k")
    assert plain.json()["error"]["code"] == "view_failed"
    assert_same(plain, routed)


def test_store_not_open_answers_as_the_route(tmp_path: Path) -> None:
    """Before the lifespan has opened the store, both paths answer 503 not_ready."""
    config = make_config(tmp_path / "store", [ViewConfig(name="v", topic="t")])
    client = TestClient(create_app(config), base_url="http://localhost")
    plain, routed = both(client, "/views/v/entities/k")
    assert plain.status_code == 503
    assert_same(plain, routed)


# -- POST /views/{view}/lookup ----------------------------------------------------------------

JSON = {"content-type": "application/json"}


def many_keys(n: int) -> bytes:
    """A lookup body of *n* keys."""
    return ('{"keys": [' + ",".join(f'"p-{i:03d}"' for i in range(n)) + "]}").encode()


LOOKUP_BODIES: tuple[tuple[str, bytes, dict[str, str]], ...] = (
    ("present and absent", b'{"keys": ["p-001", "never-written", "gone", "p-007"]}', JSON),
    ("no keys", b'{"keys": []}', JSON),
    ("the same key twice", b'{"keys": ["p-001", "p-001"]}', JSON),
    ("extra fields", b'{"keys": ["p-001"], "other": 1}', JSON),
    ("charset", b'{"keys": ["p-001"]}', {"content-type": "application/json; charset=utf-8"}),
    ("a key not a string", b'{"keys": ["p-001", 7]}', JSON),
    ("keys not a list", b'{"keys": "p-001"}', JSON),
    ("no keys field", b'{"key": ["p-001"]}', JSON),
    ("a list body", b'["p-001"]', JSON),
    ("not JSON", b'{"keys": [', JSON),
    ("empty body", b"", JSON),
    ("not UTF-8", b'{"keys": ["\xff"]}', JSON),
    ("a lone surrogate", b'{"keys": ["\\ud800"]}', JSON),
    ("text/plain", b'{"keys": ["p-001"]}', {"content-type": "text/plain"}),
    ("no content type", b'{"keys": ["p-001"]}', {}),
    ("too many keys", many_keys(1001), JSON),
)


def both_lookups(
    client: TestClient, view: str, body: bytes, headers: dict[str, str] | None = None
) -> list[Response]:
    path = f"/views/{view}/lookup"
    return [
        client.post(path, content=body, headers=headers),
        client.post(f"{path}?{ROUTED}", content=body, headers=headers),
    ]


@pytest.mark.parametrize(
    ("body", "headers"), [b[1:] for b in LOOKUP_BODIES], ids=[b[0] for b in LOOKUP_BODIES]
)
def test_plain_lookup_answers_as_the_route(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> None:
    """Valid, empty, malformed and oversized lookups: same status, headers and body on both paths."""
    assert_same(*both_lookups(client, "people", body, headers))


@pytest.mark.parametrize("view", ["nope", "blobs", "odd"])
def test_plain_lookup_of_other_views_answers_as_the_route(client: TestClient, view: str) -> None:
    body = b'{"keys": ["bin", "empty", "a%2Fb", "nothing"]}'
    assert_same(*both_lookups(client, view, body, JSON))


def test_lookup_over_the_body_limit_answers_as_the_route(client: TestClient) -> None:
    """A body past the limit without a content-length (chunked): 413 on both paths."""
    big = b'{"keys": [' + b'"k",' * 400_000 + b'"k"]}'

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(big), 65536):
            yield big[at : at + 65536]

    plain = client.post("/views/people/lookup", content=chunks(), headers=JSON)
    routed = client.post(f"/views/people/lookup?{ROUTED}", content=chunks(), headers=JSON)
    assert plain.status_code == 413
    assert_same(plain, routed)


def test_valid_lookups_take_the_direct_path(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Well-formed lookups are answered directly, up to the inline limit on the loop and beyond
    it in the thread pool; every other body is routed."""
    seen: list[int] = []
    direct = fastpath.lookup_response

    def spy(request: Request, ctx: object, keys: list[str]) -> object:
        seen.append(len(keys))
        return direct(request, ctx, keys)  # type: ignore[arg-type]

    monkeypatch.setattr(fastpath, "lookup_response", spy)
    many = fastpath.INLINE_LOOKUP_KEYS + 1
    assert (
        client.post("/views/people/lookup", content=b'{"keys": ["p-001"]}', headers=JSON).json()[
            "items"
        ][0]["key"]
        == "p-001"
    )
    answer = client.post("/views/people/lookup", content=many_keys(many), headers=JSON)
    assert answer.status_code == 200 and len(answer.json()["items"]) == many
    assert (
        client.post("/views/people/lookup", content=b'{"keys": [1]}', headers=JSON).status_code
        == 422
    )
    assert (
        client.post(
            f"/views/people/lookup?{ROUTED}", content=b'{"keys": []}', headers=JSON
        ).status_code
        == 200
    )
    assert seen == [1, many]


@pytest.mark.parametrize(("authorization", "view", "status"), SCOPE_CASES)
def test_plain_lookup_with_tokens_answers_as_the_route(
    secured: TestClient, authorization: str | None, view: str, status: int
) -> None:
    headers = dict(JSON)
    if authorization is not None:
        headers["Authorization"] = authorization
    plain, routed = both_lookups(secured, view, b'{"keys": ["p-001", "a%2Fb"]}', headers)
    assert plain.status_code == status
    assert_same(plain, routed)


def test_not_ready_view_lookup_answers_as_the_route(kafka: Kafka, tmp_path: Path) -> None:
    topic = kafka.topic()
    kafka.produce(topic, [("k", {"a": 1}, 0)])
    with one_view_app(tmp_path, topic) as (store, client):
        plain, routed = both_lookups(client, "v", b'{"keys": ["k"]}', JSON)
        assert plain.status_code == 503
        assert_same(plain, routed)
        store.bootstrap()
        plain, routed = both_lookups(client, "v", b'{"keys": ["k", "x"]}', JSON)
        assert plain.status_code == 200
        assert plain.json()["items"][0]["value"] == {"a": 1}
        assert_same(plain, routed)
