"""The error model in one table: each library error's HTTP status, code and body, the
handlers for bad requests, and the CLI's exit code for each error."""

from __future__ import annotations

import logging

import pytest
import typer
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from statestore import errors
from statestore.api.errors import (
    ApiError,
    BodyLimitMiddleware,
    CatchAllMiddleware,
    install_error_handlers,
    single_valued_query,
)
from statestore.api.models import ErrorBody
from statestore.cli._app import errors as cli_errors

GENERIC = "internal server error; the server log has the details"


class Body(BaseModel):
    keys: list[str]


def error_app(exc: BaseException) -> TestClient:
    """An app with the API's error handling whose routes raise *exc* or take a body."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=64)
    app.add_middleware(CatchAllMiddleware)

    @app.get("/raise")
    async def raise_it() -> None:
        raise exc

    @app.get("/query")
    async def query(request: Request, n: int = 1) -> dict[str, int]:
        await single_valued_query(request)
        return {"n": n}

    @app.post("/body")
    async def body(payload: Body) -> dict[str, int]:
        return {"keys": len(payload.keys)}

    return TestClient(app, raise_server_exceptions=False)


# The error model: each error, the HTTP status and code it answers, whether the client sees
# its message (else the generic one), and the CLI's exit code (None: not a statestore error,
# so the CLI lets it propagate).
ERROR_MODEL: list[tuple[BaseException, int, str, bool, int | None]] = [
    (errors.UnknownViewError("v", ["a", "b"]), 404, "unknown_view", True, 2),
    (errors.UnknownIndexError("v", "f", ("a",)), 404, "unknown_index", True, 2),
    (errors.CursorError("cursor gone"), 422, "invalid_cursor", True, 2),
    (errors.InvalidKeyError("bad key"), 422, "invalid_key", True, 1),
    (errors.InvalidRangeError("start after end"), 422, "invalid_range", True, 1),
    (errors.NotReadyError("not yet"), 503, "not_ready", True, 1),
    (errors.ViewFailedError("it broke"), 503, "view_failed", True, 1),
    (errors.RegistryUnavailableError("down"), 503, "registry_unavailable", True, 1),
    (errors.StoreLockedError("in use"), 503, "store_locked", True, 2),
    (errors.KafkaError("no brokers"), 503, "kafka_unavailable", True, 1),
    (errors.TopicMissingError("no topic t"), 503, "kafka_unavailable", True, 1),
    (errors.OffsetOutOfRangeError("t", 2, "log start 9"), 503, "kafka_unavailable", True, 1),
    (errors.SnapshotError("other config"), 409, "snapshot_refused", True, 1),
    (errors.SnapshotSourceError("bucket gone"), 502, "snapshot_place_unavailable", False, 1),
    (errors.CodecError("value /secret/ unreadable"), 500, "undecodable_value", False, 1),
    (errors.StorageError("disk at /var/x"), 500, "storage_error", False, 1),
    (errors.ConfigError("bad setting"), 500, "config_error", False, 2),
    (errors.StateStoreError("something"), 500, "internal_error", False, 1),
    (RuntimeError("a bug"), 500, "internal_error", False, None),
]


@pytest.mark.parametrize(
    ("exc", "status", "code", "kept"),
    [row[:4] for row in ERROR_MODEL],
    ids=[type(row[0]).__name__ for row in ERROR_MODEL],
)
def test_each_error_has_its_status_code_and_message(
    exc: BaseException, status: int, code: str, kept: bool
) -> None:
    """Errors callers can act on keep their message; internal failures answer a generic one."""
    response = error_app(exc).get("/raise")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    message = str(exc) if kept else GENERIC
    assert response.json() == {"error": {"code": code, "message": message}}
    ErrorBody.model_validate(response.json())


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (errors.UnknownViewError("v", ["a", "b"]), "unknown view 'v'; configured views: a, b"),
        (errors.UnknownViewError("v"), "unknown view 'v'"),
        (
            errors.UnknownIndexError("v", "f", ("a", "b")),
            "view 'v' has no index on 'f'; indexed fields: a, b",
        ),
        (
            errors.UnknownIndexError("v", "f"),
            "view 'v' has no index on 'f'; the view has no indexes",
        ),
        (
            errors.OffsetOutOfRangeError("t", 2, "log start 9"),
            "t[2]: stored position is out of range (log start 9)",
        ),
    ],
)
def test_errors_name_what_is_wrong_and_what_there_is(exc: Exception, message: str) -> None:
    """Unknown names list the known ones; offsets name the topic and partition (no KeyError quotes)."""
    assert str(exc) == message


def test_a_position_timeout_says_how_far_the_view_got() -> None:
    """A 504 carries the position reached, in the body and in X-Statestore-Position."""
    response = error_app(errors.PositionTimeoutError("v", {0: 9, 1: 4}, {0: 3})).get("/raise")
    assert response.status_code == 504
    assert response.headers["X-Statestore-Position"] == "0:3"
    assert response.json() == {
        "error": {
            "code": "position_not_reached",
            "message": "view 'v' did not reach position 0:9,1:4 in time; it has applied 0:3",
            "position": "0:3",
        }
    }


def test_a_position_timeout_with_nothing_applied() -> None:
    """A view that applied nothing says so rather than printing an empty position."""
    exc = errors.PositionTimeoutError("v", {0: 1}, {})
    assert str(exc).endswith("it has applied nothing")
    assert (exc.wanted, exc.reached) == ({0: 1}, {})


def test_internal_errors_are_logged_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The generic 500 hides the message from the client, and the log keeps it."""
    with caplog.at_level(logging.ERROR, logger="statestore.api"):
        error_app(errors.StorageError("disk at /var/x")).get("/raise")
    record = next(r for r in caplog.records if "api.error" in r.getMessage())
    assert "code=storage_error path=/raise" in record.getMessage()
    assert record.exc_info is not None and "disk at /var/x" in str(record.exc_info[1])


