"""The config contract rule by rule: each bad setting is a ConfigError naming its field,
environment overrides reach every section they document, and the defaults are the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from statestore import (
    ApiConfig,
    Config,
    ConfigError,
    SchemaRegistryConfig,
    UnknownViewError,
    ViewConfig,
    load_config,
)
from statestore.config import SnapshotsConfig

VIEW = '[[views]]\nname = "d"\ntopic = "t"\n'


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "statestore.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=environ or {})


def view_with(**settings: str) -> str:
    """A one-view config whose view has these extra settings (TOML right-hand sides)."""
    return VIEW + "".join(f"{name} = {value}\n" for name, value in settings.items())


# -- views ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (view_with().replace('"d"', '"' + "v" * 65 + '"'), r"views\[0\].*name: .*1-64 characters"),
        (view_with().replace('"d"', '"-d"'), r"name: .*start with a letter or digit"),
        (view_with().replace('"d"', '"a/b"'), r"views\[0\].*name: .*view names are"),
        (
            view_with().replace('"t"', '"bad topic"'),
            r"views\[0\] \(name = 'd'\)\.topic: .*not a valid Kafka topic name",
        ),
        (
            view_with().replace('"t"', '"' + "t" * 250 + '"'),
            r"topic: .*not a valid Kafka topic name",
        ),
        (view_with(key='"xml"'), r"views\[0\] \(name = 'd'\)\.key: Input should be 'string'"),
        (view_with(value='"yaml"'), r"views\[0\] \(name = 'd'\)\.value: Input should be 'json'"),
        (view_with(indexes='["a..b"]'), r"index 'a\.\.b' is not a dotted field path"),
        (view_with(indexes='["1st"]'), r"index '1st' is not a dotted field path"),
        (view_with(indexes='["s", "s"]'), "an index is listed twice"),
        (
            view_with(value='"bytes"', indexes='["s"]'),
            "indexes need structured values .* not 'bytes'",
        ),
        (
            view_with(reader_schema='"r.avsc"'),
            "reader_schema only applies to value = 'avro' or 'protobuf'",
        ),
        (
            view_with(value='"avro"', reader_message='"M"'),
            "reader_message needs value = 'protobuf' and a reader_schema",
        ),
        (view_with(validate="false"), "validate = false only applies to value = 'json_schema'"),
        (view_with(framing='"auto"'), "framing and id_kind apply to value = 'avro'"),
        (view_with(id_kind='"global"'), "framing and id_kind apply to value = 'avro'"),
        (
            view_with(key_framing='"apicurio_8byte"'),
            "key_framing and key_id_kind apply to key = 'avro'",
        ),
        (view_with(value='"avro"', framing='"apicurio"'), r"framing: Input should be 'confluent'"),
        (view_with(on_error='"skip"'), r"on_error: Input should be 'quarantine' or 'fail'"),
        (view_with(missing_topic='"create"'), r"missing_topic: Input should be 'fail' or 'wait'"),
        (view_with(on_stale='"warn"'), r"on_stale: Input should be 'rebuild', 'fail' or 'ignore'"),
        (
            view_with(colour='"red"'),
            r"views\[0\] \(name = 'd'\)\.colour: unknown setting \(check the spelling\)",
        ),
        (
            VIEW.replace('topic = "t"\n', ""),
            r"views\[0\] \(name = 'd'\)\.topic: required setting is missing",
        ),
        ('[[views]]\ntopic = "t"\n', r"views\[0\]\.name: required setting is missing"),
        ("views = []\n", "at least one \\[\\[views\\]\\] table is required"),
        (VIEW + VIEW, "duplicate view name 'd'"),
    ],
)
def test_each_bad_view_setting_is_named(tmp_path: Path, text: str, message: str) -> None:
    """Every view rule refuses its bad value with a ConfigError naming the view and field."""
    with pytest.raises(ConfigError, match=message) as raised:
        load_text(tmp_path, text)
    assert str(raised.value).startswith(f"invalid configuration in {tmp_path / 'statestore.toml'}:")


def test_global_ids_need_an_apicurio_api(tmp_path: Path) -> None:
    """A view reading Apicurio global ids without a native API to resolve them is refused."""
    text = view_with(value='"avro"', id_kind='"global"')
    with pytest.raises(ConfigError, match="view 'd' reads Apicurio global ids.*apicurio_url"):
        load_text(tmp_path, text)
    registry = '[schema_registry]\nurl = "http://127.0.0.1:8081/apis/ccompat/v7"\n'
    config = load_text(tmp_path, registry + text)
    assert config.view("d").id_kind == "global"


def test_every_error_of_a_file_is_listed_on_its_own_line(tmp_path: Path) -> None:
    """A file with several mistakes names each of them, one line each, after the file name."""
    text = "[store]\nbatch_size = 0\n[api]\nport = -1\n" + view_with(on_error='"x"')
    with pytest.raises(ConfigError) as raised:
        load_text(tmp_path, text)
    lines = str(raised.value).splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("  store.batch_size: ")
    assert lines[2].startswith("  api.port: ")
    assert lines[3].startswith("  views[0] (name = 'd').on_error: ")


# -- the other sections ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "[store]\nblock_cache_mb = 4",
            r"store\.block_cache_mb: Input should be greater than or equal to 8",
        ),
        (
            "[store]\nrow_cache_mb = -1",
            r"store\.row_cache_mb: Input should be greater than or equal to 0",
        ),
        ("[store]\nwrite_buffer_mb = 2", r"store\.write_buffer_mb: .*greater than or equal to 4"),
        ("[store]\nbatch_size = 0", r"store\.batch_size: .*greater than or equal to 1"),
        ("[store]\nbatch_size = 1000001", r"store\.batch_size: .*less than or equal to 1000000"),
        (
            "[store]\nbootstrap_workers = 257",
            r"store\.bootstrap_workers: .*less than or equal to 256",
        ),
        ("[store]\nmemory_mb = 16", r"store\.memory_mb: .*greater than or equal to 32"),
        ("[store]\nbulk_min_records = 0", r"store\.bulk_min_records: .*greater than or equal to 1"),
        (
            '[store]\non_corruption = "ignore"',
            r"store\.on_corruption: Input should be 'rebuild' or 'fail'",
        ),
        ("[store]\nlag_refresh_s = 0.05", r"store\.lag_refresh_s: .*greater than or equal to 0\.1"),
        ("[store]\nlag_refresh_s = 61", r"store\.lag_refresh_s: .*less than or equal to 60"),
        (
            '[store]\nseed = "http://host/snap"',
            r"store\.seed: .*seed is a directory, an archive path or an s3://bucket/prefix URL",
        ),
        ('[store]\npaht = "x"', r"store\.paht: unknown setting"),
        ("[api]\nport = 70000", r"api\.port: .*less than or equal to 65535"),
        ("[api]\nworkers = 0", r"api\.workers: .*greater than or equal to 1"),
        ("[api]\nworkers = 65", r"api\.workers: .*less than or equal to 64"),
        ("[api]\ncatch_up_ms = 0", r"api\.catch_up_ms: .*greater than or equal to 1"),
        ("[api]\nprimary_port = 0", r"api\.primary_port: .*greater than or equal to 1"),
        ("[api]\nmax_page_size = 0", r"api\.max_page_size: .*greater than or equal to 1"),
        ("[api]\nmax_lookup_keys = 0", r"api\.max_lookup_keys: .*greater than or equal to 1"),
        ("[api]\nmax_wait_ms = -1", r"api\.max_wait_ms: .*greater than or equal to 0"),
        ("[api]\nheader_timeout_s = 0", r"api\.header_timeout_s: .*greater than 0"),
        ('[api]\nport = "http"', r"api\.port: Input should be a valid integer"),
        ('[[api.tokens]]\nviews = ["d"]', r"api\.tokens\[0\]\.env: required setting is missing"),
        ('[[api.tokens]]\nenv = "T"\nscope = "d"', r"api\.tokens\[0\]\.scope: unknown setting"),
        (
            '[snapshots]\nevery = "fortnight"',
            r"snapshots\.every: .*'fortnight' is not a duration \(examples: 30s, 15m, 1h, 1d\)",
        ),
        ('[snapshots]\nevery = "500ms"', r"snapshots\.every: .*every is at least 1 second"),
        ("[snapshots]\nkeep = 0", r"snapshots\.keep: .*greater than or equal to 1"),
        (
            '[snapshots]\ndest = "ftp://host/x"',
            r"snapshots\.dest: .*dest is a directory or an s3://bucket/prefix URL",
        ),
        ('[log]\nformat = "xml"', r"log\.format: Input should be 'text' or 'json'"),
        ("[schema_registry]\ntimeout_s = 0", r"schema_registry\.timeout_s: .*greater than 0"),
        (
            '[schema_registry]\n"basic.auth.user.info" = "u:p"',
            r"schema_registry\.basic\.auth\.user\.info: unknown setting",
        ),
        (
            '[schema_registry]\napicurio_url = "http://u:secret@127.0.0.1:8081"',
            r"schema_registry\.apicurio_url: .*BASIC_AUTH_USER_INFO",
        ),
        ('[clusters]\nmode = "replicated"', r"clusters: unknown setting"),
        ("[cluster]\nstandbys = 2", r"cluster\.standbys: .*less than or equal to 1"),
        ("[cluster]\nreplicas = 1", r"cluster\.replicas: unknown setting"),
        (
            "[cluster]\nsession_timeout_ms = 10",
            r"cluster\.session_timeout_ms: .*greater than or equal to 1000",
        ),
    ],
)
def test_each_bad_section_setting_is_named(tmp_path: Path, section: str, message: str) -> None:
    """Every bound and choice of [store], [api], [snapshots], [log], [schema_registry] and [cluster]
    is checked at load, the message naming the table and the setting."""
    with pytest.raises(ConfigError, match=message) as raised:
        load_text(tmp_path, section + "\n" + VIEW)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(
    "prop",
    [
        "ssl.key.password",
        "sasl.jaas.config",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "SASL.PASSWORD",
    ],
)
def test_kafka_secrets_are_refused_in_the_file(tmp_path: Path, prop: str) -> None:
    """Each kind of librdkafka secret in [kafka] is refused, naming the variable to set."""
    variable = "STATESTORE_KAFKA__" + prop.upper().replace(".", "_")
    with pytest.raises(
        ConfigError, match=f"'{prop}' is a secret: set it through the environment \\({variable}\\)"
    ):
        load_text(tmp_path, f'[kafka]\n"{prop}" = "x"\n' + VIEW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"\xff\xfe[[views]]\n", "cannot read config file"),
        (b"[store\n", "is not valid TOML"),
        (b"[store]\npath = 'a'\n[store]\npath = 'b'\n", "is not valid TOML"),
    ],
)
def test_unreadable_files_say_so(tmp_path: Path, text: bytes, message: str) -> None:
    """A file that is not UTF-8 or not TOML is a ConfigError naming the file."""
    path = tmp_path / "bad.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path, environ={})
    assert str(path) in str(raised.value)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    """Pointing at a directory is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match=f"cannot read config file {tmp_path}"):
        load_config(tmp_path, environ={})


