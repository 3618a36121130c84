"""Configuration loading: TOML, environment overrides, secrets and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from statestore import ConfigError, load_config

GOOD = """
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"

[store]
path = "./var/x"

[[views]]
name = "deliveries"
topic = "delivery.status"
indexes = ["status", "address.city"]

[[views]]
name = "patients"
topic = "patient.records"
value = "string"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "statestore.toml"
    path.write_text(text)
    return path


def test_loads_views_with_defaults(tmp_path: Path) -> None:
    """A minimal file gives views with the documented defaults."""
    config = load_config(write(tmp_path, GOOD), environ={})
    d = config.view("deliveries")
    assert (d.key, d.value, d.indexes, d.on_error) == (
        "string",
        "json",
        ("status", "address.city"),
        "quarantine",
    )
    assert config.view("patients").value == "string"
    assert config.api.host == "127.0.0.1" and config.api.port == 8000


def test_env_overrides_file(tmp_path: Path) -> None:
    """STATESTORE_* variables override the file, librdkafka names included."""
    env = {
        "STATESTORE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:19092",
        "STATESTORE_API__PORT": "9000",
        "STATESTORE_STORE__PATH": "/tmp/elsewhere",
    }
    config = load_config(write(tmp_path, GOOD), environ=env)
    assert config.kafka["bootstrap.servers"] == "127.0.0.1:19092"
    assert config.api.port == 9000
    assert str(config.store.path) == "/tmp/elsewhere"


def test_secrets_only_from_env_and_never_in_repr(tmp_path: Path) -> None:
    """A password in the file is refused; from the environment it is used but never shown."""
    bad = GOOD.replace("[kafka]\n", '[kafka]\n"sasl.password" = "hunter2"\n')
    with pytest.raises(ConfigError, match="sasl.password.*environment"):
        load_config(write(tmp_path, bad), environ={})
    config = load_config(
        write(tmp_path, GOOD), environ={"STATESTORE_KAFKA__SASL_PASSWORD": "hunter2"}
    )
    assert config.kafka_config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.model_dump())


def test_secrets_inside_longer_settings_are_refused_in_the_file(tmp_path: Path) -> None:
    """An OAuth config line (it carries the client secret) is a secret too: refused in the
    file, taken from the environment and never shown."""
    line = '"sasl.oauthbearer.config" = "clientId=a clientSecret=s3cr3t"'
    with pytest.raises(ConfigError, match="sasl.oauthbearer.config.*environment"):
        load_config(write(tmp_path, GOOD.replace("[kafka]\n", f"[kafka]\n{line}\n")), environ={})
    config = load_config(
        write(tmp_path, GOOD),
        environ={"STATESTORE_KAFKA__SASL_OAUTHBEARER_CONFIG": "clientId=a clientSecret=s3cr3t"},
    )
    assert config.kafka_config()["sasl.oauthbearer.config"].endswith("s3cr3t")
    assert "s3cr3t" not in repr(config)


def test_credentials_in_the_registry_url_are_refused(tmp_path: Path) -> None:
    """A registry URL with user:password is refused, naming the environment variable to use
    instead, and the password is not echoed."""
    text = GOOD + '\n[schema_registry]\nurl = "http://svc:pa55word@127.0.0.1:8081"\n'
    with pytest.raises(ConfigError, match="BASIC_AUTH_USER_INFO") as raised:
        load_config(write(tmp_path, text), environ={})
    assert "pa55word" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace('value = "string"', 'value = "xml"'),
            r"views\[1\] \(name = 'patients'\)\.value",
        ),
        (
            GOOD.replace('name = "patients"', 'name = "deliveries"'),
            "duplicate view name 'deliveries'",
        ),
        (
            GOOD.replace('topic = "patient.records"\n', ""),
            r"views\[1\].*topic: required setting is missing",
        ),
        (
            GOOD.replace('indexes = ["status", "address.city"]', 'indexs = ["status"]'),
            "indexs: unknown setting",
        ),
        (GOOD + '\n[[views]]\nname = "bad name"\ntopic = "x"\n', "view names are"),
        ("[[views]\nname=", "not valid TOML"),
        ('[store]\npath = "x"\n', "at least one"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    """Each kind of bad config gives a ConfigError whose message names the field."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    """A missing file is a ConfigError that points at -c and the example."""
    with pytest.raises(ConfigError, match="not found.*--config"):
        load_config(tmp_path / "nope.toml", environ={})


def test_indexes_need_structured_values(tmp_path: Path) -> None:
    """Indexes on a string view are refused at load time."""
    bad = GOOD.replace('value = "string"', 'value = "string"\nindexes = ["a"]')
    with pytest.raises(ConfigError, match="indexes need structured values"):
        load_config(write(tmp_path, bad), environ={})


def test_fingerprint_changes_with_codecs_only(tmp_path: Path) -> None:
    """The rebuild fingerprint follows topic and codecs, not indexes or policies."""
    config = load_config(write(tmp_path, GOOD), environ={})
    d = config.view("deliveries")
    assert d.fingerprint() == d.model_copy(update={"indexes": ()}).fingerprint()
    assert d.fingerprint() != d.model_copy(update={"value": "string"}).fingerprint()


def test_a_file_without_kafka_gets_the_default_broker(tmp_path: Path) -> None:
    """No [kafka] table: the default bootstrap.servers, with or without environment overrides
    (an empty table would leave librdkafka without a broker, retrying forever)."""
    text = '[[views]]\nname = "d"\ntopic = "t"\n'
    assert load_config(write(tmp_path, text), environ={}).kafka == {
        "bootstrap.servers": "127.0.0.1:9092"
    }
    env = {"STATESTORE_KAFKA__CLIENT_ID": "svc"}
    assert load_config(write(tmp_path, text), environ=env).kafka == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "svc",
    }