@pytest.mark.parametrize(
    ("exc", "status", "body", "headers"),
    [
        (ApiError(403, "forbidden", "no"), 403, {"code": "forbidden", "message": "no"}, {}),
        (
            ApiError(
                503,
                "not_ready",
                "wait",
                headers={"Retry-After": "1"},
                state="starting",
                reason=None,
            ),
            503,
            {"code": "not_ready", "message": "wait", "state": "starting"},
            {"retry-after": "1"},
        ),
        (
            ApiError(401, "unauthorized", "token?", headers={"WWW-Authenticate": "Bearer"}),
            401,
            {"code": "unauthorized", "message": "token?"},
            {"www-authenticate": "Bearer"},
        ),
    ],
)
def test_api_errors_render_their_extras_and_headers(
    exc: ApiError, status: int, body: dict[str, str], headers: dict[str, str]
) -> None:
    """An ApiError answers its status with its code, message, non-null extras and headers."""
    response = error_app(exc).get("/raise")
    assert response.status_code == status
    assert response.json() == {"error": body}
    for name, value in headers.items():
        assert response.headers[name] == value


def test_validation_errors_name_the_location_and_never_echo_input() -> None:
    """A bad query value is a 422 naming the parameter, without the value sent."""
    response = error_app(RuntimeError()).get("/query", params={"n": "s3cr3t"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("query.n: Input should be a valid integer")
    assert "s3cr3t" not in response.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"keys": "a"}', "body.keys: Input should be a valid list"),
        (b'{"keys": [1]}', "body.keys.0: Input should be a valid string"),
        (b"{}", "body.keys: Field required"),
        (b'{"keys": [', "body.10: JSON decode error"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(content: bytes, message: str) -> None:
    """Each kind of bad JSON body is a 422 invalid_request naming where it is wrong."""
    response = error_app(RuntimeError()).post(
        "/body", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["message"].startswith(message)


def test_a_query_parameter_given_twice_is_ambiguous() -> None:
    """Every query parameter takes one value: a repeated one is a 422 naming it."""
    response = error_app(RuntimeError()).get("/query?n=1&n=2")
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_request",
        "message": "query.n: given more than once",
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "message"),
    [
        ("GET", "/nope", 404, "not_found", "no route for GET /nope"),
        ("DELETE", "/raise", 405, "method_not_allowed", "Method Not Allowed"),
    ],
)
def test_http_errors_use_the_error_body(
    method: str, path: str, status: int, code: str, message: str
) -> None:
    """Routing errors answer in the same JSON shape as every other error."""
    response = error_app(RuntimeError()).request(method, path)
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": message}}


@pytest.mark.parametrize("declared", [True, False])
def test_bodies_over_the_limit_are_413(declared: bool) -> None:
    """A body over the limit is refused, whether its length is declared or streamed."""
    client = error_app(RuntimeError())
    payload = b'{"keys": ["' + b"k" * 100 + b'"]}'
    if declared:
        response = client.post(
            "/body", content=payload, headers={"content-type": "application/json"}
        )
    else:
        response = client.post(
            "/body",
            content=iter([payload[:50], payload[50:]]),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "body_too_large",
        "message": "request body is larger than 64 bytes; send fewer keys per request",
    }


def test_a_body_within_the_limit_passes() -> None:
    """The body limit lets a small body through untouched."""
    response = error_app(RuntimeError()).post("/body", json={"keys": ["a", "b"]})
    assert response.status_code == 200 and response.json() == {"keys": 2}


# -- the CLI's exit codes ------------------------------------------------------------------


# A position timeout is in the HTTP model on its own (its body carries the position).
EXIT_CODES = [
    (exc, exit_code) for exc, _, _, _, exit_code in ERROR_MODEL if exit_code is not None
] + [(errors.PositionTimeoutError("v", {0: 1}, {0: 0}), 1)]


@pytest.mark.parametrize(
    ("exc", "code"), EXIT_CODES, ids=[type(exc).__name__ for exc, _ in EXIT_CODES]
)
def test_each_error_has_its_exit_code(
    exc: errors.StateStoreError, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad usage or config exits 2, a runtime failure 1; stderr says `error:` and the message."""
    with pytest.raises(typer.Exit) as raised, cli_errors():
        raise exc
    assert raised.value.exit_code == code
    assert capsys.readouterr().err == f"error: {exc}\n"


def test_an_interrupt_exits_130_saying_what_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C exits 130 and says the applied work is kept."""
    with pytest.raises(typer.Exit) as raised, cli_errors():
        raise KeyboardInterrupt
    assert raised.value.exit_code == 130
    assert "interrupted; what was applied is kept" in capsys.readouterr().err


def test_bugs_are_not_turned_into_exit_codes() -> None:
    """An exception that is not a statestore error propagates (a bug shows its traceback)."""
    with pytest.raises(ZeroDivisionError), cli_errors():
        raise ZeroDivisionError