# -- environment ------------------------------------------------------------------------


def test_the_config_variable_names_the_file(tmp_path: Path) -> None:
    """Without a path, STATESTORE_CONFIG names the file to read."""
    path = tmp_path / "elsewhere.toml"
    path.write_text(view_with().replace('"d"', '"from_env"'), encoding="utf-8")
    config = load_config(environ={"STATESTORE_CONFIG": str(path)})
    assert [v.name for v in config.views] == ["from_env"]


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("STATESTORE_STORE__BATCH_SIZE", "10", lambda c: c.store.batch_size == 10),
        ("STATESTORE_STORE__ON_CORRUPTION", "fail", lambda c: c.store.on_corruption == "fail"),
        (
            "STATESTORE_STORE__SEED",
            "s3://bucket/snaps",
            lambda c: c.store.seed == "s3://bucket/snaps",
        ),
        ("STATESTORE_API__ALLOW_ANONYMOUS", "true", lambda c: c.api.allow_anonymous is True),
        ("STATESTORE_API__HOST", "::1", lambda c: c.api.url() == "http://[::1]:8000"),
        ("STATESTORE_API__WORKERS", "4", lambda c: c.api.workers == 4),
        ("STATESTORE_LOG__FORMAT", "json", lambda c: c.log.format == "json"),
        (
            "STATESTORE_SCHEMA_REGISTRY__URL",
            "http://127.0.0.1:8081/apis/ccompat/v7",
            lambda c: c.schema_registry.native_url() == "http://127.0.0.1:8081/apis/registry/v3",
        ),
        (
            "STATESTORE_SCHEMA_REGISTRY__TIMEOUT_S",
            "2.5",
            lambda c: c.schema_registry.timeout_s == 2.5,
        ),
        ("STATESTORE_KAFKA__GROUP_ID", "svc", lambda c: c.kafka["group.id"] == "svc"),
    ],
)
def test_environment_overrides_each_section(
    tmp_path: Path, variable: str, value: str, read: object
) -> None:
    """A STATESTORE_<SECTION>__<SETTING> variable sets that setting, converted to its type."""
    config = load_text(tmp_path, VIEW, {variable: value})
    assert callable(read) and read(config)


