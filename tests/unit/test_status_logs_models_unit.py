"""Status values, JSON log lines and the REST wire models: what each renders, field by field."""

from __future__ import annotations

import dataclasses
import json
import logging
from decimal import Decimal

import orjson
import pytest
from pydantic import ValidationError

from statestore import PartitionStatus, ViewEvent, ViewStatus
from statestore.api.models import (
    ErrorBody,
    JSONBytesResponse,
    LookupRequest,
    Readiness,
    ViewInfo,
    dumps,
    json_response,
)
from statestore.logs import JsonFormatter, text_formatter
from statestore.status import LoadStatus


def full_status() -> ViewStatus:
    return ViewStatus(
        name="d",
        topic="t",
        state="bootstrapping",
        reason="catching up",
        keys=3,
        records_applied=7,
        bytes_applied=70,
        quarantined=1,
        lag=4,
        partitions=(PartitionStatus(0, 5, 9, 4), PartitionStatus(1, 0, None, None)),
        bootstrap_seconds=1.5,
        generation=2,
        schema_entities={7: 2, -1: 1},
        load=LoadStatus("reading", 2, 100, 50, 1_000),
        last_stale=ViewEvent(5, "below_log_start", "retention"),
    )


# -- status ---------------------------------------------------------------------------


def test_a_status_renders_as_plain_json_data() -> None:
    """to_dict gives JSON-ready data: nested partitions, load and events as dicts, schema ids as text."""
    data = full_status().to_dict()
    assert data["partitions"] == [
        {"partition": 0, "position": 5, "end_offset": 9, "lag": 4},
        {"partition": 1, "position": 0, "end_offset": None, "lag": None},
    ]
    assert data["load"] == {
        "phase": "reading",
        "processes": 2,
        "records_read": 100,
        "offsets_left": 50,
        "started_at_ms": 1000,
    }
    assert data["last_stale"] == {"at_ms": 5, "cause": "below_log_start", "reason": "retention"}
    assert data["last_rebuild"] is None
    assert data["schema_entities"] == {"7": 2, "-1": 1}
    assert orjson.loads(orjson.dumps(data)) == data


def test_a_rendered_status_is_what_the_api_documents() -> None:
    """The API's view model accepts a rendered status (plus its position)."""
    info = ViewInfo.model_validate({**full_status().to_dict(), "position": "0:4"})
    assert info.load is not None and info.load.phase == "reading"
    assert info.partitions[1].end_offset is None


def test_a_minimal_status_has_documented_defaults() -> None:
    """Optional status fields default to nothing loaded, never rebuilt, not yet servable."""
    data = ViewStatus("d", "t", "starting", None, 0, 0, 0, 0, None).to_dict()
    assert (
        data["partitions"],
        data["load"],
        data["rebuilds"],
        data["servable"],
        data["schema_entities"],
    ) == ([], None, 0, False, {})


def test_status_values_are_frozen() -> None:
    """A status is a value: changing a field raises instead of changing what others see."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        PartitionStatus(0, 1, 2, 1).lag = 0  # type: ignore[misc]


# -- log lines --------------------------------------------------------------------------


def json_line(message: str, *args: object, process: str | None = None) -> dict[str, object]:
    record = logging.LogRecord("statestore.x", logging.WARNING, __file__, 1, message, args, None)
    record.created = 1_700_000_000.25
    return dict(json.loads(JsonFormatter(process).format(record)))


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("view.state", {"event": "view.state"}),
        ("bulk.done records=-5", {"event": "bulk.done", "records": -5}),
        (
            "bulk.done records=123456789012345678",
            {"event": "bulk.done", "records": 123456789012345678},
        ),
        (
            "bulk.done records=1234567890123456789",
            {"event": "bulk.done", "records": "1234567890123456789"},
        ),
        ("bulk.done ratio=1.5 at=07", {"event": "bulk.done", "ratio": "1.5", "at": 7}),
        ("api.error path=/a?b=c code=x", {"event": "api.error", "path": "/a?b=c", "code": "x"}),
        ("kafka.conf sasl.mechanism=PLAIN", {"event": "kafka.conf", "sasl.mechanism": "PLAIN"}),
        ("view.x view=a view=b", {"event": "view.x", "view": "a", "field_view": "b"}),
        ("view.x time=now event=y", {"event": "view.x", "field_time": "now", "field_event": "y"}),
        ("view.x =bare loose", {"event": "view.x"}),
    ],
)
def test_json_lines_read_the_event_and_fields(message: str, fields: dict[str, object]) -> None:
    """The event and key=value fields of a message become JSON members (integers as numbers
    up to 18 digits; names the line uses itself, or repeated, are prefixed with field_)."""
    data = json_line(message)
    assert {
        k: v for k, v in data.items() if k not in ("time", "level", "logger", "message")
    } == fields
    assert data["message"] == message


@pytest.mark.parametrize(
    "message", ["Started server process", "View.state view=d", "view state=x", "view. x=1"]
)
def test_messages_not_shaped_as_events_carry_no_fields(message: str) -> None:
    """Only a lower-case dotted event name at the start turns the message into fields."""
    data = json_line(message)
    assert set(data) == {"time", "level", "logger", "message"}


def test_json_lines_carry_time_level_logger_and_process() -> None:
    """Each line has a UTC millisecond timestamp, the level, the logger and the worker's name."""
    data = json_line("merge.done keys=%d", 3, process="merge-worker-1")
    assert data["time"] == "2023-11-14T22:13:20.250Z"
    assert (data["level"], data["logger"], data["process"], data["keys"]) == (
        "WARNING",
        "statestore.x",
        "merge-worker-1",
        3,
    )


def test_the_text_format_without_a_worker() -> None:
    """The owner's text lines are time, level, logger and message."""
    record = logging.LogRecord(
        "statestore.view", logging.INFO, __file__, 1, "view.state view=d", (), None
    )
    line = text_formatter().format(record)
    assert line.endswith(" INFO statestore.view view.state view=d")


# -- wire models ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"\x00\xff", b'"AP8="'),
        (bytearray(b"ab"), b'"YWI="'),
        (memoryview(b"ab"), b'"YWI="'),
        (Decimal("1.10"), b'"1.10"'),
        (frozenset({1}), b"[1]"),
        ({"nested": [b"\x01"]}, b'{"nested":["AQ=="]}'),
    ],
)
def test_values_without_a_json_form_are_rendered(value: object, text: bytes) -> None:
    """Bytes become base64 text, decimals their exact text, sets lists."""
    assert dumps(value) == text


def test_unrenderable_values_are_refused() -> None:
    """A value of no known JSON form raises rather than being rendered as its repr."""
    with pytest.raises(TypeError, match="not JSON serializable.*complex"):
        dumps({"x": 1j})


def test_json_responses_carry_status_headers_and_type() -> None:
    """json_response renders the body once, with its status, headers and media type."""
    response = json_response({"a": b"\x01"}, 201, {"X-Statestore-Position": "0:1"})
    assert (response.status_code, response.body) == (201, b'{"a":"AQ=="}')
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-statestore-position"] == "0:1"
    assert JSONBytesResponse({"d": Decimal("2")}).body == b'{"d":"2"}'


@pytest.mark.parametrize(
    "body", [{}, {"keys": "a"}, {"keys": [None]}, {"keys": [1]}, {"keys": [["a"]]}]
)
def test_lookup_requests_need_a_list_of_strings(body: object) -> None:
    """A lookup body is exactly {"keys": [text, ...]}."""
    with pytest.raises(ValidationError):
        LookupRequest.model_validate(body)


def test_error_bodies_have_optional_detail() -> None:
    """An error body needs a code and a message; state, reason and position are optional."""
    body = ErrorBody.model_validate(
        {"error": {"code": "not_ready", "message": "m", "state": "starting"}}
    )
    assert (body.error.state, body.error.reason, body.error.position) == ("starting", None, None)
    with pytest.raises(ValidationError):
        ErrorBody.model_validate({"error": {"code": "x"}})
    with pytest.raises(ValidationError):
        ErrorBody.model_validate({"error": {"code": "x", "message": "m", "state": "sleeping"}})


def test_readiness_is_ready_or_not_ready() -> None:
    """Readiness has two statuses only."""
    assert Readiness.model_validate({"status": "ready", "views": []}).status == "ready"
    with pytest.raises(ValidationError):
        Readiness.model_validate({"status": "maybe", "views": []})
