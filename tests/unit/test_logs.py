"""JSON log lines: the event and its key=value fields, read back from the text message."""

from __future__ import annotations

import json
import logging
import sys

from statestore.logs import JsonFormatter, text_formatter


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("statestore.view", logging.INFO, __file__, 1, msg, args, info)


def test_event_and_fields_come_out_as_json_values() -> None:
    line = JsonFormatter().format(
        _record(
            "view.state view=%s state=%s reason=%s lag=%d", "d", "failed", "broker a=b down", 42
        )
    )
    data = json.loads(line)
    assert data["event"] == "view.state"
    assert (data["view"], data["state"], data["lag"]) == ("d", "failed", 42)
    # A value runs to the next ` key=`, so text holding one is split there; the message
    # keeps it whole.
    assert data["reason"] == "broker"
    assert data["a"] == "b down"
    assert data["message"] == "view.state view=d state=failed reason=broker a=b down lag=42"
    assert data["level"] == "INFO" and data["logger"] == "statestore.view"
    assert data["time"].endswith("Z") and len(data["time"]) == 24


def test_reasons_with_spaces_stay_whole_and_reserved_names_are_kept_apart() -> None:
    data = json.loads(
        JsonFormatter("bulk-worker-1").format(
            _record("bulk.stopped level=3 message=x reason=the broker is down")
        )
    )
    assert data["reason"] == "the broker is down"
    assert (data["field_level"], data["field_message"]) == (3, "x")
    assert data["level"] == "INFO" and data["process"] == "bulk-worker-1"


def test_messages_not_in_event_shape_and_exceptions() -> None:
    data = json.loads(JsonFormatter().format(_record("Started server process [%d]", 7, exc=True)))
    assert "event" not in data and data["message"] == "Started server process [7]"
    assert "ValueError: boom" in data["exception"]


def test_text_format_names_the_worker() -> None:
    record = _record("merge.done keys=%d", 5)
    assert " INFO merge-worker-2 statestore.view: merge.done keys=5" in text_formatter(
        "merge-worker-2"
    ).format(record)