def test_environment_overrides_the_snapshots_section(tmp_path: Path) -> None:
    """[snapshots] is overridden from the environment like every other table."""
    env = {"STATESTORE_SNAPSHOTS__DEST": "s3://bucket/snaps", "STATESTORE_SNAPSHOTS__EVERY": "15m"}
    config = load_text(tmp_path, VIEW, env)
    assert (config.snapshots.dest, config.snapshots.every) == ("s3://bucket/snaps", 900.0)


def test_a_bad_environment_value_names_the_setting(tmp_path: Path) -> None:
    """An override of the wrong type is a ConfigError naming the setting it overrides."""
    with pytest.raises(ConfigError, match=r"api\.port: Input should be a valid integer"):
        load_text(tmp_path, VIEW, {"STATESTORE_API__PORT": "eighty"})


def test_unrelated_variables_are_ignored(tmp_path: Path) -> None:
    """Variables without the prefix and section separator, or of unknown sections, change nothing."""
    env = {"STORE__PATH": "/x", "STATESTORE_PATH": "/y", "STATESTORE_VIEWS__0": "z", "OTHER": "1"}
    assert load_text(tmp_path, VIEW, env) == load_text(tmp_path, VIEW)


def test_registry_secrets_come_from_the_environment_only_and_stay_hidden(tmp_path: Path) -> None:
    """basic.auth.user.info from the environment reaches the registry client, not repr."""
    env = {
        "STATESTORE_SCHEMA_REGISTRY__URL": "http://127.0.0.1:8081",
        "STATESTORE_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO": "svc:pa55",
    }
    config = load_text(tmp_path, VIEW, env)
    assert config.schema_registry.client_config()["basic.auth.user.info"] == "svc:pa55"
    assert "pa55" not in repr(config) and "pa55" not in str(config.model_dump())


