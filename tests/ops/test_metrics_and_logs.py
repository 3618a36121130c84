"""What a Prometheus and a log pipeline get from `statestore serve` on the real broker:
a scrape promtool accepts, with the conventional process, interpreter, build and request
series; and with --log-format json (or [log] format), one JSON object per log line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import Serve, send
from prometheus_client.parser import text_string_to_metric_families

from tests.support.config import write_config
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

ENTITY = "/views/{view}/entities/{key}"


def _serve(tmp_path: Path, topic: str, *options: str, log: str | None = None) -> Serve:
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    if log is not None:
        config.write_text(config.read_text() + f'\n[log]\nformat = "{log}"\n')
    found = re.search(r"port = (\d+)", config.read_text(encoding="utf-8"))
    assert found
    serve = Serve(config, int(found.group(1)), tmp_path, *options)
    serve.start()
    eventually(lambda: serve.view("v")["state"] == "ready", "the view ready")
    return serve


def _counts(text: str, name: str) -> dict[tuple[str, str, str], float]:
    """Observation counts of the request histogram by (route, method, code)."""
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_count":
                out[(s.labels["route"], s.labels["method"], s.labels["code"])] = s.value
    return out


def test_a_live_scrape_passes_promtool_with_process_build_and_request_series(
    tmp_path: Path, topic_factory: Callable[..., str]
) -> None:
    """`promtool check metrics` finds nothing to say about a live scrape, which carries
    process_* and python_* series, statestore_build_info, and request durations by route
    template (the direct entity path included), method and code."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/install-tools"
    topic = topic_factory(1)
    send(topic, [("k", {"i": 1}, 0, None)])
    serve = _serve(tmp_path, topic)
    try:
        # A record applied while following: the freshness histogram observes its batch.
        send(topic, [("new", {"i": 2}, 0, None)])
        eventually(
            lambda: httpx.get(serve.url + "/views/v/entities/new", timeout=10).status_code == 200,
            "the new record readable",
        )
        for path, code in (
            ("/views/v/entities/k", 200),
            ("/views/v/entities/k", 200),
            ("/views/v/entities/nope", 404),
            ("/views/v/entities?limit=1", 200),
            ("/no/such/route", 404),
        ):
            assert httpx.get(serve.url + path, timeout=10).status_code == code, path
        text = httpx.get(serve.url + "/metrics", timeout=10).text
    finally:
        serve.stop()

    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    names = {f.name for f in text_string_to_metric_families(text)}
    expected = {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_info",
        "python_gc_objects_collected",
        "statestore_build_info",
        "statestore_http_request_duration_seconds",
        "statestore_view_lag",
        "statestore_freshness_seconds",
    }
    assert expected <= names, expected - names
    info = next(
        f for f in text_string_to_metric_families(text) if f.name == "statestore_build_info"
    )
    labels = info.samples[0].labels
    assert info.samples[0].value == 1 and labels["version"] and labels["librdkafka"]
    fresh = [
        s
        for f in text_string_to_metric_families(text)
        if f.name == "statestore_freshness_seconds"
        for s in f.samples
        if s.name.endswith("_count")
    ]
    assert [(s.labels["view"], s.value >= 1) for s in fresh] == [("v", True)]
    counts = _counts(text, "statestore_http_request_duration_seconds")
    assert counts[(ENTITY, "GET", "200")] >= 2
    assert counts[(ENTITY, "GET", "404")] >= 1
    assert counts[("/views/{view}/entities", "GET", "200")] == 1
    assert counts[("other", "GET", "404")] == 1
    # Templates only, never raw paths (one series per key would be unbounded).
    routes = {route for route, _, _ in counts}
    assert routes == {ENTITY, "/views/{view}/entities", "/views/{view}", "/healthz", "other"}


def _json_lines(serve: Serve) -> list[dict[str, Any]]:
    lines = [line for line in serve.log().splitlines() if line.strip()]
    out = []
    for line in lines:
        if line.startswith("%"):  # librdkafka's own lines (see docs/operations.md)
            continue
        out.append(json.loads(line))
    return out


@pytest.mark.parametrize("how", ["option", "config"])
def test_json_logs_are_one_object_per_line_with_the_fields_of_the_text(
    tmp_path: Path, topic_factory: Callable[..., str], how: str
) -> None:
    """--log-format json, or [log] format = "json", makes every statestore and uvicorn log
    line a JSON object: time, level, logger, message, and the event and its fields."""
    topic = topic_factory(1)
    send(topic, [("k", {"i": 1}, 0, None)])
    serve = (
        _serve(tmp_path, topic, "--log-format", "json")
        if how == "option"
        else _serve(tmp_path, topic, log="json")
    )
    try:
        assert httpx.get(serve.url + "/views/v/entities/k", timeout=10).status_code == 200
    finally:
        serve.stop()

    records = _json_lines(serve)
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    start = next(r for r in records if r.get("event") == "serve.start")
    assert start["views"] == 1 and isinstance(start["port"], int)
    states = [r for r in records if r.get("event") == "view.state" and r["view"] == "v"]
    assert "ready" in [r["state"] for r in states]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", start["time"])
    assert any(r["logger"].startswith("uvicorn") for r in records)
