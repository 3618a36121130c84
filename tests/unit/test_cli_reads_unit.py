"""The read commands (`get`, `get-by`, `quarantine`) and config errors, run in-process
over a store filled without a broker: their output and exit codes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from statestore import StateStore, load_config
from statestore.cli import app
from statestore.logs import FORMAT_ENV

CONFIG = """
[store]
path = "store"

[[views]]
name = "d"
topic = "t.d"
indexes = ["status"]

[[views]]
name = "raw"
topic = "t.raw"
key = "bytes"
value = "bytes"
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose store holds d: a, b (status x), c (status y), a quarantined record;
    raw: one binary key."""
    path = tmp_path_factory.mktemp("cli") / "statestore.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_config(path, environ={})
    config = config.model_copy(
        update={"store": config.store.model_copy(update={"path": path.parent / "store"})}
    )
    with StateStore(config) as store:
        store.view("d").apply(
            [
                (0, 0, 10, b"a", orjson.dumps({"status": "x", "n": 1})),
                (0, 1, 11, b"b", orjson.dumps({"status": "x", "n": 2})),
                (0, 2, 12, b"c", orjson.dumps({"status": "y"})),
                (0, 3, 13, b"q", b"not json"),
            ]
        )
        store.view("raw").apply([(0, 0, 20, b"\x00\x01", b"\xff")])
    return path


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI sets up the root logger and the workers' log format: undo both afterwards."""
    monkeypatch.setenv(FORMAT_ENV, "text")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture
def run(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    """Invoke the CLI with the test config; the log format it sets for workers is restored."""
    monkeypatch.chdir(config_file.parent)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, ["-c", str(config_file), *args], env={"COLUMNS": "200"})

    yield invoke


def test_get_prints_the_entity_as_json(run: Callable[..., Result]) -> None:
    """`get VIEW KEY` prints the entity and exits 0."""
    result = run("get", "d", "a")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "key": "a",
        "value": {"status": "x", "n": 1},
        "partition": 0,
        "offset": 0,
        "timestamp": 10,
    }


def test_get_of_a_bytes_view_prints_base64_values(run: Callable[..., Result]) -> None:
    """A bytes view is addressed in hex and its value printed as base64 text."""
    result = run("get", "raw", "0001")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["value"] == "/w=="


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("get", "d", "zz"), 1, "error: view 'd' has no entity with key 'zz'"),
        (("get", "d", "q"), 1, "error: view 'd' has no entity with key 'q'"),
        (("get", "nope", "a"), 2, "error: unknown view 'nope'; configured views: d, raw"),
        (
            ("get", "raw", "xyz"),
            2,
            "error: view 'raw': bad key 'xyz': bytes keys are addressed in hex",
        ),
        (
            ("get-by", "d", "status", "none"),
            1,
            "error: view 'd' has no entity whose status is none",
        ),
        (
            ("get-by", "d", "colour", "x"),
            2,
            "error: view 'd' has no index on 'colour'; indexed fields: status",
        ),
        (("get-by", "d", "status", "x", "--after", "forged.cursor"), 2, "error: invalid cursor"),
        (("get-by", "d", "status", "x", "--limit", "0"), 2, "Invalid value for '--limit'"),
        (("quarantine", "nope"), 2, "error: unknown view 'nope'"),
    ],
)
def test_read_failures_exit_with_their_code(
    run: Callable[..., Result], args: tuple[str, ...], code: int, message: str
) -> None:
    """An absent entity exits 1; an unknown view, index, bad key or cursor exits 2."""
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr


def test_get_by_prints_one_line_per_entity_and_the_next_page(run: Callable[..., Result]) -> None:
    """`get-by` prints matching entities as JSON lines; with more, the command for the next page."""
    result = run("get-by", "d", "status", "x", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["key"] for line in result.stdout.splitlines()] == ["a"]
    assert result.stderr.startswith("more: statestore get-by d status x --limit 1 --after ")


def test_quarantine_lists_the_bad_records(run: Callable[..., Result]) -> None:
    """`quarantine VIEW` prints each quarantined record with its reason."""
    result = run("quarantine", "d")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    item = json.loads(line)
    assert (item["partition"], item["offset"]) == (0, 3) and "not valid JSON" in item["reason"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[views]]\nname = 'd'\n", "views[0] (name = 'd').topic: required setting is missing"),
        ("[store\n", "is not valid TOML"),
        (
            "[api]\nport = 'x'\n[[views]]\nname = 'd'\ntopic = 't'\n",
            "api.port: Input should be a valid integer",
        ),
    ],
)
def test_a_bad_config_exits_2_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    """Every command refuses a bad config with exit code 2 and the loader's message."""
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["-c", str(path), "get", "d", "a"])
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("error: invalid configuration in")
        or "not valid TOML" in result.stderr
    )
    assert message in result.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config file that does not exist exits 2, pointing at -c."""
    result = CliRunner().invoke(app, ["-c", str(tmp_path / "none.toml"), "status"])
    assert result.exit_code == 2
    assert "not found; pass -c/--config" in result.stderr


def test_the_version_option() -> None:
    """--version prints the package version and exits 0."""
    from statestore import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"statestore {__version__}\n")