def test_kafka_secrets_from_the_environment_are_kept_apart(tmp_path: Path) -> None:
    """A Kafka secret from the environment is in kafka_config() only, never in [kafka]."""
    config = load_text(tmp_path, VIEW, {"STATESTORE_KAFKA__SSL_KEY_PASSWORD": "k3y"})
    assert "ssl.key.password" not in config.kafka
    assert config.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "ssl.key.password": "k3y",
    }


# -- defaults and derived values --------------------------------------------------------


def test_documented_defaults(tmp_path: Path) -> None:
    """A file with one view gets DESIGN.md's defaults everywhere else."""
    config = load_text(tmp_path, VIEW)
    store, api = config.store, config.api
    assert (
        store.path,
        store.block_cache_mb,
        store.batch_size,
        store.on_corruption,
        store.seed,
    ) == (Path("var/statestore"), 64, 5000, "rebuild", None)
    assert (api.host, api.port, api.workers, api.console, api.allow_anonymous, api.tokens) == (
        "127.0.0.1",
        8000,
        1,
        True,
        False,
        (),
    )
    assert (api.max_page_size, api.max_lookup_keys, api.max_wait_ms) == (1000, 1000, 30_000)
    assert (config.log.format, config.snapshots.every, config.snapshots.keep) == ("text", 3600.0, 3)
    view = config.view("d")
    assert (view.key, view.value, view.framing, view.on_stale, view.missing_topic) == (
        "string",
        "json",
        "confluent",
        "rebuild",
        "fail",
    )
    assert view.schema_validation is True and view.uses_registry is False


def test_tokens_load_with_their_defaults(tmp_path: Path) -> None:
    """A token table needs only env: it reads every view and is not admin."""
    text = '[[api.tokens]]\nenv = "TOKEN_A"\n[[api.tokens]]\nenv = "TOKEN_B"\nviews = ["d"]\nadmin = true\n'
    tokens = load_text(tmp_path, text + VIEW).api.tokens
    assert [(t.env, t.views, t.admin) for t in tokens] == [
        ("TOKEN_A", ("*",), False),
        ("TOKEN_B", ("d",), True),
    ]


def test_relative_reader_schemas_are_relative_to_the_file(tmp_path: Path) -> None:
    """reader_schema = "schemas/p.avsc" means next to the config file, not the working directory."""
    config = load_text(tmp_path, view_with(value='"avro"', reader_schema='"schemas/p.avsc"'))
    assert config.view("d").reader_schema == tmp_path / "schemas" / "p.avsc"
    absolute = load_text(tmp_path, view_with(value='"avro"', reader_schema='"/abs/p.avsc"'))
    assert absolute.view("d").reader_schema == Path("/abs/p.avsc")


@pytest.mark.parametrize(
    ("every", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        (" 2 m ", 120.0),
        ("1500ms", 1.5),
    ],
)
def test_snapshot_intervals_read_durations(every: object, seconds: float) -> None:
    """[snapshots] every takes seconds or a number with a unit (ms, s, m, h, d)."""
    assert SnapshotsConfig(every=every).every == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("api", "url"),
    [
        (ApiConfig(), "http://127.0.0.1:8000"),
        (ApiConfig(host="0.0.0.0", port=9000), "http://127.0.0.1:9000"),
        (ApiConfig(host="::"), "http://127.0.0.1:8000"),
        (ApiConfig(host="[::1]"), "http://[::1]:8000"),
        (ApiConfig(host="localhost", ssl_certfile=Path("c.pem")), "https://localhost:8000"),
    ],
)
def test_the_api_url_a_client_uses(api: ApiConfig, url: str) -> None:
    """The URL of a server: wildcard binds answer on loopback, IPv6 in brackets, https with a cert."""
    assert api.url() == url


@pytest.mark.parametrize(
    ("registry", "native"),
    [
        (
            SchemaRegistryConfig(url="http://h:8081/apis/ccompat/v7"),
            "http://h:8081/apis/registry/v3",
        ),
        (
            SchemaRegistryConfig(url="http://h:8081/apis/ccompat/v6/"),
            "http://h:8081/apis/registry/v3",
        ),
        (SchemaRegistryConfig(url="http://h:8081"), None),
        (
            SchemaRegistryConfig(url="http://h:8081", apicurio_url="http://a/apis/registry/v2/"),
            "http://a/apis/registry/v2",
        ),
        (SchemaRegistryConfig(), None),
    ],
)
def test_the_native_registry_api_is_derived_from_a_ccompat_url(
    registry: SchemaRegistryConfig, native: str | None
) -> None:
    """Apicurio's native API comes from apicurio_url, else from a .../apis/ccompat/vN url."""
    assert registry.native_url() == native


def test_registry_client_settings() -> None:
    """The registry client gets the url, the timeout and the native API; without a url, a ConfigError."""
    conf = SchemaRegistryConfig(url="http://h/apis/ccompat/v7", timeout_s=3).client_config()
    assert conf == {
        "url": "http://h/apis/ccompat/v7",
        "timeout": 3.0,
        "statestore.native.url": "http://h/apis/registry/v3",
    }
    with pytest.raises(ConfigError, match=r"\[schema_registry\] url is not set"):
        SchemaRegistryConfig().client_config()


def test_an_unknown_view_names_the_configured_ones(tmp_path: Path) -> None:
    """Config.view of an unknown name raises UnknownViewError listing the views there are."""
    config = load_text(tmp_path, VIEW + view_with().replace('"d"', '"e"'))
    with pytest.raises(UnknownViewError, match="unknown view 'x'; configured views: d, e"):
        config.view("x")


@pytest.mark.parametrize(
    ("view", "registry"),
    [
        (ViewConfig(name="a", topic="t"), False),
        (ViewConfig(name="a", topic="t", key="avro"), True),
        (ViewConfig(name="a", topic="t", value="protobuf"), True),
        (ViewConfig(name="a", topic="t", value="json_schema", validate=False), True),
    ],
)
def test_which_views_use_the_registry(view: ViewConfig, registry: bool) -> None:
    """A view uses the registry when its key or value codec is a registry format."""
    assert view.uses_registry is registry
