"""How the CLI finds its config file and reports a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import REPO, clean_env, run

pytestmark = pytest.mark.integration

GOOD_VIEW = '[[views]]\nname = "deliveries"\ntopic = "delivery.status"\n'

BAD_CONFIGS = {
    "unknown codec": (
        '[[views]]\nname = "deliveries"\ntopic = "delivery.status"\nvalue = "xml"\n',
        "views[0] (name = 'deliveries').value",
    ),
    "duplicate view name": (GOOD_VIEW + GOOD_VIEW, "duplicate view name 'deliveries'"),
    "missing field": (
        '[[views]]\nname = "deliveries"\n',
        "views[0] (name = 'deliveries').topic: required setting is missing",
    ),
    "misspelt setting": ('[store]\npaht = "x"\n' + GOOD_VIEW, "store.paht: unknown setting"),
    "not TOML": ("[[views]\n", "is not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", [["status"], ["bootstrap"], ["get", "deliveries", "k"]])
def test_a_bad_config_exits_2_naming_the_field(
    tmp_path: Path, case: str, command: list[str]
) -> None:
    """Every command rejects an invalid config with exit 2 and a message naming the field, without a traceback."""
    text, expected = BAD_CONFIGS[case]
    config = tmp_path / "statestore.toml"
    config.write_text(text, encoding="utf-8")

    result = run(["-c", config, *command], tmp_path)

    assert result.returncode == 2
    assert expected in result.stderr
    assert str(config) in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist exits 2 with the path and a hint, without a traceback."""
    result = run(["-c", tmp_path / "absent.toml", "status"], tmp_path)

    assert result.returncode == 2
    assert f"config file {tmp_path / 'absent.toml'} not found" in result.stderr
    assert "statestore.example.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_config_is_statestore_toml_in_the_working_directory(tmp_path: Path) -> None:
    """Without -c, the CLI reads ./statestore.toml and says so when it is missing."""
    result = run(["status"], tmp_path)

    assert result.returncode == 2
    assert "config file statestore.toml not found" in result.stderr


def test_config_from_environment_variable(topics: Topics, tmp_path: Path) -> None:
    """STATESTORE_CONFIG names the config file when -c is not given."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = run(["bootstrap"], elsewhere, env=clean_env(STATESTORE_CONFIG=str(config)))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("things: 1 records, 1 keys")


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_option_before_or_after_the_command(
    topics: Topics, tmp_path: Path, where: str
) -> None:
    """-c works both as a global option and as an option of the command."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "things", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    args: list[str | Path] = (
        ["-c", config, "get", "things", "a"]
        if where == "before"
        else ["get", "things", "a", "--config", config]
    )

    result = run(args, tmp_path / "store")

    assert result.returncode == 0, result.stderr
    assert '"key": "a"' in result.stdout


def test_the_example_config_is_valid() -> None:
    """statestore.example.toml loads and serves the three demo topics."""
    from statestore import load_config

    config = load_config(REPO / "statestore.example.toml", environ={})

    assert [(v.name, v.topic) for v in config.views] == [
        ("deliveries", "delivery.status"),
        ("patients", "patient.records"),
        ("shipments", "shipment.state"),
    ]
    assert config.view("deliveries").indexes == ("status",)
    assert (config.view("shipments").value, config.view("shipments").indexes) == (
        "protobuf",
        ("status",),
    )
    assert config.kafka["bootstrap.servers"] == "127.0.0.1:9092"
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8000)


def test_kafka_settings_the_client_refuses_are_a_clear_error(
    topics: Topics, tmp_path: Path
) -> None:
    """A [kafka] setting librdkafka refuses (fetch.max.bytes below message.max.bytes) is said
    as a configuration error naming the setting, not an internal error."""
    topic = topics.create(1, [(0, "a", {"v": 1})])
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    config.write_text(
        config.read_text().replace("[kafka]\n", '[kafka]\n"fetch.max.bytes" = 1000\n', 1)
    )

    result = run(["-c", config, "bootstrap"], tmp_path)

    assert result.returncode != 0
    assert "the Kafka client refuses the [kafka] settings" in result.stderr
    assert "fetch.max.bytes" in result.stderr
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr
